import { LockScript } from './module-script.js';

// Every script here may run twice: ioredis re-sends a command whose reply was lost when it
// reconnects. So an acquisition that finds its own token succeeds again (same fencing token),
// and a release leaves a tombstone for a while, so that its second run still reports success.
//
// Times come from the server (`TIME`, allowed since scripts replicate their effects), so holders
// on hosts with skewed clocks agree on who expired.
//
// Sorted sets of holders use the score as a state: a positive score is a live holder's expiry,
// a negative one `-(releasedAt + tombstone)` marks a released one. `ZREMRANGEBYSCORE -now now`
// drops both the expired holders and the tombstones that have served their time.

const NOW = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

/** Keeps a key alive at least `ms` more (never shortens it). */
const KEEP_ALIVE = `local function keep(key, ms)
  local left = redis.call('PTTL', key)
  if left < ms then redis.call('PEXPIRE', key, ms) end
end`;

/**
 * A fencing token that never goes backwards while the counter key lives, and restarts above
 * every earlier one after the key expired idle: it is at least the server's clock in ms, and
 * tokens outrun the clock only while more than one is minted per millisecond.
 */
const NEXT_FENCE = `local function nextFence(key, idle, now)
  local f = math.max(tonumber(redis.call('GET', key) or '0') + 1, now)
  redis.call('SET', key, string.format('%.0f', f), 'PX', idle)
  return f
end`;

/**
 * Announce a release when somebody waits: a waiter left its mark, or the caller knows of
 * waiters in its own process (`force` = '1'). A refused PUBLISH (ACL) must not fail the release.
 */
const ANNOUNCE = `local function announce(mark, channel, message, force)
  if force == '1' or redis.call('EXISTS', mark) == 1 then redis.pcall('PUBLISH', channel, message) end
end`;

/**
 * Shared by the semaphore scripts: the time, the live holders, and handing free permits to the
 * oldest live waiters of the queue. KEYS: holders, queue, alive.
 *
 * A queue member is `token|processId|ttl|lease`, scored by arrival (server µs). A process that
 * has waiters queued renews its liveness deadline in `alive` (process id → server ms, now +
 * lease) at least every quarter lease; the waiters of a process that stopped renewing (it died
 * or froze) are skipped once its deadline passed. A waiter of the caller's process (`self`)
 * gets its full TTL and is returned in `granted` (the caller hands it over without a message);
 * one of another process is told on its grant channel and gets at most its lease, which it
 * extends to the full TTL on receipt: a permit granted to a waiter that just died frees after
 * its lease, not its TTL.
 *
 * `grant` appends the new holders (expiry, token pairs) to `add`, so that each script writes
 * its holders (its own, a tombstone, the grants) in one ZADD. Holders with a score at or below
 * now (expired, or negative: tombstones) are not counted; releases drop them.
 */
const SEMAPHORE_PRELUDE = `
local holders, queue, alive = KEYS[1], KEYS[2], KEYS[3]
local t = redis.call('TIME')
local nowUs = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = math.floor(nowUs / 1000)
local refused = 0
local granted = {}
-- Keeps a key alive at least ms more, giving it twice that when it renews, so that a busy
-- semaphore renews its keys' TTL now and then rather than on every call.
local function keep(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, 2 * ms) end
end
local function live()
  return redis.call('ZCOUNT', holders, '(' .. now, '+inf')
end
local function grant(free, channelPrefix, self, add)
  local notify, longest = {}, 0
  while free > 0 do
    local batch = redis.call('ZRANGE', queue, 0, math.min(free, 64) - 1)
    if #batch == 0 then break end
    redis.call('ZREM', queue, unpack(batch))
    local parsed, pids = {}, {}
    for i = 1, #batch do
      local w, pid, ttl, lease = string.match(batch[i], '^(%x+)|(%x+)|(%d+)|(%d+)$')
      parsed[i] = {w, pid, tonumber(ttl), tonumber(lease)}
      pids[i] = pid or '-'
    end
    local deadlines = redis.call('HMGET', alive, unpack(pids))
    for i = 1, #batch do
      local w, pid, hold, lease = parsed[i][1], parsed[i][2], parsed[i][3], parsed[i][4]
      if w and deadlines[i] and tonumber(deadlines[i]) >= now then
        free = free - 1
        if pid == self then
          granted[#granted + 1] = w
        else
          hold = math.min(hold, lease)
          notify[pid] = notify[pid] and (notify[pid] .. ',' .. w) or w
        end
        add[#add + 1] = now + hold
        add[#add + 1] = w
        longest = math.max(longest, hold)
      end
    end
  end
  for pid, ws in pairs(notify) do
    local r = redis.pcall('PUBLISH', channelPrefix .. pid, ws)
    if type(r) == 'table' and r.err then refused = 1 end
  end
  return free, longest
end
`;

