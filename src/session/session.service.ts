import { Inject, Injectable } from '@nestjs/common';
import type { RedisClient } from '../connection/client-factory.js';
import { RedisConnection } from '../connection/redis-connection.js';
import { getRedisConnectionToken } from '../connection/tokens.js';
import { RedisService } from '../redis.service.js';
import { checkDuration, MAX_TTL_MS } from '../common/checks.js';
import {
  checkPlainObject,
  decodeData,
  describeValue,
  encodeData,
  encodeLenient,
  encodePatch,
  strictJson,
} from './session-data.js';
import {
  addressOfHandle,
  addressOfId,
  addressOfStoreId,
  handleOf,
  isHandle,
  isSessionId,
  mintId,
  randomTag,
  userTag,
  type SessionAddress,
} from './session-id.js';
import {
  CREATE,
  DESTROY,
  DESTROY_ALL,
  LIST,
  LOAD_AND_TOUCH,
  RESAVE,
  RECORD_KEY_PATTERN,
  ROTATE,
  ROW_FIELDS,
  SAVE,
  sessionKeys,
  STORE_FIELDS,
  TOUCH,
  UPDATE,
  type SessionRow,
} from './session.scripts.js';

/** What an application stores in a session: a plain object of JSON values. */
export type SessionData = Record<string, unknown>;

/** Descriptive data about a session (device, IP, user agent), set once at `create`. */
export type SessionMeta = Record<string, unknown>;

/** A live session. Times are epoch milliseconds, measured by the Redis server's clock. */
export interface Session<T extends object = SessionData> {
  /**
   * The secret that authenticates the session: hand it to the client (cookie, header) and
   * nowhere else. 46 base64url characters; Redis stores only its SHA-256 digest.
   */
  readonly id: string;
  /** Revocation handle: `destroy(handle)` ends the session, nothing else accepts it. */
  readonly handle: string;
  readonly userId: string;
  readonly data: T;
  /** What `create` was given as `meta`, if anything. */
  readonly meta?: SessionMeta;
  readonly createdAt: number;
  /**
   * Last `create`, `touch`, `update` or `rotate`. For sessions kept by `RedisSessionStore`, its
   * loads and touches record a use at most once a minute (see `RedisSessionStore`).
   */
  readonly lastSeenAt: number;
  /** When the session expires unless used: `min(lastSeenAt + ttl, absoluteExpiresAt)`. */
  readonly expiresAt: number;
  /** When the session expires whatever happens: `createdAt + absoluteTtl`. */
  readonly absoluteExpiresAt: number;
}

/** One entry of `listByUser`: a session without its id and data, for "your devices" pages. */
export interface SessionSummary {
  /** Pass to `destroy` to end this session ("log out that device"). */
  readonly handle: string;
  readonly userId: string;
  readonly meta?: SessionMeta;
  readonly createdAt: number;
  readonly lastSeenAt: number;
  readonly expiresAt: number;
  readonly absoluteExpiresAt: number;
}

/** Options of `SessionService.create`. */
export interface CreateSessionOptions {
  /** Idle timeout in ms. @defaultValue the module's `session.ttl` (1800000) */
  ttl?: number;
  /** Absolute lifetime in ms. @defaultValue the module's `session.absoluteTtl` (86400000) */
  absoluteTtl?: number;
  /**
   * Descriptive data shown by `listByUser` (user agent, IP, login method). Counts towards
   * `session.maxBytes`.
   * @example { userAgent: req.headers['user-agent'], ip: req.ip }
   */
  meta?: SessionMeta;
}

/** Options of `SessionService.destroy`. */
export interface DestroySessionOptions {
  /**
   * Destroy only if the session belongs to this user: pass the signed-in user when a client
   * sends a handle, so that nobody can revoke someone else's sessions.
   */
  userId?: string;
}

/** Options of `SessionService.destroyAllForUser`. */
export interface DestroyAllSessionsOptions {
  /** An id or handle of a session to keep ("log out everywhere else"). */
  except?: string;
}

