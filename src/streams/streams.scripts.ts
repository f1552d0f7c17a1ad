import { RedisScript } from '../connection/script.js';

/**
 * Moves a message to the dead-letter stream and acknowledges it, in one step: a crash between
 * the two can neither lose the message nor dead-letter it twice. Safe to run twice (a re-sent
 * command after a lost reply): the second run finds the message no longer pending.
 * KEYS: stream, dead, errors. ARGV: group, id, data, deliveries, error ('' for the last one
 * recorded).
 */
export const DEAD_LETTER = new RedisScript<number>(
  'streams.deadLetter',
  `local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 then return 0 end
local err = ARGV[5]
if err == '' then
  err = redis.call('HGET', KEYS[3], ARGV[2]) or 'its consumer stopped during the last attempt'
end
redis.call('XADD', KEYS[2], '*', 'd', ARGV[3], 'id', ARGV[2], 'group', ARGV[1],
  'deliveries', ARGV[4], 'error', err)
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
return 1`,
);

/**
 * Acknowledges a message and forgets its last error. KEYS: stream, errors. ARGV: group, id.
 */
export const ACK = new RedisScript<number>(
  'streams.ack',
  `local n = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
return n`,
);

/**
 * Records a handler's error for a message, kept as long as the errors hash is used.
 * KEYS: errors. ARGV: id, error, ttl ms.
 */
export const RECORD_ERROR = new RedisScript<number>(
  'streams.recordError',
  `redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1`,
);

/**
 * Resets the idle time of the messages this consumer is still handling, so nobody takes them
 * over, but only those it still owns: one that another consumer took over stays theirs.
 * KEYS: stream. ARGV: group, consumer, ids...
 */
export const KEEP_CLAIMED = new RedisScript<number>(
  'streams.keepClaimed',
  `local kept = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    kept = kept + 1
  end
end
return kept`,
);
