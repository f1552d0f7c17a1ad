import { EarliestTimer } from './earliest-timer.js';
import { replyBehind } from './module-script.js';

/** One command being waited for, until its deadline. */
interface Watched {
  /** Epoch ms. */
  readonly deadline: number;
  /** Rejects the wait (once). */
  readonly stop: () => void;
}

/**
 * Bounds the commands acquisitions wait for by their deadlines: ioredis may hold a command
 * through many reconnect attempts, and a black-holed connection never answers, so a caller (or
 * shutdown) must not wait for the reply itself.
 *
 * One timer for all of them, armed for the earliest deadline and left armed when that command
 * is answered (it then fires, finds nothing due, and re-arms for the next one, if any). A
 * timer armed and cleared per command was a noticeable part of an uncontended `acquire`: with
 * the default 10 s wait, one timer now serves every attempt of those 10 s. It is unref'd (the
 * command's socket keeps the process alive while it is outstanding) and cleared by `stopAll`.
 */
export class Deadlines {
  private readonly watched = new Set<Watched>();
  private readonly timer = new EarliestTimer(() => this.expire());

  /**
   * `promise`, or a rejection with `onStop()` once `deadline` (epoch ms) has passed, `signal`
   * aborts or `stopAll` is called.
   */
  within<T>(
    promise: Promise<T>,
    deadline: number,
    onStop: () => Error,
    signal: AbortSignal | undefined,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry: Watched = {
        deadline,
        stop: () => {
          forget();
          reject(onStop());
        },
      };
      const forget = (): void => {
        this.watched.delete(entry);
        signal?.removeEventListener('abort', entry.stop);
      };
      this.watched.add(entry);
      this.timer.atOrBefore(deadline);
      signal?.addEventListener('abort', entry.stop, { once: true });
      promise.then(
        (value) => {
          forget();
          resolve(value);
        },
        (err: unknown) => {
          forget();
          reject(err);
        },
      );
    });
  }

  /** Stops every wait now (shutdown) and the timer. */
  stopAll(): void {
    for (const entry of [...this.watched]) entry.stop();
    this.timer.clear();
  }

  private expire(): void {
    const now = Date.now();
    let next = Infinity;
    for (const entry of [...this.watched]) {
      if (entry.deadline <= now) entry.stop();
      else next = Math.min(next, entry.deadline);
    }
    if (next !== Infinity) this.timer.atOrBefore(next);
  }
}

/**
 * Errors worth retrying within `wait`: the connection dropped or was reset (ioredis aborts or
 * times out the command), or the server is between roles during a failover.
 */
export function isTransient(error: unknown): boolean {
  const err = replyBehind(error);
  if (!(err instanceof Error)) return false;
  if (err.name !== 'ReplyError') return true;
  return /^(READONLY|LOADING|MASTERDOWN|TRYAGAIN|CLUSTERDOWN|NOREPLICAS|UNBLOCKED)/.test(
    err.message,
  );
}