/** The change `update` applies: a patch to merge, or a function from old data to new. */
export type SessionUpdate<T extends object> =
  { [K in keyof T]?: T[K] | undefined } | ((data: T) => T | Promise<T>);

/** Longest user id accepted: it is part of the index key. */
const MAX_USER_ID_LENGTH = 512;
/** Attempts of a function `update` that keeps losing to writers in other processes. */
const MAX_UPDATE_ATTEMPTS = 50;
/** Upper bound of the random wait after a lost compare-and-set, in ms. */
const MAX_UPDATE_BACKOFF = 50;
/** Attempts at a fresh id: a collision of 256 random bits does not happen twice. */
const MAX_ID_ATTEMPTS = 3;
/** Sessions read per batch by `RedisSessionStore.all`. */
const LOAD_BATCH = 100;

/**
 * Server-side sessions in Redis, for one user each: idle and absolute expiry, a per-user index
 * ("log out everywhere"), rotation, and ids that a Redis dump does not reveal.
 *
 * @example
 * ```ts
 * const session = await this.sessions.create(user.id, { role: 'admin' }, { meta: { ip: req.ip } });
 * res.cookie('sid', session.id, { httpOnly: true, secure: true, sameSite: 'lax' });
 * // later, per request:
 * const current = await this.sessions.touch(req.cookies.sid); // null: signed out
 * ```
 */
@Injectable()
export class SessionService {
  /** Function updates in flight, per session digest: run one at a time in this process. */
  private readonly updating = new Map<string, Promise<void>>();

  constructor(
    @Inject(getRedisConnectionToken()) private readonly connection: RedisConnection,
    private readonly redis: RedisService,
  ) {
    backends.set(this, this.storeBackend());
  }

  private get client(): RedisClient {
    return this.connection.client;
  }

  private get defaults() {
    return this.connection.config.session;
  }

  /**
   * Starts a session for `userId`. With `session.maxSessionsPerUser` set, the user's oldest
   * sessions beyond it end in the same step. Throws (writing nothing) for an empty `userId`,
   * a non-positive TTL, data that JSON cannot represent or a session over `session.maxBytes`.
   */
  async create<T extends object>(
    userId: string,
    data: T,
    options: CreateSessionOptions = {},
  ): Promise<Session<T>> {
    const method = 'SessionService.create';
    checkUserId(method, userId);
    checkPlainObject(method, 'options', options);
    const ttl = checkTtl(method, 'ttl', options.ttl ?? this.defaults.ttl);
    const absoluteTtl = checkTtl(
      method,
      'absoluteTtl',
      options.absoluteTtl ?? this.defaults.absoluteTtl,
    );
    const json = encodeData(method, data);
    let meta = '';
    if (options.meta !== undefined) {
      checkPlainObject(method, 'meta', options.meta);
      meta = strictJson(method, options.meta, 'meta');
    }
    this.checkSize(method, 'is', Buffer.byteLength(json) + Buffer.byteLength(meta));
    const tag = userTag(userId);
    for (let attempt = 1; ; attempt += 1) {
      const id = mintId(tag);
      const address = addressOfId(id);
      const reply = await CREATE.run(
        this.client,
        [sessionKeys.record(address), sessionKeys.index(userId)],
        [userId, ttl, absoluteTtl, this.defaults.maxSessionsPerUser ?? 0, json, meta],
      );
      if (reply[0] === 1) {
        const [, now, expiresAt, absoluteExpiresAt] = reply as [number, number, number, number];
        return {
          id,
          handle: handleOf(address),
          userId,
          data: decodeData(json) as T,
          ...(meta ? { meta: JSON.parse(meta) as SessionMeta } : {}),
          createdAt: now,
          lastSeenAt: now,
          expiresAt,
          absoluteExpiresAt,
        };
      }
      if (attempt === MAX_ID_ATTEMPTS) throw idCollision(method);
    }
  }

