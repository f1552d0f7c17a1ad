import { readFileSync } from 'node:fs';

import { describe, expect, it } from '@jest/globals';

import { ENVIRONMENT_VARIABLES } from '../../src/config/environment.js';
import { RedisConfigError } from '../../src/errors.js';
import type { RedisModuleOptions } from '../../src/index.js';
import { resolveRedisOptions } from '../../src/redis-module.options.js';

function messageOf(options: unknown, env: NodeJS.ProcessEnv = {}): string {
  try {
    resolveRedisOptions(options as RedisModuleOptions, env);
  } catch (err) {
    expect(err).toBeInstanceOf(RedisConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a RedisConfigError');
}

/** Every message names the option or variable, the value, and the unit of a valid value. */
describe('configuration messages say the right unit', () => {
  it.each<[string, unknown, NodeJS.ProcessEnv, string]>([
    [
      'maxConnections 0',
      { maxConnections: 0 },
      {},
      'maxConnections = 0; expected an integer from 1 to 10000 (connections)',
    ],
    [
      'maxConnections 2.5',
      { maxConnections: 2.5 },
      {},
      'maxConnections = 2.5; expected an integer from 1 to 10000 (connections)',
    ],
    [
      'REDIS_MAX_CONNECTIONS',
      undefined,
      { REDIS_MAX_CONNECTIONS: '0' },
      'REDIS_MAX_CONNECTIONS = "0"; expected an integer from 1 to 10000 (connections)',
    ],
    [
      'REDIS_PORT',
      undefined,
      { REDIS_PORT: '99999' },
      'REDIS_PORT = "99999"; expected an integer from 1 to 65535. Fix',
    ],
    [
      'REDIS_DB',
      undefined,
      { REDIS_DB: '-1' },
      'REDIS_DB = "-1"; expected a non-negative integer (a database index)',
    ],
    ['db option', { db: 1.5 }, {}, 'db = 1.5; expected a non-negative integer (a database index)'],
    [
      'REDIS_COMMAND_TIMEOUT_MS',
      undefined,
      { REDIS_COMMAND_TIMEOUT_MS: '1.5s' },
      'REDIS_COMMAND_TIMEOUT_MS = "1.5s"; expected a positive integer (milliseconds)',
    ],
    [
      'shutdownTimeout',
      { shutdownTimeout: 0 },
      {},
      'shutdownTimeout = 0; expected a positive number of milliseconds',
    ],
    [
      'retry.factor',
      { retry: { factor: 20 } },
      {},
      'retry.factor = 20; expected a number from 1 to 10 (a multiplier)',
    ],
    [
      'retry.jitter',
      { retry: { jitter: -1 } },
      {},
      'retry.jitter = -1; expected a number from 0 to 1 (the randomised fraction of each delay)',
    ],
    [
      'retry.maxAttempts',
      { retry: { maxAttempts: 0 } },
      {},
      'retry.maxAttempts = 0; expected a positive integer (attempts), or null for no limit',
    ],
    ['protocol', { protocol: 1 }, {}, 'protocol = 1; expected 2 or 3 (the RESP protocol version)'],
  ])('%s', (_what, options, env, text) => {
    expect(messageOf(options, env)).toContain(text);
  });

  it('no count is described as milliseconds', () => {
    for (const options of [{ maxConnections: 0 }, { retry: { maxAttempts: -1 } }]) {
      expect(messageOf(options)).not.toContain('milliseconds');
    }
  });
});

describe('the environment table', () => {
  const docs = readFileSync(new URL('../../docs/configuration.md', import.meta.url), 'utf8');

  it('has one row per variable, each documented', () => {
    const names = ENVIRONMENT_VARIABLES.map((v) => v.name);
    expect(new Set(names).size).toBe(names.length);
    for (const name of [...names, 'REDIS_SENTINELS', 'REDIS_SENTINEL_NAME']) {
      expect(docs).toContain(`\`${name}\``);
    }
  });

  it('takes a password and a key prefix verbatim, and trims the rest', () => {
    const c = resolveRedisOptions(undefined, {
      REDIS_HOST: '  cache  ',
      REDIS_PASSWORD: ' s p ',
      REDIS_KEY_PREFIX: ' app: ',
      REDIS_CONNECT_TIMEOUT_MS: ' 1500 ',
    });
    expect(c.target).toMatchObject({ host: 'cache' });
    expect(c.password).toBe(' s p ');
    expect(c.keyPrefix).toBe(' app: ');
    expect(c.connectTimeout).toBe(1500);
  });
});
