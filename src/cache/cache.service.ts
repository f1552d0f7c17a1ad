import { randomUUID } from 'node:crypto';
import {
  Inject,
  Injectable,
  Logger,
  type BeforeApplicationShutdown,
  type OnModuleInit,
} from '@nestjs/common';
import { Cluster, Command } from 'ioredis';
import { LRUCache } from 'lru-cache';
import { RedisConnection } from '../connection/redis-connection.js';
import { getRedisConnectionToken } from '../connection/tokens.js';
import { Waiters } from '../connection/waiters.js';
import { DeadlineGroup } from '../connection/deadlines.js';
import { withTimeout } from '../connection/wait.js';
import { resolveTemplate, type ArgumentTemplate } from '../discovery/decorated-methods.js';
import type { DecoratorExplorer } from '../discovery/explorer.js';
import { CacheLoaderTimeoutError } from '../errors.js';
import { escapeGlob, RedisService } from '../redis.service.js';
import { checkDuration, checkOptionsObject, MAX_TIMER_MS, MAX_TTL_MS } from '../common/checks.js';
import { describeKey, describeValue } from '../common/describe.js';
import {
  decodeEntry,
  decodeTextEntry,
  encodeEntry,
  estimateSize,
  type CacheEntry,
} from './cache-entry.js';
import { CACHEABLE_METADATA, CACHE_EVICT_METADATA, type CacheTags } from './cache.constants.js';
import {
  ABANDON,
  cacheKeys,
  FILL,
  INVALIDATION_CHANNEL,
  LOCK,
  TAG_BUMP,
  TAG_VERSION,
  userKeyOf,
} from './cache.scripts.js';
import { jsonSerializer } from './serializer.js';

/** Options of `CacheService.set` and `mset`. */
export interface CacheSetOptions {
  /** Time to live in ms. @defaultValue the module's `cache.ttl` (60000) */
  ttl?: number;
  /** Stale fallback after the TTL, in ms (added to the Redis TTL). @defaultValue `cache.grace` (0) */
  grace?: number;
  /** Tags to invalidate the entry by, with `invalidateTags`. */
  tags?: string[];
}

/** Options of `CacheService.getOrSet`. */
export interface CacheGetOrSetOptions extends CacheSetOptions {
  /**
   * Soft timeout, in ms: when a stale value exists and the loader is slower than this, the
   * stale value is returned and the loader finishes in the background.
   */
  timeout?: number;
  /**
   * Hard timeout, in ms: the loader's `signal` is aborted and the call returns the stale value,
   * or rejects with `CacheLoaderTimeoutError` when there is none.
   */
  hardTimeout?: number;
  /**
   * Probabilistic early recomputation (XFetch): a hit may refresh the entry in the background
   * shortly before it expires, with a probability that grows as expiry nears and with the
   * loader's measured duration, so that one caller refreshes a hot key instead of all at
   * expiry. `true` is beta = 1; a number is beta (higher refreshes earlier).
   * @defaultValue false
   */
  earlyRefresh?: boolean | number;
}

/** What a loader receives. */
export interface CacheLoaderContext {
  /** The key being loaded. */
  key: string;
  /** Aborted when `hardTimeout` passes: stop the work, nobody waits for it any more. */
  signal: AbortSignal;
}

/** Computes a missing value. */
export type CacheLoader<T> = (context: CacheLoaderContext) => Promise<T> | T;

/** Counters since startup. */
export interface CacheStats {
  l1: { hits: number; misses: number; size: number; bytes: number; enabled: boolean };
  l2: { hits: number; misses: number };
  /** Loader runs. */
  loads: number;
  /** Loader runs that threw or timed out. */
  loadErrors: number;
  /** Stale values returned (loader failed or slow, or another instance was refreshing). */
  staleServed: number;
  /** `getOrSet` calls that waited for a load already running (here or in another instance). */
  stampedeWaits: number;
  /** Early refreshes started by XFetch. */
  earlyRefreshes: number;
  /** Redis calls that failed or timed out (the cache degraded instead of failing). */
  redisErrors: number;
}

interface Message {
  /** Sender instance. */
  s: string;
  /** Keys whose value changed: drop from L1, wake waiters. */
  k?: string[];
  /** Keys whose load was abandoned: wake waiters only. */
  w?: string[];
  /** New tag versions. */
  t?: Record<string, number>;
  /** Cleared prefix ('' = everything). */
  c?: string;
}

class RedisUnavailable extends Error {}

/** An L2 read in flight, shared by the callers asking for the same key meanwhile. */
interface L2Read {
  key: string;
  promise: Promise<CacheEntry | undefined>;
  /** Settles `promise`; cleared once it has. */
  settle?: (entry: CacheEntry | undefined) => void;
  /** When the `GET` is given up (epoch ms); `Infinity` once it answered. */
  deadline: number;
  /** An invalidation for this key arrived while the read was in flight: L1 must not keep it. */
  dirty: boolean;
}

const NO_ENTRY: Promise<undefined> = Promise.resolve(undefined);

/** A stampede lock this instance holds; `quiet`: the key had no entry when it was taken. */
interface HeldLock {
  token: string;
  quiet: boolean;
}

const MISS = Symbol('miss');

/**
 * A two-tier cache: a bounded in-process LRU (L1) in front of Redis (L2), coherent across
 * instances, with stampede protection that runs a loader once across all instances, grace
 * (stale-if-error, soft timeouts), tags and probabilistic early refresh. Redis trouble degrades
 * it to a pass-through; it never fails a request or hangs.
 *
 * Values returned from L1 are shared between callers: treat them as read-only.
 *
 * @example
 * ```ts
 * const product = await this.cache.getOrSet(`product:${id}`, () => this.db.product(id), {
 *   ttl: 60_000, grace: 300_000, timeout: 200, tags: [`product:${id}`],
 * });
 * ```
 */
