import type { RedisConnection } from '../connection/redis-connection.js';
import { RedisScript } from '../connection/script.js';
import { defineScript, type DefinedScript } from '../toolkit/script.js';

import {
  BASE64URL_CLASS,
  DIGEST_LENGTH,
  TAG_LENGTH,
  userTag,
  type SessionAddress,
} from './session-id.js';

/**
 * Session keys. Everything of one user lives in one hash slot, named by the tag `{<tag>}` that
 * starts every key:
 *
 * - `sess:{<tag>}:s:<digest>` — a session: a hash with its data as JSON (`d`, see
 *   session-data.ts) and bookkeeping (`_u` user, `_c` created, `_o` creation order in µs, `_l`
 *   last seen, `_i` idle TTL, `_a` absolute expiry, `_v` version, `_m` meta), with `PEXPIREAT`
 *   at min(`_l` + `_i`, `_a`).
 * - `sess:{<tag>}:e:<digest>` — the user id of a user's session, kept until its absolute expiry
 *   plus `OWNER_GRACE` (then, or once `SessionService.onExpired` has read it, shortened to the
 *   grace): a record that expires is gone when Redis announces it, and the handler of
 *   `onExpired` is owed the user. Written with the record, so it costs no round trip; never
 *   touched when a session slides, so a touch stays one `PEXPIREAT`.
 * - `sess:{<tag>}:u:<userId>` — the user's index: a sorted set of session digests scored by
 *   their absolute expiry (`_a`, fixed for a session's life), expiring with the latest of them.
 *   Sessions past their absolute expiry are pruned by score whenever a script reads or writes
 *   the index; sessions that ended idle (their record is gone) when a script lists the index,
 *   and the oldest few of them when a session joins it.
 *   Scoring by the absolute expiry is what lets a touch be one `PEXPIREAT` of the record
 *   (RedisSessionStore): sliding the idle expiry never has to move the index.
 *
 * Why the tag is in the id: `get(id)`, `rotate(id)`, `destroy(id)` know nothing but the id, yet
 * rotating or destroying a session must update its user's index in the same atomic step. The
 * tag is derived from the user id (session-id.ts) and copied into every id issued for that user,
 * so the id names the slot of both the session and its user's index. The alternative, a
 * pointer key `id -> user` in the id's own slot, costs a second round trip on every call and
 * cannot be updated atomically with the session in a cluster.
 *
 * Keys a script cannot know in advance (the index of the user a session belongs to, the
 * sessions listed in an index) are derived inside the script from a declared key of the same
 * slot: same `{tag}`, same key prefix, so no script ever touches two slots.
 */
export const sessionKeys = {
  record: (address: SessionAddress): string => `sess:{${address.tag}}:s:${address.digest}`,
  /** The user id of a session, outliving its record (see above). */
  owner: (address: SessionAddress): string => `sess:{${address.tag}}:e:${address.digest}`,
  index: (userId: string): string => `sess:{${userTag(userId)}}:u:${userId}`,
  /** `SCAN` (and keyspace notification) pattern of every session record. */
  records: 'sess:{*}:s:*',
  /** `SCAN` pattern of every key of ours (records and indexes). */
  all: 'sess:{*}:*',
};

/**
 * Matches a record key (without key prefix) exactly, to filter `SCAN` results and keyspace
 * notifications; the groups are the tag and the digest.
 */
export const RECORD_KEY_PATTERN = new RegExp(
  `^sess:\\{(${BASE64URL_CLASS}{${TAG_LENGTH}})\\}:s:(${BASE64URL_CLASS}{${DIGEST_LENGTH}})$`,
);

/**
 * How long the user id of a session outlives the session's absolute expiry, in ms, and how
 * long it is kept once `onExpired` has read it: longer than Redis takes to notice an expired
 * key and the notification takes to arrive.
 */
export const OWNER_GRACE = 5 * 60_000;

/**
 * What the scripts answer, by name. TypeScript compares replies with these; every script
 * declares them as Lua locals (`LUA_REPLY`), so the two sides cannot drift apart.
 */
export const REPLY = {
  /** Done. */
  OK: 1,
  /** No such session (gone, expired, someone else's, or not a user's): nothing written. */
  GONE: 0,
  /** The result would be larger than `session.maxBytes`: nothing written. */
  TOO_LARGE: -1,
  /** The session changed since it was read (version check): nothing written. */
  CONFLICT: -2,
  /** The new record's key already exists (an id collision, 2^-256): nothing written. */
  ID_TAKEN: -3,
} as const;

