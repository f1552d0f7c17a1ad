import { withTimeout } from '../connection/wait.js';
import { LockLostError } from '../errors.js';

import { FENCE_IDLE_MS, leaderKeys } from './coordination.keys.js';
import { LEADER_CLAIM, LEADER_RENEW, LEADER_RESIGN } from './coordination.scripts.js';
import type { Coordinator } from './coordination.types.js';

/** Options of `LockService.leader`. */
export interface LeaderOptions {
  /**
   * How long a leadership lives unless renewed, in ms. The leader renews it every third of
   * this; when the leader process dies or freezes, another takes over within `ttl` plus one
   * round trip.
   * @defaultValue the module's `lock.ttl` (30000)
   */
  ttl?: number;
}

/** One change of this process's leadership, as events and the async iterator report it. */
export interface LeadershipChange {
  /** `true`: this process became the leader; `false`: it no longer is. */
  readonly isLeader: boolean;
  /**
   * The term of the leadership gained or lost: increases with every new leader of this name,
   * usable as a fencing token.
   */
  readonly term: number;
  /** Why the leadership ended (`isLeader: false` only). */
  readonly reason?: string;
}

/**
 * This process's candidacy in the election of one name: at most one leader among every
 * process campaigning for it. It campaigns from creation until `stop()` (or shutdown) and
 * takes over when the leader resigns or stops renewing.
 */
export interface LeaderElection {
  /** The name given to `LockService.leader`. */
  readonly name: string;
  /** The leadership's TTL, in ms. */
  readonly ttl: number;
  /**
   * Whether this process is the leader right now (checked against the local clock too, so a
   * process that was paused past its TTL says `false` before any Redis round trip).
   */
  readonly isLeader: boolean;
  /** The current leadership's term (a fencing token), `undefined` while not the leader. */
  readonly term: number | undefined;
  /**
   * The current leadership's signal: aborts (reason: a `LockLostError`) on demotion. Read it
   * after becoming leader; while not the leader it is already aborted.
   */
  readonly signal: AbortSignal;
  /** Calls `listener` on every change of leadership. */
  on(event: 'change', listener: (change: LeadershipChange) => void): this;
  /** Removes a listener given to `on`. */
  off(event: 'change', listener: (change: LeadershipChange) => void): this;
  /**
   * The changes of leadership: first the current state, then each change, until `stop()`
   * (or until the loop is left).
   */
  [Symbol.asyncIterator](): AsyncIterableIterator<LeadershipChange>;
  /** Stops campaigning and resigns if leader, so that another process takes over at once. */
  stop(): Promise<void>;
}

/** The `LeaderElection` implementation. */
export class RedisLeaderElection implements LeaderElection {
  private readonly token: string;
  private readonly keys: [string, string];
  private readonly wakeKey: string;
  private readonly stopController = new AbortController();
  private readonly listeners = new Set<(change: LeadershipChange) => void>();
  private readonly enders = new Set<() => void>();
  private leading = false;
  private currentTerm?: number;
  private currentSignal: AbortSignal;
  private controller?: AbortController;
  private expiresAt = 0;
  private expiry?: NodeJS.Timeout;
  private readonly running: Promise<void>;
  private stopping?: Promise<void>;
  private warned = false;

  constructor(
    private readonly coordinator: Coordinator,
    readonly name: string,
    readonly ttl: number,
  ) {
    this.token = coordinator.token();
    this.keys = leaderKeys(name);
    this.wakeKey = `l:${name}`;
    this.currentSignal = AbortSignal.abort(this.notLeader('this process has not been elected'));
    coordinator.trackElection(this);
    // Nothing awaits the campaign until stop(): a failure must be logged, never left unhandled
    // (an unhandled rejection would end the process).
    this.running = this.campaign().catch((err: unknown) => {
      this.coordinator.logger.error(
        `election "${name}" stopped campaigning: ${coordinator.connection.scrub((err as Error).message)}`,
      );
    });
  }

  get isLeader(): boolean {
    this.checkExpired();
    return this.leading;
  }

  get term(): number | undefined {
    return this.isLeader ? this.currentTerm : undefined;
  }

  get signal(): AbortSignal {
    this.checkExpired();
    return this.currentSignal;
  }

  on(event: 'change', listener: (change: LeadershipChange) => void): this {
    if ((event as string) !== 'change')
      throw new TypeError(`LeaderElection.on: unknown event "${event}"`);
    this.listeners.add(listener);
    return this;
  }

