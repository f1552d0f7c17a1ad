import { checkMs, FENCE_IDLE_MS, readWriteKeys, tombstoneMs } from './coordination.keys.js';
import {
  HOLDER_EXTEND,
  HOLDER_RELEASE,
  READ_ACQUIRE,
  WRITE_ACQUIRE,
  WRITE_EXTEND,
  WRITE_RELEASE,
  WRITE_WITHDRAW,
} from './coordination.scripts.js';
import type { Coordinator } from './coordination.types.js';
import { HeldLease, runHolding, type LeaseOps, type ReadLock, type WriteLock } from './lease.js';
import type {
  AcquirePermitOptions,
  TryAcquirePermitOptions,
  WithPermitOptions,
} from './semaphore.js';

/** Options of `LockService.readWrite`. */
export interface ReadWriteLockOptions {
  /**
   * How long a read or write lock lives unless renewed, in ms: a crashed holder's lock frees
   * after this.
   * @defaultValue the module's `lock.ttl` (30000)
   */
  ttl?: number;
}

/** Options of `ReadWriteLock.tryRead` / `tryWrite`. */
export type TryAcquireReadWriteOptions = TryAcquirePermitOptions;
/** Options of `ReadWriteLock.read` / `write`. */
export type AcquireReadWriteOptions = AcquirePermitOptions;
/** Options of `ReadWriteLock.withRead` / `withWrite`. */
export type WithReadWriteOptions = WithPermitOptions;

/**
 * A read-write lock shared by every process using the same name: many readers or one writer.
 * A writer that waits blocks new readers, so a stream of readers cannot starve it. Get one from
 * `LockService.readWrite(name, options)`.
 */
export interface ReadWriteLock {
  /** The name given to `LockService.readWrite`. */
  readonly name: string;
  /** A lock's TTL, in ms. */
  readonly ttl: number;
  /** Takes a read lock unless a writer holds or waits for the lock; `null` then. Never waits. */
  tryRead(options?: TryAcquireReadWriteOptions): Promise<ReadLock | null>;
  /** Takes the write lock if nobody holds the lock; `null` otherwise. Never waits. */
  tryWrite(options?: TryAcquireReadWriteOptions): Promise<WriteLock | null>;
  /** Takes a read lock, waiting up to `wait` ms; rejects with `LockNotAcquiredError`. */
  read(options?: AcquireReadWriteOptions): Promise<ReadLock>;
  /**
   * Takes the write lock, waiting up to `wait` ms for the readers to leave (new readers wait
   * behind it meanwhile); rejects with `LockNotAcquiredError`.
   */
  write(options?: AcquireReadWriteOptions): Promise<WriteLock>;
  /** Runs `fn` under a read lock and releases it; `LockLostError` if lost before `fn` ended. */
  withRead<T>(fn: (lock: ReadLock) => Promise<T> | T, options?: WithReadWriteOptions): Promise<T>;
  /** Runs `fn` under the write lock and releases it; `LockLostError` if lost before `fn` ended. */
  withWrite<T>(fn: (lock: WriteLock) => Promise<T> | T, options?: WithReadWriteOptions): Promise<T>;
}

/** The `ReadWriteLock` implementation. */
export class RedisReadWriteLock implements ReadWriteLock {
  private readonly keys: ReturnType<typeof readWriteKeys>;
  private readonly wakeKey: string;
  private readonly readOps: LeaseOps;
  private readonly writeOps: LeaseOps;

  constructor(
    private readonly coordinator: Coordinator,
    readonly name: string,
    readonly ttl: number,
  ) {
    this.keys = readWriteKeys(name);
    this.wakeKey = `r:${name}`;
    const [writer, readers, , , waiting] = this.keys;
    const connection = coordinator.connection;
    // Callers of this process queued behind others leave no mark: announce for them.
    const announce = (): [string, string, number, string] => [
      coordinator.channel,
      this.wakeKey,
      tombstoneMs(ttl),
      coordinator.waiters.count(this.wakeKey) > 0 ? '1' : '0',
    ];
    this.readOps = coordinator.leaseOps(
      `a read lock of "${name}"`,
      async (token, ms) => (await HOLDER_EXTEND.on(connection).run([readers], [token, ms])) === 1,
      async (token) =>
        (await HOLDER_RELEASE.on(connection).run([readers, waiting], [token, ...announce()])) === 1,
    );
    this.writeOps = coordinator.leaseOps(
      `the write lock of "${name}"`,
      async (token, ms) => (await WRITE_EXTEND.on(connection).run([writer], [token, ms])) === 1,
      async (token) =>
        (await WRITE_RELEASE.on(connection).run([writer, waiting], [token, ...announce()])) === 1,
    );
  }