/**
 * Take a permit. Queued waiters go first: free permits are granted to the oldest live ones
 * before the caller may take one. Taken, and the caller waits (mode '1' first attempt, '2' a
 * poll), it is queued (once: a poll keeps its place); `renew` '1' also renews this process's
 * liveness. Finding its own token live (a re-run, or a grant whose message was lost) is a
 * success, renewed to the full TTL. With a permit free and nobody queued (the common case) it
 * costs `TIME`, `ZCOUNT`, an empty `ZRANGE` of the queue, `ZADD` and `PTTL`: the caller's own
 * entry is looked for only when no permit was free (a live one of ours is counted among the
 * holders, and adding it again just renews it).
 * KEYS: holders, queue, alive.
 * ARGV: token, limit, ttl, mode ('0' never queue), lease (ms), process id, grant channel
 * prefix, renew ('1' | '0').
 * Returns `{1, ttl, refused, granted...}` or `{0, ms until the first holder expires, refused,
 * granted...}`; `granted`: tokens of this process's waiters just granted a permit (maybe the
 * caller's own), `refused`: a grant notification was denied (ACL).
 */
export const SEMAPHORE_ACQUIRE = new LockScript<Array<number | string>>(
  'semaphore-acquire',
  `${SEMAPHORE_PRELUDE}
local token, ttl, mode = ARGV[1], tonumber(ARGV[3]), ARGV[4]
local add = {}
local free, longest = grant(tonumber(ARGV[2]) - live(), ARGV[7], ARGV[6], add)
local won = false
for i = 1, #granted do
  if granted[i] == token then won = true end
end
if not won then
  local mine = free <= 0 and redis.call('ZSCORE', holders, token)
  if free > 0 or (mine and tonumber(mine) > now) then
    add[#add + 1] = now + ttl
    add[#add + 1] = token
    longest = math.max(longest, ttl)
    won = true
  end
end
if #add > 0 then
  redis.call('ZADD', holders, unpack(add))
  keep(holders, longest)
end
if won then return {1, ttl, refused, unpack(granted)} end
if mode ~= '0' then
  local lease = tonumber(ARGV[5])
  if ARGV[8] == '1' then
    redis.call('HSET', alive, ARGV[6], now + lease)
    keep(alive, lease)
  end
  local member = token .. '|' .. ARGV[6] .. '|' .. ARGV[3] .. '|' .. ARGV[5]
  if redis.call('ZADD', queue, 'NX', string.format('%.0f', nowUs), member) == 1 then
    keep(queue, lease)
  end
end
local first = redis.call('ZRANGEBYSCORE', holders, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
return {0, first[2] and (tonumber(first[2]) - now) or -1, refused, unpack(granted)}`,
  3,
);

/**
 * Release a permit, leaving a tombstone for `tombstone` ms, and grant the permit it frees to the
 * oldest live waiter. KEYS: holders, queue, alive.
 * ARGV: token, tombstone (ms), limit, process id, grant channel prefix.
 * Returns `{1 released now or by an earlier run | 0 had expired or was not ours, refused,
 * granted...}` (`granted`: tokens of this process's waiters now holding a permit).
 */
export const SEMAPHORE_RELEASE = new LockScript<Array<number | string>>(
  'semaphore-release',
  `${SEMAPHORE_PRELUDE}
local token = ARGV[1]
local mine = redis.call('ZSCORE', holders, token)
if not mine then return {0, 0} end
mine = tonumber(mine)
if mine < 0 then return {1, 0} end
-- A live permit given back frees one (holders never exceed the limit): that one goes to the
-- queue without counting; other free ones (expired holders) go at the next poll or attempt.
local released, longest, free, add = 1, 0, 1, {}
if mine <= now then
  redis.call('ZREM', holders, token)
  released = 0
  free = tonumber(ARGV[3]) - live()
else
  longest = tonumber(ARGV[2])
  add[1] = -(now + longest)
  add[2] = token
end
-- Drop the expired holders and spent tombstones now and then (one release in eight, by the
-- clock): enough to keep the set small, and most releases skip it.
if nowUs % 8 < 1 then redis.call('ZREMRANGEBYSCORE', holders, -now, now) end
local _, held = grant(free, ARGV[5], ARGV[4], add)
if #add > 0 then redis.call('ZADD', holders, unpack(add)) end
-- The key outlives every holder's expiry (each write of one keeps it alive that long): our
-- tombstone needs no renewal when it ends before the permit it replaces would have.
if held > 0 or (longest > 0 and mine < now + longest) then
  keep(holders, math.max(longest, held))
end
return {released, refused, unpack(granted)}`,
  3,
);

