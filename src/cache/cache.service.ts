import {
  Inject,
  Injectable,
  Logger,
  type BeforeApplicationShutdown,
  type OnModuleInit,
} from '@nestjs/common';

import { checkOptionsObject } from '../common/checks.js';
import { describeKey, describeValue } from '../common/describe.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import { getRedisConnectionToken } from '../connection/tokens.js';
import { Waiters } from '../connection/waiters.js';
import { resolveTemplate } from '../discovery/decorated-methods.js';
import type { DecoratorExplorer } from '../discovery/explorer.js';
import { PubSubService } from '../pubsub/pubsub.service.js';
import type { KeyEventSubscription } from '../pubsub/pubsub.types.js';
import { escapeGlob, RedisService } from '../redis.service.js';
import { trace, type RedisTraceContext } from '../telemetry/tracing.js';

import type { CacheEntry } from './cache-entry.js';
import {
  checkEarlyRefresh,
  checkKey,
  checkLoaderTimeout,
  checkReplicas,
  checkTags,
  durations,
  readsText,
  serialize,
} from './cache.checks.js';
import { CACHEABLE_METADATA, CACHE_EVICT_METADATA } from './cache.constants.js';
import { DegradingCaller } from './cache.degrade.js';
import { cacheKeys, entryKeyOf, replicaNames, userKeyOf } from './cache.scripts.js';
import type {
  CacheableMetadata,
  CacheEvictMetadata,
  CacheEvictedHandler,
  CacheEvictedOptions,
  CacheGetOrSetOptions,
  CacheLoader,
  CacheSetOptions,
  CacheState,
  CacheStats,
} from './cache.types.js';
import { CacheScripts } from './defined-scripts.js';
import { EntryWriter } from './entry-writer.js';
import { InvalidationBus, type CacheMessage } from './invalidation-bus.js';
import { L2Reader, type PendingRead } from './l2-reader.js';
import { LocalTier, type LocalInvalidation } from './local-tier.js';
import { StampedeLoader } from './stampede-loader.js';
import { TagVersions } from './tag-versions.js';
import { CacheTracking, type ReadTicket } from './tracking.js';

export type {
  CacheEvictedEvent,
  CacheEvictedHandler,
  CacheEvictedOptions,
  CacheGetOrSetOptions,
  CacheLoader,
  CacheLoaderContext,
  CacheSetOptions,
  CacheStats,
} from './cache.types.js';
export type { LocalInvalidation } from './local-tier.js';

/**
 * A two-tier cache: a bounded in-process LRU (L1) in front of Redis (L2), coherent across
 * instances, with stampede protection that runs a loader once across all instances, grace
 * (stale-if-error, soft timeouts), tags and probabilistic early refresh. Redis trouble degrades
 * it to a pass-through; it never fails a request or hangs.
 *
 * Values returned from L1 are shared between callers: treat them as read-only.
 *
 * The work is done by small parts, each in its own file: the L2 reader, the entry writer, the
 * invalidation bus, the stampede loader, tag versions and the degrade-on-error wrapper.
 *
 * @example
 * ```ts
 * const product = await this.cache.getOrSet(`product:${id}`, () => this.db.product(id), {
 *   ttl: 60_000, grace: 300_000, timeout: 200, tags: [`product:${id}`],
 * });
 * ```
 */
@Injectable()
export class CacheService implements OnModuleInit, BeforeApplicationShutdown, LocalInvalidation {
  private readonly logger = new Logger('Redis:CacheService');
  private readonly state: CacheState = {
    coherent: false,
    closing: false,
    counters: {
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
    },
  };
  private readonly waiters = new Waiters();
  private readonly redisCalls: DegradingCaller;
  private readonly tags: TagVersions;
  private readonly local: LocalTier;
  private readonly bus: InvalidationBus;
  private readonly reader: L2Reader;
  private readonly writer: EntryWriter;
  private readonly loader: StampedeLoader;
  private readonly evictionSubscriptions: KeyEventSubscription[] = [];
  private readonly scripts: CacheScripts;
  /** Server-assisted invalidation of L1 (`cache.l1.tracking`), when on. */
  private readonly tracking?: CacheTracking;
  private trackingStarted = false;
  /** Moving share of `getOrSet` reads past L1 that missed (see `readForLoad`). */
  private missRate = 0;

