import { Inject, Injectable, Logger, Optional } from '@nestjs/common';

import type { RedisClient } from '../connection/client-factory.js';
import { RedisConnection } from '../connection/redis-connection.js';
import { getRedisConnectionToken } from '../connection/tokens.js';
import { RedisSessionError } from '../errors.js';
import { PubSubService } from '../pubsub/pubsub.service.js';
import type { KeyEventSubscription } from '../pubsub/pubsub.types.js';
import { RedisService } from '../redis.service.js';
import { trace } from '../telemetry/tracing.js';

import {
  checkPlainObject,
  describeValue,
  encodeData,
  encodePatch,
  strictJson,
} from './session-data.js';
import { watchExpiredSessions } from './session-expiry.js';
import { addressOfId, isSessionId, mintId, userTag, type SessionAddress } from './session-id.js';
import {
  checkSize,
  checkTtl,
  checkUserId,
  describeReference,
  parseReference,
  toSession,
  toSummary,
} from './session-row.js';
import { SessionStoreBackend, STORE_BACKEND } from './session-store-backend.js';
import type { ResolvedSessionOptions } from './session.options.js';
import {
  REPLY,
  ROW_FIELDS,
  sessionKeys,
  sessionScripts,
  type SessionRow,
  type SessionScripts,
} from './session.scripts.js';
import type {
  CreateSessionOptions,
  DestroyAllSessionsOptions,
  DestroySessionOptions,
  Session,
  SessionData,
  SessionExpiredHandler,
  SessionSummary,
  SessionUpdate,
} from './session.types.js';

export type {
  CreateSessionOptions,
  DestroyAllSessionsOptions,
  DestroySessionOptions,
  ExpiredSession,
  Session,
  SessionData,
  SessionExpiredHandler,
  SessionMeta,
  SessionSummary,
  SessionUpdate,
} from './session.types.js';
export { checkUserId } from './session-row.js';

/** Attempts of a function `update` that keeps losing to writers in other processes. */
const MAX_UPDATE_ATTEMPTS = 50;
/** Upper bound of the random wait after a lost compare-and-set, in ms. */
const MAX_UPDATE_BACKOFF = 50;
/** Attempts at a fresh id: a collision of 256 random bits does not happen twice. */
const MAX_ID_ATTEMPTS = 3;

