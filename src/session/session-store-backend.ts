import type { RedisClient } from '../connection/client-factory.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import type { RedisService } from '../redis.service.js';

import { decodeData, encodeLenient } from './session-data.js';
import { addressOfStoreId, isSessionId, mintId, randomTag, userTag } from './session-id.js';
import { checkSize } from './session-row.js';
import type { ResolvedSessionOptions } from './session.options.js';
import {
  RECORD_KEY_PATTERN,
  REPLY,
  sessionKeys,
  STORE_FIELDS,
  type SessionScripts,
} from './session.scripts.js';
import type { SessionData } from './session.types.js';

/**
 * Internal: what `RedisSessionStore` (the express-session entry) builds on, and how it gets it
 * from a `SessionService` without a public method: `service[STORE_BACKEND]()`. Sessions are
 * addressed by their record key (`keyOf`), computed once per session id.
 */
export const STORE_BACKEND: unique symbol = Symbol('nestjs-redis-infra:session-store-backend');

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

/** Options of `SessionStoreBackend.save`. */
export interface SaveOptions {
  /** Whether the session may be created (it was not loaded from the store). */
  create: boolean;
  /** The expiry: now + idle, capped by the absolute expiry. */
  idle: number;
  /** The idle timeout to record (`_i`), which `load` slides by. */
  idleTimeout: number;
  absoluteTtl: number;
  /** The user whose index a new session joins (`store.login`). */
  userId?: string;
}

/** Sessions read per batch by `all`. */
const LOAD_BATCH = 100;

/** Sessions under express-session's ids, with or without a user, on one connection. */
export class SessionStoreBackend {
  constructor(
    private readonly connection: RedisConnection,
    private readonly redis: RedisService,
    private readonly scripts: SessionScripts,
  ) {}

  private get client(): RedisClient {
    return this.connection.client;
  }

  /** The module's `session` options. */
  get defaults(): ResolvedSessionOptions {
    return this.connection.config.session;
  }

  /** A fresh id; in the slot of `userId`'s sessions when given. */
  mintId(userId?: string): string {
    return mintId(userId === undefined ? randomTag() : userTag(userId));
  }

  /** Whether `sid` was minted in `userId`'s slot (so the session can be in the user's index). */
  belongsTo(sid: string, userId: string): boolean {
    return isSessionId(sid) && sid.startsWith(userTag(userId));
  }

  /** The record key of an express-session id; `null` for what cannot be one. */
  keyOf(sid: string): string | null {
    const address = addressOfStoreId(sid);
    return address ? sessionKeys.record(address) : null;
  }

  /** The session, and what `touch` needs; `null` when it is gone. */
  async load(key: string): Promise<LoadedSession | null> {
    return loaded(await this.client.hmget(key, ...STORE_FIELDS));
  }

  /**
   * `load`, and slides the idle expiry by the session's own idle timeout (from `now`, the
   * application's clock), and records the use when the last recorded one is older than
   * `resolution` ms (or half the idle timeout). One script.
   */
  async loadAndTouch(key: string, now: number, resolution: number): Promise<LoadedSession | null> {
    const row = await this.scripts.loadAndTouch.run([key], [now, resolution]);
    return row && loaded(row, row[4]);
  }

  /**
   * `load`, and sets the expiry to `expiresAt` (epoch ms), as `slide` does: for a session whose
   * absolute expiry and idle timeout the caller knows. Two commands in one round trip.
   */
  async loadAndSlide(key: string, expiresAt: number): Promise<LoadedSession | null> {
    // The expiry first, so that an expiry in the past (the absolute one has come) deletes the
    // record before it is read.
    const [slid, row] = await Promise.all([
      this.client.pexpireat(key, Math.ceil(expiresAt)),
      this.client.hmget(key, ...STORE_FIELDS),
    ]);
    return slid === 1 ? loaded(row, expiresAt) : null;
  }