  constructor(
    @Inject(getRedisConnectionToken()) private readonly connection: RedisConnection,
    private readonly redis: RedisService,
    private readonly explorer: DecoratorExplorer,
    private readonly pubsub: PubSubService,
  ) {
    const options = this.options;
    const scripts = new CacheScripts(connection);
    this.redisCalls = new DegradingCaller(
      connection,
      this.logger,
      this.state.counters,
      () => this.options.timeout,
    );
    this.tags = new TagVersions(this.redisCalls, scripts, this.state);
    this.local = new LocalTier(options, this.state, this.tags);
    this.bus = new InvalidationBus(connection, this.logger, this.state, {
      onMessage: (message, own) => this.onMessage(message, own),
      onLost: () => this.flushLocal(),
    });
    this.reader = new L2Reader(
      connection,
      options,
      readsText(options),
      this.redisCalls,
      this.local,
      this.tags,
      this.logger,
      (key, token) => void this.loader.abandon(key, token),
    );
    this.writer = new EntryWriter(
      connection,
      this.redisCalls,
      scripts,
      this.bus,
      this.local,
      this.tags,
      (key) => this.invalidateLocal(key),
    );
    this.loader = new StampedeLoader(
      options,
      this.state,
      this.redisCalls,
      scripts,
      this.reader,
      this.writer,
      this.bus,
      this.waiters,
      this.logger,
    );
    this.scripts = scripts;
    const l1 = options.l1;
    if (l1 && l1.tracking) {
      const keyPrefix = connection.keyPrefix;
      const tracking = new CacheTracking({
        connection,
        prefix: `${keyPrefix}cache:{`,
        mode: l1.tracking.mode,
        logger: this.logger,
        invalidate: (full) => {
          const name = full.slice(keyPrefix.length);
          const key = userKeyOf(name);
          // Lock and wait keys share the prefix: only an entry's own name drops it.
          if (key !== undefined && cacheKeys.entry(key) === name) this.invalidateLocal(key);
        },
        flushAll: () => this.flushLocal(),
      });
      this.tracking = tracking;
      this.local.guard = {
        trusted: () => tracking.active,
        begin: () => tracking.beginRead(),
        mayStore: (key, ticket) =>
          tracking.mayStore(keyPrefix + cacheKeys.entry(key), ticket as ReadTicket),
      };
    }
  }

  /** Opens what the cache listens on (invalidations; tracking), on first use. */
  private kick(): void {
    this.bus.kick();
    if (this.tracking && !this.trackingStarted) {
      this.trackingStarted = true;
      // Until tracking is confirmed L1 serves nothing (the guard); start() logs its failures.
      void this.tracking.start();
    }
  }

  private get options() {
    return this.connection.config.cache;
  }

  // ------------------------------------------------------------------------ public API

  /** The fresh value of `key`, or `undefined` (a miss, also while Redis is unavailable). */
  async get<T>(key: string): Promise<T | undefined> {
    checkKey('get', key);
    this.kick();
    const now = Date.now();
    const local = this.local.get(key, now);
    const counters = this.state.counters;
    if (local && local.freshUntil > now) {
      counters.l1Hits += 1;
      return local.value as T;
    }
    if (this.local.enabled) counters.l1Misses += 1;
    const entry = await this.reader.read(key);
    if (entry && entry.freshUntil > Date.now()) {
      counters.l2Hits += 1;
      return entry.value as T;
    }
    counters.l2Misses += 1;
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
    this.kick();
    const { ttl, grace } = durations(this.options, 'set', key, options);
    const tags = checkTags('set', key, options.tags);
    const copies = checkReplicas('set', key, options.replicas);
    const payload = serialize(this.options, 'set', key, value);
    await this.writer.write({ key, value, payload, ttl, grace, tags, loadMs: 0, copies });
  }