@Injectable()
export class CacheService implements OnModuleInit, BeforeApplicationShutdown {
  private readonly logger = new Logger('Redis:CacheService');
  private readonly id = randomUUID();
  private readonly l1?: LRUCache<string, CacheEntry>;
  /** Whether L1 (and the tag version memo) may be trusted: subscribed, not dropped. */
  private coherent = false;
  private subscription?: Promise<void>;
  private readonly unsubscribers: Array<() => unknown> = [];
  /** Latest known tag versions (only trusted while coherent). */
  private readonly tagVersions = new Map<string, number>();
  /** In-process single flight of L2 reads; `dirty` when an invalidation arrived meanwhile. */
  private readonly reads = new Map<string, L2Read>();
  /** In-process single flight of loads. */
  private readonly loads = new Map<string, { promise: Promise<unknown>; startedAt: number }>();
  private readonly waiters = new Waiters();
  private degraded = false;
  private closing = false;
  /** The Redis user may not PUBLISH to our channel (ACL): notifications are off. */
  private publishRefused = false;
  /** Stampede locks taken so far, for their tokens. */
  private lockSeq = 0;
  private nextSubscribeAttempt = 0;
  private readonly deadlines = new DeadlineGroup();
  /** The interval that gives up L2 reads past `cache.timeout`, while any is in flight. */
  private readSweep?: NodeJS.Timeout;
  /**
   * Entries are read as strings when the value is JSON (the default serializer): one UTF-8
   * decode instead of a Buffer decoded in two parts. Any other serializer gets the bytes.
   */
  private readonly readsText: boolean;
  private readonly counters = {
    l1Hits: 0,
    l1Misses: 0,
    l2Hits: 0,
    l2Misses: 0,
    loads: 0,
    loadErrors: 0,
    staleServed: 0,
    stampedeWaits: 0,
    earlyRefreshes: 0,
    redisErrors: 0,
  };
  /** Loader failures already logged, per key, so a failing backend logs once, not per call. */
  private readonly loggedLoadFailures = new Set<string>();

  constructor(
    @Inject(getRedisConnectionToken()) private readonly connection: RedisConnection,
    private readonly redis: RedisService,
    private readonly explorer: DecoratorExplorer,
  ) {
    this.readsText = this.options.serializer === jsonSerializer;
    const l1 = this.options.l1;
    if (l1) {
      this.l1 = new LRUCache<string, CacheEntry>({
        max: l1.maxEntries,
        maxSize: l1.maxBytes,
        sizeCalculation: (entry) => entry.size,
      });
    }
  }

  private get options() {
    return this.connection.config.cache;
  }

  // ------------------------------------------------------------------------ public API

  /** The fresh value of `key`, or `undefined` (a miss, also while Redis is unavailable). */
  async get<T>(key: string): Promise<T | undefined> {
    checkKey('get', key);
    this.kickSubscription();
    const now = Date.now();
    const local = this.fromL1(key, now);
    if (local && local.freshUntil > now) {
      this.counters.l1Hits += 1;
      return local.value as T;
    }
    if (this.l1) this.counters.l1Misses += 1;
    const entry = await this.fromL2(key);
    if (entry && entry.freshUntil > Date.now()) {
      this.counters.l2Hits += 1;
      return entry.value as T;
    }
    this.counters.l2Misses += 1;
    return undefined;
  }

  /**
   * Stores `value` under `key` for `ttl` ms (plus `grace`), and tells the other instances to
   * drop their copy. `undefined` cannot be cached (`null` can). While Redis is unavailable the
   * write is dropped (logged once per outage) and the call still resolves.
   */
  async set<T>(key: string, value: T, options: CacheSetOptions = {}): Promise<void> {
    checkKey('set', key);
    checkOptionsObject(() => `CacheService.set(${describeKey(key)})`, 'options', options);
    this.kickSubscription();
    const { ttl, grace } = this.durations('set', key, options);
    const tags = checkTags('set', key, options.tags);
    const payload = this.serialize('set', key, value);
    await this.write(key, value, payload, ttl, grace, tags, 0);
  }

  /** Removes keys from both tiers in every instance. */
  async del(...keys: string[]): Promise<void> {
    for (const key of keys) checkKey('del', key);
    if (keys.length === 0) return;
    for (const key of keys) this.dropLocal(key);
    await this.redisCall('del', async (client) => {
      await Promise.all(keys.map((key) => client.unlink(cacheKeys.entry(key))));
      await this.notify(client, { k: keys });
    }).catch(() => undefined);
  }

