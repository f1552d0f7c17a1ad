/** Metadata key of `@Cacheable`, read once at startup by the default connection's `CacheService`. */
export const CACHEABLE_METADATA = 'nestjs-redis-infra:cacheable';

/** Metadata key of `@CacheEvict`, read once at startup by the default connection's `CacheService`. */
export const CACHE_EVICT_METADATA = 'nestjs-redis-infra:cache-evict';

/** Tags of a call: fixed, or computed from the method's arguments. */
export type CacheTags = string[] | ((...args: never[]) => string[]);
