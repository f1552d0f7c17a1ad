import { LockLostError } from '../errors.js';

import type { Renewals } from './renewals.js';

/**
 * Something held in Redis for a bounded time: a semaphore permit, a read lock or a write lock.
 * Check `signal` in long work: it aborts (with a `LockLostError` as its reason) as soon as the
 * hold is known to be lost.
 */
export interface Lease {
  /** The semaphore's or read-write lock's name, as given to `LockService`. */
  readonly name: string;
  /** This holder's secret: 128 random bits, hex. Only the holder can extend or release. */
  readonly token: string;
  /** When the hold expires unless extended (epoch ms, measured conservatively from the request). */
  readonly expiresAt: number;
  /**
   * Aborts when the hold is lost: an extension found it expired or gone, or its TTL passed
   * without extension (also while the process was paused).
   */
  readonly signal: AbortSignal;
  /**
   * Sets the remaining TTL to `ttl` ms (default: the acquisition TTL). Returns `false` when the
   * hold was lost (and aborts `signal`) or already released; never throws for that.
   */
  extend(ttl?: number): Promise<boolean>;
  /**
   * Gives the hold back and wakes waiters. Returns `false` when it was no longer ours (expired,
   * or released before: a second call is harmless and returns `false`); never throws for that.
   */
  release(): Promise<boolean>;
}

/** A semaphore permit: one of the `limit` concurrent holders. */
export interface Permit extends Lease {}

/** A read lock: one of possibly many readers, never together with a writer. */
export interface ReadLock extends Lease {}

/** A write lock: the only holder, with no reader. */
export interface WriteLock extends Lease {
  /**
   * Increases with every write lock of this name. Pass it to the store you protect and have
   * it refuse writes carrying a smaller token than it has seen.
   */
  readonly fencingToken: number;
}

/** What a lease needs from its primitive. */
export interface LeaseOps {
  extend(token: string, ttl: number): Promise<boolean>;
  release(token: string): Promise<boolean>;
  /** Called once when the lease is released or lost (the coordinator forgets it). */
  settled(lease: HeldLease): void;
}

/**
 * The `Lease` implementation. Expiry is watched locally from the time the request was sent (the
 * server started the TTL no earlier), so a holder paused past its TTL learns of the loss as soon
 * as it runs again, before any renewal could falsely succeed. Most holds are released long
 * before their TTL and nobody reads their `signal`, so the controller and its expiry timer are
 * made on the first read of `signal`; until then "the TTL passed" is a comparison with the
 * clock, made wherever it matters (extend, release, `withPermit`'s check, the sweep).
 */
export class HeldLease implements WriteLock {
  private controller?: AbortController;
  private lostError?: LockLostError;
  private expiry?: NodeJS.Timeout;
  /** Where its auto-extension is scheduled, once `autoExtend` was called. */
  private renewals?: Renewals;
  private released = false;
  private releasing?: Promise<boolean>;
  private currentExpiresAt: number;

  constructor(
    /** `semaphore`, `read lock` or `write lock`, for messages. */
    private readonly kind: string,
    readonly name: string,
    readonly token: string,
    /** The TTL it was acquired with, the default for `extend()`. */
    readonly ttl: number,
    sentAt: number,
    private readonly ops: LeaseOps,
    readonly fencingToken = 0,
  ) {
    this.currentExpiresAt = sentAt + ttl;
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

  /** Why the hold was lost, or `undefined` while it is not known lost. */
  get lostReason(): LockLostError | undefined {
    this.checkLost();
    return this.lostError;
  }

  /** `true` once released or lost. */
  get settled(): boolean {
    return this.released || this.checkLost();
  }

  async extend(ttl: number = this.ttl): Promise<boolean> {
    if (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl <= 0) {
      throw new RangeError(
        `${this.kind} "${this.name}": extend(ttl) needs a positive number of ms, got ${String(ttl)}`,
      );
    }
    if (this.settled) return false;
    const sentAt = Date.now();
    const ok = await this.ops.extend(this.token, Math.ceil(ttl));
    if (this.released || this.lostError) return false;
    if (!ok) {
      this.lose('an extension found it expired or gone');
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
   * Renews the hold until it is released or lost, when a third of the TTL (at least `margin`)
   * is left. A failed round trip is retried until the hold actually expires.
   */
  autoExtend(margin: number, renewals: Renewals): void {
    this.renewals = renewals;
    renewals.keepAlive(this, margin, Math.max(10, margin / 4));
  }

  /** Marks the hold lost: timers stop, `signal` aborts with a `LockLostError`. */
  lose(reason: string): void {
    if (this.released || this.lostError) return;
    this.stopTimers();
    this.lostError = new LockLostError(this.name, this.fencingToken, `the ${this.kind} ${reason}`);
    this.ops.settled(this);
    this.controller?.abort(this.lostError);
  }

  /** Known lost? Notices a TTL that passed without extension. */
  checkLost(): boolean {
    if (this.lostError) return true;
    if (this.released || Date.now() < this.currentExpiresAt) return false;
    this.lose(`ttl passed without extension (${this.ttl} ms)`);
    return true;
  }

  private async doRelease(): Promise<boolean> {
    const wasLost = this.checkLost();
    this.stopTimers();
    this.released = true;
    this.ops.settled(this);
    if (wasLost) return false;
    return this.ops.release(this.token);
  }

  private armExpiry(): void {
    clearTimeout(this.expiry);
    const delay = Math.max(0, this.currentExpiresAt - Date.now());
    // Unref'd: it only watches the hold, it is no reason to keep the process alive.
    this.expiry = setTimeout(() => {
      // Timers and Date.now() need not agree to the millisecond: early, look again.
      if (!this.checkLost() && !this.released) this.armExpiry();
    }, Math.ceil(delay)).unref();
  }

  private stopTimers(): void {
    clearTimeout(this.expiry);
    this.renewals?.cancel(this);
    this.expiry = undefined;
  }
}

/**
 * Runs `fn` holding `lease` and always releases it. Whether the work was protected is decided
 * when `fn` settles: a release that is slow or finds the hold gone afterwards changes nothing.
 */
export async function runHolding<L extends Lease, T>(
  lease: HeldLease,
  fn: (lease: L) => Promise<T> | T,
  throwOnLost: boolean,
): Promise<T> {
  let result: T;
  let lost: LockLostError | undefined;
  try {
    result = await fn(lease as unknown as L);
  } finally {
    lost = lease.lostReason;
    await lease.release();
  }
  if (lost && throwOnLost) throw lost;
  return result;
}
