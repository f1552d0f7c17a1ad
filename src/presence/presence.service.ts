import { Inject, Injectable, Logger, type BeforeApplicationShutdown } from '@nestjs/common';

import type { RedisConnection } from '../connection/redis-connection.js';
import { RedisScript } from '../connection/script.js';
import { getRedisConnectionToken } from '../connection/tokens.js';
import { PubSubService } from '../pubsub/pubsub.service.js';
import type { Unsubscribe } from '../pubsub/pubsub.types.js';
import { checkDuration, checkInteger, checkName, shown } from '../toolkit/args.js';
import type { RecordValue } from '../toolkit/records.js';
import { hashTag } from '../toolkit/slots.js';

/** The fields a member publishes about itself (status, version, load…). */
export type PresenceFields = Record<string, RecordValue>;

/** One member of a presence space, as `get` and `list` give it. */
export interface PresenceEntry {
  /** The member's id. */
  id: string;
  /** The fields of its last heartbeat (merged over earlier ones). */
  fields: PresenceFields;
  /** When its last heartbeat arrived (server clock). */
  lastSeen: Date;
}

/** A change in a presence space, as `watch` delivers it. */
export interface PresenceChange {
  type: 'join' | 'update' | 'leave';
  id: string;
  /** The heartbeat's fields (join, update). */
  fields?: PresenceFields;
  /** Why a member left: it said so (`leave()`), or its heartbeats stopped (`expired`). */
  reason?: 'left' | 'expired';
  /** When it happened (server clock). */
  at: Date;
}

/** Options of `heartbeat`. */
export interface HeartbeatOptions {
  /** How long the member counts as present without another heartbeat, in ms (at most a day). */
  ttl: number;
}

/** Options of `list`. */
export interface PresenceListOptions {
  /** Leave out members whose last heartbeat is older than this many ms. */
  staleAfter?: number;
  /** Members per page (at most 1,000). @defaultValue 100 */
  count?: number;
  /** The `cursor` of the previous page; omit for the first. */
  cursor?: string;
}

/** Options of `watch`. */
export interface PresenceWatchOptions {
  /**
   * How often (ms) this watcher looks for members whose heartbeats stopped, to announce their
   * departure. Any process's heartbeat, `list` or watcher announces them too, once each.
   * @defaultValue 1000
   */
  pruneInterval?: number;
}

const MAX_FIELDS = 200;
const INDEX_IDLE_MS = 24 * 3600_000;

// KEYS: record, index. ARGV: id, ttl, channel, fields (name, json)...
// The record's TTL and its index score move together; a join or update notice is published
// with pcall: a refused PUBLISH (an ACL without channel rights) never fails the heartbeat.
const HEARTBEAT = new RedisScript<[string, number]>(
  'presence.heartbeat',
  `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local known = redis.call('ZSCORE', KEYS[2], ARGV[1])
local kind = 'update'
if (not known) or tonumber(known) < now then kind = 'join' end
redis.call('HSET', KEYS[1], '_seen', now)
local parts = {}
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  -- the field's JSON as the caller wrote it: cjson would round numbers and lose [] vs {}
  parts[#parts + 1] = cjson.encode(ARGV[i]) .. ':' .. ARGV[i + 1]
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[2], ${INDEX_IDLE_MS})
local body = '{"type":"' .. kind .. '","id":' .. cjson.encode(ARGV[1]) .. ',"at":' .. now
if #parts > 0 then body = body .. ',"fields":{' .. table.concat(parts, ',') .. '}' end
local ok = redis.pcall('PUBLISH', ARGV[3], body .. '}')
local refused = 0
if type(ok) == 'table' and ok.err then refused = 1 end
return {kind, refused}`,
);

// KEYS: record, index. ARGV: id, channel. Publishes a leave only if this call removed it.
const LEAVE = new RedisScript<number>(
  'presence.leave',
  `redis.call('DEL', KEYS[1])
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.pcall('PUBLISH', ARGV[2], cjson.encode({type = 'leave', id = ARGV[1], reason = 'left', at = now}))
return 1`,
);

// KEYS: index. ARGV: record key prefix, channel, limit. Removes members whose time is up and
// whose record is gone, announcing each departure once (whoever removes it announces it).
const PRUNE = new RedisScript<number>(
  'presence.prune',
  `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local gone = 0
for _, id in ipairs(due) do
  if redis.call('EXISTS', ARGV[1] .. id) == 0 and redis.call('ZREM', KEYS[1], id) == 1 then
    gone = gone + 1
    redis.pcall('PUBLISH', ARGV[2], cjson.encode({type = 'leave', id = id, reason = 'expired', at = now}))
  end
end
return gone`,
);