/** A reply code of a session script. */
export type ReplyCode = (typeof REPLY)[keyof typeof REPLY];

/** `local OK, GONE, ... = 1, 0, ...`: the reply codes as Lua locals. */
const LUA_REPLY = `
local ${Object.keys(REPLY).join(', ')} = ${Object.values(REPLY).join(', ')}
`;

/** The fields `HMGET` reads for a `SessionRow`, in order. */
export const ROW_FIELDS = ['d', '_u', '_c', '_l', '_i', '_a', '_m', '_v'] as const;

/**
 * The fields `RedisSessionStore` reads (`HMGET`) when it loads a session: data, absolute expiry,
 * last recorded use, idle timeout.
 */
export const STORE_FIELDS = ['d', '_a', '_l', '_i'] as const;

/** A session as `HMGET ROW_FIELDS` returns it: data, user, created, last seen, idle, absolute, meta, version. */
export type SessionRow = [
  string | null,
  string | null,
  string | null,
  string | null,
  string | null,
  string | null,
  string | null,
  string | null,
];

/*
 * Lua helpers. Each script includes only those it uses: `local function` statements run on
 * every call, so unused helpers would cost every call a closure for nothing.
 */

/** Now in ms (timestamps) and in µs (creation order). Redis's clock: one clock for all apps. */
const CLOCK = `
local function clock()
  local t = redis.call('TIME')
  local seconds, micros = tonumber(t[1]), tonumber(t[2])
  return seconds * 1000 + math.floor(micros / 1000), seconds * 1000000 + micros
end
`;

/** Key names derived from a declared key of the same slot. */
const NAMES = `
local DIGEST = ${DIGEST_LENGTH}
-- '<prefix>sess:{<tag>}:' from a record key '<prefix>sess:{<tag>}:s:<digest>'
local function base_of(record) return string.sub(record, 1, #record - DIGEST - 2) end
local function digest_of(record) return string.sub(record, -DIGEST) end
local function index_of(base, user) return base .. 'u:' .. user end
local function record_of(base, digest) return base .. 's:' .. digest end
local function owner_of(base, digest) return base .. 'e:' .. digest end
`;

/** Keeping a session's user past its record (needs NAMES): see `sessionKeys.owner`. */
const OWNER = `
local function remember_owner(base, digest, user, absolute)
  local key = owner_of(base, digest)
  redis.call('SET', key, user)
  redis.call('PEXPIREAT', key, absolute + ${OWNER_GRACE})
end
`;

/** Adding a new session to its user's index, with eviction (needs NAMES). */
const INDEX_ADD = `
-- Adds a new session (scored by its absolute expiry) to its user's index and evicts the oldest
-- ones beyond max (0: no limit). Oldest by creation order (_o, µs): two sessions created in the
-- same ms still have an order. The index lives until the latest absolute expiry in it.
-- Prunes sessions past their absolute expiry, and the oldest few that ended idle: bounded work
-- per new session, however many sessions the user has (listing prunes the rest).
local PRUNE_IDLE = 10
local function index_add(base, index, digest, absolute, now, max)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  for _, member in ipairs(redis.call('ZRANGE', index, 0, PRUNE_IDLE - 1)) do
    if redis.call('EXISTS', record_of(base, member)) == 0 then redis.call('ZREM', index, member) end
  end
  redis.call('ZADD', index, absolute, digest)
  local evicted = 0
  if max > 0 and redis.call('ZCARD', index) > max then
    local others = {}
    for _, member in ipairs(redis.call('ZRANGE', index, 0, -1)) do
      if member ~= digest then
        local order = redis.call('HGET', record_of(base, member), '_o')
        if order then
          others[#others + 1] = { tonumber(order), member }
        else
          redis.call('ZREM', index, member)
        end
      end
    end
    table.sort(others, function(a, b)
      if a[1] ~= b[1] then return a[1] < b[1] end
      return a[2] < b[2]
    end)
    for i = 1, #others + 1 - max do
      redis.call('DEL', record_of(base, others[i][2]), owner_of(base, others[i][2]))
      redis.call('ZREM', index, others[i][2])
      evicted = evicted + 1
    end
  end
  local pttl = redis.call('PTTL', index)
  if pttl == -1 or (pttl >= 0 and now + pttl < absolute) then
    redis.call('PEXPIREAT', index, absolute)
  end
  return evicted
end
`;