  /**
   * The session, or `null` when it does not exist, has expired, or `id` is malformed
   * (malformed ids never reach Redis). Does not extend the session: see `touch`.
   */
  async get<T extends object = SessionData>(id: string): Promise<Session<T> | null> {
    if (!isSessionId(id)) return null;
    const address = addressOfId(id);
    return fromRow<T>(id, address, await this.read(address));
  }

  /**
   * Marks the session as used: its idle expiry slides to now + ttl, never past its absolute
   * expiry. Returns the session, or `null` when it is gone (it is never brought back).
   */
  async touch<T extends object = SessionData>(id: string): Promise<Session<T> | null> {
    if (!isSessionId(id)) return null;
    const address = addressOfId(id);
    const reply = await TOUCH.run(this.client, [sessionKeys.record(address)], ['', '1']);
    if (reply[0] !== 1) return null;
    return fromRow<T>(id, address, reply[3]);
  }

  /**
   * Changes the data atomically and slides the idle expiry; returns the updated session, or
   * `null` when it is gone (an update never brings a session back).
   *
   * - A patch object is merged property by property in one step: concurrent patches of
   *   different properties all survive; `undefined` deletes a property.
   * - A function receives the current data and returns the new data. It runs again if the
   *   session changed meanwhile (compare-and-set on a version), so it must be free of side
   *   effects; in one process, function updates of a session run one at a time.
   *
   * @example
   * ```ts
   * await sessions.update(id, { theme: 'dark' });
   * await sessions.update<{ cart: string[] }>(id, (d) => ({ ...d, cart: [...d.cart, sku] }));
   * ```
   */
  async update<T extends object = SessionData>(
    id: string,
    change: SessionUpdate<T>,
  ): Promise<Session<T> | null> {
    const method = 'SessionService.update';
    if (typeof change === 'function') {
      if (!isSessionId(id)) return null;
      const address = addressOfId(id);
      return this.serialized(address.digest, () => this.updateWith(id, address, change));
    }
    const patch = encodePatch(method, change);
    this.checkSize(method, 'would be at least', patch.size);
    if (!isSessionId(id)) return null;
    const result = await this.applyUpdate<T>(id, addressOfId(id), '', ['merge', ...patch.pairs]);
    return result === CONFLICT ? null : result;
  }

  /**
   * Replaces the session's id with a new one (same data, user and absolute expiry) and ends
   * the old id in the same step. Call it when privileges change (sign-in, password change,
   * role change) against session fixation. Returns the session under its new id, or `null`.
   */
  async rotate<T extends object = SessionData>(id: string): Promise<Session<T> | null> {
    if (!isSessionId(id)) return null;
    const address = addressOfId(id);
    for (let attempt = 1; ; attempt += 1) {
      const nextId = mintId(address.tag);
      const next = addressOfId(nextId);
      const reply = await ROTATE.run(this.client, [
        sessionKeys.record(address),
        sessionKeys.record(next),
      ]);
      if (reply[0] === 1) return fromRow<T>(nextId, next, reply[3]);
      if (reply[0] === 0) return null;
      if (attempt === MAX_ID_ATTEMPTS) throw idCollision('SessionService.rotate');
    }
  }

  /**
   * Ends a session, given its id or a handle from `listByUser`. With `userId`, only if the
   * session is that user's. Returns `false` when there was nothing to end.
   */
  async destroy(idOrHandle: string, options: DestroySessionOptions = {}): Promise<boolean> {
    const method = 'SessionService.destroy';
    checkPlainObject(method, 'options', options);
    if (options.userId !== undefined) checkUserId(method, options.userId);
    const address = parseReference(idOrHandle);
    if (!address) return false;
    const deleted = await DESTROY.run(
      this.client,
      [sessionKeys.record(address)],
      [options.userId ?? ''],
    );
    return deleted === 1;
  }

