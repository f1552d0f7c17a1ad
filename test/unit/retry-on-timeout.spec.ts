import { describe, expect, it } from '@jest/globals';

import { isRetriedCall } from '../../src/connection/retry-on-timeout.js';
import { RedisConfigError } from '../../src/errors.js';
import { resolveRedisOptions } from '../../src/redis-module.options.js';

describe('isRetriedCall', () => {
  it.each<[string, unknown[], boolean]>([
    ['get', ['k'], true],
    ['getBuffer', ['k'], true],
    ['hgetall', ['k'], true],
    ['mget', [['a', 'b']], true],
    ['set', ['k', 'v'], true],
    ['set', ['k', 'v', 'PX', 100], true],
    ['set', ['k', 'v', 'px', 100, 'nx'], false],
    ['set', ['k', 'v', 'XX'], false],
    ['set', ['k', 'v', 'GET'], false],
    ['pexpire', ['k', 100], true],
    ['pexpire', ['k', 100, 'GT'], false],
    ['incr', ['k'], false],
    ['lpush', ['k', 'v'], false],
    ['del', ['k'], false],
    ['hset', ['k', 'f', 'v'], false],
    ['eval', ['return 1', 0], false],
    ['evalsha', ['abc', 0], false],
    ['ping', [], false],
  ])('%s %j -> %s', (name, args, expected) => {
    expect(isRetriedCall(name, args)).toBe(expected);
  });
});

describe('retryOnTimeout option', () => {
  it('is off by default, and true means the documented defaults', () => {
    expect(resolveRedisOptions({}, {}).retryOnTimeout).toBe(false);
    expect(resolveRedisOptions({ commandTimeout: 100, retryOnTimeout: true }, {})).toMatchObject({
      retryOnTimeout: { attempts: 3, initialDelay: 50, maxDelay: 1000 },
    });
  });

  it('is read from REDIS_RETRY_ON_TIMEOUT', () => {
    const c = resolveRedisOptions(undefined, {
      REDIS_RETRY_ON_TIMEOUT: 'yes',
      REDIS_COMMAND_TIMEOUT_MS: '250',
    });
    expect(c.retryOnTimeout).toMatchObject({ attempts: 3 });
    expect(resolveRedisOptions(undefined, { REDIS_RETRY_ON_TIMEOUT: 'off' }).retryOnTimeout).toBe(
      false,
    );
  });

  it.each<[string, NodeJS.ProcessEnv, unknown, string]>([
    [
      'without commandTimeout',
      {},
      { retryOnTimeout: true },
      'commandTimeout = undefined; expected a positive number of milliseconds: retryOnTimeout retries',
    ],
    [
      'from the environment without a command timeout',
      { REDIS_RETRY_ON_TIMEOUT: 'true' },
      undefined,
      'REDIS_COMMAND_TIMEOUT_MS = undefined; expected a positive number of milliseconds: REDIS_RETRY_ON_TIMEOUT',
    ],
    [
      'a bad variable',
      { REDIS_RETRY_ON_TIMEOUT: 'sometimes' },
      undefined,
      'REDIS_RETRY_ON_TIMEOUT = "sometimes"; expected one of true, false',
    ],
    [
      'too many attempts',
      {},
      { commandTimeout: 100, retryOnTimeout: { attempts: 50 } },
      'retryOnTimeout.attempts = 50; expected an integer from 2 to 10 (attempts)',
    ],
    [
      'a delay that is no duration',
      {},
      { commandTimeout: 100, retryOnTimeout: { initialDelay: -1 } },
      'retryOnTimeout.initialDelay = -1; expected a positive number of milliseconds',
    ],
    [
      'a non-object',
      {},
      { commandTimeout: 100, retryOnTimeout: 'yes' },
      'retryOnTimeout = "yes"; expected true, false or { attempts?, initialDelay?, maxDelay? }',
    ],
  ])('names the option, the value and the unit: %s', (_what, env, options, message) => {
    let error: unknown;
    try {
      resolveRedisOptions(options as never, env);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(RedisConfigError);
    expect((error as Error).message).toContain(message);
  });
});
