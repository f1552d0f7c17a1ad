import { randomBytes, randomFillSync } from 'node:crypto';
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
import type { LeaderElection, LeaderOptions } from './leader.js';
import type { LockStats } from './lock-stats.js';
import { WITH_LOCK_METADATA } from './lock.constants.js';
import { HeldLock, type Lock, type LockOwner } from './lock.js';
import { MAX_LOCK_DURATION_MS } from './lock.options.js';
import {
  ACQUIRE,
  EXTEND,
  GRANT_CHANNEL,
  INSPECT,
  LEAVE,
  lockKeys,
  MAX_RESOURCE_BYTES,
  RELEASE,
} from './lock.scripts.js';
import { replyBehind } from './module-script.js';
import type { ReadWriteLock, ReadWriteLockOptions } from './read-write-lock.js';
import type { Semaphore, SemaphoreOptions } from './semaphore.js';

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
  /**
   * Attempts in flight, stopped at shutdown. A plain set rather than listeners on
   * `abortWaits.signal`: an `EventTarget` listener per acquisition cost CPU on every uncontended
   * acquire, and more than ten at once made Node warn of a leak.
   */
  private readonly inFlight = new Set<() => void>();
  /** Callers of this process queued in Redis, by their token: woken by a grant message. */
  private readonly pending = new Map<string, PendingGrant>();
  /** Acquisitions in progress, so that shutdown lets them leave the queue first. */
  private readonly active = new Set<Promise<unknown>>();
  private subscription?: Promise<boolean>;
  /** When subscribing last failed (ms): not retried for a while, and warned about once. */
  private subscribeFailedAt = 0;
  private subscribed = false;
  private publishRefusedWarned = false;
  private sweeper?: NodeJS.Timeout;
  private readonly tokens = new TokenSource();
  private readonly owner: LockOwner;
  /** This process's id in grant channels and queue entries. */
  private readonly processId = randomBytes(8).toString('hex');
  /** The growing figures of `stats()`. */
  private readonly counts = { acquired: 0, handoffs: 0, losses: 0, timeouts: 0 };

  constructor(
    @Inject(getRedisConnectionToken()) private readonly connection: RedisConnection,
    private readonly explorer: DecoratorExplorer,
  ) {
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
    return { held: this.held.size, waiting: this.pending.size, ...this.counts };
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
  async acquire(resource: string, options: AcquireLockOptions = {}): Promise<Lock> {
    checkResource('acquire', resource);
    checkOptions('acquire', options);
    const ttl = checkDuration('LockService.acquire', 'ttl', options.ttl ?? this.defaults.ttl);
    const wait = checkDuration('LockService.acquire', 'wait', options.wait ?? this.defaults.wait);
    return this.tracedAcquire(resource, ttl, wait, options.signal);
  }

  /** `acquireWaiting`, published as `lock.acquire` (outcome `acquired` or `timeout`). */
  private tracedAcquire(
    resource: string,
    ttl: number,
    wait: number,
    signal: AbortSignal | undefined,
  ): Promise<Lock> {
    const ctx: RedisTraceContext = { connection: this.connection.name };
    return trace('lock.acquire', ctx, async () => {
      try {
        const lock = await this.acquireWaiting(resource, ttl, wait, signal);
        ctx.outcome = 'acquired';
        return lock;
      } catch (err) {
        ctx.outcome = err instanceof LockNotAcquiredError ? 'timeout' : 'error';
        throw err;
      }
    });
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
    if (autoExtend) lock.autoExtend(this.defaults.extendMargin);
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
    for (const stop of [...this.inFlight]) stop();
    for (const waiter of this.pending.values()) waiter.wake?.();
    await Promise.allSettled([...this.active]);
    const held = [...this.held];
    const results = await Promise.allSettled(held.map((lock) => lock.release()));
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    const released = results.filter((r) => r.status === 'fulfilled' && r.value).length;
    if (held.length)
      this.logger.log(`released ${released} of ${held.length} held lock(s) at shutdown`);
  }

  // ---------------------------------------------------------------------------------------

  private acquireWaiting(
    resource: string,
    ttl: number,
    wait: number,
    signal: AbortSignal | undefined,
  ): Promise<Lock> {
    const run = this.queueAndWait(resource, ttl, wait, signal);
    this.active.add(run);
    void run.then(
      () => this.active.delete(run),
      () => this.active.delete(run),
    );
    return run;
  }

  /**
   * One attempt that queues us if the lock is taken; then wait for the grant message (or, as a
   * fallback for a lost message or missing channel rights, poll every `retryInterval`, which
   * also renews our queue entry) until granted, the wait runs out or we are aborted.
   */
  private async queueAndWait(
    resource: string,
    ttl: number,
    wait: number,
    signal: AbortSignal | undefined,
  ): Promise<Lock> {
    const start = Date.now();
    const deadline = start + wait;
    const token = this.tokens.next();
    const stop = (reason: string, cause?: unknown): LockNotAcquiredError =>
      new LockNotAcquiredError(resource, Date.now() - start, { reason, cause });
    // The wait ran out (each call ends the acquisition: counted once).
    const timedOut = (reason: string, cause?: unknown): LockNotAcquiredError => {
      this.counts.timeouts += 1;
      return stop(reason, cause);
    };
    const aborted = (): LockNotAcquiredError | undefined => {
      if (signal?.aborted) return stop('the wait was aborted', signal.reason);
      if (this.abortWaits.signal.aborted) return stop('the application is shutting down');
      return undefined;
    };
    const early = aborted();
    if (early) throw early;
    if (!this.subscribed) await this.ensureSubscribed();
    // Registered before the first attempt: the grant may arrive before that attempt's reply.
    const pending: PendingGrant = {};
    this.pending.set(token, pending);
    let failures = 0;
    let mode: '1' | '2' = '1';
    // The grant happened after the latest attempt that found us still waiting: its TTL runs
    // from no earlier than when that attempt was sent.
    let grantedNoEarlierThan = start;
    let holderLeft = Infinity;
    let lastError: unknown;
    // Whether an attempt found the lock taken (and queued us): a later success is a hand-off.
    let queued = false;
    try {
      for (;;) {
        if (pending.fence !== undefined) {
          const fence = pending.fence;
          // A release of this process says when it was sent: the grant came no earlier.
          const notBefore = Math.max(grantedNoEarlierThan, pending.notBefore ?? 0);
          pending.fence = undefined;
          pending.notBefore = undefined;
          try {
            const lock = await this.granted(resource, token, ttl, [1, fence, -1, 0], 0, {
              grantedNoEarlierThan: notBefore,
            });
            return this.won(lock, true);
          } catch (err) {
            if (!(err instanceof NotAcknowledged) && !isTransient(err)) throw err;
            failures += 1;
            lastError = err;
            mode = '1';
            continue;
          }
        }
        const stopped = aborted();
        if (stopped) throw stopped;
        if (mode === '2' || failures > 0) {
          const remaining = deadline - Date.now();
          if (remaining <= 0) {
            if (lastError instanceof NotAcknowledged) throw timedOut(lastError.message);
            throw lastError
              ? timedOut(
                  `Redis did not answer: ${this.describe(lastError)}`,
                  this.scrubbed(lastError),
                )
              : timedOut('it stayed locked');
          }
          const poll =
            failures > 0
              ? Math.min(this.defaults.retryInterval, 25 * 2 ** Math.min(failures, 4))
              : this.defaults.retryInterval * (0.5 + Math.random() * 0.5);
          await this.sleep(pending, Math.min(remaining, poll, holderLeft), signal);
          if (pending.fence !== undefined) continue;
          const again = aborted();
          if (again) throw again;
        }
        const sentAt = Date.now();
        let reply: AcquireReply;
        try {
          // Bounded by the wait: ioredis may hold a command through many reconnect attempts.
          reply = await withinDeadline(
            this.runAcquire(resource, token, ttl, mode),
            deadline,
            // Out of time mid-attempt: say why the earlier attempts failed, when we know.
            () =>
              aborted() ??
              (lastError instanceof NotAcknowledged
                ? timedOut(lastError.message)
                : timedOut('Redis did not answer within the wait')),
            signal,
            this.inFlight,
          );
          if (reply[0] === 1) {
            return this.won(await this.granted(resource, token, ttl, reply, sentAt), queued);
          }
        } catch (err) {
          if (err instanceof LockNotAcquiredError) throw err;
          if (!(err instanceof NotAcknowledged) && !isTransient(err)) {
            throw stop(`Redis refused: ${this.describe(err)}`, this.scrubbed(err));
          }
          failures += 1;
          lastError = err;
          mode = '1';
          continue;
        }
        failures = 0;
        lastError = undefined;
        queued = true;
        mode = '2';
        grantedNoEarlierThan = sentAt;
        // The holder's TTL ends then at the latest: whoever polls first passes the lock on.
        holderLeft = reply[1] >= 0 ? reply[1] + 1 : this.defaults.retryInterval;
      }
    } catch (err) {
      // Leave the queue; a grant that raced with giving up is passed on to the next waiter.
      this.pending.delete(token);
      this.abandon(resource, token);
      if (err instanceof LockNotAcquiredError) throw err;
      throw stop(`Redis refused: ${this.describe(err)}`, this.scrubbed(err));
    } finally {
      this.pending.delete(token);
    }
  }

  /** Counts an acquisition (a hand-off when the caller had queued); returns the lock. */
  private won(lock: HeldLock, handoff: boolean): HeldLock {
    this.counts.acquired += 1;
    if (handoff) this.counts.handoffs += 1;
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
    this.noteRefused(reply[3]);
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
      this.subscribed ? this.processId : '',
      this.grantChannelPrefix,
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
      .run(lockKeys(resource), [token, this.grantChannelPrefix])
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
          [lock.token, this.grantChannelPrefix, this.processId],
        );
        this.noteRefused(refused);
        // Handed to a caller of this process: it learns here, not by message. One that gave up
        // meanwhile is not pending any more; its departure (LEAVE) passes the lock on.
        if (waiter !== undefined && waiter !== null) {
          const pending = this.pending.get(String(waiter));
          if (pending) {
            pending.fence = Number(fence);
            pending.notBefore = sentAt;
            pending.wake?.();
          }
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

  /** A grant notification was refused (no channel rights): say so once; waiters poll. */
  private noteRefused(refused: number | undefined): void {
    if (Number(refused) !== 1 || this.publishRefusedWarned) return;
    this.publishRefusedWarned = true;
    this.logger.warn(
      'Redis refused PUBLISH of a lock hand-off notification (ACL channel rights?): locks are ' +
        `still released and handed over, and waiters notice by polling every ~${this.defaults.retryInterval} ms. ` +
        `Grant the user "&${this.grantChannelPrefix}*" for immediate hand-offs.`,
    );
  }

  private get grantChannelPrefix(): string {
    return `${this.connection.keyPrefix}${GRANT_CHANNEL}`;
  }

  /**
   * Subscribes once to this process's grant channel; without it, queued callers notice their
   * grant by polling. A failure is warned about once and retried at most once a minute.
   */
  private ensureSubscribed(): Promise<boolean> {
    if (!this.subscription && Date.now() - this.subscribeFailedAt < RESUBSCRIBE_AFTER_MS) {
      return Promise.resolve(false);
    }
    this.subscription ??= this.connection
      .subscribe(`${this.grantChannelPrefix}${this.processId}`, (message) => {
        const colon = message.indexOf(':');
        const waiter = this.pending.get(message.slice(0, colon));
        if (!waiter) return; // gave up meanwhile: its LEAVE passes the lock on
        waiter.fence = Number(message.slice(colon + 1));
        waiter.wake?.();
      })
      .then(
        () => (this.subscribed = true),
        (err: unknown) => {
          if (this.subscribeFailedAt === 0) {
            this.logger.warn(
              `lock hand-off notifications unavailable, waiting locks poll every ~${this.defaults.retryInterval} ms: ${this.describe(err)}`,
            );
          }
          this.subscribeFailedAt = Date.now();
          this.subscription = undefined;
          this.subscribed = false;
          return false;
        },
      );
    return this.subscription;
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

/** A caller of this process queued in Redis. */
interface PendingGrant {
  /** Set by the grant message, or by the reply of a release of this process. */
  fence?: number;
  /** When that release was sent (epoch ms): the grant happened no earlier. */
  notBefore?: number;
  /** Ends the current sleep. */
  wake?: () => void;
}

/** How often held locks are checked for a TTL that passed unnoticed (ms). */
const SWEEP_INTERVAL_MS = 1_000;
const RESUBSCRIBE_AFTER_MS = 60_000;
const DEFAULT_HOLDER_ID = `${hostname()}:${process.pid}`;

/**
 * `promise`, or a rejection with `onStop()` once `deadline` (epoch ms) has passed or a signal
 * aborts: a caller (or shutdown) never waits on a command ioredis keeps through reconnects.
 */
function withinDeadline<T>(
  promise: Promise<T>,
  deadline: number,
  onStop: () => Error,
  signal: AbortSignal | undefined,
  inFlight: Set<() => void>,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const stop = (): void => {
      cleanup();
      reject(onStop());
    };
    const timer = setTimeout(stop, Math.max(0, deadline - Date.now()));
    const cleanup = (): void => {
      clearTimeout(timer);
      inFlight.delete(stop);
      signal?.removeEventListener('abort', stop);
    };
    inFlight.add(stop);
    signal?.addEventListener('abort', stop, { once: true });
    promise.then(
      (value) => {
        cleanup();
        resolve(value);
      },
      (err: unknown) => {
        cleanup();
        reject(err);
      },
    );
  });
}

/**
 * Errors worth retrying within `wait`: the connection dropped or was reset (ioredis aborts or
 * times out the command), or the server is between roles during a failover.
 */
function isTransient(error: unknown): boolean {
  const err = replyBehind(error);
  if (!(err instanceof Error)) return false;
  if (err.name !== 'ReplyError') return true;
  return /^(READONLY|LOADING|MASTERDOWN|TRYAGAIN|CLUSTERDOWN|NOREPLICAS|UNBLOCKED)/.test(
    err.message,
  );
}

/**
 * Lock tokens: 128 random bits each, hex. Drawn from the CSPRNG 256 tokens at a time: one
 * `randomBytes(16)` per lock was about 6% of the CPU of an uncontended acquire + release.
 */
class TokenSource {
  private readonly pool = Buffer.allocUnsafe(16 * 256);
  private offset = this.pool.length;

  next(): string {
    if (this.offset === this.pool.length) {
      randomFillSync(this.pool);
      this.offset = 0;
    }
    const token = this.pool.toString('hex', this.offset, this.offset + 16);
    this.offset += 16;
    return token;
  }
}

function checkResource(method: string, resource: unknown): asserts resource is string {
  if (typeof resource !== 'string' || resource.length === 0) {
    throw new TypeError(
      `LockService.${method}: resource must be a non-empty string, got ${show(resource)}`,
    );
  }
  const bytes = Buffer.byteLength(resource);
  if (bytes > MAX_RESOURCE_BYTES) {
    throw new RangeError(
      `LockService.${method}: resource must be at most ${MAX_RESOURCE_BYTES} bytes (UTF-8), got ` +
        `${bytes} bytes: ${show(resource)} (hash long names yourself)`,
    );
  }
}

/** Options must be an object (or left out); a function for `fn`. */
function checkOptions(method: string, options: unknown): void {
  if (options !== undefined && (options === null || typeof options !== 'object')) {
    throw new TypeError(`LockService.${method}: options must be an object, got ${show(options)}`);
  }
}

/** A value for an error message: never throws (BigInt, cycles), never long. */
function show(value: unknown): string {
  let text: string;
  try {
    text =
      typeof value === 'string'
        ? JSON.stringify(value)
        : typeof value === 'bigint'
          ? `${value}n`
          : typeof value === 'number'
            ? String(value)
            : (JSON.stringify(value) ?? String(value));
  } catch {
    text = Object.prototype.toString.call(value);
  }
  return text.length > 64 ? `${text.slice(0, 64)}…` : text;
}

/** Positive, finite, at most 24 h; rounded up to a whole ms (Redis takes integers only). */
function checkDuration(method: string, name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new RangeError(
      `${method}: ${name} must be a positive finite number of milliseconds, got ${show(value)}`,
    );
  }
  if (value > MAX_LOCK_DURATION_MS) {
    throw new RangeError(
      `${method}: ${name} must be at most ${MAX_LOCK_DURATION_MS} ms (24 h), got ${show(value)}`,
    );
  }
  return Math.ceil(value);
}