  /**
   * The user's live sessions, most recently used first, each with the handle that
   * `destroy` accepts. Expired entries are pruned from the index on the way.
   */
  async listByUser(userId: string): Promise<SessionSummary[]> {
    checkUserId('SessionService.listByUser', userId);
    const tag = userTag(userId);
    const rows = await LIST.run(this.client, [sessionKeys.index(userId)], [userId]);
    return rows
      .map(([digest, created, lastSeen, idle, absolute, meta]): SessionSummary => {
        const lastSeenAt = Number(lastSeen);
        const absoluteExpiresAt = Number(absolute);
        return {
          handle: handleOf({ tag, digest }),
          userId,
          ...(meta ? { meta: JSON.parse(meta) as SessionMeta } : {}),
          createdAt: Number(created),
          lastSeenAt,
          expiresAt: Math.min(lastSeenAt + Number(idle), absoluteExpiresAt),
          absoluteExpiresAt,
        };
      })
      .sort((a, b) => b.lastSeenAt - a.lastSeenAt || b.createdAt - a.createdAt);
  }

  /**
   * Ends every session of the user ("log out everywhere") in one atomic step, except the one
   * named by `except` if given. Returns how many sessions ended.
   */
  async destroyAllForUser(
    userId: string,
    options: DestroyAllSessionsOptions = {},
  ): Promise<number> {
    const method = 'SessionService.destroyAllForUser';
    checkUserId(method, userId);
    checkPlainObject(method, 'options', options);
    let keep = '';
    if (options.except !== undefined) {
      const address = parseReference(options.except);
      if (!address) {
        throw new TypeError(
          `${method}: except must be a session id or handle, got ${describeReference(options.except)}`,
        );
      }
      keep = address.digest;
    }
    return DESTROY_ALL.run(this.client, [sessionKeys.index(userId)], [userId, keep]);
  }

  // ---------------------------------------------------------------------------------------

  private async updateWith<T extends object>(
    id: string,
    address: SessionAddress,
    fn: (data: T) => T | Promise<T>,
  ): Promise<Session<T> | null> {
    const method = 'SessionService.update';
    for (let attempt = 1; attempt <= MAX_UPDATE_ATTEMPTS; attempt += 1) {
      const row = await this.read(address);
      const current = fromRow<T>(id, address, row);
      if (!current || !row) return null;
      const next: unknown = await fn(current.data);
      if (next === null || typeof next !== 'object' || Array.isArray(next)) {
        throw new TypeError(
          `${method}: the update function must return the new data as a plain object, got ${describeValue(next)}`,
        );
      }
      const json = encodeData(method, next);
      this.checkSize(method, 'would be at least', Buffer.byteLength(json));
      // Compare-and-set on the version read above: a concurrent change means run fn again.
      const result = await this.applyUpdate<T>(id, address, row[7] ?? '', ['replace', json]);
      if (result !== CONFLICT) return result;
      // Another process won: back off a random, growing while, so that two writers looping on
      // the same session cannot starve one of them by always reading just before it writes.
      await new Promise((resolve) =>
        setTimeout(resolve, Math.random() * Math.min(MAX_UPDATE_BACKOFF, 2 ** attempt)),
      );
    }
    throw new Error(
      `${method}: the session changed concurrently ${MAX_UPDATE_ATTEMPTS} times in a row while the update function ran; ` +
        'use a patch object for independent properties, or retry later',
    );
  }

  /** Runs UPDATE; `CONFLICT` when `version` is given and no longer matches. */
  private async applyUpdate<T extends object>(
    id: string,
    address: SessionAddress,
    version: string,
    change: string[],
  ): Promise<Session<T> | null | typeof CONFLICT> {
    const reply = await UPDATE.run(
      this.client,
      [sessionKeys.record(address)],
      [this.defaults.maxBytes, version, ...change],
    );
    switch (reply[0]) {
      case 1:
        return fromRow<T>(id, address, reply[3]);
      case -1:
        this.checkSize('SessionService.update', 'would be', Number(reply[1]));
        return null; // unreachable: checkSize threw
      case -2:
        return CONFLICT;
      default:
        return null;
    }
  }

  /** A session's fields, one round trip, no script. */
  private read(address: SessionAddress): Promise<SessionRow> {
    return this.client.hmget(sessionKeys.record(address), ...ROW_FIELDS) as Promise<SessionRow>;
  }

