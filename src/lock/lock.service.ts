import { hostname } from 'node:os';

import {
  Inject,
  Injectable,
  Logger,
  type BeforeApplicationShutdown,
  type OnModuleInit,
} from '@nestjs/common';

import { RedisConnection } from '../connection/redis-connection.js';
import { getRedisConnectionToken } from '../connection/tokens.js';
import { resolveTemplate, type ArgumentTemplate } from '../discovery/decorated-methods.js';
import type { DecoratorExplorer } from '../discovery/explorer.js';
import { LockNotAcquiredError } from '../errors.js';
import { trace, type RedisTraceContext } from '../telemetry/tracing.js';

import { coordinatorFor } from './coordination.js';
import { Deadlines, isTransient } from './deadlines.js';
import type { LeaderElection, LeaderOptions } from './leader.js';
import { LockGrants, type PendingGrant } from './lock-grants.js';
import type { LockStats } from './lock-stats.js';
import { checkDuration, checkOptions, checkResource, show } from './lock.arguments.js';
import { WITH_LOCK_METADATA } from './lock.constants.js';
import { HeldLock, type Lock, type LockOwner } from './lock.js';
import { MAX_LOCK_DURATION_MS } from './lock.options.js';
import { ACQUIRE, EXTEND, INSPECT, LEAVE, lockKeys, RELEASE } from './lock.scripts.js';
import type { ReadWriteLock, ReadWriteLockOptions } from './read-write-lock.js';
import { Renewals } from './renewals.js';
import type { Semaphore, SemaphoreOptions } from './semaphore.js';
import { TokenSource } from './tokens.js';

export { MAX_LOCK_DURATION_MS };

/** Options of `LockService.tryAcquire`. */
export interface TryAcquireLockOptions {
  /**
   * Time to live in ms, rounded up to a whole ms; at most 24 h.
   * @defaultValue the module's `lock.ttl` (30000)
   */
  ttl?: number;
}

/** Options of `LockService.acquire`. */
export interface AcquireLockOptions extends TryAcquireLockOptions {
  /**
   * How long to wait for a taken lock, in ms (at most 24 h).
   * @defaultValue the module's `lock.wait` (10000)
   */
  wait?: number;
  /** Stops waiting: `acquire` rejects promptly with a `LockNotAcquiredError`. */
  signal?: AbortSignal;
}

/** Options of `LockService.withLock`. */
export interface WithLockOptions extends AcquireLockOptions {
  /**
   * Renew the lock while `fn` runs (see `lock.extendMargin`).
   * @defaultValue true
   */
  autoExtend?: boolean;
  /**
   * When the lock was lost before `fn` finished, reject with `LockLostError` (the critical
   * section was not exclusive). `false`: return `fn`'s result anyway.
   * @defaultValue true
   */
  throwOnLost?: boolean;
}

/** What `@WithLock` records on a method. */
export interface WithLockMetadata {
  resource: ArgumentTemplate;
  options: WithLockOptions;
}

/** What `LockService.inspect` reports about a resource. */
export interface LockInfo {
  /** The resource, as given. */
  resource: string;
  /** Whether someone holds the lock right now. */
  locked: boolean;
  /** The holder's label (its module's `lock.holderId`, e.g. `host:pid`); `null` when free. */
  holder: string | null;
  /** The holder's fencing token; `null` when free. */
  fencingToken: number | null;
  /** Remaining TTL of the lock in ms; 0 when free. */
  ttl: number;
  /** Callers (of any process) queued for the lock. */
  waiting: number;
}

/**
 * Distributed locks with fencing tokens, a lock-loss signal, auto-extension and a fair
 * cross-process hand-off (a release grants the lock to the longest waiting caller and
 * notifies only its process), over the default connection.
 *
 * @example
 * ```ts
 * await this.locks.withLock(`invoice:${id}`, async (lock) => {
 *   const invoice = await this.render(id, { signal: lock.signal });
 *   await this.store.save(invoice, { fencingToken: lock.fencingToken });
 * });
 * ```
 */
