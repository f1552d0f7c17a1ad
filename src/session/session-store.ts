import { Logger } from '@nestjs/common';
import type { Request } from 'express';
import { Store, type SessionData as ExpressSessionData } from 'express-session';
import { LRUCache } from 'lru-cache';

import { checkDuration, MAX_TTL_MS } from '../common/checks.js';
import { RedisSessionError } from '../errors.js';

import { describeValue } from './session-data.js';
import { checkUserId } from './session-row.js';
import {
  STORE_BACKEND,
  type LoadedSession,
  type SessionStoreBackend,
} from './session-store-backend.js';
import type { SessionService } from './session.service.js';

/*
 * This file is the package's `nestjs-redis-infra/express-session` entry, never loaded by the
 * package root: express-session is an optional peer, and `extends Store` needs it at load time.
 */

/** Options of `RedisSessionStore`. */
export interface RedisSessionStoreOptions {
  /**
   * Idle timeout of a session whose cookie has no expiry (`cookie.maxAge` unset), in ms. With
   * `cookie.maxAge`, the cookie's remaining lifetime is used, as other stores do.
   * @defaultValue the module's `session.ttl` (1800000)
   */
  ttl?: number;
  /**
   * Absolute lifetime of every session, in ms: `rolling` cookies and `touch` extend a session
   * up to this, never past it.
   * @defaultValue the module's `session.absoluteTtl` (86400000)
   */
  absoluteTtl?: number;
  /**
   * Whether loading a session (`get`) also touches it: slides its idle expiry, as the request
   * that loads it is a use. The touch express-session makes at the end of a request that did
   * not change the session then costs no round trip (see `touch`): one Redis call per such
   * request instead of two. Turn it off if something other than express-session's requests
   * reads sessions through the store and must not extend them.
   * @defaultValue true
   */
  touchOnGet?: boolean;
}

type Callback<T = void> = (err: unknown, value?: T) => void;

/** What the store remembers about a session it loaded: see `touch`. */
interface LoadedInfo {
  /** The id it was loaded under, and its record key (a digest: computed once). */
  readonly sid: string;
  readonly key: string;
  readonly absoluteExpiresAt: number;
  /** The last recorded use, as far as this store knows. */
  lastSeenAt: number;
  /** The idle timeout recorded with the session (`_i`). */
  idle: number;
  /** The expiry this store last gave the session, if it knows it. */
  expiresAt?: number;
}

/**
 * How stale the recorded last use (`lastSeenAt`) of a session may get, at most, in ms: a touch
 * within this of the last recorded use only slides the expiry (one `PEXPIREAT`); a later one
 * also records the use (a script). Never more than half the idle timeout.
 */
const LAST_SEEN_RESOLUTION = 60_000;

/**
 * How far, at most, the expiry a touch asks for may be from the one the session already has
 * for the touch to be skipped: 1% of the remaining idle time, never more than a second. A
 * session that was loaded (and so touched) at the start of a request then costs no second round
 * trip at its end; its idle expiry counts from the start of the request rather than its end.
 */
const TOUCH_TOLERANCE = 1_000;

/** How many sessions a store remembers (`known`): about 300 bytes each. */
const KNOWN_SESSIONS = 10_000;

/**
 * An `express-session` store backed by `SessionService`: a drop-in for `connect-redis` that
 * keeps only SHA-256 digests of session ids in Redis, enforces an absolute lifetime, and never
 * re-creates a session that was destroyed while a request was still using it.
 *
 * Sessions logged in with `store.login(req, userId)` (with `genid: store.genid`) join the
 * user's index: `SessionService.listByUser` lists them and `destroyAllForUser` ends them.
 *
 * @example
 * ```ts
 * import session from 'express-session';
 * import { SessionService } from 'nestjs-redis-infra';
 * import { RedisSessionStore } from 'nestjs-redis-infra/express-session';
 *
 * const store = new RedisSessionStore(app.get(SessionService));
 * app.use(session({ store, genid: store.genid, secret: process.env.SESSION_SECRET!,
 *   resave: false, saveUninitialized: false, cookie: { maxAge: 30 * 60_000 } }));
 * ```
 */
export class RedisSessionStore extends Store {
  private readonly backend: SessionStoreBackend;
  private readonly idleTtl?: number;
  private readonly absoluteTtl?: number;
  private readonly touchOnGet: boolean;
  private readonly logger = new Logger('Redis:RedisSessionStore');
  /**
   * The sessions this store loaded lately, by id: their record key (a digest, computed once)
   * and what `get` and `touch` need to slide a session's expiry without a script.
   */
  private readonly known = new LRUCache<string, LoadedInfo>({ max: KNOWN_SESSIONS });
  /** Sessions express-session loaded from us: `set` only updates them, never re-creates. */
  private readonly loaded = new WeakMap<object, LoadedInfo | undefined>();
  /** What `get` returned, until express-session makes a session of it (`createSession`). */
  private readonly fetched = new WeakMap<object, LoadedInfo>();
  /** Requests inside `login`: the user whose slot `genid` must mint the new id in. */
  private readonly loggingIn = new WeakMap<object, string>();
  /** Requests inside `login` whose new id this store's `genid` minted: see `setupProblem`. */
  private readonly minted = new WeakSet<object>();
  /** New sessions made by `login`, until their first `set` puts them in the user's index. */
  private readonly owners = new WeakMap<object, string>();

