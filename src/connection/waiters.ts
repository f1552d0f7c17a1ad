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
