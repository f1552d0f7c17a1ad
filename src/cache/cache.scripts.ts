import { RedisScript } from '../connection/script.js';

/**
 * Cache keys. An entry and its stampede lock share a hash slot (`{...}` around the whole key),
 * so the fill script below is cluster-safe; tag counters live in slots of their own and are
 * only ever touched one per command.
 */
export const cacheKeys = {
  entry: (key: string): string => `cache:{${key}}`,
  lock: (key: string): string => `cache:{${key}}:lock`,
  tag: (tag: string): string => `cache:tag:{${tag}}`,
  /** SCAN pattern of every entry (and lock) whose key starts with `prefix` (already glob-escaped). */
  pattern: (escapedPrefix: string): string => `cache:{${escapedPrefix}*`,
};

/** Invalidation and wake-up messages between instances. */
export const INVALIDATION_CHANNEL = 'cache:invalidate';

/**
 * Store a loaded value, give up the stampede lock (only if still ours) and tell every instance,
 * in one round trip. KEYS: entry, lock. ARGV: encoded entry, Redis TTL (ms), lock token,
 * channel, message.
 */
export const FILL = new RedisScript<number>(
  'cache-fill',
  `redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1`,
);

/**
 * Give up the stampede lock without a value (the loader failed) and wake the waiters so one of
 * them can try. KEYS: lock. ARGV: token, channel, message.
 */
export const ABANDON = new RedisScript<number>(
  'cache-abandon',
  `if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1`,
);