/**
 * Who is here: members (agents, workers, users) announce themselves with heartbeats that carry
 * a few fields; a member whose heartbeats stop is gone after its `ttl`. Obtained per space from
 * `PresenceService.space(name)`.
 */
export class PresenceSpace {
  private readonly recordPrefix: string;
  private readonly index: string;
  private readonly channel: string;
  private refusedLogged = false;

  constructor(
    private readonly connection: RedisConnection,
    private readonly pubsub: PubSubService,
    private readonly logger: Logger,
    /** The space's name. */
    readonly name: string,
    private readonly watchers: Set<() => Promise<void>>,
  ) {
    const tag = hashTag(name);
    this.recordPrefix = `presence:{${tag}}:m:`;
    this.index = `presence:{${tag}}:index`;
    this.channel = `presence:{${tag}}`;
  }

  /**
   * Records that `id` is here, with `fields` (merged over earlier ones), for `ttl` ms: record,
   * expiry, index and change notice in one round trip. Resolves with `'join'` when the member
   * was not present before, `'update'` otherwise.
   */
  async heartbeat(
    id: string,
    fields: PresenceFields,
    options: HeartbeatOptions,
  ): Promise<'join' | 'update'> {
    checkName(id, 'presence id', 512);
    const ttl = checkDuration(options?.ttl, 'heartbeat options.ttl', 24 * 3600_000);
    const args: string[] = [];
    if (fields === null || typeof fields !== 'object' || Array.isArray(fields)) {
      throw new TypeError(`heartbeat fields must be an object, got ${shown(fields)}`);
    }
    for (const [field, value] of Object.entries(fields)) {
      if (value === undefined) continue;
      if (field === '' || field === '_seen') {
        throw new TypeError(`heartbeat fields: the name ${shown(field)} is reserved or empty`);
      }
      let json: string | undefined;
      try {
        json = JSON.stringify(value);
      } catch (err) {
        throw new TypeError(
          `heartbeat field "${field.slice(0, 100)}" cannot be sent as JSON: ${(err as Error).message}`,
          { cause: err },
        );
      }
      if (json === undefined) {
        throw new TypeError(
          `heartbeat field "${field.slice(0, 100)}" cannot be sent as JSON, got ${shown(value)}`,
        );
      }
      args.push(field, json);
    }
    if (args.length / 2 > MAX_FIELDS) {
      throw new RangeError(
        `heartbeat fields: at most ${MAX_FIELDS} fields, got ${args.length / 2}`,
      );
    }
    const [kind, refused] = await HEARTBEAT.run(
      this.connection.client,
      [this.recordPrefix + id, this.index],
      [id, ttl, this.connection.keyPrefix + this.channel, ...args],
    );
    if (refused && !this.refusedLogged) {
      this.refusedLogged = true;
      this.logger.warn(
        `presence space "${this.name.slice(0, 100)}": PUBLISH was refused (an ACL without channel ` +
          'rights?): heartbeats are stored, but watchers are not told of changes',
      );
    }
    return kind === 'join' ? 'join' : 'update';
  }

  /** The member, or `null` when it is not present. */
  async get(id: string): Promise<PresenceEntry | null> {
    checkName(id, 'presence id', 512);
    return toEntry(id, await this.connection.client.hgetall(this.recordPrefix + id));
  }

  /** Removes `id` at once and announces its departure. `false` when it was not present. */
  async leave(id: string): Promise<boolean> {
    checkName(id, 'presence id', 512);
    const left = await LEAVE.run(
      this.connection.client,
      [this.recordPrefix + id, this.index],
      [id, this.connection.keyPrefix + this.channel],
    );
    return left === 1;
  }

  /**
   * One page of the members present, in no particular order (a `ZSCAN` of the index, bounded
   * by `count`); `cursor` is `null` after the last page. Members whose heartbeats stopped are
   * pruned (and announced) on the way.
   */
  async list(
    options: PresenceListOptions = {},
  ): Promise<{ entries: PresenceEntry[]; cursor: string | null }> {
    const count = checkInteger(options.count ?? 100, 'list options.count', 1, 1000);
    const staleAfter =
      options.staleAfter === undefined
        ? undefined
        : checkDuration(options.staleAfter, 'list options.staleAfter', 24 * 3600_000);
    const cursor = options.cursor ?? '0';
    if (!/^\d+$/.test(cursor))
      throw new TypeError(
        `list options.cursor must come from a previous page, got ${shown(cursor)}`,
      );
    const client = this.connection.client;
    await this.prune();
    const [next, flat] = await client.zscan(this.index, cursor, 'COUNT', count);
    const ids: string[] = [];
    for (let i = 0; i < flat.length; i += 2) ids.push(flat[i]);
    const entries: PresenceEntry[] = [];
    if (ids.length > 0) {
      const pipeline = client.pipeline();
      for (const id of ids) pipeline.hgetall(this.recordPrefix + id);
      const replies = (await pipeline.exec()) ?? [];
      const oldest = staleAfter === undefined ? -Infinity : Date.now() - staleAfter;
      replies.forEach(([err, hash], i) => {
        if (err) return;
        const entry = toEntry(ids[i], hash as Record<string, string>);
        if (entry && entry.lastSeen.getTime() >= oldest) entries.push(entry);
      });
    }
    return { entries, cursor: next === '0' ? null : next };
  }

