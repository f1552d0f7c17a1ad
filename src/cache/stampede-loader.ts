import type { Logger } from '@nestjs/common';

import { describeKey } from '../common/describe.js';
import { withTimeout } from '../connection/wait.js';
import type { Waiters } from '../connection/waiters.js';
import { CacheLoaderTimeoutError } from '../errors.js';

import type { CacheEntry } from './cache-entry.js';
import { describeError, durations, serialize } from './cache.checks.js';
import type { DegradingCaller } from './cache.degrade.js';
import type { ResolvedCacheOptions } from './cache.options.js';
import { cacheKeys } from './cache.scripts.js';
import type {
  CacheGetOrSetOptions,
  CacheLoader,
  CacheLoaderContext,
  CacheState,
} from './cache.types.js';
import type { CacheScripts } from './defined-scripts.js';
import type { EntryWriter, HeldLock } from './entry-writer.js';
import type { InvalidationBus } from './invalidation-bus.js';
import type { L2Reader, LockClaim } from './l2-reader.js';

/** A load's options, checked by the service (`replicas` is an integer from 1 to 8 or absent). */
type LoadOptions = CacheGetOrSetOptions;

/** The lock state a load starts from: claimed by the read that found the miss. */
interface Claimed {
  token: string;
  claim: LockClaim;
}

/**
 * The stampede loader: concurrent misses for a key run the loader once in this process (single
 * flight) and once across instances (a lock in Redis, in the entry's slot); the others wait
 * for the fill, woken by its notification. A stale value (grace) covers loader errors and soft
 * timeouts; XFetch refreshes hot entries early.
 */
export class StampedeLoader {
  /** In-process single flight; `background`: an early refresh, which a reader does not join. */
  private readonly loads = new Map<
    string,
    { promise: Promise<unknown>; startedAt: number; background: boolean }
  >();
  /** Stampede locks taken so far, for their tokens. */
  private lockSeq = 0;
  /** Loader failures already logged, per key, so a failing backend logs once, not per call. */
  private readonly loggedLoadFailures = new Set<string>();

  constructor(
    private readonly options: ResolvedCacheOptions,
    private readonly state: CacheState,
    private readonly redis: DegradingCaller,
    private readonly scripts: CacheScripts,
    private readonly reader: L2Reader,
    private readonly writer: EntryWriter,
    private readonly bus: InvalidationBus,
    private readonly waiters: Waiters,
    private readonly logger: Logger,
  ) {}

  /** A fresh lock token: unique across instances (the bus id) and calls. */
  token(): string {
    return `${this.bus.id}:${(this.lockSeq += 1)}`;
  }

  /** Whether a load (not an early refresh) of `key` runs in this process: join it. */
  running(key: string): boolean {
    const load = this.loads.get(key);
    return load !== undefined && !load.background;
  }

  /**
   * The value of a key that was a miss (or stale): joins a load running here, else leads or
   * waits across instances. `claimed`: the read already took (or found taken) the lock.
   */
  load<T>(
    key: string,
    loader: CacheLoader<T>,
    options: LoadOptions,
    stale?: CacheEntry<T>,
    claimed?: Claimed,
    background = false,
  ): Promise<T> {
    const lockTtl = this.options.lockTtl;
    const running = this.loads.get(key);
    let flight: Promise<T>;
    if (!claimed && running && Date.now() - running.startedAt < lockTtl) {
      flight = this.join(key, loader, options, stale, running);
    } else {
      const entry = {
        promise: undefined as unknown as Promise<T>,
        startedAt: Date.now(),
        background,
      };
      // The read that found the miss took the lock: load at once (nothing to wait for).
      const started =
        claimed?.claim === 0
          ? this.lead(key, loader, options, stale, { token: claimed.token, quiet: true })
          : this.leadOrWait(key, loader, options, stale, claimed);
      entry.promise = started.finally(() => {
        if (this.loads.get(key) === entry) this.loads.delete(key);
      });
      this.loads.set(key, entry);
      flight = entry.promise;
    }
    return stale ? this.withStale(key, flight, options, stale) : flight;
  }

  /**
   * Joins the load already running here, but not past its lock's lifetime: a loader that
   * hangs must not hold up callers who did not bring it (the lock has expired by then, and
   * another attempt may lead).
   */
  private join<T>(
    key: string,
    loader: CacheLoader<T>,
    options: LoadOptions,
    stale: CacheEntry<T> | undefined,
    running: { promise: Promise<unknown>; startedAt: number },
  ): Promise<T> {
    this.state.counters.stampedeWaits += 1;
    let timer: NodeJS.Timeout | undefined;
    const overdue = new Promise<T>((resolve, reject) => {
      timer = setTimeout(
        () => {
          this.leadOrWait(key, loader, options, stale).then(resolve, reject);
        },
        this.options.lockTtl - (Date.now() - running.startedAt),
      );
    });
    return Promise.race([running.promise as Promise<T>, overdue]).finally(() =>
      clearTimeout(timer),
    );
  }

