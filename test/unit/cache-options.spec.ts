import { describe, expect, it } from '@jest/globals';

import { CACHE_DEFAULTS, validateCacheOptions } from '../../src/cache/cache.options.js';
import { jsonSerializer } from '../../src/cache/serializer.js';
import { RedisConfigError } from '../../src/errors.js';

function message(value: unknown): string {
  try {
    validateCacheOptions(value, undefined);
  } catch (err) {
    expect(err).toBeInstanceOf(RedisConfigError);
    return (err as RedisConfigError).message;
  }
  throw new Error('expected a RedisConfigError');
}

describe('validateCacheOptions', () => {
  it('fills the documented defaults; cache.timeout follows commandTimeout', () => {
    expect(validateCacheOptions(undefined, undefined)).toEqual({
      ttl: CACHE_DEFAULTS.ttl,
      grace: 0,
      l1: { maxEntries: 10_000, maxBytes: 64 * 1024 * 1024 },
      lockTtl: 10_000,
      timeout: 1_000,
      serializer: jsonSerializer,
      maxValueBytes: 1024 * 1024,
    });
    expect(validateCacheOptions({}, 250).timeout).toBe(250);
    expect(validateCacheOptions({ l1: false, ttl: 1.2 }, 250)).toMatchObject({ l1: false, ttl: 2 });
  });

  it.each([
    [5, 'cache = 5; expected { ttl?, grace?'],
    [{ ttl: 0 }, 'cache.ttl = 0; expected a positive number of milliseconds'],
    [{ ttl: Number.NaN }, 'cache.ttl = NaN'],
    [{ grace: -1 }, 'cache.grace = -1; expected a positive number of milliseconds'],
    [{ ttl: 366 * 24 * 3600 * 1000 }, 'expected at most 31536000000 milliseconds'],
    [{ lockTtl: 2 ** 31 }, 'cache.lockTtl = 2147483648; expected at most 2147483647 milliseconds'],
    [{ timeout: '5' }, 'cache.timeout = "5"; expected a positive number of milliseconds'],
    [{ l1: 1 }, 'cache.l1 = 1; expected false or { maxEntries?, maxBytes? }'],
    [{ l1: { maxEntries: 0 } }, 'cache.l1.maxEntries = 0; expected a positive integer (entries)'],
    [
      { l1: { maxEntries: 1.5 } },
      'cache.l1.maxEntries = 1.5; expected a positive integer (entries)',
    ],
    [{ l1: { maxBytes: -1 } }, 'cache.l1.maxBytes = -1; expected a positive integer (bytes)'],
    [{ maxValueBytes: 0 }, 'cache.maxValueBytes = 0; expected a positive integer (bytes)'],
    [{ serializer: null }, 'cache.serializer = "[object Null]"'],
    [{ serializer: { serialize: () => '' } }, 'expected { serialize(value), deserialize(buffer) }'],
  ])('rejects %j naming the option, the value and the unit', (value, expected) => {
    expect(message(value)).toContain(expected);
  });
});
