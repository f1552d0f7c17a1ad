import { createHash } from 'node:crypto';

import { keySlot } from '../toolkit/slots.js';

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
  /** Set while another instance waits for the lock holder's fill: it asks to be told. */
  waiting: (key: string): string => {
    const s = split(key);
    return s ? `cache:{${s.tag}}:w:${s.rest}` : `cache:{${key}}:wait`;
  },
  /** How many copies the entry has (`replicas`), in the entry's slot; absent: one. */
  replicas: (key: string): string => {
    const s = split(key);
    return s ? `cache:{${s.tag}}:p:${s.rest}` : `cache:{${key}}:rep`;
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

/** Most copies `replicas` may ask for: every write and delete of a key touches them all. */
export const MAX_REPLICAS = 8;

/**
 * The name of copy `index` (1 to MAX_REPLICAS - 1; copy 0 is `cacheKeys.entry`) of an entry:
 * `cache:{<digest>}:r:<key>`, its tag chosen (deterministically, so that every instance agrees)
 * so that the copies of one key hash to different slots, and so live on different cluster
 * nodes as far as the slot map allows. `keyPrefix` counts: a prefix with a hash tag of its own
 * puts every key in one slot, and then the copies share it too.
 */
export function replicaNames(key: string, keyPrefix: string): readonly string[] {
  const cached = replicaNameMemo.get(key);
  if (cached && cached.prefix === keyPrefix) return cached.names;
  const names: string[] = [];
  const slots = new Set([keySlot(keyPrefix + cacheKeys.entry(key))]);
  for (let i = 1; i < MAX_REPLICAS; i++) {
    let name = '';
    for (let salt = 0; salt < 64; salt++) {
      const tag = createHash('sha256')
        .update(`${key}\u0000${i}\u0000${salt}`)
        .digest('base64url')
        .slice(0, SLOT_DIGEST_LENGTH);
      name = `cache:{${tag}}:r:${key}`;
      if (!slots.has(keySlot(keyPrefix + name))) break;
    }
    slots.add(keySlot(keyPrefix + name));
    names.push(name);
  }
  if (replicaNameMemo.size >= REPLICA_NAME_MEMO) replicaNameMemo.clear();
  replicaNameMemo.set(key, { prefix: keyPrefix, names });
  return names;
}

/** Keys whose copy names are remembered: hot keys are the few that use copies. */
const REPLICA_NAME_MEMO = 1024;
const replicaNameMemo = new Map<string, { prefix: string; names: readonly string[] }>();

const PLAIN_KEY = /^cache:\{([^}]+)\}(?::lock|:wait|:rep)?$/s;
const DIGEST_KEY = new RegExp(
  `^cache:\\{[A-Za-z0-9_-]{${SLOT_DIGEST_LENGTH}}\\}:[elwp]:(.*}.*)$`,
  's',
);
const REPLICA_KEY = new RegExp(`^cache:\\{[A-Za-z0-9_-]{${SLOT_DIGEST_LENGTH}}\\}:r:(.+)$`, 's');
const PLAIN_ENTRY = /^cache:\{([^}]+)\}$/s;
const DIGEST_ENTRY = new RegExp(
  `^cache:\\{[A-Za-z0-9_-]{${SLOT_DIGEST_LENGTH}}\\}:e:(.*}.*)$`,
  's',
);

/**
 * The cache key a name (without key prefix) of ours belongs to: an entry, a copy, a lock or
 * a marker; undefined for anything else.
 */
export function userKeyOf(name: string): string | undefined {
  return PLAIN_KEY.exec(name)?.[1] ?? DIGEST_KEY.exec(name)?.[1] ?? REPLICA_KEY.exec(name)?.[1];
}

/** The cache key whose value (an entry or one of its copies) a name holds; else undefined. */
export function entryKeyOf(name: string): string | undefined {
  return PLAIN_ENTRY.exec(name)?.[1] ?? DIGEST_ENTRY.exec(name)?.[1] ?? REPLICA_KEY.exec(name)?.[1];
}