/** `update`'s version check failed: read again and retry. */
const CONFLICT = Symbol('conflict');

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
  private readonly logger: Logger;
  private readonly scripts: SessionScripts;
  private backend?: SessionStoreBackend;

  constructor(
    @Inject(getRedisConnectionToken()) private readonly connection: RedisConnection,
    private readonly redis: RedisService,
    // Optional so that a SessionService built by hand (or by a factory that predates
    // onExpired) still works; only onExpired needs it.
    @Optional() private readonly pubsub?: PubSubService,
  ) {
    this.logger = new Logger(`Redis:${connection.name}:SessionService`);
    this.scripts = sessionScripts(connection);
  }

  private get client(): RedisClient {
    return this.connection.client;
  }

  private get defaults(): ResolvedSessionOptions {
    return this.connection.config.session;
  }

  /**
   * Starts a session for `userId`. With `session.maxSessionsPerUser` set, the user's oldest
   * sessions beyond it end in the same step. Throws (writing nothing) for an empty `userId`,
   * a non-positive TTL, data that JSON cannot represent or a session over `session.maxBytes`.
   */
  create<T extends object>(
    userId: string,
    data: T,
    options: CreateSessionOptions = {},
  ): Promise<Session<T>> {
    return trace('session.create', { connection: this.connection.name }, async () => {
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
        const reply = await this.scripts.create.run(
          [sessionKeys.record(address), sessionKeys.index(userId)],
          [userId, ttl, absoluteTtl, this.defaults.maxSessionsPerUser ?? 0, json, meta],
        );
        if (reply[0] === REPLY.OK) {
          const session = toSession<T>(id, address, reply[2]);
          if (session) return session;
        }
        if (attempt === MAX_ID_ATTEMPTS) throw idCollision(method);
      }
    });
  }

  /**
   * The session, or `null` when it does not exist, has expired, or `id` is malformed
   * (malformed ids never reach Redis). Does not extend the session: see `touch`.
   */
  get<T extends object = SessionData>(id: string): Promise<Session<T> | null> {
    return trace('session.get', { connection: this.connection.name }, async () => {
      if (!isSessionId(id)) return null;
      const address = addressOfId(id);
      return toSession<T>(id, address, await this.read(address));
    });
  }

  /**
   * Marks the session as used: its idle expiry slides to now + ttl, never past its absolute
   * expiry. Returns the session, or `null` when it is gone (it is never brought back).
   */
  touch<T extends object = SessionData>(id: string): Promise<Session<T> | null> {
    return trace('session.touch', { connection: this.connection.name }, async () => {
      if (!isSessionId(id)) return null;
      const address = addressOfId(id);
      const reply = await this.scripts.touch.run([sessionKeys.record(address)], ['', '1']);
      if (reply[0] !== REPLY.OK) return null;
      return toSession<T>(id, address, reply[3]);
    });
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
  update<T extends object = SessionData>(
    id: string,
    change: SessionUpdate<T>,
  ): Promise<Session<T> | null> {
    return trace('session.update', { connection: this.connection.name }, async () => {
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
    });
  }

  /**
   * Replaces the session's id with a new one (same data, user and absolute expiry) and ends
   * the old id in the same step. Call it when privileges change (sign-in, password change,
   * role change) against session fixation. Returns the session under its new id, or `null`.
   */
  rotate<T extends object = SessionData>(id: string): Promise<Session<T> | null> {
    return trace('session.rotate', { connection: this.connection.name }, async () => {
      if (!isSessionId(id)) return null;
      const address = addressOfId(id);
      for (let attempt = 1; ; attempt += 1) {
        const nextId = mintId(address.tag);
        const next = addressOfId(nextId);
        const reply = await this.scripts.rotate.run([
          sessionKeys.record(address),
          sessionKeys.record(next),
        ]);
        if (reply[0] === REPLY.OK) return toSession<T>(nextId, next, reply[3]);
        if (reply[0] !== REPLY.ID_TAKEN) return null;
        if (attempt === MAX_ID_ATTEMPTS) throw idCollision('SessionService.rotate');
      }
    });
  }

  /**
   * Ends a session, given its id or a handle from `listByUser`. With `userId`, only if the
   * session is that user's. Returns `false` when there was nothing to end.
   */
  destroy(idOrHandle: string, options: DestroySessionOptions = {}): Promise<boolean> {
    return trace('session.destroy', { connection: this.connection.name }, async () => {
      const method = 'SessionService.destroy';
      checkPlainObject(method, 'options', options);
      if (options.userId !== undefined) checkUserId(method, options.userId);
      const address = parseReference(idOrHandle);
      if (!address) return false;
      const deleted = await this.scripts.destroy.run(
        [sessionKeys.record(address)],
        [options.userId ?? ''],
      );
      return deleted === REPLY.OK;
    });
  }

  /**
   * The user's live sessions, most recently used first, each with the handle that
   * `destroy` accepts. Expired entries are pruned from the index on the way.
   */
  async listByUser(userId: string): Promise<SessionSummary[]> {
    checkUserId('SessionService.listByUser', userId);
    const tag = userTag(userId);
    const rows = await this.scripts.list.run([sessionKeys.index(userId)], [userId]);
    return rows
      .map(([digest, created, lastSeen, idle, absolute, meta]) =>
        toSummary({ tag, digest }, { userId, created, lastSeen, idle, absolute, meta }),
      )
      .sort((a, b) => b.lastSeenAt - a.lastSeenAt || b.createdAt - a.createdAt);
  }

  /**
   * Ends every session of the user ("log out everywhere") in one atomic step, except the one
   * named by `except` if given. Returns how many sessions ended.
   */
  destroyAllForUser(userId: string, options: DestroyAllSessionsOptions = {}): Promise<number> {
    return trace('session.destroyAllForUser', { connection: this.connection.name }, async () => {
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
      return this.scripts.destroyAll.run([sessionKeys.index(userId)], [userId, keep]);
    });
  }

  /**
   * Calls `handler` with the handle and user of every session that Redis ends because its time
   * was up (idle or absolute expiry; not `destroy`, `rotate` or "log out everywhere"), in
   * every process that called it: use it to audit, notify, or clean up what belonged to the
   * session, and make once-only work idempotent. Built on keyspace notifications (`expired`),
   * so it needs `notify-keyspace-events` to include `Kx` (or the module option
   * `pubsub.keyspaceEvents: 'configure'`); without them it resolves `{ active: false, reason }`
   * and logs once which flags to set, as `PubSubService.onKeyEvent` does.
   *
   * @example
   * ```ts
   * const sub = await sessions.onExpired(({ handle, userId }) =>
   *   audit.log('session expired', { handle, userId }),
   * );
   * if (!sub.active) logger.warn(`session expiry not tracked: ${sub.reason}`);
   * ```
   */
  onExpired(handler: SessionExpiredHandler): Promise<KeyEventSubscription> {
    return watchExpiredSessions(this.connection, this.scripts, this.pubsub, handler, this.logger);
  }

  /**
   * Internal: the operations `RedisSessionStore` (the express-session entry) builds on, made
   * on first use. Keyed by a symbol so that it is no part of the public API.
   */
  [STORE_BACKEND](): SessionStoreBackend {
    this.backend ??= new SessionStoreBackend(this.connection, this.redis, this.scripts);
    return this.backend;
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
      const current = toSession<T>(id, address, row);
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
    throw new RedisSessionError(
      'REDIS_SESSION_CONFLICT',
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
    const reply = await this.scripts.update.run(
      [sessionKeys.record(address)],
      [this.defaults.maxBytes, version, ...change],
    );
    switch (reply[0]) {
      case REPLY.OK:
        return toSession<T>(id, address, reply[3]);
      case REPLY.TOO_LARGE:
        // Throws: the script measured more than maxBytes.
        this.checkSize('SessionService.update', 'would be', Number(reply[1]));
        return null;
      case REPLY.CONFLICT:
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
    checkSize(method, verb, size, this.defaults.maxBytes);
  }
}

function idCollision(method: string): RedisSessionError {
  return new RedisSessionError(
    'REDIS_SESSION_ID_COLLISION',
    `${method}: ${MAX_ID_ATTEMPTS} fresh session ids in a row were already taken, which 256 random bits cannot explain; ` +
      'check that nothing else writes keys under "sess:"',
  );
}
