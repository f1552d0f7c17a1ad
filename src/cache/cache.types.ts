import type { ArgumentTemplate } from '../discovery/decorated-methods.js';

import type { CacheTags } from './cache.constants.js';
/*
 * The types of CacheService's public API, and the few its parts share.
 */

/** Options of `CacheService.set` and `mset`. */
export interface CacheSetOptions {
  /** Time to live in ms. @defaultValue the module's `cache.ttl` (60000) */
  ttl?: number;
  /** Stale fallback after the TTL, in ms (added to the Redis TTL). @defaultValue `cache.grace` (0) */
  grace?: number;
  /** Tags to invalidate the entry by, with `invalidateTags`. */
  tags?: string[];
  /**
   * Copies of the entry kept in Redis (1 to 8), for a hot key read by many instances: each in
   * its own hash slot (so on different nodes of a cluster, as far as the slot map allows), all
   * written together, and a read goes to one of them at random. `del`, `invalidateTags`,
   * `clear` and a later write with fewer copies remove or invalidate them all.
   * @defaultValue 1
   */
  replicas?: number;
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
  l1: {
    hits: number;
    misses: number;
    /** Entries held now. */
    size: number;
    /** Approximate bytes held now. */
    bytes: number;
    /** Entries pushed out to make room (`maxEntries` or `maxBytes` reached), since start. */
    evictions: number;
    enabled: boolean;
  };
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

/** What `onEvicted` reports. */
export interface CacheEvictedEvent {
  /** The cache key, as the application wrote it (without `keyPrefix`). */
  key: string;
  /**
   * `'evicted'`: Redis removed the entry (or one of its copies) under memory pressure
   * (`maxmemory`); `'expired'`: it outlived its TTL and grace (reported only with
   * `{ expired: true }`).
   */
  reason: 'evicted' | 'expired';
}

/** Options of `CacheService.onEvicted`. */
export interface CacheEvictedOptions {
  /**
   * Also report entries that expired. Off by default: in a cache, expiry is the normal end of
   * every entry, and reporting it costs one message per entry.
   * @defaultValue false
   */
  expired?: boolean;
}

/** Called for every entry Redis evicts (and, with `{ expired: true }`, lets expire). */
export type CacheEvictedHandler = (event: CacheEvictedEvent) => void | Promise<void>;

/** The counters behind `stats()`, shared by the cache's parts. */
export interface CacheCounters {
  l1Hits: number;
  l1Misses: number;
  l2Hits: number;
  l2Misses: number;
  loads: number;
  loadErrors: number;
  staleServed: number;
  stampedeWaits: number;
  earlyRefreshes: number;
  redisErrors: number;
}

/** State the cache's parts share: whether L1 may be trusted, whether shutdown began. */
export interface CacheState {
  /** Subscribed to invalidations and not dropped since: L1 and the tag memo may be trusted. */
  coherent: boolean;
  /** Shutdown began: waiters stop waiting. */
  closing: boolean;
  readonly counters: CacheCounters;
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