  /**
   * Cache-aside: the value of `key`, or `loader`'s, stored for next time. Concurrent misses
   * for a key run `loader` once across every instance (the others wait for its value, woken
   * when it lands). With `grace`, a stale value covers loader errors and `timeout`s.
   */
  async getOrSet<T>(
    key: string,
    loader: CacheLoader<T>,
    options: CacheGetOrSetOptions = {},
  ): Promise<T> {
    checkKey('getOrSet', key);
    if (typeof loader !== 'function') {
      throw new TypeError(
        `CacheService.getOrSet(${describeKey(key)}): loader must be a function, got ${describeValue(loader)}`,
      );
    }
    checkOptionsObject(() => `CacheService.getOrSet(${describeKey(key)})`, 'options', options);
    this.durations('getOrSet', key, options);
    checkTags('getOrSet', key, options.tags);
    checkLoaderTimeout(key, 'timeout', options.timeout);
    checkLoaderTimeout(key, 'hardTimeout', options.hardTimeout);
    checkEarlyRefresh(key, options.earlyRefresh);
    this.kickSubscription();
    const now = Date.now();
    let entry = this.fromL1(key, now);
    if (entry && entry.freshUntil > now) {
      this.counters.l1Hits += 1;
      this.maybeRefreshEarly(key, entry, loader, options, now);
      return entry.value as T;
    }
    if (this.l1) this.counters.l1Misses += 1;
    entry = (await this.fromL2(key)) ?? entry;
    const after = Date.now();
    if (entry && entry.freshUntil > after) {
      this.counters.l2Hits += 1;
      this.maybeRefreshEarly(key, entry, loader, options, after);
      return entry.value as T;
    }
    this.counters.l2Misses += 1;
    const stale = entry && entry.staleUntil > after ? (entry as CacheEntry<T>) : undefined;
    return this.load(key, loader, options, stale);
  }

  /** `get` for many keys at once (one round trip's worth; keys may live on any cluster node). */
  mget<T>(keys: string[]): Promise<Array<T | undefined>> {
    if (!Array.isArray(keys))
      throw new TypeError(`CacheService.mget: keys must be an array, got ${describeValue(keys)}`);
    for (const key of keys) checkKey('mget', key);
    return Promise.all(keys.map((key) => this.get<T>(key)));
  }

  /** `set` for many entries at once. Every entry is validated before anything is written. */
  async mset<T>(entries: Array<{ key: string; value: T } & CacheSetOptions>): Promise<void> {
    if (!Array.isArray(entries))
      throw new TypeError(
        `CacheService.mset: entries must be an array, got ${describeValue(entries)}`,
      );
    const prepared = entries.map((e: unknown, i) => {
      checkOptionsObject('CacheService.mset', `entries[${i}]`, e);
      if (e === undefined) {
        throw new TypeError(
          `CacheService.mset: entries[${i}] must be { key, value }, got undefined`,
        );
      }
      const entry = e as { key: string; value: T } & CacheSetOptions;
      checkKey('mset', entry.key);
      const { ttl, grace } = this.durations('mset', entry.key, entry);
      const tags = checkTags('mset', entry.key, entry.tags);
      return {
        key: entry.key,
        value: entry.value,
        ttl,
        grace,
        tags,
        payload: this.serialize('mset', entry.key, entry.value),
      };
    });
    await Promise.all(
      prepared.map((e) => this.write(e.key, e.value, e.payload, e.ttl, e.grace, e.tags, 0)),
    );
  }

  /**
   * Invalidates every entry written under any of these tags, in every instance: each tag's
   * version is bumped, and entries remember the versions they were written under.
   */
  async invalidateTags(tags: string[]): Promise<void> {
    if (!Array.isArray(tags)) {
      throw new TypeError(
        `CacheService.invalidateTags: tags must be an array of non-empty strings, got ${describeValue(tags)}`,
      );
    }
    const list = checkTags('invalidateTags', undefined, tags) ?? [];
    if (list.length === 0) return;
    const lifetime = this.options.ttl + this.options.grace;
    await this.redisCall('invalidate tags', async (client) => {
      const versions = await Promise.all(
        list.map((tag) => TAG_BUMP.run(client, [cacheKeys.tag(tag)], [lifetime])),
      );
      const bumped: Record<string, number> = {};
      list.forEach((tag, i) => {
        bumped[tag] = Number(versions[i]);
        this.noteTagVersion(tag, bumped[tag]);
      });
      await this.notify(client, { t: bumped });
    }).catch(() => {
      // Not recorded in Redis: our own L1 must not keep serving what the caller just invalidated.
      this.l1?.clear();
      this.tagVersions.clear();
    });
  }

  /**
   * Removes every entry (or those whose key starts with `prefix`) from Redis — SCAN + UNLINK
   * over every master of a cluster — and from every instance's L1.
   */
  async clear(prefix?: string): Promise<void> {
    if (prefix !== undefined && typeof prefix !== 'string') {
      throw new TypeError(
        `CacheService.clear: prefix must be a string, got ${describeValue(prefix)}`,
      );
    }
    this.clearLocal(prefix ?? '');
    // Bounded by cache.timeout like every call of the cache: past it the call returns, the
    // SCAN goes on in the background and the other instances are told when it is done.
    await this.redisCall('clear', async (client) => {
      if (prefix) await this.unlinkEntries(prefix);
      else await this.redis.unlinkByPattern('cache:*');
      await this.notify(client, { c: prefix ?? '' });
    }).catch(() => undefined);
  }

  /** Hits and misses per tier, loads, errors, stale values served, stampede waits, L1 size. */
  stats(): CacheStats {
    const c = this.counters;
    return {
      l1: {
        hits: c.l1Hits,
        misses: c.l1Misses,
        size: this.l1?.size ?? 0,
        bytes: this.l1?.calculatedSize ?? 0,
        enabled: this.l1 !== undefined,
      },
      l2: { hits: c.l2Hits, misses: c.l2Misses },
      loads: c.loads,
      loadErrors: c.loadErrors,
      staleServed: c.staleServed,
      stampedeWaits: c.stampedeWaits,
      earlyRefreshes: c.earlyRefreshes,
      redisErrors: c.redisErrors,
    };
  }

  // ------------------------------------------------------------------------ lifecycle

  /** Wraps `@Cacheable` / `@CacheEvict` methods. */
  onModuleInit(): void {
    this.wrapDecorated();
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.closing = true;
    this.coherent = false;
    this.waiters.wakeEveryone();
    await Promise.allSettled(this.unsubscribers.splice(0).map((off) => off()));
  }