const UNINDEX = `
local function unindex(index, digest)
  redis.call('ZREM', index, digest)
  if redis.call('ZCARD', index) == 0 then redis.call('DEL', index) end
end
`;

/** The fields of a `SessionRow`, for `HMGET` inside a script. */
const ROW = `
local ROW = {${ROW_FIELDS.map((f) => `'${f}'`).join(', ')}}
`;

/**
 * Splitting and joining the top level of a JSON object as JSON.stringify writes it (no
 * whitespace; inside strings only escaped quotes and backslashes), without decoding values:
 * Redis's cjson would change numbers beyond 14 digits and turn [] into {}.
 */
const JSON_OBJECT = `
local BACKSLASH = 92
local QUOTE_OR_BACKSLASH = '["' .. string.char(BACKSLASH) .. ']'
-- s[i] opens a string; the index of its closing quote.
local function string_end(s, i)
  local j = i + 1
  while true do
    local k = string.find(s, QUOTE_OR_BACKSLASH, j)
    if string.byte(s, k) == BACKSLASH then j = k + 2 else return k end
  end
end
-- The index of the last character of the value that starts at s[i].
local function value_end(s, i)
  local c = string.byte(s, i)
  if c == 34 then return string_end(s, i) end
  if c == 123 or c == 91 then
    local depth, j = 0, i
    while true do
      local k = string.find(s, '["{}%[%]]', j)
      local b = string.byte(s, k)
      if b == 34 then
        j = string_end(s, k) + 1
      elseif b == 123 or b == 91 then
        depth, j = depth + 1, k + 1
      else
        depth, j = depth - 1, k + 1
        if depth == 0 then return k end
      end
    end
  end
  return string.find(s, '[,}]', i) - 1
end
-- The members of an object: keys (as JSON text) in order, and key -> value (as JSON text).
local function split_object(s)
  local keys, values, i = {}, {}, 2
  while i < #s do
    local key_end = string_end(s, i)
    local key = string.sub(s, i, key_end)
    local last = value_end(s, key_end + 2)
    keys[#keys + 1] = key
    values[key] = string.sub(s, key_end + 2, last)
    i = last + 2
  end
  return keys, values
end
-- Applies name/value pairs (JSON text; '' deletes) from ARGV[first] on to an object's JSON.
local function merge(s, first)
  local keys, values = split_object(s)
  for i = first, #ARGV, 2 do
    local key, value = ARGV[i], ARGV[i + 1]
    if values[key] == nil and value ~= '' then keys[#keys + 1] = key end
    if values[key] ~= nil or value ~= '' then values[key] = value end
  end
  local parts = {}
  for _, key in ipairs(keys) do
    local value = values[key]
    if value ~= '' then parts[#parts + 1] = key .. ':' .. value end
  end
  return '{' .. table.concat(parts, ',') .. '}'
end
`;

function script<T>(name: string, helpers: string[], body: string): RedisScript<T> {
  return new RedisScript<T>(name, LUA_REPLY + helpers.join('') + body);
}

/**
 * A new session. KEYS: record, index of its user. ARGV: user, idle TTL, absolute TTL, max
 * sessions per user (0: no limit), data JSON, meta JSON ('' none).
 * Returns `{OK, evicted, row}`, or `{ID_TAKEN}` if the record exists.
 */
export const CREATE = script<[ReplyCode, number?, SessionRow?]>(
  'session-create',
  [CLOCK, NAMES, INDEX_ADD, OWNER, ROW],
  `
local record, index = KEYS[1], KEYS[2]
if redis.call('EXISTS', record) == 1 then return {ID_TAKEN} end
local now, order = clock()
local idle = tonumber(ARGV[2])
local absolute = now + tonumber(ARGV[3])
local expires = math.min(now + idle, absolute)
redis.call('HSET', record, 'd', ARGV[5], '_u', ARGV[1], '_c', now, '_o', order, '_l', now,
  '_i', idle, '_a', absolute, '_v', 1)
if ARGV[6] ~= '' then redis.call('HSET', record, '_m', ARGV[6]) end
redis.call('PEXPIREAT', record, expires)
local base, digest = base_of(record), digest_of(record)
local evicted = index_add(base, index, digest, absolute, now, tonumber(ARGV[4]))
remember_owner(base, digest, ARGV[1], absolute)
return {OK, evicted, redis.call('HMGET', record, unpack(ROW))}`,
);

