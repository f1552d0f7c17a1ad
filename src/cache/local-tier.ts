import { LRUCache } from 'lru-cache';

import type { CacheEntry } from './cache-entry.js';
import type { ResolvedCacheOptions } from './cache.options.js';
import type { CacheState } from './cache.types.js';
import type { TagVersions } from './tag-versions.js';

/**
 * How something outside the cache (server-assisted invalidation, a test) tells it that its
 * in-process copies are out of date. Both are synchronous and cheap; both also mark L2 reads
 * in flight for the key(s), so that their answer is not kept in L1 either.
 */
export interface LocalInvalidation {
  /** Drops one key (as the application wrote it, without `keyPrefix`) from L1. */
  invalidateLocal(key: string): void;
  /** Drops every L1 entry and the tag version memo (invalidations may have been missed). */
  flushLocal(): void;
}

/** A token taken before a read or write is sent, checked before its answer is kept in L1. */
export type LocalTicket = unknown;

/**
 * What decides, besides the invalidation bus, whether L1 may be trusted and whether an answer
 * may be kept (server-assisted tracking: an invalidation can arrive before the reply it makes
 * stale).
 */
export interface LocalGuard {
  trusted(): boolean;
  begin(): LocalTicket;
  mayStore(key: string, ticket: LocalTicket): boolean;
}

/**
 * The in-process tier (L1): a bounded LRU of decoded entries, trusted only while the cache is
 * coherent (subscribed to invalidations), and only under the tag versions it was written with.
 */
export class LocalTier {
  readonly lru?: LRUCache<string, CacheEntry>;
  /** Set when `cache.l1.tracking` is on. */
  guard?: LocalGuard;
  /** Entries pushed out to make room (`maxEntries` or `maxBytes`); never deletes or expiries. */
  private evicted = 0;

  constructor(
    options: ResolvedCacheOptions,
    private readonly state: CacheState,
    private readonly tags: TagVersions,
  ) {
    const l1 = options.l1;
    if (l1) {
      this.lru = new LRUCache<string, CacheEntry>({
        max: l1.maxEntries,
        maxSize: l1.maxBytes,
        sizeCalculation: (entry) => entry.size,
        // 'evict' is the LRU making room; a replaced, deleted or cleared entry is not counted.
        dispose: (_entry, _key, reason) => {
          if (reason === 'evict') this.evicted += 1;
        },
      });
    }
  }

  get enabled(): boolean {
    return this.lru !== undefined;
  }

  /** The entry, unless L1 is off or untrusted, the entry is past its grace or a tag moved on. */
  get(key: string, now: number): CacheEntry | undefined {
    if (!this.lru || !this.state.coherent) return undefined;
    if (this.guard && !this.guard.trusted()) return undefined;
    const entry = this.lru.get(key);
    if (!entry) return undefined;
    if (entry.staleUntil <= now || !this.tags.valid(entry)) {
      this.lru.delete(key);
      return undefined;
    }
    return entry;
  }

  /** Taken before the read or write whose answer `set` may keep. */
  begin(): LocalTicket {
    return this.guard?.begin();
  }

  /** Keeps an entry, if L1 is on and trusted, and nothing invalidated it since `ticket`. */
  set(key: string, entry: CacheEntry, ticket: LocalTicket): void {
    if (!this.lru || !this.state.coherent) return;
    if (this.guard && !this.guard.mayStore(key, ticket)) return;
    this.lru.set(key, entry);
  }

  delete(key: string): void {
    this.lru?.delete(key);
  }

  /** Drops the entries whose key starts with `prefix` ('' = all). */
  clear(prefix: string): void {
    if (!this.lru) return;
    if (prefix === '') this.lru.clear();
    else for (const key of [...this.lru.keys()]) if (key.startsWith(prefix)) this.lru.delete(key);
  }

  get size(): number {
    return this.lru?.size ?? 0;
  }

  get bytes(): number {
    return this.lru?.calculatedSize ?? 0;
  }

  /** Entries evicted for size or count since the cache started. */
  get evictions(): number {
    return this.evicted;
  }
}