  /** Replaces the data; creates the session only if `create`. `false`: nothing was saved. */
  async save(key: string, sid: string, data: SessionData, options: SaveOptions): Promise<boolean> {
    const json = this.storeJson(data);
    const user = options.userId;
    // A session joins its user's index only if its id is in the user's slot (store.login).
    const bind = user !== undefined && this.belongsTo(sid, user);
    const reply = await this.scripts.save.run(bind ? [key, sessionKeys.index(user)] : [key, key], [
      options.create ? '1' : '0',
      bind ? user : '',
      wholeMs(options.idle),
      options.absoluteTtl,
      this.defaults.maxSessionsPerUser ?? 0,
      json,
      wholeMs(options.idleTimeout),
    ]);
    return reply[0] === REPLY.OK;
  }

  /**
   * Replaces the data of a live session and sets its expiry to `expiresAt` (epoch ms, already
   * capped by the absolute expiry), without recording the use; never creates one. `false`:
   * nothing was saved (the session is gone, or `expiresAt` has passed).
   */
  async resave(
    key: string,
    data: SessionData,
    expiresAt: number,
    idleTimeout: number,
  ): Promise<boolean> {
    const json = this.storeJson(data);
    const args = [Math.ceil(expiresAt), json, wholeMs(idleTimeout)];
    return (await this.scripts.resave.run([key], args)) === REPLY.OK;
  }

  /**
   * Slides the idle expiry to now + `idle` (capped by the absolute one) and records the use and
   * the idle timeout.
   */
  async touch(key: string, idle: number, idleTimeout: number): Promise<boolean> {
    const args = [wholeMs(idle), '0', wholeMs(idleTimeout)];
    return (await this.scripts.touch.run([key], args))[0] === REPLY.OK;
  }

  /**
   * Sets the record's expiry to `expiresAt` (epoch ms, already capped by the absolute expiry)
   * without recording the use: one `PEXPIREAT`, for touches soon after the last recorded use.
   * `PEXPIREAT` never creates a key: a session that is gone stays gone. The index needs no
   * change: it is scored by absolute expiry (session.scripts.ts).
   */
  async slide(key: string, expiresAt: number): Promise<boolean> {
    return (await this.client.pexpireat(key, Math.ceil(expiresAt))) === 1;
  }

  /** Ends the session (and takes it out of its user's index). */
  async destroy(key: string): Promise<boolean> {
    return (await this.scripts.destroy.run([key], [''])) === REPLY.OK;
  }

  /** Every session's data, read in batches. */
  async all(): Promise<SessionData[]> {
    const out: SessionData[] = [];
    let batch: string[] = [];
    const flush = async (): Promise<void> => {
      const values = await Promise.all(batch.map((key) => this.client.hget(key, 'd')));
      for (const json of values) if (json !== null) out.push(decodeData(json));
      batch = [];
    };
    for await (const key of this.records()) {
      batch.push(key);
      if (batch.length === LOAD_BATCH) await flush();
    }
    await flush();
    return out;
  }

  /** How many sessions there are. */
  async count(): Promise<number> {
    let n = 0;
    for await (const key of this.records()) if (key) n += 1;
    return n;
  }

  /** Deletes every key of ours: sessions, owner keys and indexes. */
  clear(): Promise<number> {
    return this.redis.unlinkByPattern(sessionKeys.all);
  }

  private async *records(): AsyncGenerator<string> {
    for await (const key of this.redis.scan(sessionKeys.records)) {
      if (RECORD_KEY_PATTERN.test(key)) yield key;
    }
  }

  /** The session as `RedisSessionStore.set` stores it, within `session.maxBytes`. */
  private storeJson(data: SessionData): string {
    const json = encodeLenient('RedisSessionStore.set', data);
    checkSize('RedisSessionStore.set', 'is', Buffer.byteLength(json), this.defaults.maxBytes);
    return json;
  }
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
