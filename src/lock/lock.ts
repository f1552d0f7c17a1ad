import { LockLostError } from '../errors.js';

import type { Renewals } from './renewals.js';

/**
 * A held distributed lock. Check `signal` in long critical sections: it aborts (with a
 * `LockLostError` as its reason) as soon as the lock is known to be lost.
 */
export interface Lock {
  /** The locked resource, as given to `acquire`. */
  readonly resource: string;
  /** This owner's secret: 128 random bits, hex. Only the owner can extend or release. */
  readonly token: string;
  /**
   * Strictly increasing per resource across every acquisition (also across a failover and
   * after idle metadata expired: it is at least the Redis server's clock in µs). Pass it to the resource you
   * protect and have it reject writes carrying a smaller token than it has seen: that stops a
   * stale owner (paused, partitioned, expired) from overwriting a newer one's work.
   */
  readonly fencingToken: number;
  /** When the lock expires unless extended (epoch ms, measured conservatively from the request). */
  readonly expiresAt: number;
  /**
   * Aborts when the lock is lost: its key found gone or taken (by an extension or the release),
   * or its TTL passed.
   */
  readonly signal: AbortSignal;
  /**
   * Sets the remaining TTL to `ttl` ms (default: the acquisition TTL). Returns `false` when the
   * lock was lost (and aborts `signal`) or already released; never throws for that.
   */
  extend(ttl?: number): Promise<boolean>;
  /**
   * Releases the lock and hands it to the longest waiting caller (of any process). Returns
   * `false` when it was no longer ours (lost, expired, or released before: a second call is
   * harmless and returns `false`), or Redis did not answer; never throws for that. Finding the
   * key gone or someone else's while the TTL still ran marks the lock lost: `signal` aborts,
   * and `withLock` rejects with `LockLostError`.
   */
  release(): Promise<boolean>;
}

/** What a lock needs from the service that issued it. */
export interface LockOwner {
  extend(lock: HeldLock, ttl: number): Promise<boolean>;
  /**
   * `true` released, `false` the key was gone or someone else's, `'unknown'` Redis did not
   * answer (the lock expires by itself; not evidence of a loss).
   */
  release(lock: HeldLock): Promise<boolean | 'unknown'>;
  forget(lock: HeldLock): void;
  /** Called once when the lock is known lost (for the owner's counters). */
  lost?(lock: HeldLock): void;
  /** Checks and rounds a TTL given to `extend` (throws a `RangeError` naming it). */
  checkTtl?(ttl: number): number;
}

/**
 * How a release ended: `released`; `lost` (the key was gone or someone else's while our TTL
 * still ran: the section was not protected to the end); `expired` (the TTL had passed before
 * the release reached Redis, e.g. Redis answered late; the key simply timed out); `unknown`
 * (Redis did not answer).
 */
export type ReleaseOutcome = 'released' | 'lost' | 'expired' | 'unknown';

/**
 * The `Lock` implementation. Most locks are released long before their TTL and nobody reads
 * their `signal`, so a lock keeps no `AbortController` and no timer of its own until someone
 * reads `signal` (measured: the controller and the expiry timer were about a tenth of the CPU
 * of an uncontended acquire + release). Until then "the TTL passed" is a comparison with the
 * clock, made whenever it matters: `signal` (created already aborted), `extend`, `release`,
 * `withLock`'s final check, and the service's sweep of forgotten locks.
 */
export class HeldLock implements Lock {
  private controller?: AbortController;
  private lostError?: LockLostError;
  private expiry?: NodeJS.Timeout;
  /** Where its auto-extension is scheduled, once `autoExtend` was called. */
  private renewals?: Renewals;
  private released = false;
  private releasing?: Promise<boolean>;
  private currentExpiresAt: number;
  /** Set once `release()` has an answer. */
  releaseOutcome?: ReleaseOutcome;

  constructor(
    readonly resource: string,
    readonly token: string,
    readonly fencingToken: number,
    /** The TTL it was acquired with, the default for `extend()`. */
    readonly ttl: number,
    /** When the acquire request was sent: Redis started the TTL no earlier than this. */
    sentAt: number,
    private readonly owner: LockOwner,
    /** When Redis drops the key at the earliest, if known better than `sentAt + ttl`. */
    expiresAt?: number,
  ) {
    this.currentExpiresAt = expiresAt ?? sentAt + ttl;
  }

