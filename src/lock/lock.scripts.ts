import { RedisScript } from '../connection/script.js';

/**
 * Lock keys: `lock:{<resource>}` holds the owner's token, `lock:{<resource>}:fence` the fencing
 * counter. The hash tag puts both in one slot, so every script below is cluster-safe.
 */
export function lockKeys(resource: string): [lock: string, fence: string] {
  return [`lock:{${resource}}`, `lock:{${resource}}:fence`];
}

/** Channel on which releases are announced (message: the resource). */
export const RELEASE_CHANNEL = 'lock:released';

/**
 * Take the lock if free and hand out the next fencing token, in one atomic step.
 * KEYS: lock, fence. ARGV: token, ttl (ms).
 * Returns `{1, fencingToken}` or `{0, pttl of the current owner}`.
 * The fence counter has no TTL: it must keep increasing across expiries (and, with
 * persistence, across restarts).
 */
export const ACQUIRE = new RedisScript<[number, number]>(
  'lock-acquire',
  `if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('INCR', KEYS[2])}
end
return {0, redis.call('PTTL', KEYS[1])}`,
);

/**
 * Renew the TTL only if we still own the lock. KEYS: lock. ARGV: token, ttl (ms).
 * Returns 1, or 0 when the lock is gone or owned by someone else.
 */
export const EXTEND = new RedisScript<number>(
  'lock-extend',
  `if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0`,
);

/**
 * Delete the lock only if we still own it, and wake the waiters. KEYS: lock.
 * ARGV: token, release channel, resource. Returns 1, or 0 when it was not ours any more.
 */
export const RELEASE = new RedisScript<number>(
  'lock-release',
  `if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0`,
);