/**
 * A waiter gives up (its wait ran out, it was aborted, the application stops) or a grant
 * reached nobody: it leaves the queue, or, if it was granted a permit meanwhile, passes the
 * permit on. KEYS: holders, queue, alive.
 * ARGV: token, limit, process id, grant channel prefix, queue member.
 * Returns `{1 it had been granted (passed on) | 0, refused, granted...}`.
 */
export const SEMAPHORE_LEAVE = new LockScript<Array<number | string>>(
  'semaphore-leave',
  `${SEMAPHORE_PRELUDE}
local token = ARGV[1]
redis.call('ZREM', queue, ARGV[5])
local mine = redis.call('ZSCORE', holders, token)
if not mine or tonumber(mine) <= now then return {0, 0} end
redis.call('ZREM', holders, token)
local add = {}
local _, longest = grant(1, ARGV[4], ARGV[3], add)
if #add > 0 then
  redis.call('ZADD', holders, unpack(add))
  keep(holders, longest)
end
return {1, refused, unpack(granted)}`,
  3,
);

/**
 * Renew a live holder (a permit or a reader). KEYS: holders. ARGV: token, ttl.
 * Returns 1, or 0 when the holder expired, was released or never existed.
 */
export const HOLDER_EXTEND = new LockScript<number>(
  'holder-extend',
  `${NOW}
${KEEP_ALIVE}
local mine = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not mine or tonumber(mine) <= now then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
keep(KEYS[1], tonumber(ARGV[2]))
return 1`,
  1,
);

/**
 * Release a holder (a permit or a reader), leaving a tombstone for `tombstone` ms.
 * KEYS: holders, waiting. ARGV: token, channel, message, tombstone (ms), announce ('1' | '0').
 * Returns 1 (released now, or by an earlier run of this release), 0 when it had expired.
 */
export const HOLDER_RELEASE = new LockScript<number>(
  'holder-release',
  `${NOW}
${KEEP_ALIVE}
${ANNOUNCE}
local mine = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not mine then return 0 end
mine = tonumber(mine)
if mine < 0 then return 1 end
if mine <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
local tombstone = tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], -(now + tombstone), ARGV[1])
keep(KEYS[1], tombstone)
announce(KEYS[2], ARGV[2], ARGV[3], ARGV[5])
return 1`,
  2,
);

/**
 * Take a read lock unless a writer holds the lock or waits for it (a waiting writer blocks new
 * readers, so a stream of readers cannot starve it).
 * KEYS: writer, readers, writersWaiting, waiting. ARGV: token, ttl, waitMarkTtl (0: no mark).
 * Returns `{1, 0}` or `{0, ms worth waiting before trying again (-1: unknown)}`.
 */
export const READ_ACQUIRE = new LockScript<[number, number]>(
  'rw-read-acquire',
  `${NOW}
${KEEP_ALIVE}
redis.call('ZREMRANGEBYSCORE', KEYS[2], -now, now)
local mine = redis.call('ZSCORE', KEYS[2], ARGV[1])
if mine and tonumber(mine) > now then return {1, 0} end
local blocked = nil
local w = redis.call('GET', KEYS[1])
if w and string.sub(w, 1, 1) ~= '-' then
  blocked = redis.call('PTTL', KEYS[1])
else
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  if first[1] then blocked = tonumber(first[2]) - now end
end
if not blocked then
  local ttl = tonumber(ARGV[2])
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
  keep(KEYS[2], ttl)
  return {1, 0}
end
if ARGV[3] ~= '0' then redis.call('SET', KEYS[4], '1', 'PX', ARGV[3]) end
return {0, blocked}`,
  4,
);