  /** Runs `fn` after every earlier call for the same key has settled. */
  private serialized<R>(key: string, fn: () => Promise<R>): Promise<R> {
    const previous = this.updating.get(key) ?? Promise.resolve();
    const run = previous.then(fn);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.updating.set(key, tail);
    void tail.then(() => {
      if (this.updating.get(key) === tail) this.updating.delete(key);
    });
    return run;
  }

  private checkSize(method: string, verb: string, size: number): void {
    const max = this.defaults.maxBytes;
    if (size > max) {
      throw new RangeError(
        `${method}: the session ${verb} ${size} bytes (data and meta as JSON), more than ` +
          `session.maxBytes (${max}); nothing was written. Keep large data elsewhere and store ` +
          'its key in the session, or raise session.maxBytes.',
      );
    }
  }

  /** What `RedisSessionStore` needs: sessions under express-session's ids, with or without a user. */
  private storeBackend(): SessionStoreBackend {
    const service = this;
    /** The session as `RedisSessionStore.set` stores it, within `session.maxBytes`. */
    const storeJson = (data: SessionData): string => {
      const json = encodeLenient('RedisSessionStore.set', data);
      service.checkSize('RedisSessionStore.set', 'is', Buffer.byteLength(json));
      return json;
    };
    async function* records(): AsyncGenerator<string> {
      for await (const key of service.redis.scan(sessionKeys.records)) {
        if (RECORD_KEY_PATTERN.test(key)) yield key;
      }
    }
    return {
      get defaults() {
        return service.defaults;
      },
      mintId: (userId) => mintId(userId === undefined ? randomTag() : userTag(userId)),
      belongsTo: (sid, userId) => isSessionId(sid) && sid.startsWith(userTag(userId)),
      keyOf(sid) {
        const address = addressOfStoreId(sid);
        return address ? sessionKeys.record(address) : null;
      },
      async load(key) {
        return loaded(await service.client.hmget(key, ...STORE_FIELDS));
      },
      async loadAndTouch(key, now, resolution) {
        const row = await LOAD_AND_TOUCH.run(service.client, [key], [now, resolution]);
        return row && loaded(row, row[4]);
      },
      async loadAndSlide(key, expiresAt) {
        // Both in one round trip; the expiry first, so that an expiry in the past (the absolute
        // one has come) deletes the record before it is read.
        const [slid, row] = await Promise.all([
          service.client.pexpireat(key, Math.ceil(expiresAt)),
          service.client.hmget(key, ...STORE_FIELDS),
        ]);
        return slid === 1 ? loaded(row, expiresAt) : null;
      },
      async save(key, sid, data, options) {
        const json = storeJson(data);
        const user = options.userId;
        // A session joins its user's index only if its id is in the user's slot (store.login).
        const bind = user !== undefined && isSessionId(sid) && sid.startsWith(userTag(user));
        const reply = await SAVE.run(
          service.client,
          bind ? [key, sessionKeys.index(user)] : [key],
          [
            options.create ? '1' : '0',
            bind ? user : '',
            wholeMs(options.idle),
            options.absoluteTtl,
            service.defaults.maxSessionsPerUser ?? 0,
            json,
            wholeMs(options.idleTimeout),
          ],
        );
        return reply[0] === 1;
      },
      async resave(key, data, expiresAt, idleTimeout) {
        const json = storeJson(data);
        const args = [Math.ceil(expiresAt), json, wholeMs(idleTimeout)];
        return (await RESAVE.run(service.client, [key], args)) === 1;
      },
      async touch(key, idle, idleTimeout) {
        const reply = await TOUCH.run(
          service.client,
          [key],
          [wholeMs(idle), '0', wholeMs(idleTimeout)],
        );
        return reply[0] === 1;
      },
      async slide(key, expiresAt) {
        // PEXPIREAT never creates a key: a session that is gone stays gone. The index needs no
        // change: it is scored by absolute expiry (session.scripts.ts).
        return (await service.client.pexpireat(key, Math.ceil(expiresAt))) === 1;
      },
      async destroy(key) {
        return (await DESTROY.run(service.client, [key], [''])) === 1;
      },
      async all() {
        const out: SessionData[] = [];
        let batch: string[] = [];
        const flush = async (): Promise<void> => {
          const values = await Promise.all(batch.map((key) => service.client.hget(key, 'd')));
          for (const json of values) if (json !== null) out.push(decodeData(json));
          batch = [];
        };
        for await (const key of records()) {
          batch.push(key);
          if (batch.length === LOAD_BATCH) await flush();
        }
        await flush();
        return out;
      },
      async count() {
        let n = 0;
        for await (const key of records()) if (key) n += 1;
        return n;
      },
      clear: () => service.redis.unlinkByPattern(sessionKeys.all),
    };
  }
}