/**
 * Slides the idle expiry (never past the absolute one); a session that is gone stays gone.
 * KEYS: record. ARGV: new idle TTL ('' keeps the session's own), '1' to return the session,
 * the idle timeout to record ('' or absent: the new idle TTL; express-session's cookie may
 * have less left than its full idle timeout).
 * Returns `{OK, now, expiresAt[, row]}` or `{GONE}`.
 */
export const TOUCH = script<[ReplyCode, number?, number?, SessionRow?]>(
  'session-touch',
  [CLOCK, ROW],
  `
local record = KEYS[1]
local f = redis.call('HMGET', record, '_i', '_a')
if not f[2] then return {GONE} end
local now = clock()
local idle = tonumber(ARGV[1] ~= '' and ARGV[1] or f[1])
local expires = math.min(now + idle, tonumber(f[2]))
if expires <= now then return {GONE} end
if ARGV[1] ~= '' then
  local timeout = ARGV[3]
  if not timeout or timeout == '' then timeout = idle end
  redis.call('HSET', record, '_l', now, '_i', timeout)
else
  redis.call('HSET', record, '_l', now)
end
redis.call('PEXPIREAT', record, expires)
if ARGV[2] == '1' then return {OK, now, expires, redis.call('HMGET', record, unpack(ROW))} end
return {OK, now, expires}`,
);

/**
 * Changes the data of a live session (never creates one) and slides its idle expiry.
 * KEYS: record. ARGV: max bytes, expected version ('' any), then 'merge' and name/value pairs
 * (JSON; '' deletes), or 'replace' and the new data JSON.
 * Returns `{OK, now, expiresAt, row}`, `{GONE}`, `{TOO_LARGE, size}` or `{CONFLICT}`.
 */
export const UPDATE = script<[ReplyCode, number?, number?, SessionRow?]>(
  'session-update',
  [CLOCK, ROW, JSON_OBJECT],
  `
local record = KEYS[1]
local f = redis.call('HMGET', record, '_u', '_i', '_a', '_v', 'd', '_m')
if not f[3] then return {GONE} end
if ARGV[2] ~= '' and ARGV[2] ~= f[4] then return {CONFLICT} end
local data
if ARGV[3] == 'replace' then data = ARGV[4] else data = merge(f[5], 4) end
local size = #data + (f[6] and #f[6] or 0)
if size > tonumber(ARGV[1]) then return {TOO_LARGE, size} end
local now = clock()
local expires = math.min(now + tonumber(f[2]), tonumber(f[3]))
if expires <= now then return {GONE} end
redis.call('HSET', record, 'd', data, '_v', tonumber(f[4]) + 1, '_l', now)
redis.call('PEXPIREAT', record, expires)
return {OK, now, expires, redis.call('HMGET', record, unpack(ROW))}`,
);

/**
 * Moves a user's session to a new id: same data, same absolute expiry, old id gone, in one
 * step. KEYS: record, new record (same slot). Returns `{OK, now, expiresAt, row}`, `{GONE}`
 * (also for a session that is not a user's) or `{ID_TAKEN}`.
 */
export const ROTATE = script<[ReplyCode, number?, number?, SessionRow?]>(
  'session-rotate',
  [CLOCK, NAMES, OWNER, ROW],
  `
local old, new = KEYS[1], KEYS[2]
local f = redis.call('HMGET', old, '_u', '_i', '_a', '_v')
if not f[1] or not f[3] then return {GONE} end
local now = clock()
local expires = math.min(now + tonumber(f[2]), tonumber(f[3]))
if expires <= now then return {GONE} end
if redis.call('RENAMENX', old, new) == 0 then return {ID_TAKEN} end
redis.call('HSET', new, '_l', now, '_v', tonumber(f[4]) + 1)
local base = base_of(old)
local index = index_of(base, f[1])
redis.call('ZREM', index, digest_of(old))
redis.call('ZADD', index, f[3], digest_of(new))
redis.call('PEXPIREAT', new, expires)
redis.call('DEL', owner_of(base, digest_of(old)))
remember_owner(base, digest_of(new), f[1], tonumber(f[3]))
return {OK, now, expires, redis.call('HMGET', new, unpack(ROW))}`,
);

/**
 * Deletes a session and its index entry. KEYS: record. ARGV: the user it must belong to
 * ('' any). Returns OK, or GONE when it was gone (or someone else's).
 */
