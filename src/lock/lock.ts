import { LockLostError } from '../errors.js';

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
   * Strictly increasing per resource across every acquisition. Pass it to the resource you
   * protect and have it reject writes carrying a smaller token than it has seen: that stops a
   * stale owner (paused, partitioned, expired) from overwriting a newer one's work.
   */
  readonly fencingToken: number;
  /** When the lock expires unless extended (epoch ms, measured conservatively from the request). */
  readonly expiresAt: number;
  /** Aborts when the lock is lost: extension failed, key gone or taken, or TTL passed. */
  readonly signal: AbortSignal;
  /**
   * Sets the remaining TTL to `ttl` ms (default: the acquisition TTL). Returns `false` when the
   * lock was lost (and aborts `signal`) or already released; never throws for that.
   */
  extend(ttl?: number): Promise<boolean>;
  /**
   * Releases the lock and wakes waiters. Returns `false` when it was no longer ours (lost, or
   * released before: a second call is harmless and returns `false`); never throws for that.
   */
  release(): Promise<boolean>;
}

/** What a lock needs from the service that issued it. */
export interface LockOwner {
  extend(lock: HeldLock, ttl: number): Promise<boolean>;
  release(lock: HeldLock): Promise<boolean>;
  forget(lock: HeldLock): void;
}

/** The `Lock` implementation: local timers that turn "TTL passed" into an aborted signal. */
export class HeldLock implements Lock {
  private readonly controller = new AbortController();
  private expiry?: NodeJS.Timeout;
  private renewal?: NodeJS.Timeout;
  private released = false;
  private releasing?: Promise<boolean>;
  private currentExpiresAt: number;

  constructor(
    readonly resource: string,
    readonly token: string,
    readonly fencingToken: number,
    /** The TTL it was acquired with, the default for `extend()`. */
    readonly ttl: number,
    /** When the acquire request was sent: Redis started the TTL no earlier than this. */
    sentAt: number,
    private readonly owner: LockOwner,
  ) {
    this.currentExpiresAt = sentAt + ttl;
    this.armExpiry();
  }

  get expiresAt(): number {
    return this.currentExpiresAt;
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** `true` once released or lost. */
  get settled(): boolean {
    return this.released || this.controller.signal.aborted;
  }

  async extend(ttl: number = this.ttl): Promise<boolean> {
    if (!Number.isFinite(ttl) || ttl <= 0) {
      throw new RangeError(
        `Lock.extend("${this.resource}"): ttl must be a positive number of ms, got ${String(ttl)}`,
      );
    }
    if (this.settled) return false;
    const sentAt = Date.now();
    const ok = await this.owner.extend(this, ttl);
    if (this.released) return false;
    if (!ok) {
      this.lose('an extension found the key gone or owned by someone else');
      return false;
    }
    this.currentExpiresAt = sentAt + ttl;
    this.armExpiry();
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
   * actually expires; then `signal` aborts.
   */
  autoExtend(margin: number): void {
    const schedule = (): void => {
      if (this.settled) return;
      const lead = Math.max(margin, this.ttl / 3);
      const delay = Math.max(0, this.currentExpiresAt - lead - Date.now());
      this.renewal = setTimeout(() => void renew(), delay).unref();
    };
    const renew = async (): Promise<void> => {
      try {
        await this.extend();
        schedule();
      } catch {
        // Unknown outcome (connection trouble): try again soon, the expiry timer bounds it.
        if (!this.settled) {
          this.renewal = setTimeout(() => void renew(), Math.min(50, margin / 4)).unref();
        }
      }
    };
    schedule();
  }

  /** Marks the lock lost: timers stop, `signal` aborts with a `LockLostError`. */
  lose(reason: string): void {
    if (this.settled) return;
    this.stopTimers();
    this.owner.forget(this);
    this.controller.abort(new LockLostError(this.resource, this.fencingToken, reason));
  }

  private async doRelease(): Promise<boolean> {
    const wasLost = this.controller.signal.aborted;
    this.stopTimers();
    this.released = true;
    this.owner.forget(this);
    if (wasLost) return false;
    return this.owner.release(this);
  }

  private armExpiry(): void {
    clearTimeout(this.expiry);
    const delay = Math.max(0, this.currentExpiresAt - Date.now());
    // Unref'd: these timers only watch the lock, they are no reason to keep the process alive.
    this.expiry = setTimeout(
      () => this.lose(`its ttl passed without extension (${this.ttl} ms)`),
      delay,
    ).unref();
  }

  private stopTimers(): void {
    clearTimeout(this.expiry);
    clearTimeout(this.renewal);
    this.expiry = undefined;
    this.renewal = undefined;
  }
}