  /**
   * Calls `handler` for every join, update and departure in this space, from any process, until
   * the returned function is called (or shutdown). Departures of members whose heartbeats
   * stopped are found by a periodic prune (`pruneInterval`); delivery is at most once, like
   * pub/sub: after a reconnect, call `list` to resynchronise.
   */
  async watch(
    handler: (change: PresenceChange) => void | Promise<void>,
    options: PresenceWatchOptions = {},
  ): Promise<Unsubscribe> {
    if (typeof handler !== 'function')
      throw new TypeError(`watch handler must be a function, got ${shown(handler)}`);
    const every = checkDuration(
      options.pruneInterval ?? 1000,
      'watch options.pruneInterval',
      3600_000,
    );
    const unsubscribe = await this.pubsub.subscribe<{
      type: PresenceChange['type'];
      id: string;
      fields?: PresenceFields;
      reason?: 'left' | 'expired';
      at: number;
    }>(this.channel, (body) =>
      handler({
        type: body.type,
        id: body.id,
        ...(body.fields ? { fields: body.fields } : {}),
        ...(body.reason ? { reason: body.reason } : {}),
        at: new Date(body.at),
      }),
    );
    const timer = setInterval(() => {
      this.prune().catch((err: unknown) =>
        this.logger.debug(
          `presence prune of "${this.name.slice(0, 100)}" failed: ${this.connection.scrub(String(err))}`,
        ),
      );
    }, every);
    timer.unref();
    const stop = async (): Promise<void> => {
      this.watchers.delete(stop);
      clearInterval(timer);
      await unsubscribe();
    };
    this.watchers.add(stop);
    return stop;
  }

  /** Removes and announces members whose heartbeats stopped; resolves with how many. */
  prune(): Promise<number> {
    return PRUNE.run(
      this.connection.client,
      [this.index],
      [
        this.connection.keyPrefix + this.recordPrefix,
        this.connection.keyPrefix + this.channel,
        500,
      ],
    );
  }
}

/**
 * Presence tracking (the seeds' agent status): `space(name)` gives heartbeats, lookups, a
 * paginated list and a change feed for one group of members. Every key of a space lives in one
 * cluster hash slot.
 *
 * @example
 * ```ts
 * const agents = this.presence.space('agents');
 * await agents.heartbeat('agent-7', { status: 'busy', load: 0.4 }, { ttl: 15_000 });
 * const { entries } = await agents.list({ staleAfter: 10_000 });
 * ```
 */
@Injectable()
export class PresenceService implements BeforeApplicationShutdown {
  private readonly logger = new Logger('Redis:PresenceService');
  private readonly watchers = new Set<() => Promise<void>>();
  private readonly spaces = new Map<string, PresenceSpace>();

  constructor(
    @Inject(getRedisConnectionToken()) private readonly connection: RedisConnection,
    private readonly pubsub: PubSubService,
  ) {}

  /** The presence space `name` (created on first use; the same object for the same name). */
  space(name: string): PresenceSpace {
    checkName(name, 'presence space name', 200);
    let space = this.spaces.get(name);
    if (!space) {
      space = new PresenceSpace(this.connection, this.pubsub, this.logger, name, this.watchers);
      this.spaces.set(name, space);
    }
    return space;
  }

  /** Stops every watcher. */
  async beforeApplicationShutdown(): Promise<void> {
    await Promise.all([...this.watchers].map((stop) => stop()));
  }
}

function toEntry(id: string, hash: Record<string, string>): PresenceEntry | null {
  const seen = hash._seen;
  if (seen === undefined) return null;
  const fields: PresenceFields = {};
  for (const [name, text] of Object.entries(hash)) {
    if (name === '_seen') continue;
    try {
      fields[name] = JSON.parse(text) as RecordValue;
    } catch {
      fields[name] = text;
    }
  }
  return { id, fields, lastSeen: new Date(Number(seen)) };
}
