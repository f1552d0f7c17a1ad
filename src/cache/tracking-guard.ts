/**
 * A read's place in the order of invalidations: taken before the read is sent, checked once
 * its reply is in. `seq` is `-1` for a read that began while tracking was off (never storable).
 */
export interface ReadTicket {
  /** The invalidation sequence number when the read began. */
  readonly seq: number;
  /** When the read began (`performance.now()`, monotonic). */
  readonly at: number;
}

/** A ticket that no reply may be stored under. */
export const UNTRACKED_READ: ReadTicket = Object.freeze({ seq: -1, at: 0 });

/**
 * Decides whether a reply may enter L1 although an invalidation may have overtaken it.
 *
 * With `CLIENT TRACKING … REDIRECT` the reply of a read and the invalidation of the key it
 * read travel on two different connections, so nothing orders them: a `GET` answered with the
 * old value, followed on the server by another client's `SET`, can have its invalidation
 * delivered first. Storing that reply afterwards would keep the old value in L1 with nothing
 * left to remove it (the server sent its one invalidation already).
 *
 * The guard numbers every invalidation (a global sequence) and remembers, per key, the number
 * of its latest one. A read takes the current number before it is sent; its reply may be
 * stored only if no invalidation of that key, and no flush, got a higher number meanwhile.
 * Per key, not global: with a global epoch any write anywhere under the prefix during a read
 * would refuse its reply, and under a steady write load L1 would hardly fill. The per-key
 * memory is bounded by time, not size: entries older than `maxReadAge` are dropped (in order,
 * amortised O(1)), and a read older than that is refused instead, since its overtaking
 * invalidation may have been forgotten. The cost per read is one small object and one `Map`
 * lookup.
 */
export class TrackingReadGuard {
  private seq = 0;
  /** Reads that began before this number were overtaken by a flush. */
  private flushSeq = 0;
  /** Latest invalidation per key, oldest first (re-inserted on every invalidation). */
  private readonly latest = new Map<string, { seq: number; at: number }>();

  constructor(
    /** Oldest read (ms) whose reply may still be stored. */
    private readonly maxReadAge: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Keys whose latest invalidation is still remembered (for tests and stats). */
  get remembered(): number {
    return this.latest.size;
  }

  /** Takes a ticket for a read about to be sent. */
  begin(): ReadTicket {
    return { seq: this.seq, at: this.now() };
  }

  /** Records an invalidation of `key`. */
  invalidated(key: string): void {
    const now = this.now();
    this.seq += 1;
    this.latest.delete(key);
    this.latest.set(key, { seq: this.seq, at: now });
    this.prune(now);
  }

  /** Records that everything was invalidated (a flush, a lost connection). */
  flushed(): void {
    this.seq += 1;
    this.flushSeq = this.seq;
    this.latest.clear();
  }

  /** Whether a reply of a read of `key` that took `ticket` may be stored. */
  mayStore(key: string, ticket: ReadTicket): boolean {
    if (ticket.seq < this.flushSeq) return false;
    if (this.now() - ticket.at > this.maxReadAge) return false;
    const last = this.latest.get(key);
    return last === undefined || last.seq <= ticket.seq;
  }

  private prune(now: number): void {
    const horizon = now - this.maxReadAge;
    for (const [key, entry] of this.latest) {
      if (entry.at >= horizon) break;
      this.latest.delete(key);
    }
  }
}