export const DESTROY = script<ReplyCode>(
  'session-destroy',
  [NAMES, UNINDEX],
  `
local record = KEYS[1]
local f = redis.call('HMGET', record, '_u', '_a')
if not f[2] then return GONE end
if ARGV[1] ~= '' and f[1] ~= ARGV[1] then return GONE end
redis.call('DEL', record)
if f[1] then
  local base = base_of(record)
  redis.call('DEL', owner_of(base, digest_of(record)))
  unindex(index_of(base, f[1]), digest_of(record))
end
return OK`,
);

/**
 * A user's live sessions, pruning the index as it goes. KEYS: index. ARGV: user.
 * Returns `{{digest, created, lastSeen, idle, absolute, meta or ''}, ...}`.
 */
export const LIST = script<Array<[string, string, string, string, string, string]>>(
  'session-list',
  [CLOCK, NAMES],
  `
local index, user = KEYS[1], ARGV[1]
local base = string.sub(index, 1, #index - #user - 2)
redis.call('ZREMRANGEBYSCORE', index, '-inf', (clock()))
local out = {}
for _, member in ipairs(redis.call('ZRANGE', index, 0, -1)) do
  local f = redis.call('HMGET', record_of(base, member), '_u', '_c', '_l', '_i', '_a', '_m')
  if f[1] == user then
    out[#out + 1] = {member, f[2], f[3], f[4], f[5], f[6] or ''}
  else
    redis.call('ZREM', index, member)
  end
end
if redis.call('ZCARD', index) == 0 then redis.call('DEL', index) end
return out`,
);

/**
 * Deletes every session of a user but one, in one step. KEYS: index. ARGV: user, digest to
 * keep ('' none). Returns how many sessions were deleted.
 */
export const DESTROY_ALL = script<number>(
  'session-destroy-all',
  [NAMES],
  `
local index, user = KEYS[1], ARGV[1]
local base = string.sub(index, 1, #index - #user - 2)
local count = 0
for _, member in ipairs(redis.call('ZRANGE', index, 0, -1)) do
  if member ~= ARGV[2] then
    local record = record_of(base, member)
    if redis.call('HGET', record, '_u') == user then
      redis.call('DEL', record, owner_of(base, member))
      count = count + 1
    end
    redis.call('ZREM', index, member)
  end
end
if redis.call('ZCARD', index) == 0 then redis.call('DEL', index) end
return count`,
);

/**
 * express-session's `set` of a session the store loaded and whose absolute expiry it knows:
 * replaces the data and sets the expiry, never creating the record. Three calls where `SAVE`
 * makes four (no clock, no read): a script's cost is mostly per call. A record that is gone,
 * or that the expiry ends (it is in the past), stays gone. Does not record the use (`_l`).
 * KEYS: record. ARGV: expiry (epoch ms, capped by the absolute one), data JSON, idle timeout.
 * Returns OK, or GONE when nothing was saved.
 */
export const RESAVE = script<ReplyCode>(
  'session-resave',
  [],
  `
local record = KEYS[1]
if redis.call('PEXPIREAT', record, ARGV[1]) == 0 then return GONE end
-- A live record has both fields: new ones mean the expiry removed it, and this made a stub.
if redis.call('HSET', record, 'd', ARGV[2], '_i', ARGV[3]) > 0 then
  redis.call('DEL', record)
  return GONE
end
redis.call('HINCRBY', record, '_v', 1)
return OK`,
);

/**
 * express-session's `get` that also touches: reads a session and slides its idle expiry, as a
 * request that loads it is a use. The idle timeout is the session's own (`_i`, what its last
 * save or touch used), so the touch express-session makes at the end of the request usually
 * asks for the expiry this already set (RedisSessionStore then skips it). Records the use
 * (`_l`) when the last recorded one is older than the resolution (or half the idle timeout).
 * KEYS: record. ARGV: now (the application's clock, ms, as for a touch), resolution (ms).
 * Returns `{d, _a, _l, _i, expiresAt}` (no expiresAt when nothing slid), or nil when the
 * session is gone.
 */
export const LOAD_AND_TOUCH = script<
  [string, string, string | number | null, string | null, number?] | null
