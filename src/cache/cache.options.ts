import { MAX_TIMER_MS, MAX_TTL_MS } from '../common/checks.js';
import { RedisConfigError } from '../errors.js';

import { jsonSerializer, type CacheSerializer } from './serializer.js';
import {
  validateTrackingOption,
  type CacheTrackingOption,
  type ResolvedCacheTracking,
} from './tracking.options.js';

/** Defaults for `CacheService`. */
export interface RedisCacheModuleOptions {
  /**
   * Time to live of an entry when a call gives none, in ms.
   * @defaultValue 60000
   */
  ttl?: number;
  /**
   * How long an entry outlives its TTL as a stale fallback (stale-if-error, soft timeouts),
   * when a call gives none, in ms. The Redis TTL is `ttl + grace`.
   * @defaultValue 0
   */
  grace?: number;
  /**
   * The in-process tier in front of Redis, kept coherent across instances by pub/sub.
   * `false` turns it off.
   * @defaultValue { maxEntries: 10000, maxBytes: 67108864 }
   */
  l1?: false | RedisCacheL1Options;
  /**
   * How long the cross-instance stampede lock is held at most: if the instance loading a key
   * dies, another takes over after this, in ms.
   * @defaultValue 10000
   */
  lockTtl?: number;
  /**
   * Bound on every Redis call of the cache, in ms: past it the call counts as a miss (reads)
   * or is dropped (writes). Defaults to the module's `commandTimeout`, else 1000.
   */
  timeout?: number;
  /** How values become bytes. @defaultValue strict JSON */
  serializer?: CacheSerializer;
  /**
   * Largest value the cache stores, in bytes once serialized: `set` throws a `RangeError` for
   * a bigger one (writing nothing); `getOrSet` returns a bigger loaded value without caching it.
   * @defaultValue 1048576 (1 MiB)
   */
  maxValueBytes?: number;
}

/** Bounds of the in-process tier (`cache.l1`). */
export interface RedisCacheL1Options {
  /**
   * Most entries kept in process; the least recently used go first.
   * @defaultValue 10000
   */
  maxEntries?: number;
  /**
   * Most bytes (serialized size) kept in process.
   * @defaultValue 67108864 (64 MiB)
   */
  maxBytes?: number;
  /**
   * Server-assisted invalidation (`CLIENT TRACKING`): L1 also drops entries that clients other
   * than this module change (another service, `redis-cli`), and serves nothing while tracking
   * is not confirmed. `true` is `{ mode: 'bcast' }` (the cache's key prefix); `'default'`
   * tracks only the keys this connection read. See docs/cache-tracking.md.
   * @defaultValue false
   */
  tracking?: CacheTrackingOption;
}

/** Every default of `CacheService`; the option docs repeat them as `@defaultValue`. */
export const CACHE_DEFAULTS = {
  ttl: 60_000,
  grace: 0,
  l1MaxEntries: 10_000,
  l1MaxBytes: 64 * 1024 * 1024,
  lockTtl: 10_000,
  timeout: 1_000,
  maxValueBytes: 1024 * 1024,
} as const;

/** The `cache` options after defaults and validation. */
export interface ResolvedCacheOptions {
  ttl: number;
  grace: number;
  l1: false | { maxEntries: number; maxBytes: number; tracking: ResolvedCacheTracking };
  lockTtl: number;
  timeout: number;
  serializer: CacheSerializer;
  maxValueBytes: number;
}

/**
 * Validates the module's `cache` option once, at startup. Errors are `RedisConfigError`s
 * naming the option (`cache.l1.maxEntries`), the value and the unit expected.
 * `commandTimeout` (the module's own, in ms) is the default of `cache.timeout`.
 */
export function validateCacheOptions(
  value: unknown,
  commandTimeout: number | undefined,
): ResolvedCacheOptions {
  if (
    value !== undefined &&
    (value === null || typeof value !== 'object' || Array.isArray(value))
  ) {
    throw new RedisConfigError(
      'cache',
      value,
      '{ ttl?, grace?, l1?, lockTtl?, timeout?, serializer?, maxValueBytes? }',
    );
  }
  const c = (value ?? {}) as RedisCacheModuleOptions;
  return {
    ttl: milliseconds(c.ttl, 'cache.ttl', CACHE_DEFAULTS.ttl, MAX_TTL_MS),
    grace:
      c.grace === 0 ? 0 : milliseconds(c.grace, 'cache.grace', CACHE_DEFAULTS.grace, MAX_TTL_MS),
    l1: validateL1(c.l1),
    lockTtl: milliseconds(c.lockTtl, 'cache.lockTtl', CACHE_DEFAULTS.lockTtl, MAX_TIMER_MS),
    timeout: milliseconds(
      c.timeout,
      'cache.timeout',
      commandTimeout ?? CACHE_DEFAULTS.timeout,
      MAX_TIMER_MS,
    ),
    serializer: validateSerializer(c.serializer),
    maxValueBytes: count(
      c.maxValueBytes,
      'cache.maxValueBytes',
      CACHE_DEFAULTS.maxValueBytes,
      'bytes',
    ),
  };
}

function validateL1(value: unknown): ResolvedCacheOptions['l1'] {
  if (value === false) return false;
  if (
    value !== undefined &&
    (value === null || typeof value !== 'object' || Array.isArray(value))
  ) {
    throw new RedisConfigError('cache.l1', value, 'false or { maxEntries?, maxBytes?, tracking? }');
  }
  const l1 = (value ?? {}) as RedisCacheL1Options;
  return {
    maxEntries: count(l1.maxEntries, 'cache.l1.maxEntries', CACHE_DEFAULTS.l1MaxEntries, 'entries'),
    maxBytes: count(l1.maxBytes, 'cache.l1.maxBytes', CACHE_DEFAULTS.l1MaxBytes, 'bytes'),
    tracking: validateTrackingOption(l1.tracking),
  };
}

function validateSerializer(value: unknown): CacheSerializer {
  if (value === undefined) return jsonSerializer;
  if (
    typeof value === 'object' &&
    value !== null &&
    'serialize' in value &&
    typeof value.serialize === 'function' &&
    'deserialize' in value &&
    typeof value.deserialize === 'function'
  ) {
    return value as CacheSerializer;
  }
  throw new RedisConfigError(
    'cache.serializer',
    Object.prototype.toString.call(value),
    '{ serialize(value), deserialize(buffer) }',
  );
}

/** A duration: positive, rounded up to a whole ms (never shorter than asked), bounded. */
function milliseconds(value: unknown, label: string, fallback: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new RedisConfigError(label, value, 'a positive number of milliseconds');
  }
  const ms = Math.ceil(value);
  if (ms > max) throw new RedisConfigError(label, value, `at most ${max} milliseconds`);
  return ms;
}

/** A size or a count: a positive safe integer, in `unit`. */
function count(value: unknown, label: string, fallback: number, unit: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new RedisConfigError(label, value, `a positive integer (${unit})`);
  }
  return value;
}
