import { describe, expect, it } from '@jest/globals';

import { RedisConfigError } from '../../src/errors.js';
import { LOCK_DEFAULTS, validateLockOptions } from '../../src/lock/lock.options.js';
import { resolveRedisOptions } from '../../src/redis-module.options.js';

function lockError(lock: unknown): RedisConfigError {
  try {
    validateLockOptions(lock);
  } catch (err) {
    expect(err).toBeInstanceOf(RedisConfigError);
    return err as RedisConfigError;
  }
  throw new Error('expected a RedisConfigError');
}

describe('lock options', () => {
  it('resolves the documented defaults through the module options', () => {
    expect(resolveRedisOptions({}, {}).lock).toEqual({ ...LOCK_DEFAULTS });
    expect(LOCK_DEFAULTS).toEqual({
      ttl: 30_000,
      wait: 10_000,
      retryInterval: 250,
      extendMargin: 200,
      replicas: 0,
      replicaTimeout: 500,
    });
  });

  it('rounds durations up to whole milliseconds and keeps holderId', () => {
    expect(validateLockOptions({ ttl: 1000.2, holderId: 'w-1' })).toMatchObject({
      ttl: 1001,
      holderId: 'w-1',
    });
  });

  it.each([
    [{ ttl: 0 }, 'lock.ttl', 'milliseconds'],
    [{ ttl: 1e20 }, 'lock.ttl', 'at most 86400000 milliseconds'],
    [{ wait: 'soon' }, 'lock.wait', 'milliseconds'],
    [{ retryInterval: -1 }, 'lock.retryInterval', 'milliseconds'],
    [{ replicaTimeout: Number.NaN }, 'lock.replicaTimeout', 'milliseconds'],
    [{ ttl: 100, extendMargin: 100 }, 'lock.ttl', 'more than lock.extendMargin (100 milliseconds)'],
    [{ replicas: 1.5 }, 'lock.replicas', 'whole number of replicas'],
    [{ replicas: 1e20 }, 'lock.replicas', 'from 0 to 1000'],
    [{ holderId: '' }, 'lock.holderId', '1-256 characters'],
    [5, 'lock', '{ ttl?'],
  ])('rejects %p naming %s', (lock, option, expected) => {
    const err = lockError(lock);
    expect(err.option).toBe(option);
    expect(err.message).toContain(option);
    expect(err.message).toContain(expected);
  });

  it('fails the module options with the same error', () => {
    expect(() => resolveRedisOptions({ lock: { ttl: -5 } }, {})).toThrow(
      /lock\.ttl = -5; expected a positive number of milliseconds/,
    );
  });
});