  constructor(sessions: SessionService, options: RedisSessionStoreOptions = {}) {
    super();
    this.backend = backendOf(sessions);
    // Whole ms, as Redis takes them, and at most a year: an expiry Redis refuses would fail
    // a script halfway.
    const duration = (name: 'ttl' | 'absoluteTtl'): number | undefined =>
      options[name] === undefined
        ? undefined
        : checkDuration('RedisSessionStore', name, options[name], { min: 1, max: MAX_TTL_MS });
    const ttl = duration('ttl');
    const absoluteTtl = duration('absoluteTtl');
    if (options.touchOnGet !== undefined && typeof options.touchOnGet !== 'boolean') {
      throw new TypeError(
        `RedisSessionStore: touchOnGet must be a boolean, got ${describeValue(options.touchOnGet)}`,
      );
    }
    this.idleTtl = ttl;
    this.absoluteTtl = absoluteTtl;
    this.touchOnGet = options.touchOnGet ?? true;
  }

  /**
   * Pass as express-session's `genid` option: ids in `SessionService`'s format (256 random
   * bits), minted in the user's slot during `login`.
   */
  readonly genid = (req: Request): string => {
    const userId = this.loggingIn.get(req);
    if (userId !== undefined) this.minted.add(req);
    return this.backend.mintId(userId);
  };

  /**
   * Signs `userId` in on this request: regenerates the session (a new id, against session
   * fixation) and makes it one of the user's sessions, so that `SessionService.listByUser`
   * shows it and `destroyAllForUser` ends it. Needs `genid: store.genid` in the session options.
   *
   * @example
   * ```ts
   * @Post('login') async login(@Req() req: Request, @Body() body: Credentials) {
   *   const user = await this.users.verify(body);
   *   await this.store.login(req, user.id);
   *   req.session.userId = user.id;
   * }
   * ```
   */
  async login(req: Request, userId: string): Promise<void> {
    checkUserId('RedisSessionStore.login', userId);
    if (!req.session) {
      throw new RedisSessionError(
        'REDIS_SESSION_STORE_SETUP',
        'RedisSessionStore.login: req.session is missing; register express-session ' +
          '(app.use(session({ store, genid: store.genid, ... }))) before the routes that call login',
      );
    }
    this.loggingIn.set(req, userId);
    try {
      await new Promise<void>((resolve, reject) =>
        req.session.regenerate((err: unknown) => (err ? reject(toError(err)) : resolve())),
      );
    } finally {
      this.loggingIn.delete(req);
    }
    if (!this.backend.belongsTo(req.sessionID, userId)) {
      throw new RedisSessionError('REDIS_SESSION_STORE_SETUP', this.setupProblem(req));
    }
    this.minted.delete(req);
    this.owners.set(req.session, userId);
  }

  /**
   * express-session: the session, or `null`. Unless `touchOnGet` is off, it also slides the
   * session's idle expiry by the session's own idle timeout (never past its absolute expiry),
   * in the same round trip: see `touch`.
   */
  override get(sid: string, callback: Callback<ExpressSessionData | null>): void {
    const known = this.known.get(sid);
    const key = known?.key ?? this.backend.keyOf(sid);
    if (key === null) {
      settle(Promise.resolve(null), callback);
      return;
    }
    const now = Date.now();
    let work: Promise<LoadedSession | null>;
    if (!this.touchOnGet) {
      work = this.backend.load(key);
    } else if (known && usedLately(known, known.idle, now)) {
      // Seen before, and no use to record: what the script would do is one PEXPIREAT.
      work = this.backend.loadAndSlide(key, Math.min(now + known.idle, known.absoluteExpiresAt));
    } else {
      work = this.backend.loadAndTouch(key, now, LAST_SEEN_RESOLUTION);
    }
    const read = work.then((loaded) => {
      if (!loaded) {
        this.known.delete(sid);
        return null;
      }
      const { data, absoluteExpiresAt, lastSeenAt, idle, expiresAt } = loaded;
      let info: LoadedInfo;
      if (known && known.absoluteExpiresAt === absoluteExpiresAt) {
        // Already in the LRU (and made recent by the `get` above).
        info = known;
        info.lastSeenAt = lastSeenAt;
        info.idle = idle;
        info.expiresAt = expiresAt;
      } else {
        info = { sid, key, absoluteExpiresAt, lastSeenAt, idle, expiresAt };
        this.known.set(sid, info);
      }
      this.fetched.set(data, info);
      return data as unknown as ExpressSessionData;
    });
    settle(read, callback);
  }