  // ------------------------------------------------------------------------ tiers

  private fromL1(key: string, now: number): CacheEntry | undefined {
    if (!this.l1 || !this.coherent) return undefined;
    const entry = this.l1.get(key);
    if (!entry) return undefined;
    if (entry.staleUntil <= now || !this.tagsValid(entry)) {
      this.l1.delete(key);
      return undefined;
    }
    return entry;
  }

  /**
   * One `GET` (shared by concurrent callers); a corrupted entry is logged, deleted and a miss.
   * This is the L2 hit path (bench/cache): one promise per read, settled from the reply's
   * handler or by the deadline sweep, with no `async` frame in between.
   */
  private fromL2(key: string): Promise<CacheEntry | undefined> {
    const running = this.reads.get(key);
    if (running) return running.promise;
    const client = this.connection.client;
    if (client.status !== 'ready') {
      this.redisFailed('get', new RedisUnavailable(`connection is ${client.status}`));
      return NO_ENTRY;
    }
    const timeout = this.options.timeout;
    let settle!: (entry: CacheEntry | undefined) => void;
    const promise = new Promise<CacheEntry | undefined>((resolve) => (settle = resolve));
    const read: L2Read = {
      key,
      promise,
      settle,
      deadline: timeout > 0 ? Date.now() + timeout : Infinity,
      dirty: false,
    };
    this.reads.set(key, read);
    if (timeout > 0) this.sweepReadsEvery(timeout);
    // The key is prefixed here, once, rather than by ioredis, which finds the key arguments of
    // every command it sends through its command table: 5-10% of the hit path (bench/cache).
    const get = new Command('get', [this.connection.keyPrefix + cacheKeys.entry(key)], {
      replyEncoding: this.readsText ? 'utf8' : null,
    });
    const reply = client.sendCommand(get) as Promise<string | Buffer | null>;
    reply.then(
      (raw) => this.onL2Reply(read, raw),
      (err: unknown) => {
        if (!read.settle) return; // given up already
        this.redisFailed('get', err);
        this.endRead(read, undefined);
      },
    );
    return read.promise;
  }

  private onL2Reply(read: L2Read, raw: string | Buffer | null): void {
    if (!read.settle) return; // past its deadline: the caller had a miss, and that was logged
    // Answered: what follows (UNLINK, tag versions) goes through redisCall and its own bound.
    read.deadline = Infinity;
    if (this.degraded) this.redisAnswered();
    if (raw === null) return this.endRead(read, undefined);
    const { key } = read;
    let entry: CacheEntry;
    try {
      entry =
        typeof raw === 'string'
          ? decodeTextEntry(raw, key.length, this.l1 !== undefined)
          : decodeEntry(raw, this.options.serializer, key.length);
    } catch (err) {
      this.logger.warn(
        `cache entry ${describeKey(key)} is corrupted and was removed: ${(err as Error).message}`,
      );
      // Removed before the caller hears of the miss, so its next read does not log it again.
      const miss = (): void => this.endRead(read, undefined);
      void this.redisCall('unlink', (c) => c.unlink(cacheKeys.entry(key))).then(miss, miss);
      return;
    }
    if (entry.staleUntil <= Date.now()) return this.endRead(read, undefined);
    if (!entry.tags) return this.endRead(read, entry);
    const ok = (current: boolean): void => this.endRead(read, current ? entry : undefined);
    void this.tagsCurrent(entry.tags).then(ok);
  }

  /** Ends a shared read with its result, which L1 keeps unless an invalidation arrived meanwhile. */
  private endRead(read: L2Read, entry: CacheEntry | undefined): void {
    const settle = read.settle;
    if (!settle) return;
    // The read lets go of its promise (and so of the value): V8 keeps a `Map`'s replaced hash
    // tables, which still point at former entries, until the next full GC, and a value
    // reachable from them survived every young GC. With it, the L2 hit path at 64 in flight
    // spent a tenth of its time in GC (bench/cache, --trace-gc).
    read.settle = undefined;
    read.promise = NO_ENTRY;
    if (this.reads.get(read.key) === read) this.reads.delete(read.key);
    if (entry && this.l1 && this.coherent && !read.dirty) this.l1.set(read.key, entry);
    settle(entry);
  }

  /**
   * Bounds the L2 reads by `cache.timeout` with one interval over the reads in flight, rather
   * than a `DeadlineGroup` entry, a promise and two closures more per read as `redisCall` has:
   * at 64 reads in flight that was a fifth of the hit throughput (bench/cache). A read is given
   * up within a quarter of its bound after its deadline; the interval stops once no read is in
   * flight and never keeps the process alive.
   */
  private sweepReadsEvery(timeout: number): void {
    if (this.readSweep) return;
    const sweep = (): void => {
      if (this.reads.size === 0) {
        clearInterval(this.readSweep);
        this.readSweep = undefined;
        return;
      }
      const now = Date.now();
      for (const read of this.reads.values()) {
        if (read.deadline > now) continue;
        this.redisFailed('get', new RedisUnavailable(`no answer within ${timeout} ms`));
        this.endRead(read, undefined);
      }
    };
    this.readSweep = setInterval(sweep, Math.max(5, Math.floor(timeout / 4))).unref();
  }

