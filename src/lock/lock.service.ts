import { randomFillSync } from 'node:crypto';
import {
  Inject,
  Injectable,
  Logger,
  type BeforeApplicationShutdown,
  type OnModuleInit,
} from '@nestjs/common';
import { DiscoveryService, MetadataScanner } from '@nestjs/core';
import { RedisConnection } from '../connection/redis-connection.js';
import { getRedisConnectionToken } from '../connection/tokens.js';
import { Waiters, type Waiter } from '../connection/waiters.js';
import { LockNotAcquiredError } from '../errors.js';
import { HeldLock, type Lock, type LockOwner } from './lock.js';
import { ACQUIRE, EXTEND, lockKeys, RELEASE, RELEASE_CHANNEL } from './lock.scripts.js';
import { WITH_LOCK_METADATA, type WithLockMetadata } from './with-lock.decorator.js';
import { resolveTemplate, wrapDecoratedMethods } from '../discovery/decorated-methods.js';
import { coordinatorFor } from './coordination.js';
import type { LeaderElection, LeaderOptions } from './leader.js';
import type { ReadWriteLock, ReadWriteLockOptions } from './read-write-lock.js';
import type { Semaphore, SemaphoreOptions } from './semaphore.js';

/** Options of `LockService.tryAcquire`. */
export interface TryAcquireLockOptions {
  /** Time to live in ms. @defaultValue the module's `lock.ttl` (30000) */
  ttl?: number;
}

/** Options of `LockService.acquire`. */
export interface AcquireLockOptions extends TryAcquireLockOptions {
  /** How long to wait for a taken lock, in ms. @defaultValue the module's `lock.wait` (10000) */
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
   * When `fn` finished but the lock was lost meanwhile, reject with `LockLostError` (the
   * critical section was not exclusive). `false`: return `fn`'s result anyway.
   * @defaultValue true
   */
  throwOnLost?: boolean;
}

