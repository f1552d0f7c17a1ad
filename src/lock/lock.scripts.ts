import { createHash } from 'node:crypto';

import { LockScript } from './module-script.js';

/** Longest resource name accepted, in UTF-8 bytes: it is part of five key names. */
export const MAX_RESOURCE_BYTES = 1_024;

/**
 * How long the holder metadata of a resource (last fencing token and holder label) outlives
 * the lock itself, in ms. Tokens stay monotonic after it expires, because every token is at
 * least the Redis server's clock in microseconds.
 */
export const META_IDLE_MS = 60 * 60_000;

/**
 * How long the record of a resource's recent releases lives after its last release, in ms: a
 * release re-sent later than this (ioredis re-sends an unanswered command once it reconnects)
 * is no longer recognised as ours.
 */
export const RELEASED_MS = 10 * 60_000;

/**
 * The keys of one resource: `lock:{<resource>}` holds the owner's token, `:f` the holder
 * metadata (a string `<last fencing token>|<holder label>`, written in one `SET ... GET`), `:q`
 * the waiting queue (tokens in arrival order), `:qe` each waiter's entry and `:r` the last few
 * released tokens (comma-separated). The hash tag puts all five in one slot. A resource
 * containing `{` or `}` would break the tag (`lock:{}x}` hashes as a whole), so such names are
 * tagged by their digest instead, in a namespace (`lock:#{…}`) no plain name can produce.
 */
export function lockKeys(
  resource: string,
): [lock: string, meta: string, queue: string, entries: string, released: string] {
  const lock = /[{}]/.test(resource)
    ? `lock:#{${createHash('sha256').update(resource).digest('hex').slice(0, 32)}}`
    : `lock:{${resource}}`;
  return [lock, `${lock}:f`, `${lock}:q`, `${lock}:qe`, `${lock}:r`];
}

/**
 * Channel prefix of direct hand-offs: a release that grants the lock to a waiter publishes
 * `<token>:<fencingToken>` on `<prefix>lock:grant:<process id>`, reaching only that process.
 */
export const GRANT_CHANNEL = 'lock:grant:';

/**
 * Shared by the scripts below: server time, taking the lock with a new fencing token, and
 * granting a free lock to the oldest live waiter. KEYS: lock, meta, queue, entries, released.
 *
 * A fencing token is max(last + 1, server time in µs): strictly increasing while the metadata
 * lives, and never below one minted earlier on any server whose clock was not ahead of this
 * one's, so neither a failover to a replica that missed the last increments nor the metadata's
 * expiry takes it back.
 *
 * Every `redis.call` costs the server's single thread time, so the paths an uncontended lock
 * takes call only what they need: `TIME` is read when a token is minted or a queue entry is
 * looked at (`clock()`); the token and the holder label are one string, written with its TTL by
 * one `SET ... GET` that also returns the last token (written on the guess that the clock moved
 * past it, written again with `last + 1` in the rare case it did not); a release leaves the
 * label in place (`INSPECT` reads it only while locked). The string also keeps an idle
 * resource's metadata small: a hash holding the released tokens grew past Redis's compact
 * encoding (464 bytes against 104, see docs/locks.md).
 */
const PRELUDE = `
local lockKey, metaKey, queueKey, entriesKey, releasedKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local nowUs, nowMs
local function clock()
  if not nowUs then
    local t = redis.call('TIME')
    nowUs = tonumber(t[1]) * 1000000 + tonumber(t[2])
    nowMs = math.floor(nowUs / 1000)
  end
end
local refused = 0
-- The lock key is already the holder's (token, TTL): mint its token, label it, keep the metadata.
local function mint(ttl, holder)
  clock()
  local idle = tonumber(ttl) + ${META_IDLE_MS}
  local old = redis.call('SET', metaKey, string.format('%.0f', nowUs) .. '|' .. holder, 'PX', idle, 'GET')
  local last = old and tonumber(string.match(old, '^(%d+)')) or 0
  if last < nowUs then return nowUs end
  redis.call('SET', metaKey, string.format('%.0f', last + 1) .. '|' .. holder, 'PX', idle)
  return last + 1
end
local handedOver = nil
local function grant(channelPrefix, self, selfPid)
  while true do
    local w = redis.call('LPOP', queueKey)
    if not w then return false end
    local e = redis.call('HGET', entriesKey, w)
    if e then
      redis.call('HDEL', entriesKey, w)
      clock()
      local dl, wttl, pid, wh = string.match(e, '^(%d+)|(%d+)|([0-9a-f]*)|(.*)$')
      if dl and tonumber(dl) >= nowMs then
        redis.call('SET', lockKey, w, 'PX', wttl)
        local f = mint(wttl, wh)
        if pid ~= '' and w ~= self then
          if pid == selfPid then
            handedOver = w
          else
            local r = redis.pcall('PUBLISH', channelPrefix .. pid, w .. ':' .. string.format('%.0f', f))
            if type(r) == 'table' and r.err then refused = 1 end
          end
        end
        return w, f
      end
    end
  end
end
`;

/**
 * Take the lock, in one atomic step: free and nobody queued → ours, with a new fencing token;
 * free with waiters queued (the holder expired or died) → the oldest live one gets it first.
 * Taken, and the caller waits (mode '1' first attempt, '2' a poll) → queued once (or its entry
 * renewed). Safe to run twice: finding our own token is a success.
 * The free lock is taken with `SET NX` before the queue is looked at, so that the common case
 * (free, nobody queued) costs `SET`, `LPOP` and the mint; a live waiter found in the queue then
 * gets the lock instead (`grant` overwrites the key).
 * KEYS: lock, meta, queue, entries, released. ARGV: token, ttl, holder, mode ('0' never
 * queue), lease (ms an entry lives without renewal), process id ('' when not subscribed),
 * channel prefix.
 * Returns `{1, fencingToken, pttl, refused}` or `{0, pttl of the holder, 0, refused}`
 * (`refused`: a PUBLISH to a granted waiter was denied, e.g. by ACL).
 */