  private async write(
    key: string,
    value: unknown,
    payload: string | Buffer,
    ttl: number,
    grace: number,
    tags: string[] | undefined,
    loadMs: number,
    lock?: HeldLock,
  ): Promise<void> {
    this.dropLocal(key);
    const now = Date.now();
    try {
      const versions = tags?.length ? await this.tagVersionsForWrite(tags, ttl + grace) : undefined;
      const encoded = encodeEntry(
        { freshUntil: now + ttl, staleUntil: now + ttl + grace, loadMs, tags: versions },
        payload,
      );
      await this.redisCall('set', async (client) => {
        const written: Promise<unknown> = lock
          ? FILL.run(
              client,
              [cacheKeys.entry(key), cacheKeys.lock(key), cacheKeys.waiting(key)],
              [encoded, ttl + grace, lock.token],
            )
          : client.set(cacheKeys.entry(key), encoded, 'PX', ttl + grace);
        if (lock?.quiet) {
          // A fill of a key that had no entry when we locked it: no instance holds a copy to
          // drop, so only a waiter needs telling, and the fill says whether one asked.
          if ((await written) === 1) await this.notify(client, { k: [key] });
          return;
        }
        // On one connection commands run in the order sent, so the notification can follow the
        // write at once; a cluster may deliver it from another node before the write lands, and
        // an instance would then reload the old value into L1: there it waits for the write.
        if (client instanceof Cluster) await written;
        await Promise.all([written, this.notify(client, { k: [key] })]);
      });
      if (this.l1 && this.coherent) {
        this.l1.set(key, {
          value,
          freshUntil: now + ttl,
          staleUntil: now + ttl + grace,
          loadMs,
          tags: versions,
          size: estimateSize(encoded.length, key.length),
        });
      }
    } catch {
      // Logged by redisCall (once per outage): a cache write must not fail the caller.
    }
  }

  // ------------------------------------------------------------------------ loading