/**
 * Distributed locks with fencing tokens, a lock-loss signal, auto-extension and release
 * notifications, over the default connection.
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
  private readonly waiters = new Waiters();
  private readonly abortWaits = new AbortController();
  private subscription?: Promise<boolean>;
  private subscribed = false;
  /** Release notifications received so far (any resource). */
  private releasesSeen = 0;
  private sweeper?: NodeJS.Timeout;
  private readonly tokens = new TokenSource();
  private readonly owner: LockOwner;

  constructor(
    @Inject(getRedisConnectionToken()) private readonly connection: RedisConnection,
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
  ) {
    this.owner = {
      extend: (lock, ttl) => this.runExtend(lock, ttl),
      release: (lock) => this.runRelease(lock),
      forget: (lock) => this.held.delete(lock),
    };
  }

  private get defaults() {
    return this.connection.config.lock;
  }

  /** Takes the lock if it is free; `null` if someone else holds it. Never waits. */
  async tryAcquire(resource: string, options: TryAcquireLockOptions = {}): Promise<Lock | null> {
    checkResource('tryAcquire', resource);
    const ttl = checkDuration('tryAcquire', 'ttl', options.ttl ?? this.defaults.ttl);
    const attempt = await this.attempt(resource, ttl, 0);
    return attempt.lock ?? null;
  }

  /**
   * Takes the lock, waiting up to `wait` ms for the holder to release it (woken by the release
   * itself, not by polling). Rejects with `LockNotAcquiredError` when the wait runs out or
   * `signal` aborts.
   */
  async acquire(resource: string, options: AcquireLockOptions = {}): Promise<Lock> {
    checkResource('acquire', resource);
    const ttl = checkDuration('acquire', 'ttl', options.ttl ?? this.defaults.ttl);
    const wait = checkDuration('acquire', 'wait', options.wait ?? this.defaults.wait);
    return this.acquireWaiting(resource, ttl, wait, options.signal);
  }

  /**
   * Runs `fn` under the lock and always releases it. The lock is renewed while `fn` runs
   * (`autoExtend`), `fn` gets it (use `lock.signal` and `lock.fencingToken`), and if the lock
   * was lost before `fn` finished, the call rejects with `LockLostError`.
   */
  async withLock<T>(
    resource: string,
    fn: (lock: Lock) => Promise<T> | T,
    options: WithLockOptions = {},
  ): Promise<T> {
    checkResource('withLock', resource);
    const ttl = checkDuration('withLock', 'ttl', options.ttl ?? this.defaults.ttl);
    const wait = checkDuration('withLock', 'wait', options.wait ?? this.defaults.wait);
    const autoExtend = options.autoExtend ?? true;
    if (autoExtend && ttl <= this.defaults.extendMargin) {
      throw new RangeError(
        `LockService.withLock("${resource}"): ttl ${ttl} ms is not longer than lock.extendMargin ` +
          `(${this.defaults.extendMargin} ms), so the lock would expire before it could be renewed. ` +
          'Raise ttl, lower lock.extendMargin, or pass autoExtend: false.',
      );
    }
    const lock = (await this.acquireWaiting(resource, ttl, wait, options.signal)) as HeldLock;
    if (autoExtend) lock.autoExtend(this.defaults.extendMargin);
    let result: T;
    try {
      result = await fn(lock);
    } finally {
      await lock.release();
    }
    // Not `lock.signal.aborted`: reading `signal` would create the controller nobody needs.
    const lost = lock.lostReason;
    if (lost && (options.throwOnLost ?? true)) throw lost;
    return result;
  }

  /** Whether someone (anyone) holds the lock on `resource` right now. */
  async isLocked(resource: string): Promise<boolean> {
    checkResource('isLocked', resource);
    return (await this.connection.client.exists(lockKeys(resource)[0])) === 1;
  }

  /** Wraps the methods decorated with `@WithLock` (found through `DiscoveryService`). */
  onModuleInit(): void {
    wrapDecoratedMethods<WithLockMetadata>(
      this.discovery,
      this.scanner,
      WITH_LOCK_METADATA,
      ({ meta, method, label }) => {
        const locks = this;
        return function withLockWrapper(this: unknown, ...args: unknown[]) {
          const resource = resolveTemplate(meta.resource, args, `@WithLock on ${label}`);
          return locks.withLock(resource, () => method.apply(this, args), meta.options);
        };
      },
    );
  }

  /** Stops waiting, stops every renewal and releases every lock this process holds. */
  async beforeApplicationShutdown(): Promise<void> {
    this.abortWaits.abort();
    // Waiters notice the aborted flag when woken; no listener per waiter on a shared signal
    // (that tripped Node's MaxListenersExceededWarning with more than 10 waiters).
    this.waiters.wakeEveryone();
    const held = [...this.held];
    const results = await Promise.allSettled(held.map((lock) => lock.release()));
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    const released = results.filter((r) => r.status === 'fulfilled' && r.value).length;
    if (held.length)
      this.logger.log(`released ${released} of ${held.length} held lock(s) at shutdown`);
  }

  // ---------------------------------------------------------------------------------------

  private async acquireWaiting(
    resource: string,
    ttl: number,
    wait: number,
    signal: AbortSignal | undefined,
  ): Promise<Lock> {
    const start = Date.now();
    const deadline = start + wait;
    const stop = (reason: string, cause?: unknown): LockNotAcquiredError =>
      new LockNotAcquiredError(resource, Date.now() - start, { reason, cause });
    const checkAborted = (): void => {
      if (signal?.aborted) throw stop('the wait was aborted', signal.reason);
      if (this.abortWaits.signal.aborted) throw stop('the application is shutting down');
    };
    if (!this.subscribed) await this.ensureSubscribed();
    const markTtl = this.waitMarkTtl;
    // Callers of this process already waiting for the resource go first: without this a worker
    // that just released re-acquires before the waiter it woke gets there, and others starve.
    let queue = this.waiters.count(resource) > 0;
    if (!queue) {
      // Mostly the lock is free: try before registering as a waiter (that registration was a
      // measurable part of an uncontended acquire). A release announced while this attempt was
      // in flight finds nobody registered; the count of notifications tells us to retry at once.
      checkAborted();
      const seen = this.releasesSeen;
      const attempt = await this.attempt(resource, ttl, markTtl);
      if (attempt.lock) return attempt.lock;
      const woken = this.waiters.register(resource);
      try {
        if (this.releasesSeen === seen) {
          await this.pause(woken, attempt, deadline, signal, stop, checkAborted);
        }
      } finally {
        woken.cancel();
      }
    }
    for (;;) {
      checkAborted();
      // Register before trying, so that a release between our attempt and our wait still wakes us.
      const woken = this.waiters.register(resource);
      try {
        if (queue) {
          queue = false;
          const remaining = deadline - Date.now();
          if (remaining <= 0) throw stop('it stayed locked');
          await woken.until(Math.min(remaining, this.defaults.retryInterval), signal);
          continue;
        }
        const attempt = await this.attempt(resource, ttl, markTtl);
        if (attempt.lock) return attempt.lock;
        await this.pause(woken, attempt, deadline, signal, stop, checkAborted);
      } finally {
        woken.cancel();
      }
    }
  }

  /**
   * After a failed attempt: wait until a release wakes us, or the jittered poll, or the
   * holder's TTL ends, whichever comes first; throw when the wait has run out.
   */
  private async pause(
    woken: Waiter,
    attempt: Attempt,
    deadline: number,
    signal: AbortSignal | undefined,
    stop: (reason: string) => LockNotAcquiredError,
    checkAborted: () => void,
  ): Promise<void> {
    // Aborted while the attempt was in flight: an already aborted signal fires no listener.
    checkAborted();
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw stop(attempt.reason ?? 'it stayed locked');
    const poll = this.defaults.retryInterval * (0.5 + Math.random() * 0.5);
    const holderLeft =
      attempt.pttl !== undefined && attempt.pttl >= 0 ? attempt.pttl + 1 : Infinity;
    await woken.until(Math.min(remaining, poll, holderLeft), signal);
  }

  /**
   * How long a failed attempt's "someone waits" mark lives. A waiter retries (and marks again)
   * at least every `retryInterval`; a crashed one's mark costs one needless PUBLISH at most.
   */
  private get waitMarkTtl(): number {
    return Math.max(1_000, 4 * this.defaults.retryInterval);
  }

  /** One acquisition attempt; a caller that will wait passes `markTtl` > 0 (see ACQUIRE). */
  private async attempt(resource: string, ttl: number, markTtl: number): Promise<Attempt> {
    const token = this.tokens.next();
    const keys = lockKeys(resource);
    const sentAt = Date.now();
    const replicas = this.defaults.replicas;
    let reply: [number, number];
    let reason: string | undefined;
    if (replicas > 0) {
      // WAIT counts the writes of its own connection: run both on a dedicated one (WAIT blocks).
      const { result, acked } = await this.connection.withDedicated(async (c) => {
        const out = (await c
          .pipeline()
          .eval(ACQUIRE.lua, 3, ...keys, token, ttl, markTtl)
          .wait(replicas, this.defaults.replicaTimeout)
          .exec()) as Array<[Error | null, unknown]>;
        for (const [err] of out) if (err) throw err;
        return { result: out[0][1] as [number, number], acked: Number(out[1][1]) };
      });
      reply = result;
      if (reply[0] === 1 && acked < replicas) {
        await RELEASE.run(
          this.connection.client,
          [keys[0], keys[2]],
          [token, this.channel, resource, this.waiters.count(resource) > 0 ? '1' : '0'],
        );
        reason = `only ${acked} of ${replicas} replicas acknowledged within ${this.defaults.replicaTimeout} ms`;
        return { reason, pttl: 0 };
      }
    } else {
      reply = await ACQUIRE.run(this.connection.client, keys, [token, ttl, markTtl]);
    }
    if (reply[0] !== 1) return { pttl: Number(reply[1]) };
    const lock = new HeldLock(resource, token, Number(reply[1]), ttl, sentAt, this.owner);
    this.track(lock);
    return { lock };
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
    const ok = await EXTEND.run(
      this.connection.client,
      [lockKeys(lock.resource)[0]],
      [lock.token, ttl],
    );
    return ok === 1;
  }

  private async runRelease(lock: HeldLock): Promise<boolean> {
    try {
      const [key, , waitingKey] = lockKeys(lock.resource);
      // Callers of this process queued behind another do not mark: announce for them.
      const announce = this.waiters.count(lock.resource) > 0 ? '1' : '0';
      const ok = await RELEASE.run(
        this.connection.client,
        [key, waitingKey],
        [lock.token, this.channel, lock.resource, announce],
      );
      return ok === 1;
    } catch (err) {
      // The lock expires on its own; a failed release must not fail the caller's work.
      this.logger.warn(
        `could not release lock "${lock.resource}" (it expires by itself at ${new Date(lock.expiresAt).toISOString()}): ${this.connection.scrub((err as Error).message)}`,
      );
      return false;
    }
  }

  private get channel(): string {
    return `${this.connection.keyPrefix}${RELEASE_CHANNEL}`;
  }

  /** Subscribes once to release notifications; without them, waiting falls back to polling. */
  private ensureSubscribed(): Promise<boolean> {
    this.subscription ??= this.connection
      .subscribe(this.channel, (resource) => {
        // Wake one waiter of this process, the longest waiting: waking all of them sends N
        // acquire attempts of which N-1 lose (measured: 3-4x less throughput under contention).
        // The woken one wakes the next when it releases; a lost message is covered by the poll.
        this.releasesSeen += 1;
        this.waiters.wakeOne(resource);
      })
      .then(
        () => (this.subscribed = true),
        (err: unknown) => {
          this.logger.warn(
            `release notifications unavailable, waiting locks poll every ~${this.defaults.retryInterval} ms: ${this.connection.scrub((err as Error).message)}`,
          );
          this.subscription = undefined;
          this.subscribed = false;
          return false;
        },
      );
    return this.subscription;
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

/** What one acquisition attempt found. */
interface Attempt {
  lock?: HeldLock;
  /** The holder's remaining TTL (ms; negative: none), when the lock was taken. */
  pttl?: number;
  reason?: string;
}

/** How often held locks are checked for a TTL that passed unnoticed (ms). */
const SWEEP_INTERVAL_MS = 1_000;

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
      `LockService.${method}: resource must be a non-empty string, got ${JSON.stringify(resource) ?? String(resource)}`,
    );
  }
}

function checkDuration(method: string, name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new RangeError(
      `LockService.${method}: ${name} must be a positive finite number of milliseconds, got ${String(value)}`,
    );
  }
  return value;
}
