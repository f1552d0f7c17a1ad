import { EarliestTimer } from './earliest-timer.js';

/**
 * When the auto-extended holds of one service renew: one timer for all of them, armed for the
 * earliest renewal and left armed when that hold is released (it then fires, finds nothing
 * due, and re-arms for the next one, if any). A timer armed per hold and cleared at its
 * release cost every uncontended `withLock` and semaphore permit a `setTimeout` and a
 * `clearTimeout`, though a hold released before a third of its TTL never renews. Unref'd: a
 * renewal is no reason to keep the process alive; `stopAll` clears it at shutdown.
 */
/** What `keepAlive` renews: a held lock, permit or read/write lock. */
export interface Renewable {
  readonly ttl: number;
  /** When Redis drops it at the earliest (epoch ms). */
  readonly expiresAt: number;
  /** `true` once released or lost. */
  readonly settled: boolean;
  extend(): Promise<boolean>;
}

export class Renewals {
  /** The next renewal of each hold (epoch ms) and what runs it. */
  private readonly due = new Map<object, { at: number; run: () => void }>();
  private readonly timer = new EarliestTimer(() => this.fire());

  /** Runs `run` at `at` (epoch ms), replacing the renewal `hold` had scheduled. */
  schedule(hold: object, at: number, run: () => void): void {
    this.due.set(hold, { at, run });
    this.timer.atOrBefore(at);
  }

  /**
   * Renews `hold` until it is settled, when a third of its TTL (at least `margin`) is left. A
   * round trip with an unknown outcome (connection trouble) is tried again after `retryMs`; the
   * TTL bounds that (the hold settles as lost once it has passed).
   */
  keepAlive(hold: Renewable, margin: number, retryMs: number): void {
    const renew = async (): Promise<void> => {
      try {
        await hold.extend();
        next();
      } catch {
        if (!hold.settled) this.schedule(hold, Date.now() + retryMs, run);
      }
    };
    const run = (): void => void renew();
    const next = (): void => {
      if (!hold.settled) this.schedule(hold, hold.expiresAt - Math.max(margin, hold.ttl / 3), run);
    };
    next();
  }

  /** `hold` renews no more (released or lost). */
  cancel(hold: object): void {
    this.due.delete(hold);
  }

  /** Cancels every renewal and the timer (shutdown). */
  stopAll(): void {
    this.due.clear();
    this.timer.clear();
  }

  private fire(): void {
    const now = Date.now();
    const ready: Array<() => void> = [];
    for (const [hold, next] of this.due) {
      if (next.at <= now) {
        this.due.delete(hold);
        ready.push(next.run);
      }
    }
    let next = Infinity;
    for (const { at } of this.due.values()) next = Math.min(next, at);
    if (next !== Infinity) this.timer.atOrBefore(next);
    // Run after re-arming: a renewal schedules its next one, which may be the earliest.
    for (const run of ready) run();
  }
}