  /**
   * express-session: saves the session. One that was loaded from the store is only updated,
   * so a request that outlives a logout (or "log out everywhere") cannot bring it back.
   */
  override set(sid: string, session: ExpressSessionData, callback?: Callback): void {
    const info = this.infoOf(sid, session);
    let key: string;
    try {
      key = info?.key ?? this.keyOf(sid, 'set');
    } catch (err) {
      finish(Promise.reject(toError(err)), callback);
      return;
    }
    const idle = this.idleOf(session);
    if (idle <= 0) {
      // The cookie has expired: so has the session.
      this.known.delete(sid);
      finish(this.backend.destroy(key), callback);
      return;
    }
    const idleTimeout = this.timeoutOf(session, idle);
    const data = session as unknown as Record<string, unknown>;
    const now = Date.now();
    let work: Promise<boolean>;
    if (info && usedLately(info, idleTimeout, now)) {
      // A session we loaded, used lately: the short script (no use to record).
      const expiresAt = Math.min(now + idle, info.absoluteExpiresAt);
      work = this.backend.resave(key, data, expiresAt, idleTimeout);
      info.expiresAt = expiresAt;
    } else {
      work = this.backend.save(key, sid, data, {
        create: !this.loaded.has(session),
        idle,
        idleTimeout,
        absoluteTtl: this.absoluteTtl ?? this.backend.defaults.absoluteTtl,
        userId: this.owners.get(session),
      });
      if (info) {
        info.lastSeenAt = now;
        info.expiresAt = Math.min(now + idle, info.absoluteExpiresAt);
      }
    }
    if (info) info.idle = idleTimeout;
    finish(work, callback);
  }

  /**
   * express-session: slides the session's idle expiry (never past its absolute one). It is
   * what express-session does at the end of most requests (those that do not change the
   * session), and costs, from the cheapest:
   *
   * - nothing, when the session already expires when this touch would make it (within 1% of
   *   the remaining idle time, at most a second): the usual case, as loading the session at
   *   the start of the request touched it (`touchOnGet`);
   * - a single `PEXPIREAT` of the record, as cheap as connect-redis's `EXPIRE`, when the
   *   session's last recorded use is recent (within a minute, or half the idle timeout if
   *   shorter);
   * - otherwise a script, which also records the use (`lastSeenAt`) and the idle timeout.
   */
  override touch(sid: string, session: ExpressSessionData, callback?: () => void): void {
    const info = this.infoOf(sid, session);
    let key: string;
    try {
      key = info?.key ?? this.keyOf(sid, 'touch');
    } catch (err) {
      this.logger.warn(`touch failed: ${(err as Error).message}`);
      queueMicrotask(() => callback?.());
      return;
    }
    const idle = this.idleOf(session);
    const now = Date.now();
    let work: Promise<boolean>;
    if (idle <= 0) {
      this.known.delete(sid);
      work = this.backend.destroy(key);
    } else if (!info) {
      work = this.backend.touch(key, idle, this.timeoutOf(session, idle));
    } else {
      // The idle expiry comes from the cookie (the app's clock, as in every store); the cap is
      // the absolute expiry Redis set, so a touch never extends a session past it.
      const expiresAt = Math.min(now + idle, info.absoluteExpiresAt);
      const tolerance = Math.min(TOUCH_TOLERANCE, (expiresAt - now) / 100);
      const timeout = this.timeoutOf(session, idle);
      if (info.expiresAt !== undefined && Math.abs(expiresAt - info.expiresAt) <= tolerance) {
        work = Promise.resolve(true);
      } else if (usedLately(info, timeout, now) && Math.abs(timeout - info.idle) <= tolerance) {
        work = this.backend.slide(key, expiresAt);
      } else {
        // Records the use, and the idle timeout if the cookie's changed (the next load slides by it).
        work = this.backend.touch(key, idle, timeout);
        info.lastSeenAt = now;
        info.idle = timeout;
      }
      info.expiresAt = expiresAt;
    }
    finish(work, (err) => {
      // express-session's touch callback takes no error; a failed touch only shortens a session.
      if (err) this.logger.warn(`touch failed: ${(err as Error).message}`);
      callback?.();
    });
  }

  /** express-session: ends the session. */
  override destroy(sid: string, callback?: Callback): void {
    const key = this.known.get(sid)?.key ?? this.backend.keyOf(sid);
    this.known.delete(sid);
    finish(key === null ? Promise.resolve(false) : this.backend.destroy(key), callback);
  }