  off(event: 'change', listener: (change: LeadershipChange) => void): this {
    if ((event as string) === 'change') this.listeners.delete(listener);
    return this;
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<LeadershipChange> {
    const queue: LeadershipChange[] = [];
    let wake: (() => void) | undefined;
    let done = this.stopController.signal.aborted;
    const listener = (change: LeadershipChange): void => {
      queue.push(change);
      wake?.();
    };
    const end = (): void => {
      done = true;
      this.listeners.delete(listener);
      this.enders.delete(end);
      wake?.();
    };
    if (!done) {
      this.listeners.add(listener);
      this.enders.add(end);
      queue.push(
        this.isLeader
          ? { isLeader: true, term: this.currentTerm! }
          : { isLeader: false, term: this.currentTerm ?? 0, reason: 'not elected' },
      );
    }
    const iterator: AsyncIterableIterator<LeadershipChange> = {
      next: async () => {
        while (queue.length === 0 && !done) await new Promise<void>((r) => (wake = r));
        wake = undefined;
        const value = queue.shift();
        return value ? { value, done: false } : { value: undefined, done: true };
      },
      return: () => {
        end();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  // ---------------------------------------------------------------------------------------

  private async doStop(): Promise<void> {
    this.stopController.abort();
    const bound = this.coordinator.connection.config.shutdownTimeout;
    // A claim or renewal in flight could still make us leader in Redis: let it land, then
    // resign whatever our local view (bounded: Redis may be unreachable).
    await withTimeout(this.running, bound, () => new Error('timeout')).catch(() => undefined);
    const [leader] = this.keys;
    await withTimeout(
      LEADER_RESIGN.on(this.coordinator.connection).run(
        [leader],
        [this.token, this.coordinator.channel, this.wakeKey],
      ),
      bound,
      () => new Error('timeout'),
    ).catch(() => undefined);
    this.demote('the election was stopped (resigned)');
    this.coordinator.forgetElection(this);
    for (const end of [...this.enders]) end();
  }

  private async campaign(): Promise<void> {
    const stopped = this.stopController.signal;
    // Without notifications a follower still takes over when the leader's TTL ends.
    await this.coordinator.ensureSubscribed().catch(() => false);
    const connection = this.coordinator.connection;
    const retry = Math.max(10, Math.min(this.coordinator.defaults.retryInterval, this.ttl / 4));
    while (!stopped.aborted) {
      // Registered before the round trip: a resignation announced meanwhile still wakes us.
      const woken = this.coordinator.waiters.register(this.wakeKey);
      let delay: number;
      try {
        if (!this.isLeader) {
          const sentAt = Date.now();
          const [ok, n] = await LEADER_CLAIM.on(connection).run(this.keys, [
            this.token,
            this.ttl,
            FENCE_IDLE_MS,
          ]);
          if (ok === 1) {
            this.elect(Number(n), sentAt);
            delay = this.renewDelay();
          } else {
            // Try again right after the leader's TTL would end: the failover bound.
            delay = Number(n) >= 0 ? Number(n) + 1 : retry;
          }
        } else {
          const sentAt = Date.now();
          const ok = await LEADER_RENEW.on(connection).run([this.keys[0]], [this.token, this.ttl]);
          if (!this.leading) {
            delay = 0; // demoted by the clock meanwhile: claim again (ours if Redis kept it)
          } else if (ok === 1) {
            this.expiresAt = sentAt + this.ttl;
            this.armExpiry();
            delay = this.renewDelay();
          } else {
            this.demote('another process holds the leadership');
            delay = 0;
          }
        }
        this.warned = false;
      } catch (err) {
        // Redis unreachable: the expiry timer demotes us if this lasts; try again soon.
        if (!this.warned && !stopped.aborted) {
          this.warned = true;
          this.coordinator.logger.warn(
            `election "${this.name}": ${this.coordinator.connection.scrub((err as Error).message)}; retrying`,
          );
        }
        delay = retry;
      }
      try {
        if (delay > 0 && !stopped.aborted) await woken.until(delay, stopped);
      } finally {
        woken.cancel();
      }
    }
  }

  private renewDelay(): number {
    return Math.max(0, this.expiresAt - Date.now() - (2 * this.ttl) / 3);
  }

  private elect(term: number, sentAt: number): void {
    this.expiresAt = sentAt + this.ttl;
    if (this.leading && this.currentTerm === term) {
      this.armExpiry();
      return;
    }
    if (this.leading) this.demote('a new term began');
    this.leading = true;
    this.currentTerm = term;
    this.controller = new AbortController();
    this.currentSignal = this.controller.signal;
    this.armExpiry();
    this.emit({ isLeader: true, term });
  }

  private demote(reason: string): void {
    if (!this.leading) return;
    this.leading = false;
    clearTimeout(this.expiry);
    this.expiry = undefined;
    const term = this.currentTerm ?? 0;
    this.controller?.abort(this.notLeader(reason));
    this.emit({ isLeader: false, term, reason });
  }

  private checkExpired(): void {
    if (this.leading && Date.now() >= this.expiresAt) {
      this.demote(`its ttl passed without renewal (${this.ttl} ms)`);
    }
  }

  private armExpiry(): void {
    clearTimeout(this.expiry);
    // Unref'd: it only watches the leadership, it is no reason to keep the process alive.
    this.expiry = setTimeout(
      () => {
        this.checkExpired();
        if (this.leading) this.armExpiry();
      },
      Math.max(0, Math.ceil(this.expiresAt - Date.now())),
    ).unref();
  }

  private notLeader(reason: string): LockLostError {
    return new LockLostError(this.name, this.currentTerm ?? 0, `the leadership ended: ${reason}`);
  }

  private emit(change: LeadershipChange): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(change);
      } catch (err) {
        this.coordinator.logger.error(
          `election "${this.name}": a change listener threw: ${(err as Error).message}`,
        );
      }
    }
  }
}
