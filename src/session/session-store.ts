import { Store, type SessionData as ExpressSessionData } from 'express-session';
import type { Request } from 'express';
import { Logger } from '@nestjs/common';
import {
  checkUserId,
  sessionStoreBackend,
  type LoadedSession,
  type SessionService,
  type SessionStoreBackend,
} from './session.service.js';

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
}

type Callback<T = void> = (err: unknown, value?: T) => void;

/** What the store remembers about a session it loaded: see `touch`. */
interface LoadedInfo {
  absoluteExpiresAt: number;
  lastSeenAt: number;
}

/**
 * How stale the recorded last use (`lastSeenAt`) of a session may get, at most, in ms: a touch
 * within this of the last recorded use only slides the expiry (one `PEXPIREAT`); a later one
 * also records the use (a script). Never more than half the idle timeout.
 */
const LAST_SEEN_RESOLUTION = 60_000;

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
  private readonly logger = new Logger('Redis:RedisSessionStore');
  /** Sessions express-session loaded from us: `set` only updates them, never re-creates. */
  private readonly loaded = new WeakMap<object, LoadedInfo | undefined>();
  /** What `get` returned, until express-session makes a session of it (`createSession`). */
  private readonly fetched = new WeakMap<object, LoadedInfo>();
  /** Requests inside `login`: the user whose slot `genid` must mint the new id in. */
  private readonly loggingIn = new WeakMap<object, string>();
  /** New sessions made by `login`, until their first `set` puts them in the user's index. */
  private readonly owners = new WeakMap<object, string>();

  constructor(sessions: SessionService, options: RedisSessionStoreOptions = {}) {
    super();
    this.backend = sessionStoreBackend(sessions);
    for (const name of ['ttl', 'absoluteTtl'] as const) {
      const value = options[name];
      if (value !== undefined && !(typeof value === 'number' && value > 0 && value < Infinity)) {
        throw new RangeError(
          `RedisSessionStore: ${name} must be a positive number of milliseconds, got ${String(value)}`,
        );
      }
    }
    this.idleTtl = options.ttl;
    this.absoluteTtl = options.absoluteTtl;
  }

  /**
   * Pass as express-session's `genid` option: ids in `SessionService`'s format (256 random
   * bits), minted in the user's slot during `login`.
   */
  readonly genid = (req: Request): string => this.backend.mintId(this.loggingIn.get(req));

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
      throw new Error(
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
      throw new Error(
        'RedisSessionStore.login: express-session did not mint the new session id with ' +
          'store.genid, so the session cannot join the user\'s index; pass "genid: store.genid" ' +
          'in the options of session()',
      );
    }
    this.owners.set(req.session, userId);
  }

  /** express-session: the session, or `null`. */
  override get(sid: string, callback: Callback<ExpressSessionData | null>): void {
    const work = this.backend.load(sid).then((loaded) => {
      if (!loaded) return null;
      const { data, absoluteExpiresAt, lastSeenAt } = loaded;
      this.fetched.set(data, { absoluteExpiresAt, lastSeenAt });
      return data as unknown as ExpressSessionData;
    });
    settle(work, callback);
  }

  /**
   * express-session: saves the session. One that was loaded from the store is only updated,
   * so a request that outlives a logout (or "log out everywhere") cannot bring it back.
   */
  override set(sid: string, session: ExpressSessionData, callback?: Callback): void {
    const idle = this.idleOf(session);
    if (idle <= 0) {
      // The cookie has expired: so has the session.
      finish(this.backend.destroy(sid), callback);
      return;
    }
    const work = this.backend.save(sid, session as unknown as Record<string, unknown>, {
      create: !this.loaded.has(session),
      idle,
      absoluteTtl: this.absoluteTtl ?? this.backend.defaults.absoluteTtl,
      userId: this.owners.get(session),
    });
    finish(work, callback);
  }

  /**
   * express-session: slides the session's idle expiry (never past its absolute one). It is
   * what express-session does on most requests (those that do not change the session), so
   * when the session's last recorded use is recent (within a minute, or half the idle timeout
   * if shorter) it is a single `PEXPIREAT` of the record, as cheap as connect-redis's `EXPIRE`;
   * otherwise a script also records the use (`lastSeenAt`). Either way the expiry itself slides
   * on every touch.
   */
  override touch(sid: string, session: ExpressSessionData, callback?: () => void): void {
    const idle = this.idleOf(session);
    const info = this.loaded.get(session);
    const now = Date.now();
    let work: Promise<boolean>;
    if (idle <= 0) {
      work = this.backend.destroy(sid);
    } else if (info && now - info.lastSeenAt < Math.min(LAST_SEEN_RESOLUTION, idle / 2)) {
      // The idle expiry comes from the cookie (the app's clock, as in every store); the cap is
      // the absolute expiry Redis set, so a touch never extends a session past it.
      work = this.backend.slide(sid, Math.min(now + idle, info.absoluteExpiresAt));
    } else {
      work = this.backend.touch(sid, idle);
      if (info) info.lastSeenAt = now;
    }
    finish(work, (err) => {
      // express-session's touch callback takes no error; a failed touch only shortens a session.
      if (err) this.logger.warn(`touch failed: ${(err as Error).message}`);
      callback?.();
    });
  }

  /** express-session: ends the session. */
  override destroy(sid: string, callback?: Callback): void {
    finish(this.backend.destroy(sid), callback);
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

  private idleOf(session: ExpressSessionData): number {
    const expires = session.cookie?.expires;
    if (expires) return new Date(expires).getTime() - Date.now();
    return this.idleTtl ?? this.backend.defaults.ttl;
  }
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

function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