@Injectable()
export class LockService implements OnModuleInit, BeforeApplicationShutdown {
  private readonly logger = new Logger('Redis:LockService');
  private readonly held = new Set<HeldLock>();
  private readonly abortWaits = new AbortController();
  /** Bounds the attempts in flight by their callers' waits; stopped at shutdown. */
  private readonly deadlines = new Deadlines();
  /** When the locks of `withLock` renew (one timer for all of them). */
  private readonly renewals = new Renewals();
  /** How grants reach the callers of this process queued in Redis. */
  private readonly grants: LockGrants;
  /**
   * Acquisitions in progress, so that shutdown lets them leave their queues first. A count
   * (and a callback for when it drops to 0, set only by shutdown) rather than a set of their
   * promises: that cost two closures and a promise per uncontended acquire.
   */
  private acquiring = 0;
  private settledAll?: () => void;
  private sweeper?: NodeJS.Timeout;
  private readonly tokens = new TokenSource();
  private readonly owner: LockOwner;
  /** The growing figures of `stats()`. */
  private readonly counts = { acquired: 0, handoffs: 0, losses: 0, timeouts: 0 };

  constructor(
    @Inject(getRedisConnectionToken()) private readonly connection: RedisConnection,
    private readonly explorer: DecoratorExplorer,
  ) {
    this.grants = new LockGrants(connection, this.logger);
    this.owner = {
      extend: (lock, ttl) => this.runExtend(lock, ttl),
      release: (lock) => this.runRelease(lock),
      forget: (lock) => this.held.delete(lock),
      lost: () => {
        this.counts.losses += 1;
      },
      checkTtl: (ttl) => checkDuration('Lock.extend', 'ttl', ttl),
    };
  }

  /**
   * This process's lock figures for this connection: locks held and callers waiting now, and
   * since start the acquisitions, hand-offs, losses and timed-out waits. Counted in memory,
   * no round trip; the same figures are OpenTelemetry instruments (`nestjs_redis.lock.*`).
   *
   * @example
   * ```ts
   * const { held, waiting, losses } = this.locks.stats();
   * ```
   */
  stats(): LockStats {
    return { held: this.held.size, waiting: this.grants.size, ...this.counts };
  }

  private get defaults() {
    return this.connection.config.lock;
  }

  /**
   * Takes the lock if it is free and nobody is queued for it; `null` otherwise. Never waits.
   * Rejects with `LockNotAcquiredError` when Redis cannot be reached.
   */
  async tryAcquire(resource: string, options: TryAcquireLockOptions = {}): Promise<Lock | null> {
    checkResource('tryAcquire', resource);
    checkOptions('tryAcquire', options);
    const ttl = checkDuration('LockService.tryAcquire', 'ttl', options.ttl ?? this.defaults.ttl);
    const start = Date.now();
    const token = this.tokens.next();
    try {
      const sentAt = Date.now();
      const reply = await this.runAcquire(resource, token, ttl, '0');
      if (reply[0] !== 1) return null;
      return this.won(await this.granted(resource, token, ttl, reply, sentAt), false);
    } catch (err) {
      this.abandon(resource, token);
      if (err instanceof NotAcknowledged) {
        throw new LockNotAcquiredError(resource, Date.now() - start, { reason: err.message });
      }
      throw new LockNotAcquiredError(resource, Date.now() - start, {
        reason: `Redis did not answer: ${this.describe(err)}`,
        cause: this.scrubbed(err),
      });
    }
  }

