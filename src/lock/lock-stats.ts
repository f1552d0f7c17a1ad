/**
 * What `LockService.stats()` reports: this process's figures for the locks of one connection
 * (`acquire`, `tryAcquire`, `withLock`, `@WithLock`), since the application started. `held` and
 * `waiting` are gauges (now); the others only grow.
 */
export interface LockStats {
  /** Locks this process holds right now. */
  held: number;
  /** Callers of this process inside `acquire` / `withLock` that do not hold their lock yet. */
  waiting: number;
  /** Locks acquired (by `acquire`, `tryAcquire`, `withLock`), hand-offs included. */
  acquired: number;
  /** Of those, the ones a caller got after queueing: handed over by a release (or an expiry). */
  handoffs: number;
  /**
   * Locks lost while held: their TTL passed unrenewed (a stalled process), or an extension or
   * the release found the key gone or owned by someone else.
   */
  losses: number;
  /** `acquire` / `withLock` calls whose wait ran out (`LockNotAcquiredError`; aborts not counted). */
  timeouts: number;
}
