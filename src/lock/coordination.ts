import { randomBytes } from 'node:crypto';

import { Logger } from '@nestjs/common';

import { Waiters } from '../common/async.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import { LockNotAcquiredError } from '../errors.js';

import { checkMs, checkName, COORDINATION_CHANNEL, GRANT_CHANNEL } from './coordination.keys.js';
import { SEMAPHORE_LEAVE } from './coordination.scripts.js';
import type { AttemptResult, Candidacy, Coordinator, QueuedWaiter } from './coordination.types.js';
import { RedisLeaderElection, type LeaderElection, type LeaderOptions } from './leader.js';
import type { HeldLease, LeaseOps } from './lease.js';
import {
  RedisReadWriteLock,
  type ReadWriteLock,
  type ReadWriteLockOptions,
} from './read-write-lock.js';
import { Renewals } from './renewals.js';
import { RedisSemaphore, type Semaphore, type SemaphoreOptions } from './semaphore.js';
import { TokenSource } from './tokens.js';

/**
 * The shared machinery of semaphores, read-write locks and elections of one connection:
 * tokens, release notifications (one subscription, channel `coord:released`), semaphore grants
 * (one subscription to this process's channel `coord:grant:<id>`), the waiting loop, and
 * everything held, so that shutdown releases it. One per connection, created on first use.
 */
export class RedisCoordinator implements Coordinator {
  readonly logger = new Logger('Redis:LockService');
  readonly waiters = new Waiters();
  private readonly stopping = new AbortController();
  private readonly leases = new Set<HeldLease>();
  private readonly elections = new Set<Candidacy>();
  /** The candidacies of `@Leader`, one per name. */
  private readonly shared = new Map<string, LeaderElection>();
  private subscription?: Promise<boolean>;
  private unsubscribe?: () => Promise<void>;
  private readonly tokens = new TokenSource();
  readonly renewals = new Renewals();
  private sweeper?: NodeJS.Timeout;
  /** This process's id in semaphore queue entries and its grant channel. */
  readonly processId = randomBytes(8).toString('hex');
  /** Semaphore waiters of this process queued in Redis, by token. */
  private readonly queued = new Map<string, QueuedWaiter>();
  /** Semaphore acquisitions in progress (shutdown lets them leave their queues first). */
  private active = 0;
  /** Set by shutdown while it waits for the acquisitions in progress. */
  private settledAll?: () => void;
  /** Counts an acquisition out (one bound function, not two closures per acquisition). */
  private readonly settle = (): void => {
    this.active -= 1;
    if (this.active === 0) this.settledAll?.();
  };
  /** Departures from semaphore queues in flight (shutdown waits for them). */
  private readonly leaving = new Set<Promise<unknown>>();
  private grantSubscription?: Promise<boolean>;
  private unsubscribeGrants?: () => Promise<void>;
  /** When subscribing to grants last failed (ms): retried at most once a minute. */
  private grantSubscribeFailedAt = 0;
  private refusedWarned = false;
  /** Grants reach this process by message (else its queued waiters find them by polling). */
  grantsSubscribed = false;
  /** When this process last renewed its liveness in each semaphore's queue (ms, by name). */
  private readonly renewedAt = new Map<string, number>();

  constructor(readonly connection: RedisConnection) {}