  /**
   * express-session: every session's data. Session ids cannot be listed: Redis holds only
   * their digests.
   */
  override all(callback: Callback<ExpressSessionData[]>): void {
    settle(this.backend.all() as Promise<unknown> as Promise<ExpressSessionData[]>, callback);
  }

  /** express-session: how many sessions there are. */
  override length(callback: Callback<number>): void {
    settle(this.backend.count(), callback);
  }

  /** express-session: deletes every session of the connection, `SessionService`'s included. */
  override clear(callback?: Callback): void {
    finish(this.backend.clear(), callback);
  }

  /** Marks what express-session loaded from us, see `set` and `touch`. */
  override createSession(req: Request, data: ExpressSessionData) {
    const info = this.fetched.get(data);
    const session = super.createSession(req, data);
    // Data that did not come from `get` (an application calling createSession itself) is still
    // a loaded session, never re-created; without its expiry, `touch` runs the script.
    this.loaded.set(session, info);
    return session;
  }

  /**
   * Why `login` found the new session id outside the user's slot: the session middleware uses
   * another store instance (the usual cause: `main.ts` made one and a controller a second), or
   * it was not given `genid: store.genid`.
   */
  private setupProblem(req: Request): string {
    const minted = this.minted.has(req);
    this.minted.delete(req);
    const where =
      "RedisSessionStore.login: the new session id was not minted in the user's slot, so the session cannot join the user's index";
    if ((req.sessionStore as unknown) !== this) {
      return (
        `${where}: login was called on a different RedisSessionStore instance than the one ` +
        'given to session() (two instances, e.g. one made in main.ts and one in a controller). ' +
        'Make one instance and share it: e.g. provide it in a module ' +
        '({ provide: RedisSessionStore, useFactory: (s: SessionService) => new RedisSessionStore(s), inject: [SessionService] }), ' +
        'pass app.get(RedisSessionStore) to session() in main.ts, and inject it where login is called'
      );
    }
    if (!minted) {
      return `${where}: express-session did not call store.genid; pass "genid: store.genid" in the options of session()`;
    }
    return `${where}: the id store.genid minted was replaced before the session was saved`;
  }

  /** What `get` told about a session express-session loaded under `sid`, if it did. */
  private infoOf(sid: string, session: ExpressSessionData): LoadedInfo | undefined {
    const info = this.loaded.get(session);
    return info?.sid === sid ? info : undefined;
  }

  private keyOf(sid: string, method: string): string {
    const key = this.backend.keyOf(sid);
    if (key === null) {
      throw new TypeError(
        `RedisSessionStore.${method}: session id must be a non-empty string of at most 1024 characters`,
      );
    }
    return key;
  }

  /**
   * The session's idle timeout: the cookie's full `maxAge` (express-session resets the cookie to
   * it on every request), where `idleOf` is what is left of it now; the store's `ttl` for a
   * cookie without one.
   */
  private timeoutOf(session: ExpressSessionData, idle: number): number {
    const max = session.cookie?.originalMaxAge;
    return typeof max === 'number' && max > 0 ? max : idle;
  }

  private idleOf(session: ExpressSessionData): number {
    const expires = session.cookie?.expires;
    if (expires) return new Date(expires).getTime() - Date.now();
    return this.idleTtl ?? this.backend.defaults.ttl;
  }
}

/**
 * Whether the session's last recorded use is recent enough not to record this one: within
 * `LAST_SEEN_RESOLUTION`, or half the idle timeout if that is shorter.
 */
function usedLately(info: LoadedInfo, idleTimeout: number, now: number): boolean {
  return now - info.lastSeenAt < Math.min(LAST_SEEN_RESOLUTION, idleTimeout / 2);
}

function settle<T>(work: Promise<T>, callback: Callback<T> | undefined): void {
  work.then(
    (value) => callback?.(null, value),
    (err: unknown) => callback?.(err),
  );
}

/** For callbacks that take only an error. */
function finish(work: Promise<unknown>, callback: Callback | undefined): void {
  work.then(
    () => callback?.(null),
    (err: unknown) => callback?.(err),
  );
}

/** The store backend of a `SessionService`; a `TypeError` for anything else. */
function backendOf(sessions: SessionService): SessionStoreBackend {
  const host = sessions as Partial<Pick<SessionService, typeof STORE_BACKEND>> | null | undefined;
  if (typeof host?.[STORE_BACKEND] !== 'function') {
    throw new TypeError(
      'RedisSessionStore needs the SessionService instance of a RedisModule application, e.g. ' +
        `new RedisSessionStore(app.get(SessionService)); got ${describeValue(sessions)}`,
    );
  }
  return host[STORE_BACKEND]();
}

function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