  get expiresAt(): number {
    return this.currentExpiresAt;
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      // Observed from now on: abort at once if already lost, else when the TTL passes.
      if (this.checkLost()) this.controller.abort(this.lostError);
      else if (!this.released) this.armExpiry();
    }
    return this.controller.signal;
  }

  /** Why the lock was lost (the `signal`'s reason), or `undefined` while it is not known lost. */
  get lostReason(): LockLostError | undefined {
    this.checkLost();
    return this.lostError;
  }

  /** `true` once released or lost. */
  get settled(): boolean {
    return this.released || this.checkLost();
  }

  async extend(ttl: number = this.ttl): Promise<boolean> {
    if (this.owner.checkTtl) ttl = this.owner.checkTtl(ttl);
    else if (!Number.isFinite(ttl) || ttl <= 0) {
      throw new RangeError(
        `Lock.extend("${this.resource}"): ttl must be a positive number of ms, got ${String(ttl)}`,
      );
    }
    if (this.settled) return false;
    const sentAt = Date.now();
    const ok = await this.owner.extend(this, ttl);
    // Lost meanwhile (an observed signal's timer fired): stays lost, even if Redis still had it.
    if (this.released || this.lostError) return false;
    if (!ok) {
      this.lose('an extension found the key gone or owned by someone else');
      return false;
    }
    this.currentExpiresAt = sentAt + ttl;
    if (this.controller) this.armExpiry();
    return true;
  }

  release(): Promise<boolean> {
    if (this.releasing) return this.releasing.then(() => false);
    this.releasing = this.doRelease();
    return this.releasing;
  }

  /**
   * Keeps the lock alive until released or lost: renews when `margin` (or a third of the TTL,
   * if more) is left. A failed round trip (Redis unreachable) is retried until the lock
   * actually expires; then the lock is lost (and `signal` aborts).
   */
  autoExtend(margin: number, renewals: Renewals): void {
    this.renewals = renewals;
    renewals.keepAlive(this, margin, Math.min(50, margin / 4));
  }

  /** Marks the lock lost: timers stop, `signal` (if anyone has it) aborts with a `LockLostError`. */
  lose(reason: string): void {
    if (this.released || this.lostError) return;
    this.stopTimers();
    this.owner.forget(this);
    this.recordLoss(reason);
  }

  /** Known lost? Notices a TTL that passed without extension (marking the lock lost). */
  checkLost(): boolean {
    if (this.lostError) return true;
    if (this.released || Date.now() < this.currentExpiresAt) return false;
    this.lose(`its ttl passed without extension (${this.ttl} ms)`);
    return true;
  }

  private async doRelease(): Promise<boolean> {
    const wasLost = this.checkLost();
    this.stopTimers();
    this.released = true;
    this.owner.forget(this);
    if (wasLost) {
      this.releaseOutcome = 'expired';
      return false;
    }
    const ours = await this.owner.release(this);
    if (ours === true) {
      this.releaseOutcome = 'released';
      return true;
    }
    if (ours === 'unknown') {
      this.releaseOutcome = 'unknown';
      return false;
    }
    // The key vanished (eviction, a flush, a failover to a replica that missed it) or someone
    // else holds it while our TTL still ran, and no renewal noticed: the section it guarded was
    // not protected to the end. A loss (`withLock` rejects), not a second release. Answered
    // after the TTL, it may just have timed out after the work ended: not a loss by itself.
    if (Date.now() < this.currentExpiresAt && !this.lostError) {
      this.recordLoss('when released, the key was gone or owned by someone else');
      this.releaseOutcome = 'lost';
    } else {
      this.releaseOutcome = this.lostError ? 'lost' : 'expired';
    }
    return false;
  }

  /** The loss itself: its reason, and `signal` (if anyone has it) aborts with it. */
  private recordLoss(reason: string): void {
    this.lostError = new LockLostError(this.resource, this.fencingToken, reason);
    this.owner.lost?.(this);
    this.controller?.abort(this.lostError);
  }

  private armExpiry(): void {
    clearTimeout(this.expiry);
    const delay = Math.max(0, this.currentExpiresAt - Date.now());
    // Unref'd: these timers only watch the lock, they are no reason to keep the process alive.
    this.expiry = setTimeout(() => {
      // Timers and Date.now() need not agree to the millisecond: early, look again.
      if (!this.checkLost() && !this.released) this.armExpiry();
    }, Math.ceil(delay)).unref();
  }

  private stopTimers(): void {
    if (this.expiry) clearTimeout(this.expiry);
    this.renewals?.cancel(this);
    this.expiry = undefined;
  }
}
