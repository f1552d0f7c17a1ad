import { LockNotAcquiredError } from '../errors.js';

import { checkMs, semaphoreKeys, tombstoneMs } from './coordination.keys.js';
import { HOLDER_EXTEND, SEMAPHORE_ACQUIRE, SEMAPHORE_RELEASE } from './coordination.scripts.js';
import type { Coordinator, Grant } from './coordination.types.js';
import { HeldLease, runHolding, type LeaseOps, type Permit } from './lease.js';

/** Options of `LockService.semaphore`. */
export interface SemaphoreOptions {
  /** How many holders at most at once (an integer ≥ 1). Every user of a name must agree on it. */
  limit: number;
  /**
   * How long a permit lives unless renewed, in ms: a crashed holder's permit frees after this.
   * @defaultValue the module's `lock.ttl` (30000)
   */
  ttl?: number;
}

/** Options of `Semaphore.tryAcquire`. */
export interface TryAcquirePermitOptions {
  /**
   * Renew the permit until it is released (a third of the TTL before it ends). `false`: it
   * lives `ttl` ms unless you call `extend()`.
   * @defaultValue true
   */
  autoExtend?: boolean;
}

/** Options of `Semaphore.acquire`. */
export interface AcquirePermitOptions extends TryAcquirePermitOptions {
  /** How long to wait for a free permit, in ms. @defaultValue the module's `lock.wait` (10000) */
  wait?: number;
  /** Stops waiting: `acquire` rejects promptly with a `LockNotAcquiredError`. */
  signal?: AbortSignal;
}

/** Options of `Semaphore.withPermit`. */
export interface WithPermitOptions extends AcquirePermitOptions {
  /**
   * When the permit was lost before `fn` finished, reject with `LockLostError`. `false`:
   * return `fn`'s result anyway.
   * @defaultValue true
   */
  throwOnLost?: boolean;
}

/**
 * A counting semaphore shared by every process using the same name: at most `limit` holders at
 * once. Get one from `LockService.semaphore(name, { limit, ttl })`.
 */
export interface Semaphore {
  /** The name given to `LockService.semaphore`. */
  readonly name: string;
  /** The most holders at once. */
  readonly limit: number;
  /** A permit's TTL, in ms. */
  readonly ttl: number;
  /** Takes a permit if one is free and not owed to a queued waiter; `null` otherwise. Never waits. */
  tryAcquire(options?: TryAcquirePermitOptions): Promise<Permit | null>;
  /**
   * Takes a permit, waiting up to `wait` ms in the name's queue (first come, first served
   * across processes): a release hands the freed permit to the oldest waiter directly. Rejects
   * with `LockNotAcquiredError` when the wait runs out or `signal` aborts (and leaves the
   * queue, passing on a permit granted meanwhile).
   */
  acquire(options?: AcquirePermitOptions): Promise<Permit>;
  /**
   * Runs `fn` holding a permit and always releases it; rejects with `LockLostError` if the
   * permit was lost before `fn` finished.
   */
  withPermit<T>(fn: (permit: Permit) => Promise<T> | T, options?: WithPermitOptions): Promise<T>;
  /** How many live holders right now (all processes). */
  holders(): Promise<number>;
}

/** The `Semaphore` implementation. */
export class RedisSemaphore implements Semaphore {
  private readonly keys: [string, string, string];
  private readonly ops: LeaseOps;

  constructor(
    private readonly coordinator: Coordinator,
    readonly name: string,
    readonly limit: number,
    readonly ttl: number,
  ) {
    this.keys = semaphoreKeys(name);
    const [holders] = this.keys;
    const connection = coordinator.connection;
    this.ops = coordinator.leaseOps(
      `a permit of semaphore "${name}"`,
      async (token, ms) => (await HOLDER_EXTEND.on(connection).run([holders], [token, ms])) === 1,
      async (token) => {
        const sentAt = Date.now();
        const reply = await SEMAPHORE_RELEASE.on(connection).run(this.keys, [
          token,
          tombstoneMs(this.ttl),
          this.limit,
          coordinator.processId,
          coordinator.grantChannelPrefix,
        ]);
        this.passOn(this.coordinator.granted(reply, 2, sentAt));
        return Number(reply[0]) === 1;
      },
    );
  }

  async tryAcquire(options: TryAcquirePermitOptions = {}): Promise<Permit | null> {
    const token = this.coordinator.token();
    const sentAt = Date.now();
    const reply = await this.attempt(token, '0');
    return reply[0] === 1 ? this.hold(token, sentAt, options.autoExtend ?? true) : null;
  }

  acquire(options: AcquirePermitOptions = {}): Promise<Permit> {
    const wait = checkMs(
      'semaphore().acquire',
      'wait',
      options.wait ?? this.coordinator.defaults.wait,
    );
    return this.coordinator.waiting(
      this.queueAndWait(wait, options.autoExtend ?? true, options.signal),
    );
  }

