/*
 * The public types of `SessionService` (re-exported by the package root).
 */

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
  /** The user the session was created for. */
  readonly userId: string;
  /** What the application stored (`create`, `update`). */
  readonly data: T;
  /** What `create` was given as `meta`, if anything. */
  readonly meta?: SessionMeta;
  /** When `create` made it. */
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
  /** As in `Session`. */
  readonly userId: string;
  /** As in `Session`. */
  readonly meta?: SessionMeta;
  /** As in `Session`. */
  readonly createdAt: number;
  /** As in `Session`. */
  readonly lastSeenAt: number;
  /** As in `Session`. */
  readonly expiresAt: number;
  /** As in `Session`. */
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

/** A session that Redis ended because its time was up, as `SessionService.onExpired` reports it. */
export interface ExpiredSession {
  /** The session's revocation handle, as `listByUser` showed it (never the id itself). */
  readonly handle: string;
  /**
   * The session's user; `null` for a session without one (an express-session session that
   * never went through `store.login`), or one created before this version kept it.
   */
  readonly userId: string | null;
}

/** Called once per expired session, in every process that called `onExpired`. */
export type SessionExpiredHandler = (session: ExpiredSession) => void | Promise<void>;