  /**
   * Takes the lock, waiting up to `wait` ms in the resource's queue (first come, first served
   * across processes; the release hands the lock over directly). Rejects with
   * `LockNotAcquiredError` when the wait runs out or `signal` aborts; Redis errors in the
   * meantime (a failover) are retried within `wait`.
   */
  acquire(resource: string, options: AcquireLockOptions = {}): Promise<Lock> {
    // Not an async function, so that the lock reaches the caller one promise sooner; a bad
    // argument is still a rejection, as the signature promises.
    let ttl: number;
    let wait: number;
    try {
      checkResource('acquire', resource);
      checkOptions('acquire', options);
      ttl = checkDuration('LockService.acquire', 'ttl', options.ttl ?? this.defaults.ttl);
      wait = checkDuration('LockService.acquire', 'wait', options.wait ?? this.defaults.wait);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.tracedAcquire(resource, ttl, wait, options.signal);
  }

  /** `queueAndWait`, published as `lock.acquire` (outcome `acquired` or `timeout`). */
  private tracedAcquire(
    resource: string,
    ttl: number,
    wait: number,
    signal: AbortSignal | undefined,
  ): Promise<Lock> {
    const ctx: RedisTraceContext = { connection: this.connection.name };
    return trace('lock.acquire', ctx, () => this.queueAndWait(resource, ttl, wait, signal, ctx));
  }

  /**
   * Runs `fn` under the lock and always releases it. The lock is renewed while `fn` runs
   * (`autoExtend`), `fn` gets it (use `lock.signal` and `lock.fencingToken`), and if the lock
   * was lost before `fn` finished, the call rejects with `LockLostError`. A release that
   * reaches Redis only after the TTL (Redis stalled after `fn` returned) is not a loss: the
   * section was exclusive; it is logged as a warning.
   */
  async withLock<T>(
    resource: string,
    fn: (lock: Lock) => Promise<T> | T,
    options: WithLockOptions = {},
  ): Promise<T> {
    checkResource('withLock', resource);
    checkOptions('withLock', options);
    if (typeof fn !== 'function') {
      throw new TypeError(`LockService.withLock: fn must be a function, got ${show(fn)}`);
    }
    const ttl = checkDuration('LockService.withLock', 'ttl', options.ttl ?? this.defaults.ttl);
    const wait = checkDuration('LockService.withLock', 'wait', options.wait ?? this.defaults.wait);
    const autoExtend = options.autoExtend ?? true;
    if (autoExtend && ttl <= this.defaults.extendMargin) {
      throw new RangeError(
        `LockService.withLock(${show(resource)}): ttl ${ttl} ms is not longer than lock.extendMargin ` +
          `(${this.defaults.extendMargin} ms), so the lock would expire before it could be renewed. ` +
          'Raise ttl, lower lock.extendMargin, or pass autoExtend: false.',
      );
    }
    return trace('lock.withLock', { connection: this.connection.name }, () =>
      this.runLocked(resource, fn, options, ttl, wait, autoExtend),
    );
  }

  private async runLocked<T>(
    resource: string,
    fn: (lock: Lock) => Promise<T> | T,
    options: WithLockOptions,
    ttl: number,
    wait: number,
    autoExtend: boolean,
  ): Promise<T> {
    const lock = (await this.tracedAcquire(resource, ttl, wait, options.signal)) as HeldLock;
    if (autoExtend) lock.autoExtend(this.defaults.extendMargin, this.renewals);
    let result: T;
    // Decided when fn settles: lost before (or by then), the section was not exclusive.
    let lostBySettle: Error | undefined;
    try {
      result = await fn(lock);
    } finally {
      // Not `lock.signal.aborted`: reading `signal` would create the controller nobody needs.
      lostBySettle = lock.lostReason;
      await lock.release();
    }
    // A release that found the key gone while our TTL still ran: it vanished during fn.
    const lost = lostBySettle ?? (lock.releaseOutcome === 'lost' ? lock.lostReason : undefined);
    if (lost && (options.throwOnLost ?? true)) throw lost;
    if (!lost && lock.releaseOutcome === 'expired') {
      this.logger.warn(
        `lock "${resource}" (fencing token ${lock.fencingToken}) expired before its release ` +
          'reached Redis; the critical section had finished in time',
      );
    }
    return result;
  }

  /** Whether someone (anyone) holds the lock on `resource` right now. */
  async isLocked(resource: string): Promise<boolean> {
    checkResource('isLocked', resource);
    return (await this.connection.client.exists(lockKeys(resource)[0])) === 1;
  }

  /**
   * Who holds the lock on `resource`: holder label, fencing token, remaining TTL, and how many
   * callers are queued for it. One script call, read-only.
   *
   * @example
   * ```ts
   * const info = await locks.inspect('nightly-report');
   * if (info.locked) console.log(`${info.holder} holds it for ${info.ttl} ms more`);
   * ```
   */
  async inspect(resource: string): Promise<LockInfo> {
    checkResource('inspect', resource);
    const [held, pttl, fence, holder, waiting] = await INSPECT.on(this.connection).run(
      lockKeys(resource),
    );
    const locked = Number(held) === 1;
    return {
      resource,
      locked,
      holder: locked ? (holder ?? null) : null,
      fencingToken: locked && fence != null ? Number(fence) : null,
      ttl: locked ? Math.max(0, Number(pttl)) : 0,
      waiting: Number(waiting),
    };
  }

  /** Wraps the methods decorated with `@WithLock` (found by the module's decorator explorer). */
  onModuleInit(): void {
    this.explorer.wrap<WithLockMetadata>(WITH_LOCK_METADATA, ({ meta, method, label }) => {
      // The wrapper's own `this` is the decorated instance; the service is reached through this alias.
      // eslint-disable-next-line @typescript-eslint/no-this-alias -- see above
      const locks = this;
      return function withLockWrapper(this: unknown, ...args: unknown[]) {
        const resource = resolveTemplate(meta.resource, args, `@WithLock on ${label}`);
        return locks.withLock(resource, () => method.apply(this, args), meta.options);
      };
    });
  }

  /**
   * Stops waiting (queued callers leave their queues), stops every renewal and releases every
   * lock this process holds.
   */
  async beforeApplicationShutdown(): Promise<void> {
    this.abortWaits.abort();
    this.deadlines.stopAll();
    this.grants.wakeAll();
    if (this.acquiring > 0) {
      await new Promise<void>((resolve) => (this.settledAll = resolve));
      this.settledAll = undefined;
    }
    const held = [...this.held];
    const results = await Promise.allSettled(held.map((lock) => lock.release()));
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    this.renewals.stopAll();
    const released = results.filter((r) => r.status === 'fulfilled' && r.value).length;
    if (held.length)
      this.logger.log(`released ${released} of ${held.length} held lock(s) at shutdown`);
  }

  // --- Acquiring: one attempt, then waiting in the resource's queue ------------------------

  /**
   * One attempt that queues us if the lock is taken; then wait for the grant (a message, or the
   * reply of a release of this process), polling every `retryInterval` as the fallback for a
   * lost message or missing channel rights (a poll also renews our queue entry), until granted,
   * the wait runs out or we are aborted. Sets `ctx.outcome`.
   */
  private async queueAndWait(
    resource: string,
    ttl: number,
    wait: number,
    signal: AbortSignal | undefined,
    ctx: RedisTraceContext,
  ): Promise<Lock> {
    const start = Date.now();
    const early = this.stopped({ resource, start, signal });
    if (early) {
      ctx.outcome = 'timeout';
      throw early;
    }
    if (!this.grants.subscribed) {
      // A SUBSCRIBE that Redis does not answer (down, unreachable) must not outlast the wait.
      try {
        await this.deadlines.within(
          this.grants.ensureSubscribed(),
          start + wait,
          () =>
            this.stopped({ resource, start, signal }) ?? this.noAnswerInTime({ resource, start }),
          signal,
        );
      } catch (err) {
        ctx.outcome = 'timeout';
        throw err;
      }
    }
    const token = this.tokens.next();
    const w: Waiting = {
      resource,
      ttl,
      token,
      start,
      deadline: start + wait,
      signal,
      // Registered before the first attempt: the grant may arrive before that attempt's reply.
      pending: this.grants.register(token),
      mode: '1',
      failures: 0,
      lastError: undefined,
      queued: false,
      grantedNoEarlierThan: start,
      holderLeft: Infinity,
    };
    this.acquiring += 1;
    try {
      for (;;) {
        if (w.pending.fence !== undefined) {
          const lock = await this.claimGrant(w);
          if (lock) return this.won(lock, true, ctx);
          continue;
        }
        this.throwIfStopped(w);
        if (w.mode === '2' || w.failures > 0) {
          await this.sleepBeforeRetry(w);
          if (w.pending.fence !== undefined) continue;
          this.throwIfStopped(w);
        }
        const lock = await this.attemptOnce(w);
        if (lock) return this.won(lock, w.queued, ctx);
      }
    } catch (err) {
      ctx.outcome = 'timeout';
      // Leave the queue; a grant that raced with giving up is passed on to the next waiter.
      this.grants.forget(token);
      this.abandon(resource, token);
      if (err instanceof LockNotAcquiredError) throw err;
      throw this.notAcquired(w, `Redis refused: ${this.describe(err)}`, this.scrubbed(err));
    } finally {
      this.grants.forget(token);
      this.acquiring -= 1;
      if (this.acquiring === 0) this.settledAll?.();
    }
  }

  /**
   * Takes a lock granted to `w` (by message or by a release of this process); `undefined` when
   * that failed in a way worth retrying (then it queues again).
   */
  private async claimGrant(w: Waiting): Promise<HeldLock | undefined> {
    const fence = w.pending.fence!;
    // A release of this process says when it was sent: the grant came no earlier.
    const notBefore = Math.max(w.grantedNoEarlierThan, w.pending.notBefore ?? 0);
    w.pending.fence = undefined;
    w.pending.notBefore = undefined;
    const granting = this.granted(w.resource, w.token, w.ttl, [1, fence, -1, 0], 0, {
      grantedNoEarlierThan: notBefore,
    });
    try {
      // Its confirmation (an extension) is bounded by the wait like every attempt.
      return await this.deadlines.within(
        granting,
        w.deadline,
        () => this.stopped(w) ?? this.noAnswerInTime(w),
        w.signal,
      );
    } catch (err) {
      // Given up while the confirmation was in flight: a lock it still yields goes back at once.
      granting.then(
        (lock) => void lock.release(),
        () => undefined,
      );
      if (!(err instanceof NotAcknowledged) && !isTransient(err)) throw err;
      this.failed(w, err);
      return undefined;
    }
  }

  /**
   * Sleeps until the next poll (or retry after a failure), or until a grant, `signal` or
   * shutdown wakes us; throws once the wait has run out.
   */
  private async sleepBeforeRetry(w: Waiting): Promise<void> {
    const remaining = w.deadline - Date.now();
    if (remaining <= 0) throw this.outOfTime(w);
    const poll =
      w.failures > 0
        ? Math.min(this.defaults.retryInterval, 25 * 2 ** Math.min(w.failures, 4))
        : this.defaults.retryInterval * (0.5 + Math.random() * 0.5);
    await this.sleep(w.pending, Math.min(remaining, poll, w.holderLeft), w.signal);
  }

  /**
   * One run of the acquire script, bounded by the wait (ioredis may hold a command through
   * many reconnect attempts). Returns the lock, or `undefined` when it is taken (we are queued)
   * or the attempt failed in a way worth retrying.
   */
  private async attemptOnce(w: Waiting): Promise<HeldLock | undefined> {
    const sentAt = Date.now();
    let reply: AcquireReply;
    try {
      reply = await this.deadlines.within(
        this.runAcquire(w.resource, w.token, w.ttl, w.mode),
        w.deadline,
        () => this.stopped(w) ?? this.noAnswerInTime(w),
        w.signal,
      );
      if (reply[0] === 1) return await this.granted(w.resource, w.token, w.ttl, reply, sentAt);
    } catch (err) {
      if (err instanceof LockNotAcquiredError) throw err;
      if (!(err instanceof NotAcknowledged) && !isTransient(err)) {
        throw this.notAcquired(w, `Redis refused: ${this.describe(err)}`, this.scrubbed(err));
      }
      this.failed(w, err);
      return undefined;
    }
    w.failures = 0;
    w.lastError = undefined;
    w.queued = true;
    w.mode = '2';
    w.grantedNoEarlierThan = sentAt;
    // The holder's TTL ends then at the latest: whoever polls first passes the lock on.
    w.holderLeft = reply[1] >= 0 ? reply[1] + 1 : this.defaults.retryInterval;
    return undefined;
  }

  /** An attempt or a grant failed in a way worth retrying: back off, then queue again. */
  private failed(w: Waiting, err: unknown): void {
    w.failures += 1;
    w.lastError = err;
    w.mode = '1';
  }

  /** Throws when `signal` aborted or the application is shutting down. */
  private throwIfStopped(w: Waiting): void {
    const stopped = this.stopped(w);
    if (stopped) throw stopped;
  }

  private stopped(
    w: Pick<Waiting, 'resource' | 'start' | 'signal'>,
  ): LockNotAcquiredError | undefined {
    if (w.signal?.aborted) return this.notAcquired(w, 'the wait was aborted', w.signal.reason);
    if (this.abortWaits.signal.aborted) {
      return this.notAcquired(w, 'the application is shutting down');
    }
    return undefined;
  }

  /**
   * The wait ran out before a retry (each call ends the acquisition: counted once), saying why
   * the earlier attempts failed when we know.
   */
  private outOfTime(w: Waiting): LockNotAcquiredError {
    this.counts.timeouts += 1;
    const last = w.lastError;
    if (last instanceof NotAcknowledged) return this.notAcquired(w, last.message);
    if (last === undefined) return this.notAcquired(w, 'it stayed locked');
    return this.notAcquired(w, `Redis did not answer: ${this.describe(last)}`, this.scrubbed(last));
  }

  /** The wait ran out while an attempt was in flight (counted once, as above). */
  private noAnswerInTime(
    w: Pick<Waiting, 'resource' | 'start'> & Partial<Pick<Waiting, 'lastError'>>,
  ): LockNotAcquiredError {
    this.counts.timeouts += 1;
    const last = w.lastError;
    if (last instanceof NotAcknowledged) return this.notAcquired(w, last.message);
    return this.notAcquired(w, 'Redis did not answer within the wait');
  }

  private notAcquired(
    w: Pick<Waiting, 'resource' | 'start'>,
    reason: string,
    cause?: unknown,
  ): LockNotAcquiredError {
    return new LockNotAcquiredError(w.resource, Date.now() - w.start, { reason, cause });
  }

  /** Counts an acquisition (a hand-off when the caller had queued); returns the lock. */
  private won(lock: HeldLock, handoff: boolean, ctx?: RedisTraceContext): HeldLock {
    this.counts.acquired += 1;
    if (handoff) this.counts.handoffs += 1;
    if (ctx) ctx.outcome = 'acquired';
    return lock;
  }

  /** Waits `ms`, or until a grant message, `signal` or shutdown wakes us. */
  private sleep(pending: PendingGrant, ms: number, signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        pending.wake = undefined;
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      pending.wake = done;
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  /**
   * Builds the held lock of a successful attempt or grant. A grant by message is confirmed with
   * an extension when its conservative expiry leaves less than half the TTL (we waited long
   * without polling). With `lock.replicas`, the lock is re-asserted and `WAIT`ed for; not
   * acknowledged in time, it is released and `NotAcknowledged` thrown (retried within `wait`).
   */
  private async granted(
    resource: string,
    token: string,
    ttl: number,
    reply: AcquireReply,
    sentAt: number,
    byMessage?: { grantedNoEarlierThan: number },
  ): Promise<HeldLock> {
    this.grants.noteRefused(reply[3]);
    let expiresAt = byMessage ? byMessage.grantedNoEarlierThan + ttl : sentAt + Number(reply[2]);
    if (byMessage && expiresAt - Date.now() < ttl / 2) {
      const confirmedAt = Date.now();
      const [key, meta] = lockKeys(resource);
      if ((await EXTEND.on(this.connection).run([key, meta], [token, ttl])) !== 1) {
        throw new NotAcknowledged('the lock granted to us expired before we could confirm it');
      }
      expiresAt = confirmedAt + ttl;
    }
    const lock = new HeldLock(
      resource,
      token,
      Number(reply[1]),
      ttl,
      sentAt,
      this.owner,
      expiresAt,
    );
    this.track(lock);
    const replicas = this.defaults.replicas;
    if (replicas === 0) return lock;
    const acked = await this.waitForReplicas(lock, ttl);
    if (acked < replicas) {
      await lock.release();
      throw new NotAcknowledged(
        `only ${acked} of ${replicas} replicas acknowledged within ${this.defaults.replicaTimeout} ms`,
      );
    }
    return lock;
  }

  /**
   * `WAIT` counts the writes of its own connection: re-assert the lock (an extension, which
   * replicates after the acquisition) and `WAIT` on a dedicated connection (WAIT blocks).
   */
  private async waitForReplicas(lock: HeldLock, ttl: number): Promise<number> {
    const keys = lockKeys(lock.resource);
    const extend = EXTEND.on(this.connection);
    const acked = await this.connection.withDedicated(async (c) => {
      // One round trip: the script by SHA and WAIT in one pipeline. A server that does not
      // know the script (restart, failover) gets it loaded, then the pipeline once more; the
      // WAIT of a pipeline whose script failed counted no write of ours and is ignored.
      for (let attempt = 0; ; attempt += 1) {
        const out = (await c
          .pipeline()
          .evalsha(extend.sha, 2, keys[0], keys[1], lock.token, ttl)
          .wait(this.defaults.replicas, this.defaults.replicaTimeout)
          .exec()) as Array<[Error | null, unknown]>;
        const [scriptError] = out[0];
        if (scriptError?.message.startsWith('NOSCRIPT') && attempt === 0) {
          await extend.load();
          continue;
        }
        for (const [err] of out) if (err) throw err;
        return Number(out[0][1]) === 1 ? Number(out[1][1]) : -1;
      }
    });
    if (acked < 0) {
      lock.lose('the lock was gone before replicas acknowledged it');
      return 0;
    }
    return acked;
  }

  private runAcquire(
    resource: string,
    token: string,
    ttl: number,
    mode: '0' | '1' | '2',
  ): Promise<AcquireReply> {
    return ACQUIRE.on(this.connection).run(lockKeys(resource), [
      token,
      ttl,
      this.holderId,
      mode,
      this.entryLease,
      this.grants.subscribed ? this.grants.processId : '',
      this.grants.channelPrefix,
    ]);
  }

  /**
   * How long a queue entry lives without renewal (ms). A waiter polls (and renews it) at least
   * every `retryInterval`; the entry of one that died is skipped once this has passed.
   */
  private get entryLease(): number {
    return Math.max(1_000, 4 * this.defaults.retryInterval);
  }

  private get holderId(): string {
    return this.defaults.holderId ?? DEFAULT_HOLDER_ID;
  }

  /** Best effort: a waiter or taker whose outcome is unknown leaves (or passes the lock on). */
  private abandon(resource: string, token: string): void {
    LEAVE.on(this.connection)
      .run(lockKeys(resource), [token, this.grants.channelPrefix])
      .then(
        (passedOn) => {
          if (Number(passedOn) === 1) this.logger.debug?.(`passed on "${resource}" granted late`);
        },
        () => undefined, // the entry's lease (or the lock's TTL) ends it anyway
      );
  }

  /**
   * Remembers a held lock (for shutdown). Locks have no timer of their own, so one sweep
   * forgets those nobody released whose TTL passed; it runs only while locks are held.
   */
  private track(lock: HeldLock): void {
    this.held.add(lock);
    this.sweeper ??= setInterval(() => {
      for (const held of this.held) held.checkLost();
      if (this.held.size === 0) {
        clearInterval(this.sweeper);
        this.sweeper = undefined;
      }
    }, SWEEP_INTERVAL_MS).unref();
  }

  private async runExtend(lock: HeldLock, ttl: number): Promise<boolean> {
    const [key, meta] = lockKeys(lock.resource);
    const ok = await EXTEND.on(this.connection).run([key, meta], [lock.token, ttl]);
    return ok === 1;
  }

  /**
   * The release script is safe to run twice, so a Redis error (a reconnect, a failover) is
   * retried until the lock would have expired anyway; then the outcome is `unknown`.
   */
  private async runRelease(lock: HeldLock): Promise<boolean | 'unknown'> {
    let attempt = 0;
    for (;;) {
      try {
        const sentAt = Date.now();
        const [ok, refused, waiter, fence] = await RELEASE.on(this.connection).run(
          lockKeys(lock.resource),
          [lock.token, this.grants.channelPrefix, this.grants.processId],
        );
        this.grants.noteRefused(refused);
        // Handed to a caller of this process: it learns here, not by message.
        if (waiter !== undefined && waiter !== null) {
          this.grants.grantedByReply(String(waiter), Number(fence), sentAt);
        }
        return Number(ok) === 1;
      } catch (err) {
        attempt += 1;
        const pause = Math.min(250, 25 * 2 ** attempt);
        if (
          !isTransient(err) ||
          Date.now() + pause >= lock.expiresAt ||
          this.connection.isClosing
        ) {
          // The lock expires on its own; a failed release must not fail the caller's work.
          this.logger.warn(
            `could not release lock "${lock.resource}" (it expires by itself at ${new Date(lock.expiresAt).toISOString()}): ${this.describe(err)}`,
          );
          return 'unknown';
        }
        await new Promise((resolve) => setTimeout(resolve, pause));
      }
    }
  }

  private describe(err: unknown): string {
    return this.connection.scrub(err instanceof Error ? err.message : String(err));
  }

  /** A copy of a Redis error safe to attach as `cause`: no command arguments, no secrets. */
  private scrubbed(err: unknown): Error {
    const copy = new Error(this.describe(err));
    copy.name = err instanceof Error ? err.name : 'Error';
    return copy;
  }

  // --- Coordination: semaphores, read-write locks, leader election ------------------------

  /**
   * A counting semaphore: at most `limit` holders of `name` at once, across every process.
   * Permits expire with their holder (a crashed one's frees after `ttl`) and are renewed while
   * held. Throws on an invalid name, `limit` or `ttl`.
   *
   * @example
   * ```ts
   * const exports = this.locks.semaphore('pdf-export', { limit: 3, ttl: 10_000 });
   * await exports.withPermit((permit) => this.render({ signal: permit.signal }));
   * ```
   */
  semaphore(name: string, options: SemaphoreOptions): Semaphore {
    return coordinatorFor(this.connection).semaphore(name, options);
  }

  /**
   * A read-write lock: many readers or one writer of `name`, across every process; a waiting
   * writer blocks new readers, and the write side carries a fencing token.
   *
   * @example
   * ```ts
   * const catalog = this.locks.readWrite('catalog');
   * const page = await catalog.withRead(() => this.readCatalog());
   * await catalog.withWrite((lock) => this.rebuildCatalog(lock.fencingToken));
   * ```
   */
  readWrite(name: string, options: ReadWriteLockOptions = {}): ReadWriteLock {
    return coordinatorFor(this.connection).readWrite(name, options);
  }

  /**
   * Campaigns for the leadership of `name` until `stop()` or shutdown (then it resigns): at
   * most one leader at a time across every process; when the leader dies, another takes over
   * within `ttl` plus one round trip.
   *
   * @example
   * ```ts
   * const election = this.locks.leader('compactor', { ttl: 5_000 });
   * election.on('change', ({ isLeader, term }) => this.logger.log({ isLeader, term }));
   * ```
   */
  leader(name: string, options: LeaderOptions = {}): LeaderElection {
    return coordinatorFor(this.connection).leader(name, options);
  }
}

/** `{acquired, fencingToken | holder's pttl, pttl, publish refused}`, see ACQUIRE. */
type AcquireReply = [number, number, number, number];

/** Internal: an acquisition replicas did not acknowledge (undone; retried within `wait`). */
class NotAcknowledged extends Error {}

/** One `acquire` while it waits: its arguments and what its attempts found so far. */
interface Waiting {
  readonly resource: string;
  readonly ttl: number;
  readonly token: string;
  /** When `acquire` was called, and when its wait runs out (epoch ms). */
  readonly start: number;
  readonly deadline: number;
  readonly signal: AbortSignal | undefined;
  /** Where a grant (by message or by a release of this process) is left for it. */
  readonly pending: PendingGrant;
  /** The next attempt's mode: '1' queue (first, or after a failure), '2' poll. */
  mode: '1' | '2';
  /** Attempts failed in a row (Redis unreachable, replicas behind): they back off. */
  failures: number;
  lastError: unknown;
  /** An attempt found the lock taken and queued us: a later success is a hand-off. */
  queued: boolean;
  /**
   * When the latest attempt that found us still waiting was sent: a grant happened after it,
   * so its TTL runs from no earlier than this.
   */
  grantedNoEarlierThan: number;
  /** Ms until the holder's TTL ends at the latest: whoever polls first passes the lock on. */
  holderLeft: number;
}

/** How often held locks are checked for a TTL that passed unnoticed (ms). */
const SWEEP_INTERVAL_MS = 1_000;
const DEFAULT_HOLDER_ID = `${hostname()}:${process.pid}`;
