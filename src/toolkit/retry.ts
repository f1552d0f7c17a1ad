import { pause } from '../common/async.js';
import { checkInteger, checkMs as checkDuration } from '../common/checks.js';
import { describeValue as shown } from '../common/describe.js';

/** Options of `withRetry`. */
export interface RetryOptions {
  /**
   * How many times `fn` runs at most (the first call included).
   * @defaultValue 3
   */
  attempts?: number;
  /**
   * The delay before the second attempt, in ms; each later delay doubles.
   * @defaultValue 50
   */
  initialDelay?: number;
  /**
   * The longest delay between two attempts, in ms.
   * @defaultValue 2000
   */
  maxDelay?: number;
  /**
   * Randomize each delay between half and all of its value, so that many clients that failed
   * together do not retry together.
   * @defaultValue true
   */
  jitter?: boolean;
  /** Stops retrying (and rejects with the signal's reason) once aborted. */
  signal?: AbortSignal;
  /**
   * Which errors are worth another attempt.
   * @defaultValue isTransientRedisError
   */
  retryIf?: (error: unknown) => boolean;
}

const TRANSIENT_CODES = new Set(['ETIMEDOUT', 'ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ENOTCONN']);
const TRANSIENT_REPLIES = /^(LOADING|TRYAGAIN|CLUSTERDOWN|MASTERDOWN|BUSY)\b/;

/**
 * Whether an error is one that a later attempt may not meet: a timeout, a reset or refused
 * connection, or a server that is loading, failing over or resharding (`LOADING`, `TRYAGAIN`,
 * `CLUSTERDOWN`, `MASTERDOWN`, `BUSY`). A wrong type, a script error, a denied command: no.
 */
export function isTransientRedisError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && TRANSIENT_CODES.has(code)) return true;
  if (TRANSIENT_REPLIES.test(error.message)) return true;
  // ioredis's own wording for a command that hit `commandTimeout`, and (ioredis 6.1, which
  // aborts what was in flight when the socket closes) for one whose reply was lost with the
  // connection: either way the command may or may not have run.
  return (
    error.message === 'Command timed out' ||
    (error.name === 'AbortError' && /aborted due to connection close/i.test(error.message))
  );
}

/**
 * Runs `fn` until it succeeds, retrying transient Redis errors with exponential backoff.
 * Meant for idempotent work only: a `SET`, a read, a script that is safe to run twice. An
 * `INCR` whose reply was lost may have run; retrying it counts twice, so do not wrap it.
 *
 * @example
 * ```ts
 * const profile = await withRetry(() => redis.get('profile:42'), { attempts: 5 });
 * ```
 */
export async function withRetry<T>(
  fn: (attempt: number) => Promise<T>,
  options: RetryOptions = {},
): Promise<T> {
  if (typeof fn !== 'function')
    throw new TypeError(`withRetry fn must be a function, got ${shown(fn)}`);
  const attempts = checkInteger(options.attempts ?? 3, 'withRetry attempts', 1, 100);
  const initialDelay = checkDuration(options.initialDelay ?? 50, 'withRetry initialDelay', 60_000);
  const maxDelay = checkDuration(options.maxDelay ?? 2000, 'withRetry maxDelay', 600_000);
  const retryIf = options.retryIf ?? isTransientRedisError;
  const { signal, jitter = true } = options;
  for (let attempt = 1; ; attempt++) {
    signal?.throwIfAborted();
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= attempts || !retryIf(err)) throw err;
      const base = Math.min(maxDelay, initialDelay * 2 ** (attempt - 1));
      await pause(jitter ? base / 2 + Math.random() * (base / 2) : base, {
        signal,
        keepAlive: true,
      });
    }
  }
}