  private load<T>(
    key: string,
    loader: CacheLoader<T>,
    options: CacheGetOrSetOptions,
    stale?: CacheEntry<T>,
  ): Promise<T> {
    const lockTtl = this.options.lockTtl;
    const running = this.loads.get(key);
    let flight: Promise<T>;
    if (running && Date.now() - running.startedAt < lockTtl) {
      // Join the load already running here, but not past its lock's lifetime: a loader that
      // hangs must not hold up callers who did not bring it (the lock has expired by then,
      // and another attempt may lead).
      this.counters.stampedeWaits += 1;
      let timer: NodeJS.Timeout | undefined;
      const overdue = new Promise<T>((resolve, reject) => {
        timer = setTimeout(
          () => {
            this.leadOrWait(key, loader, options, stale).then(resolve, reject);
          },
          lockTtl - (Date.now() - running.startedAt),
        );
      });
      flight = Promise.race([running.promise as Promise<T>, overdue]).finally(() =>
        clearTimeout(timer),
      );
    } else {
      const entry = { promise: undefined as unknown as Promise<T>, startedAt: Date.now() };
      entry.promise = this.leadOrWait(key, loader, options, stale).finally(() => {
        if (this.loads.get(key) === entry) this.loads.delete(key);
      });
      this.loads.set(key, entry);
      flight = entry.promise;
    }
    if (!stale) return flight;
    const fallback = (err: unknown): T => {
      this.counters.staleServed += 1;
      this.logLoadFailureOnce(key, err);
      return stale.value;
    };
    const guarded = flight.catch(fallback);
    if (options.timeout === undefined) return guarded;
    // Soft timeout: serve stale now, let the load finish (and fill) in the background.
    let timer: NodeJS.Timeout | undefined;
    const soft = new Promise<T>((resolve) => {
      timer = setTimeout(() => {
        this.counters.staleServed += 1;
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
    options: CacheGetOrSetOptions,
    stale?: CacheEntry<T>,
  ): Promise<T> {
    const lockTtl = this.options.lockTtl;
    const giveUpAt = Date.now() + 2 * lockTtl;
    for (;;) {
      // Unique across instances (our random id) and calls: all a lock token needs to be.
      const token = `${this.id}:${(this.lockSeq += 1)}`;
      const wake = this.waiters.register(key);
      let locked: number | typeof MISS;
      try {
        locked = await this.redisCall('lock', (client) =>
          LOCK.run(
            client,
            [cacheKeys.lock(key), cacheKeys.entry(key), cacheKeys.waiting(key)],
            [token, lockTtl],
          ),
        );
      } catch {
        locked = MISS; // Redis unavailable: load without cross-instance protection
      }
      if (locked === MISS) {
        wake.cancel();
        const { value, loadMs } = await this.runLoader(key, loader, options);
        void this.writeLoaded(key, value, options, loadMs);
        return value;
      }
      if (locked >= 0) {
        wake.cancel();
        // Someone may have filled it between our read and our lock (an early refresh holds a
        // still-fresh entry: only a newer one counts). The lock said whether there is an
        // entry at all: on a plain miss there is none, and no second read.
        const fresh = locked === 1 ? await this.fromL2(key) : undefined;
        if (
          fresh &&
          fresh.freshUntil > Date.now() &&
          (!stale || fresh.freshUntil > stale.freshUntil)
        ) {
          await this.abandon(key, token);
          return fresh.value as T;
        }
        let result: { value: T; loadMs: number };
        try {
          result = await this.runLoader(key, loader, options);
        } catch (err) {
          await this.abandon(key, token);
          throw err;
        }
        await this.writeLoaded(key, result.value, options, result.loadMs, {
          token,
          quiet: locked === 0,
        });
        return result.value;
      }
      // Another instance is loading.
      if (stale) {
        wake.cancel();
        this.counters.staleServed += 1;
        return stale.value;
      }
      this.counters.stampedeWaits += 1;
      const notified = await this.ensureSubscribed().then(
        () => true,
        () => false,
      );
      const remaining = giveUpAt - Date.now();
      if (remaining <= 0) {
        wake.cancel();
        this.logger.warn(
          `stampede lock for ${describeKey(key)} held for more than ${2 * lockTtl} ms: loading without it`,
        );
        return (await this.runLoader(key, loader, options)).value;
      }
      const pttl = await this.redisCall('pttl', (client) => client.pttl(cacheKeys.lock(key))).catch(
        () => 0,
      );
      // Woken by the fill notification; without notifications, poll every 50 ms.
      await wake.until(Math.min(remaining, pttl > 0 ? pttl + 5 : 5, notified ? Infinity : 50));
      wake.cancel();
      const filled = await this.fromL2(key);
      if (filled && filled.freshUntil > Date.now()) return filled.value as T;
      if (this.closing) return (await this.runLoader(key, loader, options)).value;
    }
  }

  private async runLoader<T>(
    key: string,
    loader: CacheLoader<T>,
    options: CacheGetOrSetOptions,
  ): Promise<{ value: T; loadMs: number }> {
    const controller = new AbortController();
    const start = performance.now();
    this.counters.loads += 1;
    try {
      let running = Promise.resolve().then(() => loader({ key, signal: controller.signal }));
      if (options.hardTimeout !== undefined) {
        const hard = options.hardTimeout;
        running = withTimeout(running, hard, () => {
          const err = new CacheLoaderTimeoutError(key, hard);
          controller.abort(err);
          return err;
        });
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
      this.counters.loadErrors += 1;
      throw err;
    }
  }

  private async writeLoaded<T>(
    key: string,
    value: T,
    options: CacheGetOrSetOptions,
    loadMs: number,
    lock?: HeldLock,
  ): Promise<void> {
    const { ttl, grace } = this.durations('getOrSet', key, options);
    let payload: string | Buffer;
    try {
      payload = this.serialize('getOrSet', key, value);
    } catch (err) {
      // The caller gets its value all the same; only caching it is impossible.
      this.logger.warn(`${(err as Error).message}; the loaded value was returned, not cached`);
      if (lock) await this.abandon(key, lock.token);
      return;
    }
    await this.write(key, value, payload, ttl, grace, options.tags, loadMs, lock);
  }

  private async abandon(key: string, token: string): Promise<void> {
    await this.redisCall('unlock', async (client) => {
      await ABANDON.run(client, [cacheKeys.lock(key), cacheKeys.waiting(key)], [token]);
      await this.notify(client, { w: [key] });
    }).catch(() => undefined);
  }

  /** XFetch: refresh in the background with probability rising as expiry nears. */
  private maybeRefreshEarly<T>(
    key: string,
    entry: CacheEntry,
    loader: CacheLoader<T>,
    options: CacheGetOrSetOptions,
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
    this.counters.earlyRefreshes += 1;
    // The current value counts as stale: if another instance is already refreshing, skip.
    void this.load(key, loader, { ...options, timeout: undefined }, entry as CacheEntry<T>).catch(
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

  // ------------------------------------------------------------------------ tags

  /**
   * Whether an L1 entry's tags are current, by the memo alone. Versions only grow (see
   * cache.scripts.ts): an entry is valid only under exactly the version it was written with,
   * and version 0 (a counter that did not exist, before versions were clock-based) never is.
   */
  private tagsValid(entry: CacheEntry): boolean {
    if (!entry.tags) return true;
    for (const tag in entry.tags) {
      const known = this.tagVersions.get(tag);
      if (known === undefined || known !== entry.tags[tag] || known === 0) return false;
    }
    return true;
  }

  private async tagsCurrent(tags: Record<string, number>): Promise<boolean> {
    const current = await this.tagVersionsFor(tags).catch(() => undefined);
    return (
      current !== undefined &&
      Object.keys(tags).every((tag) => tags[tag] > 0 && current[tag] === tags[tag])
    );
  }

  /**
   * Current versions of an entry's tags: from the memo while coherent, else from Redis (one GET
   * per tag). An entry written under a version higher than the memo's proves the memo behind
   * (a counter created by a write is not announced): that tag is read from Redis.
   */
  private async tagVersionsFor(tags: Record<string, number>): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    const unknown = Object.keys(tags).filter((tag) => {
      const known = this.coherent ? this.tagVersions.get(tag) : undefined;
      if (known !== undefined && known >= tags[tag]) out[tag] = known;
      return out[tag] === undefined;
    });
    if (unknown.length) {
      const values = await this.redisCall('read tag versions', (client) =>
        Promise.all(unknown.map((tag) => client.get(cacheKeys.tag(tag)))),
      );
      unknown.forEach((tag, i) => {
        // A missing counter is version 0, under which no entry is valid; it is not remembered.
        const version = Number(values[i] ?? 0);
        out[tag] = version;
        if (this.coherent && version > 0) this.noteTagVersion(tag, version);
      });
    }
    return out;
  }

  /**
   * The versions to write an entry under, from Redis (one script per tag, in parallel): each
   * counter is created if missing and kept at least `lifetime` ms, as long as the entry.
   */
  private async tagVersionsForWrite(
    tags: string[],
    lifetime: number,
  ): Promise<Record<string, number>> {
    const values = await this.redisCall('read tag versions', (client) =>
      Promise.all(tags.map((tag) => TAG_VERSION.run(client, [cacheKeys.tag(tag)], [lifetime]))),
    );
    const out: Record<string, number> = {};
    tags.forEach((tag, i) => {
      out[tag] = Number(values[i]);
      if (this.coherent) this.noteTagVersion(tag, out[tag]);
    });
    return out;
  }

  private noteTagVersion(tag: string, version: number): void {
    const known = this.tagVersions.get(tag);
    if (known === undefined || version > known) this.tagVersions.set(tag, version);
  }

  // ------------------------------------------------------------------------ coherence

  private get channel(): string {
    return `${this.connection.keyPrefix}${INVALIDATION_CHANNEL}`;
  }

  private message(body: Omit<Message, 's'>): string {
    return JSON.stringify({ s: this.id, ...body });
  }

  /**
   * Tells the other instances (and our waiters) what changed. Never fails the write it follows:
   * an ACL user without channel rights gets `NOPERM` here, which is logged once and turns the
   * notifications off (the subscription is refused too, so every instance runs without L1 and
   * waiters poll); any other failure is the outage the write itself reports.
   */
  private async notify(client: RedisConnection['client'], body: Omit<Message, 's'>): Promise<void> {
    if (this.publishRefused) return;
    try {
      await client.publish(this.channel, this.message(body));
    } catch (err) {
      if (!/^NOPERM/.test((err as Error)?.message ?? '')) return;
      this.publishRefused = true;
      this.logger.warn(
        `PUBLISH to "${this.channel}" is refused (${this.connection.scrub((err as Error).message)}): ` +
          'the cache runs without invalidation messages, so without L1; grant the Redis user ' +
          `the channel (&${this.channel}) to turn them on`,
      );
    }
  }

  /** SCAN + UNLINK of the entries and locks whose key starts with `prefix`, on every master. */
  private async unlinkEntries(prefix: string): Promise<void> {
    const client = this.connection.client;
    let batch: string[] = [];
    const flush = async (): Promise<void> => {
      const names = batch;
      batch = [];
      await Promise.all(names.map((name) => client.unlink(name)));
    };
    for (const pattern of cacheKeys.patterns(escapeGlob(prefix))) {
      for await (const name of this.redis.scan(pattern)) {
        if (!userKeyOf(name)?.startsWith(prefix)) continue;
        batch.push(name);
        if (batch.length >= UNLINK_BATCH) await flush();
      }
    }
    await flush();
  }

  /**
   * The subscriber connection is opened on first use of the cache, not at boot: an application
   * that never caches opens none. Until it is subscribed, L1 stays off. After a failure the
   * next attempt waits a second, so an outage does not turn every call into a connect.
   */
  private kickSubscription(): void {
    if (this.subscription || this.closing || Date.now() < this.nextSubscribeAttempt) return;
    if (this.connection.client.status !== 'ready') return;
    this.ensureSubscribed().catch(() => undefined);
  }

  private ensureSubscribed(): Promise<void> {
    this.subscription ??= (async () => {
      const off = await this.connection.subscribe(this.channel, (text) => this.onMessage(text));
      this.unsubscribers.push(off);
      this.unsubscribers.push(
        this.connection.onSubscriberDrop(() => {
          // Messages are being missed from now on: stop trusting L1 until we are back.
          this.coherent = false;
          this.resetLocal();
        }),
        this.connection.onResubscribe(() => {
          this.resetLocal();
          this.coherent = !this.closing;
        }),
      );
      this.coherent = true;
    })().catch((err: unknown) => {
      this.subscription = undefined;
      this.nextSubscribeAttempt = Date.now() + 1_000;
      this.logger.warn(
        `invalidations unavailable, the local tier (L1) stays off until they are: ${this.connection.scrub((err as Error).message)}`,
      );
      throw err;
    });
    return this.subscription;
  }

  private onMessage(text: string): void {
    let message: Message;
    try {
      message = JSON.parse(text) as Message;
    } catch {
      return;
    }
    const own = message.s === this.id;
    if (message.k) {
      for (const key of message.k) {
        if (!own) this.dropLocal(key);
        this.waiters.wakeAll(key);
      }
    }
    if (message.w) for (const key of message.w) this.waiters.wakeAll(key);
    if (message.t) {
      for (const [tag, version] of Object.entries(message.t)) this.noteTagVersion(tag, version);
      for (const read of this.reads.values()) read.dirty = true;
    }
    if (message.c !== undefined && !own) this.clearLocal(message.c);
  }

  private dropLocal(key: string): void {
    this.l1?.delete(key);
    const read = this.reads.get(key);
    if (read) read.dirty = true;
  }

  private clearLocal(prefix: string): void {
    // Counters are unlinked too: versions stay monotonic (cache.scripts.ts), the memo is
    // dropped all the same so that nothing rests on it.
    if (prefix === '') this.tagVersions.clear();
    if (this.l1) {
      if (prefix === '') this.l1.clear();
      else for (const key of [...this.l1.keys()]) if (key.startsWith(prefix)) this.l1.delete(key);
    }
    for (const [key, read] of this.reads) if (key.startsWith(prefix)) read.dirty = true;
  }

  private resetLocal(): void {
    this.l1?.clear();
    this.tagVersions.clear();
    for (const read of this.reads.values()) read.dirty = true;
  }

  // ------------------------------------------------------------------------ Redis calls

  /**
   * Every Redis call of the cache: skipped at once while the connection is not ready, bounded
   * by `cache.timeout` otherwise. Failures are logged once per outage.
   */
  private async redisCall<T>(
    what: string,
    fn: (client: RedisConnection['client']) => Promise<T>,
    timeout: number = this.options.timeout,
  ): Promise<T> {
    const client = this.connection.client;
    try {
      if (client.status !== 'ready') throw new RedisUnavailable(`connection is ${client.status}`);
      const result =
        timeout > 0
          ? await this.deadlines.run(
              fn(client),
              timeout,
              () => new RedisUnavailable(`no answer within ${timeout} ms`),
            )
          : await fn(client);
      if (this.degraded) this.redisAnswered();
      return result;
    } catch (err) {
      this.redisFailed(what, err);
      throw err;
    }
  }

  private redisAnswered(): void {
    this.degraded = false;
    this.logger.log('Redis answers again: the cache is back to normal');
  }

  private redisFailed(what: string, err: unknown): void {
    this.counters.redisErrors += 1;
    if (this.degraded) return;
    this.degraded = true;
    this.logger.warn(
      `Redis unavailable (${what}: ${this.connection.scrub((err as Error).message)}); ` +
        'serving from loaders until it is back, reads are misses and writes are dropped',
    );
  }

  // ------------------------------------------------------------------------ helpers

  private durations(
    method: string,
    key: string,
    options: CacheSetOptions,
  ): { ttl: number; grace: number } {
    // Built only for a message: this runs on every getOrSet, L1 hits included.
    const where = (): string => `CacheService.${method}(${describeKey(key)})`;
    const ttl = checkDuration(where, 'ttl', options.ttl ?? this.options.ttl, {
      min: 1,
      max: MAX_TTL_MS,
    });
    const grace = checkDuration(where, 'grace', options.grace ?? this.options.grace, {
      min: 0,
      max: MAX_TTL_MS,
    });
    return { ttl, grace };
  }

  private serialize(method: string, key: string, value: unknown): string | Buffer {
    const where = (): string => `CacheService.${method}(${describeKey(key)})`;
    if (value === undefined) {
      throw new TypeError(
        `${where()}: value undefined cannot be cached (use null, or del() the key)`,
      );
    }
    let payload: string | Buffer;
    try {
      payload = this.options.serializer.serialize(value);
    } catch (err) {
      throw new TypeError(`${where()}: value cannot be serialized: ${describeError(err)}`, {
        cause: err,
      });
    }
    const bytes = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
    const max = this.options.maxValueBytes;
    if (bytes > max) {
      throw new RangeError(
        `${where()}: value is ${bytes} bytes serialized, more than cache.maxValueBytes (${max}); ` +
          'nothing was written. Cache a smaller value, or raise cache.maxValueBytes.',
      );
    }
    return payload;
  }

  private wrapDecorated(): void {
    const cache = this;
    this.explorer.wrap<CacheableMetadata>(
      CACHEABLE_METADATA,
      ({ meta, method, label }) =>
        function cacheableWrapper(this: unknown, ...args: unknown[]) {
          const key = resolveTemplate(meta.key, args, `@Cacheable on ${label}`);
          const tags =
            typeof meta.tags === 'function'
              ? (meta.tags as (...a: unknown[]) => string[])(...args)
              : meta.tags;
          return cache.getOrSet(key, () => method.apply(this, args) as unknown, {
            ...meta.options,
            tags,
          });
        },
    );
    this.explorer.wrap<CacheEvictMetadata>(
      CACHE_EVICT_METADATA,
      ({ meta, method, label }) =>
        async function cacheEvictWrapper(this: unknown, ...args: unknown[]) {
          const result = await method.apply(this, args);
          const keys = meta.keys.map((k) => resolveTemplate(k, args, `@CacheEvict on ${label}`));
          const tags =
            typeof meta.tags === 'function'
              ? (meta.tags as (...a: unknown[]) => string[])(...args)
              : meta.tags;
          await Promise.all([
            cache.del(...keys),
            tags?.length ? cache.invalidateTags(tags) : undefined,
          ]);
          return result;
        },
    );
  }
}

/** What `@Cacheable` records on a method. */
export interface CacheableMetadata {
  key: ArgumentTemplate;
  tags?: CacheTags;
  options: Omit<CacheGetOrSetOptions, 'tags'>;
}

/** What `@CacheEvict` records on a method. */
export interface CacheEvictMetadata {
  keys: ArgumentTemplate[];
  tags?: CacheTags;
}

/** Keys removed per batch by `clear(prefix)`. */
const UNLINK_BATCH = 250;

function checkKey(method: string, key: unknown): asserts key is string {
  if (typeof key !== 'string' || key.length === 0) {
    throw new TypeError(
      `CacheService.${method}: key must be a non-empty string, got ${describeValue(key)}`,
    );
  }
}

function checkLoaderTimeout(key: string, name: string, ms: unknown): void {
  if (ms === undefined) return;
  checkDuration(() => `CacheService.getOrSet(${describeKey(key)})`, name, ms, {
    min: 1,
    max: MAX_TIMER_MS,
  });
}

function checkEarlyRefresh(key: string, value: unknown): void {
  if (value === undefined || typeof value === 'boolean') return;
  if (typeof value !== 'number' || !(value >= 0) || value === Infinity) {
    const error = typeof value === 'number' ? RangeError : TypeError;
    throw new error(
      `CacheService.getOrSet(${describeKey(key)}): earlyRefresh must be a boolean or a finite ` +
        `number from 0 (beta), got ${describeValue(value)}`,
    );
  }
}

function checkTags(method: string, key: string | undefined, tags: unknown): string[] | undefined {
  if (tags === undefined) return undefined;
  if (!Array.isArray(tags) || !tags.every((t) => typeof t === 'string' && t.length > 0)) {
    const where = key === undefined ? '' : `(${describeKey(key)})`;
    const bad = Array.isArray(tags)
      ? `item ${describeValue(tags.find((t) => typeof t !== 'string' || t.length === 0))}`
      : describeValue(tags);
    throw new TypeError(
      `CacheService.${method}${where}: tags must be an array of non-empty strings, got ${bad}`,
    );
  }
  return tags;
}

/** An error's message for a message of ours, whatever was thrown. */
function describeError(err: unknown): string {
  return err instanceof Error ? err.message : describeValue(err);
}