  /** Grace: a failing load serves the stale value; past the soft timeout, it serves it now. */
  private withStale<T>(
    key: string,
    flight: Promise<T>,
    options: LoadOptions,
    stale: CacheEntry<T>,
  ): Promise<T> {
    const guarded = flight.catch((err: unknown): T => {
      this.state.counters.staleServed += 1;
      this.logLoadFailureOnce(key, err);
      return stale.value;
    });
    if (options.timeout === undefined) return guarded;
    // Soft timeout: serve stale now, let the load finish (and fill) in the background.
    let timer: NodeJS.Timeout | undefined;
    const soft = new Promise<T>((resolve) => {
      timer = setTimeout(() => {
        this.state.counters.staleServed += 1;
        resolve(stale.value);
      }, options.timeout);
    });
    return Promise.race([guarded, soft]).finally(() => clearTimeout(timer));
  }

  /**
   * Runs the loader as the one instance holding the key's stampede lock, or waits for the
   * instance that holds it. Waiters wake on the fill notification; if the holder dies, its
   * lock expires (`lockTtl`) and a waiter takes over; after two lock lifetimes a waiter loads
   * on its own. Nobody waits forever.
   */
  private async leadOrWait<T>(
    key: string,
    loader: CacheLoader<T>,
    options: LoadOptions,
    stale?: CacheEntry<T>,
    claimed?: Claimed,
  ): Promise<T> {
    const giveUpAt = Date.now() + 2 * this.options.lockTtl;
    for (;;) {
      const token = claimed?.token ?? this.token();
      // Registered before the lock is tried, so that a fill between the two still wakes us;
      // a lock claimed by the read is checked by its remaining lifetime below instead.
      const wake = this.waiters.register(key);
      const locked = claimed ? claimed.claim : await this.tryLock(key, token);
      claimed = undefined;
      if (locked === 'unavailable') {
        wake.cancel();
        // Redis unavailable: load without cross-instance protection.
        const { value, loadMs } = await this.runLoader(key, loader, options);
        void this.writeLoaded(key, value, options, loadMs);
        return value;
      }
      if (locked >= 0) {
        wake.cancel();
        return this.lead(key, loader, options, stale, { token, quiet: locked === 0 });
      }
      // Another instance is loading.
      if (stale) {
        wake.cancel();
        this.state.counters.staleServed += 1;
        return stale.value;
      }
      const filled = await this.waitForFill(key, wake, giveUpAt);
      if (filled) return filled.value as T;
      if (filled === null || this.state.closing) {
        return (await this.runLoader(key, loader, options)).value;
      }
    }
  }

  private async tryLock(key: string, token: string): Promise<number | 'unavailable'> {
    try {
      return await this.redis.call('lock', () =>
        this.scripts.lock.run(
          [cacheKeys.lock(key), cacheKeys.entry(key), cacheKeys.waiting(key)],
          [token, this.options.lockTtl],
        ),
      );
    } catch {
      return 'unavailable';
    }
  }

  /** Holding the lock: load and fill, unless someone filled it between our read and our lock. */
  private async lead<T>(
    key: string,
    loader: CacheLoader<T>,
    options: LoadOptions,
    stale: CacheEntry<T> | undefined,
    lock: HeldLock,
  ): Promise<T> {
    // An early refresh holds a still-fresh entry: only a newer one counts. The lock said
    // whether there is an entry at all: on a plain miss there is none, and no second read.
    const fresh = lock.quiet ? undefined : await this.reader.read(key);
    if (fresh && fresh.freshUntil > Date.now() && (!stale || fresh.freshUntil > stale.freshUntil)) {
      await this.abandon(key, lock.token);
      return fresh.value as T;
    }
    let result: { value: T; loadMs: number };
    try {
      result = await this.runLoader(key, loader, options);
    } catch (err) {
      await this.abandon(key, lock.token);
      throw err;
    }
    await this.writeLoaded(key, result.value, options, result.loadMs, lock);
    return result.value;
  }