  async tryRead(options: TryAcquireReadWriteOptions = {}): Promise<ReadLock | null> {
    return (await this.attemptRead(0, options.autoExtend ?? true)).value ?? null;
  }

  async tryWrite(options: TryAcquireReadWriteOptions = {}): Promise<WriteLock | null> {
    return (
      (await this.attemptWrite(this.coordinator.token(), 0, options.autoExtend ?? true)).value ??
      null
    );
  }

  read(options: AcquireReadWriteOptions = {}): Promise<ReadLock> {
    const wait = checkMs(
      'readWrite().read',
      'wait',
      options.wait ?? this.coordinator.defaults.wait,
    );
    const autoExtend = options.autoExtend ?? true;
    return this.coordinator.acquireWaiting(this.name, this.wakeKey, wait, options.signal, (mark) =>
      this.attemptRead(mark, autoExtend),
    );
  }

  async write(options: AcquireReadWriteOptions = {}): Promise<WriteLock> {
    const wait = checkMs(
      'readWrite().write',
      'wait',
      options.wait ?? this.coordinator.defaults.wait,
    );
    const autoExtend = options.autoExtend ?? true;
    // One token for the whole wait: it is also the intent that holds new readers back.
    const token = this.coordinator.token();
    try {
      return await this.coordinator.acquireWaiting(
        this.name,
        this.wakeKey,
        wait,
        options.signal,
        (mark) => this.attemptWrite(token, mark, autoExtend),
      );
    } catch (err) {
      // Gave up: withdraw the intent now rather than make readers wait for it to lapse.
      const [, , writersWaiting, , waiting] = this.keys;
      await WRITE_WITHDRAW.on(this.coordinator.connection)
        .run([writersWaiting, waiting], [token, this.coordinator.channel, this.wakeKey])
        .catch(() => undefined);
      throw err;
    }
  }

  async withRead<T>(
    fn: (lock: ReadLock) => Promise<T> | T,
    options: WithReadWriteOptions = {},
  ): Promise<T> {
    const lock = (await this.read(options)) as HeldLease;
    return runHolding(lock, fn, options.throwOnLost ?? true);
  }

  async withWrite<T>(
    fn: (lock: WriteLock) => Promise<T> | T,
    options: WithReadWriteOptions = {},
  ): Promise<T> {
    const lock = (await this.write(options)) as HeldLease;
    return runHolding(lock, fn, options.throwOnLost ?? true);
  }

  private async attemptRead(
    markTtl: number,
    autoExtend: boolean,
  ): Promise<{ value?: ReadLock; retryIn?: number }> {
    const [writer, readers, writersWaiting, , waiting] = this.keys;
    const token = this.coordinator.token();
    const sentAt = Date.now();
    const [ok, retryIn] = await READ_ACQUIRE.on(this.coordinator.connection).run(
      [writer, readers, writersWaiting, waiting],
      [token, this.ttl, markTtl],
    );
    if (ok !== 1) return { retryIn: Number(retryIn) };
    return { value: this.hold('read lock', token, sentAt, this.readOps, 0, autoExtend) };
  }

  private async attemptWrite(
    token: string,
    markTtl: number,
    autoExtend: boolean,
  ): Promise<{ value?: WriteLock; retryIn?: number }> {
    const sentAt = Date.now();
    const [ok, n] = await WRITE_ACQUIRE.on(this.coordinator.connection).run(this.keys, [
      token,
      this.ttl,
      markTtl,
      FENCE_IDLE_MS,
    ]);
    if (ok !== 1) return { retryIn: Number(n) };
    return { value: this.hold('write lock', token, sentAt, this.writeOps, Number(n), autoExtend) };
  }

  private hold(
    kind: string,
    token: string,
    sentAt: number,
    ops: LeaseOps,
    fencingToken: number,
    autoExtend: boolean,
  ): HeldLease {
    const lease = new HeldLease(kind, this.name, token, this.ttl, sentAt, ops, fencingToken);
    this.coordinator.track(lease);
    if (autoExtend)
      lease.autoExtend(this.coordinator.defaults.extendMargin, this.coordinator.renewals);
    return lease;
  }
}