/**
 * Internal: the session operations `RedisSessionStore` builds on. Not part of the public API.
 * Sessions are addressed by their record key (`keyOf`), computed once per session id.
 */
export interface SessionStoreBackend {
  readonly defaults: { ttl: number; absoluteTtl: number };
  /** A fresh id; in the slot of `userId`'s sessions when given. */
  mintId(userId?: string): string;
  /** Whether `sid` was minted in `userId`'s slot (so the session can be in the user's index). */
  belongsTo(sid: string, userId: string): boolean;
  /** The record key of an express-session id; `null` for what cannot be one. */
  keyOf(sid: string): string | null;
  /** The session, and what `touch` needs; `null` when it is gone. */
  load(key: string): Promise<LoadedSession | null>;
  /**
   * `load`, and slides the idle expiry by the session's own idle timeout (from `now`, the
   * application's clock), and records the use when the last recorded one is older than
   * `resolution` ms (or half the idle timeout). One script.
   */
  loadAndTouch(key: string, now: number, resolution: number): Promise<LoadedSession | null>;
  /**
   * `load`, and sets the expiry to `expiresAt` (epoch ms), as `slide` does: for a session whose
   * absolute expiry and idle timeout the caller knows. Two commands in one round trip.
   */
  loadAndSlide(key: string, expiresAt: number): Promise<LoadedSession | null>;
  /** Replaces the data; creates the session only if `create`. `false`: nothing was saved. */
  save(
    key: string,
    sid: string,
    data: SessionData,
    options: {
      create: boolean;
      /** The expiry: now + idle, capped by the absolute expiry. */
      idle: number;
      /** The idle timeout to record (`_i`), which `load` slides by. */
      idleTimeout: number;
      absoluteTtl: number;
      userId?: string;
    },
  ): Promise<boolean>;
  /**
   * Replaces the data of a live session and sets its expiry to `expiresAt` (epoch ms, already
   * capped by the absolute expiry), without recording the use; never creates one. `false`:
   * nothing was saved (the session is gone, or `expiresAt` has passed).
   */
  resave(key: string, data: SessionData, expiresAt: number, idleTimeout: number): Promise<boolean>;
  /**
   * Slides the idle expiry to now + `idle` (capped by the absolute one) and records the use and
   * the idle timeout.
   */
  touch(key: string, idle: number, idleTimeout: number): Promise<boolean>;
  /**
   * Sets the record's expiry to `expiresAt` (epoch ms, already capped by the absolute expiry)
   * without recording the use: one `PEXPIREAT`, for touches soon after the last recorded use.
   */
  slide(key: string, expiresAt: number): Promise<boolean>;
  destroy(key: string): Promise<boolean>;
  all(): Promise<SessionData[]>;
  count(): Promise<number>;
  clear(): Promise<number>;
}

/** What `SessionStoreBackend.load` returns. */
export interface LoadedSession {
  readonly data: SessionData;
  /** `_a`: when the session ends whatever happens (Redis clock, epoch ms). */
  readonly absoluteExpiresAt: number;
  /** `_l`: the last recorded use (Redis clock, epoch ms). */
  readonly lastSeenAt: number;
  /** `_i`: the idle timeout its last save or touch recorded, in ms. */
  readonly idle: number;
  /** The expiry the load slid the session to (epoch ms), when it did. */
  readonly expiresAt?: number;
}

