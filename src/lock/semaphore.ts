import type { Coordinator } from './coordination.js';
import { checkMs, semaphoreKeys, tombstoneMs } from './coordination.keys.js';
import { HOLDER_EXTEND, HOLDER_RELEASE, SEMAPHORE_ACQUIRE } from './coordination.scripts.js';
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
  /** Takes a permit if one is free; `null` if all are taken. Never waits. */
  tryAcquire(options?: TryAcquirePermitOptions): Promise<Permit | null>;
  /**
   * Takes a permit, waiting up to `wait` ms for one to free (woken by the release, not only by
   * polling). Rejects with `LockNotAcquiredError` when the wait runs out or `signal` aborts.
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
  private readonly keys: [string, string];
  private readonly wakeKey: string;
  private readonly ops: LeaseOps;

  constructor(
    private readonly coordinator: Coordinator,
    readonly name: string,
    readonly limit: number,
    readonly ttl: number,
  ) {
    this.keys = semaphoreKeys(name);
    this.wakeKey = `s:${name}`;
    const [holders, waiting] = this.keys;
    const connection = coordinator.connection;
    this.ops = coordinator.leaseOps(
      `a permit of semaphore "${name}"`,
      async (token, ms) => (await HOLDER_EXTEND.on(connection).run([holders], [token, ms])) === 1,
      async (token) =>
        (await HOLDER_RELEASE.on(connection).run(
          [holders, waiting],
          [
            token,
            coordinator.channel,
            this.wakeKey,
            tombstoneMs(this.ttl),
            coordinator.waiters.count(this.wakeKey) > 0 ? '1' : '0',
          ],
        )) === 1,
    );
  }

  async tryAcquire(options: TryAcquirePermitOptions = {}): Promise<Permit | null> {
    const result = await this.attempt(0, options.autoExtend ?? true);
    return result.value ?? null;
  }

  acquire(options: AcquirePermitOptions = {}): Promise<Permit> {
    const wait = checkMs(
      'semaphore().acquire',
      'wait',
      options.wait ?? this.coordinator.defaults.wait,
    );
    const autoExtend = options.autoExtend ?? true;
    return this.coordinator.acquireWaiting(this.name, this.wakeKey, wait, options.signal, (mark) =>
      this.attempt(mark, autoExtend),
    );
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

  private async attempt(
    markTtl: number,
    autoExtend: boolean,
  ): Promise<{
    value?: Permit;
    retryIn?: number;
  }> {
    const token = this.coordinator.token();
    const sentAt = Date.now();
    const [ok, n] = await SEMAPHORE_ACQUIRE.on(this.coordinator.connection).run(this.keys, [
      token,
      this.limit,
      this.ttl,
      markTtl,
    ]);
    if (ok !== 1) return { retryIn: Number(n) };
    const permit = new HeldLease('permit', this.name, token, this.ttl, sentAt, this.ops);
    this.coordinator.track(permit);
    if (autoExtend) permit.autoExtend(this.coordinator.defaults.extendMargin);
    return { value: permit };
  }
}