export const ACQUIRE = new LockScript<[number, number, number, number]>(
  'lock-acquire',
  `${PRELUDE}
local token, ttl, holder, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('SET', lockKey, token, 'NX', 'PX', ttl) then
  local g, f = grant(ARGV[7], token)
  if not g then return {1, mint(ttl, holder), tonumber(ttl), refused} end
  if g == token then return {1, f, tonumber(ttl), refused} end
elseif redis.call('GET', lockKey) == token then
  -- Ours already (a re-run after a lost reply): the token the metadata holds.
  local f = tonumber(string.match(redis.call('GET', metaKey) or '', '^(%d+)'))
  return {1, f, redis.call('PTTL', lockKey), 0}
end
if mode ~= '0' then
  clock()
  local lease = tonumber(ARGV[5])
  local entry = string.format('%.0f', nowMs + lease) .. '|' .. ttl .. '|' .. ARGV[6] .. '|' .. holder
  if redis.call('HSET', entriesKey, token, entry) == 1 then
    redis.call('RPUSH', queueKey, token)
  end
  redis.call('PEXPIRE', queueKey, lease * 2)
  redis.call('PEXPIRE', entriesKey, lease * 2)
end
return {0, redis.call('PTTL', lockKey), 0, refused}`,
  5,
);

/**
 * Renew the TTL only if we still own the lock (the metadata keeps outliving it). Safe to run
 * twice. KEYS: lock, meta (optional). ARGV: token, ttl (ms). Returns 1, or 0 when gone or
 * owned by someone else.
 */
export const EXTEND = new LockScript<number>(
  'lock-extend',
  `if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  if KEYS[2] then redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]) + ${META_IDLE_MS}) end
  return 1
end
return 0`,
  2,
);

/**
 * Delete the lock if we own it and hand it to the oldest live waiter. A waiter of the
 * releasing process (`process id`) is named in the reply, with its fencing token: no message,
 * no second round trip; one of another process is told on its channel (a `pcall`: a refused
 * PUBLISH never fails the release). Released tokens are remembered (`APPEND` to `:r`, which
 * starts over with the newest one once it holds four: it keeps the last one to four, for
 * RELEASED_MS after the last release), so a release run twice (ioredis re-sends an unanswered
 * command after a reconnect) is still a success (a waiter whose grant was in the lost reply
 * finds it at its next poll).
 * KEYS: lock, meta, queue, entries, released. ARGV: token, channel prefix, process id.
 * Returns `{1 released | 0 not ours, refused}`, plus `granted token, fencing token` when the
 * lock went to a waiter of this process.
 */
export const RELEASE = new LockScript<[number, number, string?, number?]>(
  'lock-release',
  `${PRELUDE}
local token = ARGV[1]
if redis.call('GET', lockKey) == token then
  redis.call('DEL', lockKey)
  if redis.call('APPEND', releasedKey, token .. ',') > 4 * (#token + 1) then
    redis.call('SET', releasedKey, token .. ',', 'PX', ${RELEASED_MS})
  else
    redis.call('PEXPIRE', releasedKey, ${RELEASED_MS})
  end
  local w, f = grant(ARGV[2], '', ARGV[3])
  if handedOver then return {1, refused, w, f} end
  return {1, refused}
end
local r = redis.call('GET', releasedKey)
if r and string.find(r, token .. ',', 1, true) then return {1, 0} end
return {0, 0}`,
  5,
);

/**
 * A waiter gives up (its wait ran out, it was aborted, or its last attempt's outcome is
 * unknown): leave the queue, or, if the lock was granted to it meanwhile, pass it on.
 * KEYS: lock, meta, queue, entries, released. ARGV: token, channel prefix. Returns 1 when it
 * had been granted (and was passed on), else 0.
 */
export const LEAVE = new LockScript<number>(
  'lock-leave',
  `${PRELUDE}
if redis.call('GET', lockKey) == ARGV[1] then
  redis.call('DEL', lockKey)
  grant(ARGV[2], '')
  return 1
end
if redis.call('HDEL', entriesKey, ARGV[1]) == 1 then
  redis.call('LREM', queueKey, 1, ARGV[1])
end
return 0`,
  5,
);

/**
 * Who holds the lock: KEYS: lock, meta, queue, entries, released. Returns `{held (1|0), pttl,
 * fencingToken (string|nil), holder (string|nil), live waiters}`.
 */
export const INSPECT = new LockScript<[number, number, string | null, string | null, number]>(
  'lock-inspect',
  `local lockKey, metaKey, entriesKey = KEYS[1], KEYS[2], KEYS[4]
local t = redis.call('TIME')
local nowMs = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local waiting = 0
local all = redis.call('HVALS', entriesKey)
for i = 1, #all do
  local dl = string.match(all[i], '^(%d+)|')
  if dl and tonumber(dl) >= nowMs then waiting = waiting + 1 end
end
if not redis.call('GET', lockKey) then return {0, 0, false, false, waiting} end
local f, h = string.match(redis.call('GET', metaKey) or '', '^(%d+)|(.*)$')
return {1, redis.call('PTTL', lockKey), f or false, h or false, waiting}`,
  5,
);