const backends = new WeakMap<SessionService, SessionStoreBackend>();

/** Internal: the store backend of a `SessionService`. */
export function sessionStoreBackend(service: SessionService): SessionStoreBackend {
  const backend = backends.get(service);
  if (!backend) {
    throw new TypeError(
      'RedisSessionStore needs the SessionService instance of a RedisModule application, e.g. new RedisSessionStore(app.get(SessionService))',
    );
  }
  return backend;
}

/** A `LoadedSession` of `STORE_FIELDS` as read; `null` for a record that is gone (or a stub). */
function loaded(
  row: ReadonlyArray<string | number | null | undefined>,
  expiresAt?: number,
): LoadedSession | null {
  const [json, absolute, lastSeen, idle] = row;
  if (typeof json !== 'string' || absolute === null || absolute === undefined) return null;
  return {
    data: decodeData(json),
    absoluteExpiresAt: Number(absolute),
    lastSeenAt: Number(lastSeen),
    idle: Number(idle),
    ...(expiresAt === undefined ? {} : { expiresAt: Number(expiresAt) }),
  };
}

/** A duration for a script: whole ms, at least 1. */
function wholeMs(ms: number): number {
  return Math.max(1, Math.ceil(ms));
}

/** `update`'s version check failed: read again and retry. */
const CONFLICT = Symbol('conflict');

function fromRow<T extends object>(
  id: string,
  address: SessionAddress,
  row: SessionRow | null | undefined,
): Session<T> | null {
  // Sessions without a user are express-session's anonymous ones: not this API's business.
  // (Inside script replies a missing field may come back as false rather than null.)
  if (!row || typeof row[0] !== 'string' || !row[1]) return null;
  const [json, userId, created, lastSeen, idle, absolute, meta] = row;
  const lastSeenAt = Number(lastSeen);
  const absoluteExpiresAt = Number(absolute);
  return {
    id,
    handle: handleOf(address),
    userId,
    data: decodeData(json) as T,
    ...(meta ? { meta: JSON.parse(meta) as SessionMeta } : {}),
    createdAt: Number(created),
    lastSeenAt,
    expiresAt: Math.min(lastSeenAt + Number(idle), absoluteExpiresAt),
    absoluteExpiresAt,
  };
}

/** An id or a handle, as `destroy` takes them; `null` for anything else. */
function parseReference(value: unknown): SessionAddress | null {
  if (isSessionId(value)) return addressOfId(value);
  if (isHandle(value)) return addressOfHandle(value);
  return null;
}

/** Never prints the value itself: a near-miss id is still a secret. */
function describeReference(value: unknown): string {
  return typeof value === 'string'
    ? `a string of ${value.length} characters (ids have 46, handles 47)`
    : describeValue(value);
}

/** Throws unless `userId` is a usable user id. */
export function checkUserId(method: string, userId: unknown): asserts userId is string {
  if (typeof userId !== 'string' || userId.length === 0) {
    throw new TypeError(
      `${method}: userId must be a non-empty string, got ${describeValue(userId)}`,
    );
  }
  if (userId.length > MAX_USER_ID_LENGTH) {
    throw new RangeError(
      `${method}: userId is ${userId.length} characters long; use at most ${MAX_USER_ID_LENGTH} (e.g. the user's primary key)`,
    );
  }
}

/**
 * A session duration: more than 0 and at most a year, rounded up to a whole ms. Checked before
 * anything is sent: an expiry Redis refuses would fail a script halfway, after its writes.
 */
function checkTtl(method: string, name: string, value: unknown): number {
  return checkDuration(method, name, value, { min: 1, max: MAX_TTL_MS });
}

function idCollision(method: string): Error {
  return new Error(
    `${method}: ${MAX_ID_ATTEMPTS} fresh session ids in a row were already taken, which 256 random bits cannot explain; ` +
      'check that nothing else writes keys under "sess:"',
  );
}