  /** Removes keys (and their copies, see `replicas`) from both tiers in every instance. */
  async del(...keys: string[]): Promise<void> {
    for (const key of keys) checkKey('del', key);
    if (keys.length === 0) return;
    for (const key of keys) this.invalidateLocal(key);
    await this.redisCalls
      .call('del', async (client) => {
        await Promise.all(
          keys.map(async (key) => {
            const copies = await this.scripts.delete.run([
              cacheKeys.entry(key),
              cacheKeys.replicas(key),
            ]);
            if (copies > 1) await this.writer.unlinkCopies(client, key, 1, copies);
          }),
        );
        await this.bus.notify(client, { k: keys });
      })
      .catch(() => undefined);
  }

  /**
   * Cache-aside: the value of `key`, or `loader`'s, stored for next time. Concurrent misses
   * for a key run `loader` once across every instance (the others wait for its value, woken
   * when it lands). With `grace`, a stale value covers loader errors and `timeout`s. A miss
   * costs one round trip before the loader (the read also takes the stampede lock) and one
   * after it (the fill also gives the lock up).
   */
  async getOrSet<T>(
    key: string,
    loader: CacheLoader<T>,
    options: CacheGetOrSetOptions = {},
  ): Promise<T> {
    this.checkGetOrSet(key, loader, options);
    this.kick();
    const counters = this.state.counters;
    const now = Date.now();
    const local = this.local.get(key, now) as CacheEntry<T> | undefined;
    if (local && local.freshUntil > now) {
      counters.l1Hits += 1;
      this.loader.maybeRefreshEarly(key, local, loader, options, now);
      return local.value;
    }
    if (this.local.enabled) counters.l1Misses += 1;
    // L1 hits are counted, not traced: a trace would cost more than the hit itself.
    const ctx: RedisTraceContext = { connection: this.connection.name };
    return trace('cache.getOrSet', ctx, () =>
      this.getOrSetPastL1(key, loader, options, local, ctx),
    );
  }