/** Invalidation and wake-up messages between instances. */
export const INVALIDATION_CHANNEL = 'cache:invalidate';

/*
 * No script publishes: under an ACL user without channel rights a refused PUBLISH inside a
 * script fails the script after its writes, turning a stored value into a reported outage.
 * The notification is a command of its own (CacheService.notify), whose failure changes nothing
 * that was written.
 */

/** A script of the cache: run through `defineScript`, one per connection. */
export interface CacheScriptSource {
  name: string;
  lua: string;
  /** How many keys every call passes. */
  keys: number;
  /** SHA1 of `lua`, as `EVALSHA` takes it. */
  sha: string;
}

function script(name: string, keys: number, lua: string): CacheScriptSource {
  return { name, keys, lua, sha: createHash('sha1').update(lua).digest('hex') };
}

/**
 * The read of `getOrSet`: the entry if there is one; on a miss, the stampede lock in the same
 * round trip, so that the leader runs the loader right after its one read. A caller that finds
 * the lock taken marks that it waits, so that the fill tells it. KEYS: entry, lock, waiting.
 * ARGV: token, lock TTL (ms). Returns the entry (bytes), or 0 (the lock is ours: load), or -1
 * (another caller holds it).
 */
export const READ_OR_LOCK = script(
  'cache-read-or-lock',
  3,
  `local v = redis.call('GET', KEYS[1])
if v then return v end
if redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2], 'NX') then return 0 end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
return -1`,
);

/**
 * Take the stampede lock of a key whose entry was read as stale (or, for a copy, missing),
 * and say whether an entry exists now. A caller that finds the lock taken marks that it waits.
 * KEYS: lock, entry, waiting. ARGV: token, lock TTL (ms). Returns -1 (held by another), 0
 * (ours, no entry), 1 (ours, an entry exists).
 */
export const LOCK = script(
  'cache-lock',
  3,
  `if not redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
  return -1
end
return redis.call('EXISTS', KEYS[2])`,
);

/**
 * Store an entry, give up the stampede lock (only if ARGV[3] is its token; '' for a plain
 * `set`) and record how many copies the entry has, in one round trip. KEYS: entry, lock,
 * waiting, replicas. ARGV: encoded entry, Redis TTL (ms), lock token, copies (1 or more).
 * Returns { 1 when another caller waits for this fill (and must be told) else 0, the copies
 * the entry had before (so that the writer removes the ones it no longer writes) }.
 */
export const WRITE = script(
  'cache-write',
  4,
  `redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
local before = tonumber(redis.call('GET', KEYS[4]) or '1')
if tonumber(ARGV[4]) > 1 then
  redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[2])
elseif before > 1 then
  redis.call('DEL', KEYS[4])
end
return { redis.call('DEL', KEYS[3]), before }`,
);

/**
 * Remove an entry and its copy count. KEYS: entry, replicas. Returns the copies it had (1 when
 * no count was recorded), so that the caller removes the others.
 */
export const DELETE = script(
  'cache-delete',
  2,
  `local n = tonumber(redis.call('GET', KEYS[2]) or '1')
redis.call('UNLINK', KEYS[1], KEYS[2])
return n`,
);

/**
 * Give up the stampede lock without a value (the loader failed), so a waiter can try (it is
 * always told). KEYS: lock, waiting. ARGV: token.
 */
export const ABANDON = script(
  'cache-abandon',
  2,
  `if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
redis.call('DEL', KEYS[2])
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
export const TAG_VERSION = script(
  'cache-tag-version',
  1,
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
export const TAG_BUMP = script(
  'cache-tag-bump',
  1,
  `${NEW_VERSION}
local v = new_version(redis.call('GET', KEYS[1]))
local ttl = math.max(redis.call('PTTL', KEYS[1]), tonumber(ARGV[1]))
redis.call('SET', KEYS[1], v, 'PX', ttl)
return v`,
);