>(
  'session-load-touch',
  [CLOCK],
  `
local record = KEYS[1]
local f = redis.call('HMGET', record, ${STORE_FIELDS.map((f) => `'${f}'`).join(', ')})
if not f[1] or not f[2] then return false end
local now, idle = tonumber(ARGV[1]), tonumber(f[4])
if not idle then return f end
local expires = math.min(now + idle, tonumber(f[2]))
if expires <= now then return false end
redis.call('PEXPIREAT', record, expires)
if now - (tonumber(f[3]) or 0) >= math.min(tonumber(ARGV[2]), idle / 2) then
  f[3] = (clock())
  redis.call('HSET', record, '_l', f[3])
end
f[5] = expires
return f`,
);

/**
 * express-session's `set`: replaces the data of a session, creating it only when allowed (a
 * session the store loaded is never re-created: a request still running when the session was
 * destroyed must not bring it back). KEYS: record[, index of the user a new session belongs
 * to]. ARGV: '1' may create, user ('' none), idle TTL (from now), absolute TTL, max sessions per
 * user, data JSON, the idle timeout to record (`_i`). Returns `{OK, now, expiresAt, evicted}` or
 * `{GONE}`.
 */
export const SAVE = script<[ReplyCode, number?, number?, number?]>(
  'session-save',
  [CLOCK, NAMES, INDEX_ADD, OWNER],
  `
local record = KEYS[1]
local f = redis.call('HMGET', record, '_a', '_v')
local now, order = clock()
local idle = tonumber(ARGV[3])
if f[1] then
  local expires = math.min(now + idle, tonumber(f[1]))
  if expires <= now then return {GONE} end
  redis.call('HSET', record, 'd', ARGV[6], '_l', now, '_i', ARGV[7], '_v', tonumber(f[2]) + 1)
  redis.call('PEXPIREAT', record, expires)
  return {OK, now, expires, 0}
end
if ARGV[1] ~= '1' then return {GONE} end
local absolute = now + tonumber(ARGV[4])
local expires = math.min(now + idle, absolute)
redis.call('HSET', record, 'd', ARGV[6], '_c', now, '_o', order, '_l', now, '_i', ARGV[7],
  '_a', absolute, '_v', 1)
redis.call('PEXPIREAT', record, expires)
if ARGV[2] == '' then return {OK, now, expires, 0} end
redis.call('HSET', record, '_u', ARGV[2])
local base, digest = base_of(record), digest_of(record)
local evicted = index_add(base, KEYS[2], digest, absolute, now, tonumber(ARGV[5]))
remember_owner(base, digest, ARGV[2], absolute)
return {OK, now, expires, evicted}`,
);

/**
 * The user of a session whose record has expired, for `SessionService.onExpired`; shortens
 * what is left of the owner key's life to `OWNER_GRACE`, so it does not linger until the
 * absolute expiry, while other processes listening still find it. KEYS: owner key.
 * Returns the user id, or nil (not a user's session, or one older than owner keys).
 */
export const EXPIRED_OWNER = script<string | null>(
  'session-expired-owner',
  [],
  `
local user = redis.call('GET', KEYS[1])
if user and redis.call('PTTL', KEYS[1]) > ${OWNER_GRACE} then
  redis.call('PEXPIRE', KEYS[1], ${OWNER_GRACE})
end
return user`,
);

/**
 * The session scripts, defined on one connection through the module's `defineScript`: run by
 * `EVALSHA` with the `NOSCRIPT` fallback, keys checked (and, on a cluster, checked to share a
 * slot) before anything is sent, a failure on the server a `RedisScriptError`. The constants
 * above are their sources (name, Lua, SHA).
 */
export function sessionScripts(connection: RedisConnection) {
  const define = <T>(source: RedisScript<T>, keys: number): DefinedScript<T> =>
    defineScript<T>(connection, source.name, source.lua, { keys });
  return {
    create: define(CREATE, 2),
    touch: define(TOUCH, 1),
    update: define(UPDATE, 1),
    rotate: define(ROTATE, 2),
    destroy: define(DESTROY, 1),
    list: define(LIST, 1),
    destroyAll: define(DESTROY_ALL, 1),
    resave: define(RESAVE, 1),
    loadAndTouch: define(LOAD_AND_TOUCH, 1),
    /** KEYS[2] is the user's index, or the record again for a session without a user. */
    save: define(SAVE, 2),
    expiredOwner: define(EXPIRED_OWNER, 1),
  };
}

/** The session scripts of one connection. */
export type SessionScripts = ReturnType<typeof sessionScripts>;
