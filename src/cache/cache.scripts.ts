import { createHash } from 'node:crypto';
import { RedisScript } from '../connection/script.js';

/** Characters of the digest that names the slot of a key containing `}`. */
const SLOT_DIGEST_LENGTH = 12;

/**
 * The slot tag of a cache key, and where the key itself goes.
 *
 * Redis hashes only what lies between the first `{` and the first `}` after it. A key without
 * `}` is its own tag (`cache:{<key>}`, `cache:{<key>}:lock`): the first `}` after our `{` is our
 * own, so the entry and its lock share a slot, and entries written before stay readable. A key
 * containing `}` (`}x`, `a}b`, `}{`) would end the tag early, or leave it empty so that Redis
 * hashes the whole name and the entry and its lock land in different slots; such a key gets a
 * digest of itself as its tag (`cache:{<digest>}:e:<key>`, `cache:{<digest>}:l:<key>`). No key of
 * one form can spell a key of the other: the first form has no `}` but ours.
 */
function split(key: string): { tag: string; rest: string } | undefined {
  if (!key.includes('}')) return undefined;
  const tag = createHash('sha256').update(key).digest('base64url').slice(0, SLOT_DIGEST_LENGTH);
  return { tag, rest: key };
}

/**
 * Cache keys. An entry and its stampede lock always share a hash slot (see `split`), so the
 * fill script below is cluster-safe; tag counters live in slots of their own and are only ever
 * touched one per command.
 */
export const cacheKeys = {
  entry: (key: string): string => {
    const s = split(key);
    return s ? `cache:{${s.tag}}:e:${s.rest}` : `cache:{${key}}`;
  },
  lock: (key: string): string => {
    const s = split(key);
    return s ? `cache:{${s.tag}}:l:${s.rest}` : `cache:{${key}}:lock`;
  },
  tag: (tag: string): string => `cache:tag:{${tag}}`,
  /**
   * `SCAN` patterns that find every entry and lock whose key starts with `escapedPrefix`
   * (already glob-escaped), in both forms; they may match more (a digest that starts with the
   * prefix): filter with `userKeyOf`.
   */
  patterns: (escapedPrefix: string): string[] => [
    `cache:{${escapedPrefix}*`,
    `cache:{${'?'.repeat(SLOT_DIGEST_LENGTH)}}:?:${escapedPrefix}*`,
  ],
};

const PLAIN_KEY = /^cache:\{([^}]+)\}(?::lock)?$/s;
const DIGEST_KEY = new RegExp(
  `^cache:\\{[A-Za-z0-9_-]{${SLOT_DIGEST_LENGTH}}\\}:[el]:(.*}.*)$`,
  's',
);

/** The cache key an entry or lock name (without key prefix) belongs to, or undefined. */
export function userKeyOf(name: string): string | undefined {
  return PLAIN_KEY.exec(name)?.[1] ?? DIGEST_KEY.exec(name)?.[1];
}

/** Invalidation and wake-up messages between instances. */
export const INVALIDATION_CHANNEL = 'cache:invalidate';

/*
 * No script publishes: under an ACL user without channel rights a refused PUBLISH inside a
 * script fails the script after its writes, turning a stored value into a reported outage.
 * The notification is a command of its own (CacheService.notify), whose failure changes nothing
 * that was written.
 */

/**
 * Store a loaded value and give up the stampede lock (only if still ours), in one round trip.
 * KEYS: entry, lock. ARGV: encoded entry, Redis TTL (ms), lock token.
 */
export const FILL = new RedisScript<number>(
  'cache-fill',
  `redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
return 1`,
);

/**
 * Give up the stampede lock without a value (the loader failed), so a waiter can try.
 * KEYS: lock. ARGV: token.
 */
export const ABANDON = new RedisScript<number>(
  'cache-abandon',
  `if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1`,
);

/*
 * Tag versions. A version is a number that only grows, also across the counter's deletion
 * (clear(), eviction, expiry): a new one is at least the server's clock in µs, so it is higher
 * than any version handed out before (instances remember the highest version they saw, and an
 * entry is valid only under the current one). A counter expires, but never before the entries
 * written under it (TAG_VERSION extends it); a missing counter makes every entry tagged with it
 * a miss, never valid again.
 */
const NEW_VERSION = `
local function new_version(current)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  return string.format('%.0f', math.max((tonumber(current) or 0) + 1, now))
end
`;

/**
 * The current version of a tag, for an entry about to be written under it: created if missing,
 * and kept at least as long as the entry. KEYS: tag. ARGV: the entry's lifetime (ms).
 * Returns the version (a string of digits).
 */
export const TAG_VERSION = new RedisScript<string>(
  'cache-tag-version',
  `${NEW_VERSION}
local v = redis.call('GET', KEYS[1])
local ttl = tonumber(ARGV[1])
if not v then
  v = new_version(0)
  redis.call('SET', KEYS[1], v, 'PX', ttl)
elseif redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return v`,
);

/**
 * Invalidates a tag: a new, higher version. Its lifetime stays what the entries written under
 * the old one needed (or ARGV[1] ms if it had none). KEYS: tag. ARGV: lifetime (ms).
 * Returns the new version (a string of digits).
 */
export const TAG_BUMP = new RedisScript<string>(
  'cache-tag-bump',
  `${NEW_VERSION}
local v = new_version(redis.call('GET', KEYS[1]))
local ttl = math.max(redis.call('PTTL', KEYS[1]), tonumber(ARGV[1]))
redis.call('SET', KEYS[1], v, 'PX', ttl)
return v`,
);
