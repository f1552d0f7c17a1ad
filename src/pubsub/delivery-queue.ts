/**
 * The per-subscription buffer between the subscriber connection and one handler: messages
 * arrive in order and are handed to the handler one at a time, so a slow or stuck handler
 * delays only its own subscription. Bounded: when full, the oldest entry is dropped and the
 * handler is told, before its next message, how many it missed.
 */

/** Why messages were missed: the connection was down, or the handler fell behind. */
export type GapReason = 'reconnect' | 'overflow';

/** A missed stretch, as the queue reports it to its owner. */
export interface GapEntry {
  reason: GapReason;
  /** Messages known to be lost (overflow), or `undefined` when unknowable (reconnect). */
  dropped?: number;
  /** When the loss started (the drop of the connection, or the first overflow). */
  since: number;
  /** When delivery resumed. */
  until: number;
}

type Entry = { gap: undefined; message: string; channel: string } | { gap: GapEntry };

/** What the queue calls; `deliver` returns a promise only for asynchronous handlers. */
export interface DeliverySink {
  deliver(message: string, channel: string): unknown;
  gap(gap: GapEntry): unknown;
  /** The handler threw or rejected. */
  failed(err: unknown): void;
  /** The handler's promise did not settle within the timeout; delivery moved on. */
  timedOut(): void;
  /** An entry was dropped because the buffer was full. */
  overflowed(): void;
}

export class DeliveryQueue {
  private readonly ring: Array<Entry | undefined>;
  private head = 0;
  private size = 0;
  private busy = false;
  private closed = false;
  /** Messages dropped from the head since the handler last ran (reported as one gap). */
  private overflow?: GapEntry;

  constructor(
    private readonly sink: DeliverySink,
    private readonly capacity: number,
    private readonly timeoutMs: number,
  ) {
    this.ring = new Array<Entry | undefined>(capacity);
  }

  /** Entries waiting for the handler. */
  get pending(): number {
    return this.size;
  }

  push(message: string, channel: string): void {
    if (this.closed) return;
    if (!this.busy && this.size === 0 && this.overflow === undefined) {
      // The common case, a handler keeping up: no buffering, no closure.
      let result: unknown;
      try {
        result = this.sink.deliver(message, channel);
      } catch (err) {
        this.sink.failed(err);
        return;
      }
      if (isThenable(result)) {
        this.busy = true;
        this.await(result);
      }
      return;
    }
    this.enqueue({ gap: undefined, message, channel });
    this.pump();
  }

  /** Queues a gap notice after the messages already buffered (they arrived before it). */
  pushGap(gap: GapEntry): void {
    if (this.closed) return;
    this.enqueue({ gap });
    this.pump();
  }

  /** Stops delivering; what is still buffered is discarded. */
  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.ring.fill(undefined);
    this.size = 0;
  }

  private enqueue(entry: Entry): void {
    if (this.size === this.capacity) {
      const oldest = this.shift()!;
      const now = Date.now();
      const lost = oldest.gap ? (oldest.gap.dropped ?? 0) : 1;
      if (this.overflow) {
        this.overflow.dropped = (this.overflow.dropped ?? 0) + lost;
        this.overflow.until = now;
      } else {
        this.overflow = {
          reason: oldest.gap?.reason === 'reconnect' ? 'reconnect' : 'overflow',
          dropped: lost,
          since: oldest.gap?.since ?? now,
          until: now,
        };
      }
      if (oldest.gap?.reason === 'reconnect') this.overflow.reason = 'reconnect';
      if (!oldest.gap) this.sink.overflowed();
    }
    this.ring[(this.head + this.size) % this.capacity] = entry;
    this.size += 1;
  }

  private shift(): Entry | undefined {
    if (this.size === 0) return undefined;
    const entry = this.ring[this.head];
    this.ring[this.head] = undefined;
    this.head = (this.head + 1) % this.capacity;
    this.size -= 1;
    return entry;
  }

  /**
   * Hands entries to the handler until the buffer is empty or an asynchronous handler is
   * running; synchronous handlers never wait for a tick.
   */
  private pump(): void {
    if (this.busy) return;
    this.busy = true;
    try {
      while (!this.closed) {
        let result: unknown;
        const overflow = this.overflow;
        if (overflow) {
          this.overflow = undefined;
          result = this.call(() => this.sink.gap(overflow));
        } else {
          const entry = this.shift();
          if (!entry) break;
          result = entry.gap
            ? this.call(() => this.sink.gap(entry.gap))
            : this.call(() => this.sink.deliver(entry.message, entry.channel));
        }
        if (isThenable(result)) {
          this.await(result);
          return;
        }
      }
    } finally {
      // Still busy while an asynchronous handler runs: `await` resumes the pump.
      if (!this.waiting) this.busy = false;
    }
  }

  private waiting = false;
  private timer?: NodeJS.Timeout;

  private call(fn: () => unknown): unknown {
    try {
      return fn();
    } catch (err) {
      this.sink.failed(err);
      return undefined;
    }
  }

  private await(result: PromiseLike<unknown>): void {
    this.waiting = true;
    let settled = false;
    const done = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(this.timer);
      this.waiting = false;
      this.busy = false;
      this.pump();
    };
    // 0: wait as long as it takes (an iterator waiting for its loop).
    if (this.timeoutMs > 0) {
      this.timer = setTimeout(() => {
        if (settled) return;
        this.sink.timedOut();
        done();
      }, this.timeoutMs);
    }
    result.then(done, (err: unknown) => {
      if (settled) return;
      this.sink.failed(err);
      done();
    });
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as { then?: unknown }).then === 'function'
  );
}