/**
 * Take the write lock when no writer holds it and no reader is live; otherwise, if the caller
 * waits, record its intent (which blocks new readers) for `waitMarkTtl` ms.
 * KEYS: writer, readers, writersWaiting, fence, waiting.
 * ARGV: token, ttl, waitMarkTtl (0: no intent, no mark), fenceIdle (ms).
 * Returns `{1, fencingToken}` or `{0, ms worth waiting (-1: unknown)}`.
 */
export const WRITE_ACQUIRE = new LockScript<[number, number]>(
  'rw-write-acquire',
  `${NOW}
${KEEP_ALIVE}
${NEXT_FENCE}
local token = ARGV[1]
local function waitFor(pttl)
  local mark = tonumber(ARGV[3])
  if mark > 0 then
    redis.call('ZADD', KEYS[3], now + mark, token)
    keep(KEYS[3], mark)
    redis.call('SET', KEYS[5], '1', 'PX', mark)
  end
  return {0, pttl}
end
local w = redis.call('GET', KEYS[1])
if w and string.sub(w, 1, 1) ~= '-' then
  if string.sub(w, 1, #token + 1) == token .. ':' then
    return {1, tonumber(string.sub(w, #token + 2))}
  end
  return waitFor(redis.call('PTTL', KEYS[1]))
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], -now, now)
if redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf') > 0 then return waitFor(-1) end
redis.call('ZREM', KEYS[3], token)
local fence = nextFence(KEYS[4], tonumber(ARGV[4]), now)
redis.call('SET', KEYS[1], token .. ':' .. string.format('%.0f', fence), 'PX', ARGV[2])
return {1, fence}`,
  5,
);

/** Renew the write lock if ours. KEYS: writer. ARGV: token, ttl. Returns 1 or 0. */
export const WRITE_EXTEND = new LockScript<number>(
  'rw-write-extend',
  `local w = redis.call('GET', KEYS[1])
if w and string.sub(w, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0`,
  1,
);

/**
 * Release the write lock if ours, leaving `-token` for `tombstone` ms (a later writer just
 * overwrites it). KEYS: writer, waiting.
 * ARGV: token, channel, message, tombstone (ms), announce ('1' | '0').
 * Returns 1 (released now or by an earlier run of this release), 0 when it was not ours.
 */
export const WRITE_RELEASE = new LockScript<number>(
  'rw-write-release',
  `${ANNOUNCE}
local w = redis.call('GET', KEYS[1])
if w == '-' .. ARGV[1] then return 1 end
if w and string.sub(w, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then
  redis.call('SET', KEYS[1], '-' .. ARGV[1], 'PX', ARGV[4])
  announce(KEYS[2], ARGV[2], ARGV[3], ARGV[5])
  return 1
end
return 0`,
  2,
);

/**
 * A writer that gave up withdraws its intent, so readers need not wait for it to expire.
 * KEYS: writersWaiting, waiting. ARGV: token, channel, message.
 */
export const WRITE_WITHDRAW = new LockScript<number>(
  'rw-write-withdraw',
  `${ANNOUNCE}
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed == 1 then announce(KEYS[2], ARGV[2], ARGV[3], '0') end
return removed`,
  2,
);

/**
 * Become leader if nobody is; stay leader if we are (also a re-run of our own claim).
 * KEYS: leader, term. ARGV: token, ttl, termIdle (ms).
 * Returns `{1, term}` or `{0, the leader's remaining ms}`.
 */
export const LEADER_CLAIM = new LockScript<[number, number]>(
  'leader-claim',
  `${NEXT_FENCE}
local token = ARGV[1]
local v = redis.call('GET', KEYS[1])
if v then
  if string.sub(v, 1, #token + 1) == token .. ':' then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, tonumber(string.sub(v, #token + 2))}
  end
  return {0, redis.call('PTTL', KEYS[1])}
end
${NOW}
local term = nextFence(KEYS[2], tonumber(ARGV[3]), now)
redis.call('SET', KEYS[1], token .. ':' .. string.format('%.0f', term), 'PX', ARGV[2])
return {1, term}`,
  2,
);

/** Renew our leadership. KEYS: leader. ARGV: token, ttl. Returns 1, or 0 when not leader. */
export const LEADER_RENEW = WRITE_EXTEND;

/**
 * Step down if leader, and announce it so that a follower takes over at once.
 * KEYS: leader. ARGV: token, channel, message. Returns 1, or 0 when not leader (also a re-run).
 */
export const LEADER_RESIGN = new LockScript<number>(
  'leader-resign',
  `local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then
  redis.call('DEL', KEYS[1])
  redis.pcall('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0`,
  1,
);