  semaphore(name: string, options: SemaphoreOptions): Semaphore {
    checkName('semaphore', name);
    if (typeof options !== 'object' || options === null) {
      throw new TypeError(
        `LockService.semaphore("${name}"): options { limit } are required, got ${String(options)}`,
      );
    }
    const { limit } = options;
    if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1) {
      throw new RangeError(
        `LockService.semaphore("${name}"): limit must be an integer of at least 1, got ${String(limit)}`,
      );
    }
    const ttl = checkMs('semaphore', 'ttl', options.ttl ?? this.defaults.ttl);
    this.checkRenewable('semaphore', name, ttl);
    return new RedisSemaphore(this, name, limit, ttl);
  }

  readWrite(name: string, options: ReadWriteLockOptions = {}): ReadWriteLock {
    checkName('readWrite', name);
    const ttl = checkMs('readWrite', 'ttl', options.ttl ?? this.defaults.ttl);
    this.checkRenewable('readWrite', name, ttl);
    return new RedisReadWriteLock(this, name, ttl);
  }

  leader(name: string, options: LeaderOptions = {}): LeaderElection {
    checkName('leader', name);
    const ttl = checkMs('leader', 'ttl', options.ttl ?? this.defaults.ttl);
    if (this.stopping.signal.aborted) {
      throw new Error(`LockService.leader("${name}"): the application is shutting down`);
    }
    return new RedisLeaderElection(this, name, ttl);
  }

  /** The one candidacy of this process for `@Leader(name)`, created on first use. */
  sharedElection(name: string, options: LeaderOptions): LeaderElection {
    let election = this.shared.get(name);
    if (!election) {
      election = this.leader(name, options);
      this.shared.set(name, election);
    }
    return election;
  }

  /** Auto-extension renews a third of the TTL (at least `extendMargin`) before it ends. */
  private checkRenewable(method: string, name: string, ttl: number): void {
    if (ttl <= this.defaults.extendMargin) {
      throw new RangeError(
        `LockService.${method}("${name}"): ttl ${ttl} ms is not longer than lock.extendMargin ` +
          `(${this.defaults.extendMargin} ms), so holds would expire before they could be renewed. ` +
          'Raise ttl or lower lock.extendMargin.',
      );
    }
  }

  get defaults() {
    return this.connection.config.lock;
  }

  get client() {
    return this.connection.client;
  }

  get channel(): string {
    return `${this.connection.keyPrefix}${COORDINATION_CHANNEL}`;
  }

  /** Prefix of the per-process channels on which semaphore grants are told. */
  get grantChannelPrefix(): string {
    return `${this.connection.keyPrefix}${GRANT_CHANNEL}`;
  }

  /** Aborted once the application shuts down. */
  get shutdownSignal(): AbortSignal {
    return this.stopping.signal;
  }

  /**
   * How long a failed attempt's "someone waits" mark (and a waiting writer's intent) lives. A
   * waiter tries again at least every `retryInterval`, renewing it; a dead one's lapses.
   */
  get waitMarkTtl(): number {
    return Math.max(1_000, 4 * this.defaults.retryInterval);
  }

  /** A holder's token: 128 random bits, hex. */
  token(): string {
    return this.tokens.next();
  }

  /** The lease callbacks of one primitive, with failures of a release logged, not thrown. */
  leaseOps(
    what: string,
    extend: (token: string, ttl: number) => Promise<boolean>,
    release: (token: string) => Promise<boolean>,
  ): LeaseOps {
    return {
      extend,
      release: async (token) => {
        try {
          return await release(token);
        } catch (err) {
          // It expires by itself; a failed release must not fail the caller's work.
          this.logger.warn(
            `could not release ${what} (it expires by itself): ${this.connection.scrub((err as Error).message)}`,
          );
          return false;
        }
      },
      settled: (lease) => this.leases.delete(lease),
    };
  }

  /**
   * Remembers a lease (for shutdown). Leases nobody watches keep no timer, so one sweep forgets
   * those whose TTL passed unreleased; it runs only while leases are held.
   */
  track(lease: HeldLease): void {
    this.leases.add(lease);
    this.sweeper ??= setInterval(() => {
      for (const held of this.leases) held.checkLost();
      if (this.leases.size === 0) {
        clearInterval(this.sweeper);
        this.sweeper = undefined;
      }
    }, 1_000).unref();
  }

  trackElection(election: Candidacy): void {
    this.elections.add(election);
  }

  forgetElection(election: Candidacy): void {
    this.elections.delete(election);
  }

  /**
   * Tries `attempt` until it yields a value, waking on release notifications for `wakeKey`, on
   * a jittered poll, or when the holder's TTL ends; rejects with `LockNotAcquiredError` when
   * `wait` runs out, `signal` aborts or the application shuts down.
   */
  async acquireWaiting<T>(
    name: string,
    wakeKey: string,
    wait: number,
    signal: AbortSignal | undefined,
    attempt: (markTtl: number) => Promise<AttemptResult<T>>,
  ): Promise<T> {
    const start = Date.now();
    const deadline = start + wait;
    const stop = (reason: string, cause?: unknown): LockNotAcquiredError =>
      new LockNotAcquiredError(name, Date.now() - start, { reason, cause });
    await this.ensureSubscribed();
    // Callers of this process already waiting go first: without this one that just released
    // takes it again before the waiter it woke gets there, and the waiter starves.
    let queue = this.waiters.count(wakeKey) > 0;
    for (;;) {
      if (signal?.aborted) throw stop('the wait was aborted', signal.reason);
      if (this.stopping.signal.aborted) throw stop('the application is shutting down');
      // Register before trying, so that a release between the attempt and the wait wakes us.
      const woken = this.waiters.register(wakeKey);
      try {
        if (queue) {
          queue = false;
          const remaining = deadline - Date.now();
          if (remaining <= 0) throw stop('it stayed taken');
          await woken.until(Math.min(remaining, this.defaults.retryInterval), signal);
          continue;
        }
        const result = await attempt(this.waitMarkTtl);
        if (result.value !== undefined) return result.value;
        if (signal?.aborted) throw stop('the wait was aborted', signal.reason);
        if (this.stopping.signal.aborted) throw stop('the application is shutting down');
        const remaining = deadline - Date.now();
        if (remaining <= 0) throw stop('it stayed taken');
        const poll = this.defaults.retryInterval * (0.5 + Math.random() * 0.5);
        const holderLeft =
          result.retryIn !== undefined && result.retryIn >= 0 ? result.retryIn + 1 : Infinity;
        await woken.until(Math.min(remaining, poll, holderLeft), signal);
      } finally {
        woken.cancel();
      }
    }
  }

  /** Subscribes once to release notifications; without them, waiting falls back to polling. */
  ensureSubscribed(): Promise<boolean> {
    // `subscribe` throws at once when the connection is closing: make that a rejection too.
    this.subscription ??= Promise.resolve()
      .then(() =>
        this.connection.subscribe(this.channel, (message) => {
          // Messages are `<kind>:<name>`. A permit freed lets one waiter in; a writer or a leader
          // gone may let several (readers, or a new leader among this process's candidates).
          if (message.startsWith('s:')) this.waiters.wakeOne(message);
          else this.waiters.wakeAll(message);
        }),
      )
      .then(
        (unsubscribe) => {
          this.unsubscribe = unsubscribe;
          return true;
        },
        (err: unknown) => {
          this.logger.warn(
            `release notifications unavailable, waiting polls every ~${this.defaults.retryInterval} ms: ${this.connection.scrub((err as Error).message)}`,
          );
          this.subscription = undefined;
          return false;
        },
      );
    return this.subscription;
  }

  /**
   * Subscribes once to this process's grant channel; without it, a queued semaphore waiter
   * learns of its grant when it polls. A failure is warned about once, retried once a minute.
   */
  ensureGrantChannel(): Promise<boolean> {
    if (!this.grantSubscription && Date.now() - this.grantSubscribeFailedAt < RESUBSCRIBE_MS) {
      return Promise.resolve(false);
    }
    this.grantSubscription ??= Promise.resolve()
      .then(() =>
        this.connection.subscribe(`${this.grantChannelPrefix}${this.processId}`, (message) => {
          const notBefore = Date.now();
          for (const token of message.split(',')) this.grant(token, false, notBefore);
        }),
      )
      .then(
        (unsubscribe) => {
          this.unsubscribeGrants = unsubscribe;
          this.grantsSubscribed = true;
          return true;
        },
        (err: unknown) => {
          if (this.grantSubscribeFailedAt === 0) {
            this.logger.warn(
              `semaphore grant notifications unavailable, queued waiters poll every ~${this.defaults.retryInterval} ms: ${this.connection.scrub((err as Error).message)}`,
            );
          }
          this.grantSubscribeFailedAt = Date.now();
          this.grantSubscription = undefined;
          return false;
        },
      );
    return this.grantSubscription;
  }

  /** Remembers an acquisition until it settles (for shutdown); returns it. */
  waiting<T>(run: Promise<T>): Promise<T> {
    this.active += 1;
    run.then(this.settle, this.settle);
    return run;
  }

  /** Registers a semaphore waiter of this process (before its first attempt is sent). */
  enqueue(token: string): QueuedWaiter {
    const waiter: QueuedWaiter = {};
    this.queued.set(token, waiter);
    return waiter;
  }

  /** Forgets a waiter: a grant for it from now on is passed on by its `leave`, or was its own. */
  dequeue(token: string): void {
    this.queued.delete(token);
  }

  /**
   * Hands the grants a semaphore script reports (`reply[from..]`, tokens of this process's
   * waiters) to those waiters, except `self` (the caller, who reads its own outcome), and
   * warns once when the script could not notify another process. Returns the tokens granted
   * to nobody: a waiter that gave up (and whose departure may have failed), to pass on.
   */
  granted(
    reply: Array<number | string>,
    from: number,
    sentAt: number,
    self?: string,
  ): string[] | undefined {
    if (Number(reply[from - 1]) === 1) this.noteRefused();
    let orphans: string[] | undefined;
    for (let i = from; i < reply.length; i++) {
      const token = String(reply[i]);
      if (token !== self && !this.grant(token, true, sentAt) && !this.holds(token)) {
        (orphans ??= []).push(token);
      }
    }
    return orphans;
  }

  /** Tells a queued waiter of its grant; `false` when no waiter of that token is queued. */
  private grant(token: string, local: boolean, notBefore: number): boolean {
    const waiter = this.queued.get(token);
    // Gone: it gave up, and its `leave` passes the permit on (or did already).
    if (!waiter) return false;
    waiter.grant ??= { local, notBefore };
    waiter.wake?.();
    return true;
  }

  /** Whether this process holds a lease with this token. */
  private holds(token: string): boolean {
    for (const lease of this.leases) if (lease.token === token) return true;
    return false;
  }

  /**
   * Whether an attempt that may queue a waiter of semaphore `name` should renew this process's
   * liveness there (at least every quarter lease while it has waiters queued).
   */
  renewDue(name: string): boolean {
    const at = this.renewedAt.get(name);
    return at === undefined || Date.now() - at >= this.waitMarkTtl / 4;
  }

  /** Records a renewal sent at `sentAt` that Redis carried out. */
  renewed(name: string, sentAt: number): void {
    // Names come and go (a semaphore per tenant, say): forget them all now and then.
    if (this.renewedAt.size >= 1_000) this.renewedAt.clear();
    this.renewedAt.set(name, sentAt);
  }

  private noteRefused(): void {
    if (this.refusedWarned) return;
    this.refusedWarned = true;
    this.logger.warn(
      'Redis refused PUBLISH of a semaphore grant (ACL channel rights?): permits are still ' +
        `handed over in queue order, and waiters of other processes notice by polling every ~${this.defaults.retryInterval} ms. ` +
        `Grant the user "&${this.grantChannelPrefix}*" for immediate hand-offs.`,
    );
  }

  /** Waits `ms`, or until a grant, `signal` or shutdown wakes `waiter`. */
  sleep(waiter: QueuedWaiter, ms: number, signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        waiter.wake = undefined;
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      waiter.wake = done;
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  /**
   * Best effort: a semaphore waiter that gave up leaves the queue, or passes on a permit granted
   * to it meanwhile. Without it, its entry lapses after the queue lease anyway.
   */
  leave(token: string, member: string, keys: string[], limit: number): void {
    const sentAt = Date.now();
    const run = SEMAPHORE_LEAVE.on(this.connection)
      .run(keys, [token, limit, this.processId, this.grantChannelPrefix, member])
      .then(
        (reply) => {
          for (const orphan of this.granted(reply, 2, sentAt) ?? []) {
            this.leave(orphan, '', keys, limit);
          }
        },
        () => undefined,
      );
    this.leaving.add(run);
    void run.finally(() => this.leaving.delete(run));
  }

  /** Stops every wait, resigns every leadership and releases every lease of this process. */
  async shutdown(): Promise<void> {
    this.stopping.abort();
    this.waiters.wakeEveryone();
    for (const waiter of this.queued.values()) waiter.wake?.();
    // Woken, queued waiters give up and leave their queues (or end with a permit, released below).
    if (this.active > 0) {
      await new Promise<void>((resolve) => (this.settledAll = resolve));
      this.settledAll = undefined;
    }
    const elections = [...this.elections];
    const leases = [...this.leases];
    await Promise.allSettled([
      ...elections.map((e) => e.stop()),
      ...leases.map((l) => l.release()),
      ...this.leaving,
    ]);
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    this.renewals.stopAll();
    const unsubscribe = this.unsubscribe;
    this.unsubscribe = undefined;
    await unsubscribe?.().catch(() => undefined);
    const unsubscribeGrants = this.unsubscribeGrants;
    this.unsubscribeGrants = undefined;
    this.grantsSubscribed = false;
    await unsubscribeGrants?.().catch(() => undefined);
    if (leases.length || elections.length) {
      this.logger.log(
        `released ${leases.length} permit(s)/read-write lock(s) and stopped ${elections.length} election(s) at shutdown`,
      );
    }
  }
}

const RESUBSCRIBE_MS = 60_000;

const coordinators = new WeakMap<RedisConnection, RedisCoordinator>();

/** The coordinator of a connection if it was ever used. */
export function existingCoordinator(connection: RedisConnection): RedisCoordinator | undefined {
  return coordinators.get(connection);
}

/** The coordinator of a connection, created on first use. */
export function coordinatorFor(connection: RedisConnection): RedisCoordinator {
  let coordinator = coordinators.get(connection);
  if (!coordinator) {
    coordinator = new RedisCoordinator(connection);
    coordinators.set(connection, coordinator);
  }
  return coordinator;
}