  /**
   * One attempt that queues us (in Redis) if all permits are taken; then wait for a grant: in
   * the reply of a release of this process, by a message on this process's grant channel, or,
   * as the fallback (and to renew our queue entry), found by a poll every `retryInterval`.
   */
  private async queueAndWait(
    wait: number,
    autoExtend: boolean,
    signal: AbortSignal | undefined,
  ): Promise<Permit> {
    const coordinator = this.coordinator;
    const start = Date.now();
    const deadline = start + wait;
    const stop = (reason: string, cause?: unknown): LockNotAcquiredError =>
      new LockNotAcquiredError(this.name, Date.now() - start, { reason, cause });
    const stopped = (): LockNotAcquiredError | undefined => {
      if (signal?.aborted) return stop('the wait was aborted', signal.reason);
      if (coordinator.shutdownSignal.aborted) return stop('the application is shutting down');
      return undefined;
    };
    const early = stopped();
    if (early) throw early;
    // Without the grant channel, a queued waiter learns of its grant by polling.
    if (!coordinator.grantsSubscribed) await coordinator.ensureGrantChannel();
    const token = coordinator.token();
    // Registered before the first attempt: a grant may arrive before that attempt's reply.
    const waiter = coordinator.enqueue(token);
    let mode: '1' | '2' = '1';
    // A grant happened after the latest attempt that found us still queued.
    let queuedAt = start;
    let holderLeft = Infinity;
    try {
      for (;;) {
        if (waiter.grant) {
          const permit = await this.fromGrant(token, waiter.grant, queuedAt, autoExtend);
          waiter.grant = undefined;
          if (permit) return permit;
          mode = '1'; // it expired before we could confirm it: queue again
          continue;
        }
        const halt = stopped();
        if (halt) throw halt;
        if (mode === '2') {
          const remaining = deadline - Date.now();
          if (remaining <= 0) throw stop('it stayed taken');
          const poll = coordinator.defaults.retryInterval * (0.5 + Math.random() * 0.5);
          await coordinator.sleep(waiter, Math.min(remaining, poll, holderLeft), signal);
          if (waiter.grant) continue;
          const again = stopped();
          if (again) throw again;
        }
        const sentAt = Date.now();
        const reply = await this.attempt(token, mode);
        if (reply[0] === 1) return this.hold(token, sentAt, autoExtend);
        mode = '2';
        queuedAt = sentAt;
        // Then the first holder expires unless renewed: whoever polls first passes it on.
        holderLeft = Number(reply[1]) >= 0 ? Number(reply[1]) + 1 : Infinity;
      }
    } catch (err) {
      coordinator.dequeue(token);
      coordinator.leave(token, this.member(token), this.keys, this.limit);
      throw err;
    } finally {
      coordinator.dequeue(token);
    }
  }

  async withPermit<T>(
    fn: (permit: Permit) => Promise<T> | T,
    options: WithPermitOptions = {},
  ): Promise<T> {
    const permit = (await this.acquire(options)) as HeldLease;
    return runHolding(permit, fn, options.throwOnLost ?? true);
  }

  async holders(): Promise<number> {
    const [holders] = this.keys;
    const [seconds, micros] = await this.coordinator.client.time();
    const now = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    return this.coordinator.client.zcount(holders, `(${now}`, '+inf');
  }

  /** One run of the acquire script; hands the grants it made to this process's waiters. */
  private async attempt(token: string, mode: '0' | '1' | '2'): Promise<Array<number | string>> {
    const coordinator = this.coordinator;
    const sentAt = Date.now();
    const renew = mode !== '0' && coordinator.renewDue(this.name);
    const reply = await SEMAPHORE_ACQUIRE.on(coordinator.connection).run(this.keys, [
      token,
      this.limit,
      this.ttl,
      mode,
      coordinator.waitMarkTtl,
      coordinator.processId,
      coordinator.grantChannelPrefix,
      renew ? '1' : '0',
    ]);
    // Renewed only if it queued us (a success never needed it).
    if (renew && reply[0] !== 1) coordinator.renewed(this.name, sentAt);
    this.passOn(coordinator.granted(reply, 3, sentAt, token));
    return reply;
  }

  /** Our queue member: what the acquire script queues for `token`. */
  private member(token: string): string {
    const c = this.coordinator;
    return `${token}|${c.processId}|${this.ttl}|${c.waitMarkTtl}`;
  }

  /** Permits granted to waiters of this process that are gone: passed on to the next ones. */
  private passOn(orphans: string[] | undefined): void {
    for (const token of orphans ?? []) {
      this.coordinator.leave(token, this.member(token), this.keys, this.limit);
    }
  }

  /**
   * The permit of a grant. One made by a release of this process has its full TTL from no
   * earlier than that release was sent; one told by message has at most the queue lease, so it
   * is extended to the full TTL first (`null` if it expired meanwhile).
   */
  private async fromGrant(
    token: string,
    grant: Grant,
    queuedAt: number,
    autoExtend: boolean,
  ): Promise<Permit | null> {
    const notBefore = Math.max(queuedAt, grant.notBefore);
    if (grant.local && notBefore + this.ttl - Date.now() >= this.ttl / 2) {
      return this.hold(token, notBefore, autoExtend);
    }
    const sentAt = Date.now();
    if (!(await this.ops.extend(token, this.ttl))) return null;
    return this.hold(token, sentAt, autoExtend);
  }

  private hold(token: string, sentAt: number, autoExtend: boolean): Permit {
    const permit = new HeldLease('permit', this.name, token, this.ttl, sentAt, this.ops);
    this.coordinator.track(permit);
    if (autoExtend)
      permit.autoExtend(this.coordinator.defaults.extendMargin, this.coordinator.renewals);
    return permit;
  }
}
