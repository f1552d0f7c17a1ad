import { RedisScript } from '../connection/script.js';

/**
 * Lock keys: `lock:{<resource>}` holds the owner's token, `lock:{<resource>}:fence` the fencing
 * counter, `lock:{<resource>}:w` marks that someone waits for a release. The hash tag puts all
 * three in one slot, so every script below is cluster-safe.
 */
export function lockKeys(resource: string): [lock: string, fence: string, waiting: string] {
  const lock = `lock:{${resource}}`;
  return [lock, `${lock}:fence`, `${lock}:w`];
}

/** Channel on which releases are announced (message: the resource). */
export const RELEASE_CHANNEL = 'lock:released';

/**
 * Take the lock if free and hand out the next fencing token, in one atomic step; if taken, and
 * the caller is going to wait, mark the resource as waited for (`waitMarkTtl` ms), so that the
 * release announces itself.
 * KEYS: lock, fence, waiting. ARGV: token, ttl (ms), waitMarkTtl (ms; 0: do not mark).
 * Returns `{1, fencingToken}` or `{0, pttl of the current owner}`.
 * The fence counter has no TTL: it must keep increasing across expiries (and, with
 * persistence, across restarts).
 */
export const ACQUIRE = new RedisScript<[number, number]>(
  'lock-acquire',
  `if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('INCR', KEYS[2])}
end
if ARGV[3] ~= '0' then
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])
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
 * Delete the lock only if we still own it, and announce the release when someone waits: a
 * waiter left its mark (consumed here; a waiter that loses the next race marks again), or the
 * caller knows of waiters in its own process (`announce` = '1'). Nobody waiting, no PUBLISH.
 * KEYS: lock, waiting. ARGV: token, release channel, resource, announce ('1' | '0').
 * Returns 1, or 0 when it was not ours any more.
 */
export const RELEASE = new RedisScript<number>(
  'lock-release',
  `if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if redis.call('DEL', KEYS[2]) == 1 or ARGV[4] == '1' then
    redis.call('PUBLISH', ARGV[2], ARGV[3])
  end
  return 1
end
return 0`,
);