  /**
   * Waits for another instance's fill: woken by its notification, or (without notifications)
   * polling every 50 ms, never past the lock's lifetime. Returns the filled entry, undefined to
   * try the lock again, or null when the lock was held too long (load without it).
   */
  private async waitForFill(
    key: string,
    wake: ReturnType<Waiters['register']>,
    giveUpAt: number,
  ): Promise<CacheEntry | undefined | null> {
    this.state.counters.stampedeWaits += 1;
    const notified = await this.bus.ensureSubscribed().then(
      () => true,
      () => false,
    );
    const remaining = giveUpAt - Date.now();
    if (remaining <= 0) {
      wake.cancel();
      this.logger.warn(
        `stampede lock for ${describeKey(key)} held for more than ${2 * this.options.lockTtl} ms: loading without it`,
      );
      return null;
    }
    const pttl = await this.redis
      .call('pttl', (client) => client.pttl(cacheKeys.lock(key)))
      .catch(() => 0);
    await wake.until(Math.min(remaining, pttl > 0 ? pttl + 5 : 5, notified ? Infinity : 50));
    wake.cancel();
    const filled = await this.reader.read(key);
    return filled && filled.freshUntil > Date.now() ? filled : undefined;
  }

  private async runLoader<T>(
    key: string,
    loader: CacheLoader<T>,
    options: CacheGetOrSetOptions,
  ): Promise<{ value: T; loadMs: number }> {
    const start = performance.now();
    this.state.counters.loads += 1;
    try {
      let running: Promise<T>;
      if (options.hardTimeout === undefined) {
        running = Promise.resolve().then(() => loader(new LoaderContext(key)));
      } else {
        const hard = options.hardTimeout;
        const controller = new AbortController();
        running = withTimeout(
          Promise.resolve().then(() => loader({ key, signal: controller.signal })),
          hard,
          () => {
            const err = new CacheLoaderTimeoutError(key, hard);
            controller.abort(err);
            return err;
          },
        );
      }
      const value = await running;
      if (value === undefined) {
        throw new TypeError(
          `CacheService.getOrSet(${describeKey(key)}): the loader returned undefined, which cannot be cached (return null for "nothing")`,
        );
      }
      this.loggedLoadFailures.delete(key);
      return { value, loadMs: performance.now() - start };
    } catch (err) {
      this.state.counters.loadErrors += 1;
      throw err;
    }
  }

  private async writeLoaded<T>(
    key: string,
    value: T,
    options: LoadOptions,
    loadMs: number,
    lock?: HeldLock,
  ): Promise<void> {
    const { ttl, grace } = durations(this.options, 'getOrSet', key, options);
    let payload: string | Buffer;
    try {
      payload = serialize(this.options, 'getOrSet', key, value);
    } catch (err) {
      // The caller gets its value all the same; only caching it is impossible.
      this.logger.warn(`${(err as Error).message}; the loaded value was returned, not cached`);
      if (lock) await this.abandon(key, lock.token);
      return;
    }
    await this.writer.write({
      key,
      value,
      payload,
      ttl,
      grace,
      tags: options.tags,
      loadMs,
      copies: options.replicas ?? 1,
      lock,
    });
  }

  /** Gives up the stampede lock (if still `token`'s) without a value, and wakes waiters. */
  async abandon(key: string, token: string): Promise<void> {
    await this.redis
      .call('unlock', async (client) => {
        await this.scripts.abandon.run([cacheKeys.lock(key), cacheKeys.waiting(key)], [token]);
        await this.bus.notify(client, { w: [key] });
      })
      .catch(() => undefined);
  }

  /** XFetch: refresh in the background with probability rising as expiry nears. */
  maybeRefreshEarly<T>(
    key: string,
    entry: CacheEntry,
    loader: CacheLoader<T>,
    options: LoadOptions,
    now: number,
  ): void {
    const beta =
      options.earlyRefresh === true
        ? 1
        : typeof options.earlyRefresh === 'number'
          ? options.earlyRefresh
          : 0;
    if (beta <= 0 || this.loads.has(key)) return;
    const delta = Math.max(entry.loadMs, 1);
    if (now - delta * beta * Math.log(Math.random()) < entry.freshUntil) return;
    this.state.counters.earlyRefreshes += 1;
    // The current value counts as stale: if another instance is already refreshing, skip.
    const refresh = { ...options, timeout: undefined };
    void this.load(key, loader, refresh, entry as CacheEntry<T>, undefined, true).catch(
      () => undefined,
    );
  }

  private logLoadFailureOnce(key: string, err: unknown): void {
    if (this.loggedLoadFailures.has(key)) return;
    this.loggedLoadFailures.add(key);
    this.logger.warn(
      `loader for ${describeKey(key)} failed, serving the stale value: ${describeError(err)}`,
    );
  }
}

/**
 * What a loader without `hardTimeout` receives: its signal, which nothing aborts, is made only
 * if the loader asks for it (an `AbortController` per miss was a measurable part of the fill).
 */
class LoaderContext implements CacheLoaderContext {
  private controller?: AbortController;

  constructor(readonly key: string) {}

  get signal(): AbortSignal {
    this.controller ??= new AbortController();
    return this.controller.signal;
  }
}
