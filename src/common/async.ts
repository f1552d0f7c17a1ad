/**
 * Async helpers shared by every capability: bounded waits, pauses, elapsed time, waiters woken
 * by notifications, and one-timer deadlines for many concurrent calls.
 */

/**
 * Resolves with `promise`'s value, or rejects with `onTimeout()` after `ms`. The timer is always
 * cleared, so a settled race never keeps the process alive; a late rejection of `promise` is
 * swallowed, since nobody is listening any more.
 */
export function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  onTimeout: () => Error,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  promise.catch(() => undefined);
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Milliseconds elapsed since `start` (a `performance.now()` reading), with sub-ms precision. */
export function elapsedMs(start: number): number {
  return Math.round((performance.now() - start) * 1000) / 1000;
}

/**
 * Resolves after `ms`, or rejects with the signal's reason once `signal` aborts. The timer does
 * not keep the process alive (a shutdown may come first) unless `keepAlive` is set: a caller
 * whose work is the only thing left (a retry loop in a script) wants the process to wait.
 */
export function pause(
  ms: number,
  options: { signal?: AbortSignal; keepAlive?: boolean } = {},
): Promise<void> {
  const { signal, keepAlive = false } = options;
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const abort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason as Error);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', abort);
      resolve();
    }, ms);
    if (!keepAlive) timer.unref();
    signal?.addEventListener('abort', abort, { once: true });
  });
}

/** One registered waiter: wait for a wake-up (bounded), then cancel. */
export interface Waiter {
  /** Resolves when woken, after `ms`, or when any signal aborts; at once if already woken. */
  until(ms: number, signal?: AbortSignal): Promise<void>;
  /** Leaves the registry (idempotent). */
  cancel(): void;
}

/**
 * Callers waiting for something to happen to a key (a lock released, a cache key filled), woken
 * by pub/sub notifications. Register before checking the condition, so that a notification
 * arriving between the check and the wait still wakes the caller. Shared by LockService and
 * CacheService.
 */
export class Waiters {
  private readonly byKey = new Map<string, Set<() => void>>();

  /** Registers a caller waiting for `key`; cancel it when done, woken or not. */
  register(key: string): Waiter {
    let woken = false;
    let resolveWait: (() => void) | undefined;
    const wake = (): void => {
      woken = true;
      resolveWait?.();
    };
    let set = this.byKey.get(key);
    if (!set) {
      set = new Set();
      this.byKey.set(key, set);
    }
    set.add(wake);
    return {
      until: (ms, signal) =>
        new Promise<void>((resolve) => {
          if (woken) return resolve();
          const done = (): void => {
            clearTimeout(timer);
            signal?.removeEventListener('abort', done);
            resolve();
          };
          const timer = setTimeout(done, ms);
          resolveWait = done;
          signal?.addEventListener('abort', done, { once: true });
        }),
      cancel: () => {
        set.delete(wake);
        if (set.size === 0 && this.byKey.get(key) === set) this.byKey.delete(key);
      },
    };
  }

  /** How many callers wait for `key`. */
  count(key: string): number {
    return this.byKey.get(key)?.size ?? 0;
  }

  /** Wakes every caller waiting for `key`. */
  wakeAll(key: string): void {
    for (const wake of this.byKey.get(key) ?? []) wake();
  }

  /** Wakes the longest-waiting caller for `key` and removes it, so the next wake-up reaches the next. */
  wakeOne(key: string): void {
    const set = this.byKey.get(key);
    const first = set?.values().next();
    if (!set || !first || first.done) return;
    set.delete(first.value);
    first.value();
  }

  /** Wakes everybody (shutdown). */
  wakeEveryone(): void {
    for (const set of this.byKey.values()) for (const wake of set) wake();
  }
}

/**
 * Bounds many concurrent promises with one timer instead of one timer each: arming and
 * clearing a timer per Redis call costs about a tenth of the cache's L2 throughput at 64 calls
 * in flight (bench/cache). A late call is rejected within a quarter of its bound after its
 * deadline; the timer runs only while calls are pending and never keeps the process alive.
 */
export class DeadlineGroup {
  private readonly pending = new Set<{ deadline: number; expire: () => void }>();
  private timer?: NodeJS.Timeout;
  private tickMs = Infinity;

  /** `promise`, or a rejection with `onTimeout()` once `ms` have passed without it settling. */
  run<T>(promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry = { deadline: Date.now() + ms, expire: () => reject(onTimeout()) };
      this.pending.add(entry);
      this.arm(Math.max(5, Math.floor(ms / 4)));
      promise.then(
        (value) => {
          this.pending.delete(entry);
          resolve(value);
        },
        (err: unknown) => {
          this.pending.delete(entry);

          reject(err);
        },
      );
    });
  }

  private arm(tickMs: number): void {
    if (this.timer && tickMs >= this.tickMs) return;
    clearInterval(this.timer);
    this.tickMs = tickMs;
    this.timer = setInterval(() => this.check(), tickMs).unref();
  }

  private check(): void {
    const now = Date.now();
    const expired = [...this.pending].filter((entry) => entry.deadline <= now);
    if (expired.length > 0) {
      // After a stalled event loop, the timer that settles a promise in time may be due in the
      // same round as this check: expire after the round (setImmediate), so that a promise
      // settled by then is not reported late.
      setImmediate(() => {
        for (const entry of expired) {
          if (this.pending.delete(entry)) entry.expire();
        }
        this.stopWhenIdle();
      });
    }
    this.stopWhenIdle();
  }

  private stopWhenIdle(): void {
    if (this.pending.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
      this.tickMs = Infinity;
    }
  }
}

/**
 * Runs a pass (following a cluster's slot owners, say) one at a time per key. A call while the
 * key's pass runs asks for one more after it, its flag OR-ed into the next pass's, instead of
 * starting another; that next pass waits `spacingMs` first, so a signal that keeps firing (each
 * retry answered `MOVED` while a slot map stays stale) costs no busy loop. `proceed()` turning
 * false (a shutdown) ends the loop.
 */
export class Coalescer<K> {
  private readonly running = new Map<K, { again: boolean; flag: boolean; done: Promise<void> }>();

  constructor(
    private readonly pass: (key: K, flag: boolean) => Promise<void>,
    private readonly options: { spacingMs: number; proceed: () => boolean },
  ) {}

  /** Runs or re-arms the pass of `key`; resolves once no pass of `key` is due any more. */
  run(key: K, flag = false): Promise<void> {
    const state = this.running.get(key);
    if (state) {
      state.again = true;
      state.flag ||= flag;
      return state.done;
    }
    const next = { again: false, flag, done: Promise.resolve() };
    next.done = (async () => {
      try {
        do {
          const current = next.flag;
          next.again = false;
          next.flag = false;
          await this.pass(key, current);
          if (next.again && this.options.proceed()) await pause(this.options.spacingMs);
        } while (next.again && this.options.proceed());
      } finally {
        this.running.delete(key);
      }
    })();
    this.running.set(key, next);
    return next.done;
  }

  /** Settles once the passes running now are done. */
  async idle(): Promise<void> {
    await Promise.allSettled([...this.running.values()].map((state) => state.done));
  }
}