  private async getOrSetPastL1<T>(
    key: string,
    loader: CacheLoader<T>,
    options: CacheGetOrSetOptions,
    local: CacheEntry<T> | undefined,
    ctx: RedisTraceContext,
  ): Promise<T> {
    const counters = this.state.counters;
    const traced: CacheLoader<T> = (context) =>
      trace('cache.load', { connection: this.connection.name }, async () => loader(context));
    if (this.loader.running(key)) {
      ctx.outcome = 'loaded';
      return this.loader.load(key, traced, options, local);
    }
    const read = this.readForLoad(key, options.replicas);
    const entry = ((await read.promise) as CacheEntry<T> | undefined) ?? local;
    const after = Date.now();
    if (entry && entry.freshUntil > after) {
      counters.l2Hits += 1;
      this.missRate *= 1 - MISS_RATE_WEIGHT;
      this.loader.maybeRefreshEarly(key, entry, traced, options, after);
      ctx.outcome = 'hit';
      return entry.value;
    }
    counters.l2Misses += 1;
    this.missRate += (1 - this.missRate) * MISS_RATE_WEIGHT;
    const stale = entry && entry.staleUntil > after ? entry : undefined;
    const claim = read.pending?.claim;
    const claimed = claim !== undefined ? { token: read.token, claim } : undefined;
    const value = await this.loader.load(key, traced, options, stale, claimed);
    ctx.outcome = stale !== undefined && value === stale.value ? 'stale' : 'loaded';
    return value;
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
      return {
        key: entry.key,
        value: entry.value,
        ...durations(this.options, 'mset', entry.key, entry),
        tags: checkTags('mset', entry.key, entry.tags),
        copies: checkReplicas('mset', entry.key, entry.replicas),
        loadMs: 0,
        payload: serialize(this.options, 'mset', entry.key, entry.value),
      };
    });
    await Promise.all(prepared.map((w) => this.writer.write(w)));
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
    await this.redisCalls
      .call('invalidate tags', async (client) => {
        const bumped = await this.tags.bump(list, lifetime);
        await this.bus.notify(client, { t: bumped });
      })
      .catch(() => {
        // Not recorded in Redis: our own L1 must not keep serving what the caller just invalidated.
        this.local.clear('');
        this.tags.clear();
      });
  }

  /**
   * Removes every entry (or those whose key starts with `prefix`), with their copies, from
   * Redis — SCAN + UNLINK over every master of a cluster — and from every instance's L1.
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
    await this.redisCalls
      .call('clear', async (client) => {
        if (prefix) await this.unlinkEntries(prefix);
        else await this.redis.unlinkByPattern('cache:*');
        await this.bus.notify(client, { c: prefix ?? '' });
      })
      .catch(() => undefined);
  }

  /**
   * Calls `handler` with the cache key of every entry Redis evicts under memory pressure
   * (`maxmemory` with an evicting policy), on every master of a cluster; with
   * `{ expired: true }` also of every entry that expired. Built on `PubSubService.onKeyEvent`:
   * when the server's `notify-keyspace-events` lacks the flags and they cannot be set (see the
   * `pubsub.keyspaceEvents` option), the handle says `active: false` and why, and nothing is
   * reported. A key with copies (`replicas`) is reported once per evicted copy. Stopped on
   * shutdown, or with the handle's `unsubscribe()`.
   *
   * @example
   * ```ts
   * const sub = await cache.onEvicted(({ key }) => metrics.increment('cache.evicted', { key }));
   * if (!sub.active) logger.warn(`evictions not reported: ${sub.reason}`);
   * ```
   */
  async onEvicted(
    handler: CacheEvictedHandler,
    options: CacheEvictedOptions = {},
  ): Promise<KeyEventSubscription> {
    if (typeof handler !== 'function') {
      throw new TypeError(
        `CacheService.onEvicted: handler must be a function, got ${describeValue(handler)}`,
      );
    }
    checkOptionsObject('CacheService.onEvicted', 'options', options);
    if (options.expired !== undefined && typeof options.expired !== 'boolean') {
      throw new TypeError(
        `CacheService.onEvicted: options.expired must be true or false, got ${describeValue(options.expired)}`,
      );
    }
    const events = options.expired ? (['evicted', 'expired'] as const) : (['evicted'] as const);
    const subscription = await this.pubsub.onKeyEvent(events, 'cache:*', ({ event, key }) => {
      const cacheKey = entryKeyOf(key);
      if (cacheKey === undefined) return; // a lock, a marker or a tag counter
      return handler({ key: cacheKey, reason: event === 'expired' ? 'expired' : 'evicted' });
    });
    if (subscription.active) this.evictionSubscriptions.push(subscription);
    return subscription;
  }

  /** Hits and misses per tier, loads, errors, stale values served, stampede waits, L1 size and evictions. */
  stats(): CacheStats {
    const c = this.state.counters;
    return {
      l1: {
        hits: c.l1Hits,
        misses: c.l1Misses,
        size: this.local.size,
        bytes: this.local.bytes,
        evictions: this.local.evictions,
        enabled: this.local.enabled,
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

  /**
   * Drops one key from this instance's L1 (and keeps a read in flight for it out of L1), for
   * invalidations that do not come through the cache's own channel.
   * @internal
   */
  invalidateLocal(key: string): void {
    this.local.delete(key);
    this.reader.markDirty(key);
  }

  /**
   * Drops this instance's whole L1 and tag version memo, for when invalidations may have been
   * missed (a lost subscription or tracking connection).
   * @internal
   */
  flushLocal(): void {
    this.local.clear('');
    this.tags.clear();
    this.reader.markDirtyPrefix('');
  }

  // ------------------------------------------------------------------------ lifecycle

  /** Wraps `@Cacheable` / `@CacheEvict` methods. */
  onModuleInit(): void {
    this.wrapDecorated();
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.state.closing = true;
    this.waiters.wakeEveryone();
    await Promise.allSettled([
      this.bus.close(),
      this.tracking?.close(),
      ...this.evictionSubscriptions.splice(0).map((s) => s.unsubscribe()),
    ]);
  }

  // ------------------------------------------------------------------------ internals

  private checkGetOrSet<T>(
    key: string,
    loader: CacheLoader<T>,
    options: CacheGetOrSetOptions,
  ): void {
    checkKey('getOrSet', key);
    if (typeof loader !== 'function') {
      throw new TypeError(
        `CacheService.getOrSet(${describeKey(key)}): loader must be a function, got ${describeValue(loader)}`,
      );
    }
    checkOptionsObject(() => `CacheService.getOrSet(${describeKey(key)})`, 'options', options);
    durations(this.options, 'getOrSet', key, options);
    checkTags('getOrSet', key, options.tags);
    checkLoaderTimeout(key, 'timeout', options.timeout);
    checkLoaderTimeout(key, 'hardTimeout', options.hardTimeout);
    checkEarlyRefresh(key, options.earlyRefresh);
    checkReplicas('getOrSet', key, options.replicas);
  }

  /**
   * `getOrSet`'s read past L1. A read in flight for the key is joined, and a key with copies
   * reads one at random (a plain `GET` each). Otherwise the read depends on how `getOrSet`
   * reads went lately: while most hit, a plain `GET` (a hit's cheapest read; a miss then takes
   * the stampede lock in a second round trip); while most miss, one script that reads the
   * entry and, on a miss, takes the lock, so that the loader runs right after it (measured in
   * bench/cache: the script costs a hit about a third of its throughput, the `GET` costs a miss
   * a round trip).
   */
  private readForLoad(
    key: string,
    replicas: number | undefined,
  ): { promise: Promise<CacheEntry | undefined>; pending?: PendingRead; token: string } {
    const joined = this.reader.running(key);
    if (joined) return { promise: joined, token: '' };
    if (replicas !== undefined && replicas > 1) {
      const copy = Math.floor(Math.random() * replicas);
      const name = copy === 0 ? undefined : replicaNames(key, this.connection.keyPrefix)[copy - 1];
      return { promise: this.reader.read(key, name), token: '' };
    }
    if (this.missRate <= 0.5) return { promise: this.reader.read(key), token: '' };
    const token = this.loader.token();
    const pending = this.reader.readOrLock(key, token);
    return { promise: pending?.promise ?? NO_ENTRY, pending, token };
  }

  private onMessage(message: CacheMessage, own: boolean): void {
    if (message.k) {
      for (const key of message.k) {
        if (!own) this.invalidateLocal(key);
        this.waiters.wakeAll(key);
      }
    }
    if (message.w) for (const key of message.w) this.waiters.wakeAll(key);
    if (message.t) {
      for (const [tag, version] of Object.entries(message.t)) this.tags.note(tag, version);
      this.reader.markDirtyPrefix('');
    }
    if (message.c !== undefined && !own) this.clearLocal(message.c);
  }

  private clearLocal(prefix: string): void {
    // Counters are unlinked too: versions stay monotonic (cache.scripts.ts), the memo is
    // dropped all the same so that nothing rests on it.
    if (prefix === '') this.tags.clear();
    this.local.clear(prefix);
    this.reader.markDirtyPrefix(prefix);
  }

  /** SCAN + UNLINK of the entries, copies and locks whose key starts with `prefix`, on every master. */
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

  private wrapDecorated(): void {
    // The wrapper's own `this` is the decorated instance; the service is reached through this alias.
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- see above
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
          return cache.getOrSet<unknown>(key, () => method.apply(this, args), {
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

/** Keys removed per batch by `clear(prefix)`. */
const UNLINK_BATCH = 250;

/** Weight of the latest `getOrSet` read in the moving miss rate that picks the read. */
const MISS_RATE_WEIGHT = 1 / 16;

const NO_ENTRY: Promise<undefined> = Promise.resolve(undefined);
