import { SetMetadata } from '@nestjs/common';

import { checkTemplate, type ArgumentTemplate } from '../discovery/decorated-methods.js';

import { CACHEABLE_METADATA, CACHE_EVICT_METADATA, type CacheTags } from './cache.constants.js';
import type { CacheableMetadata, CacheEvictMetadata, CacheGetOrSetOptions } from './cache.types.js';

export type { CacheTags } from './cache.constants.js';

/**
 * Caches the decorated method's result with `CacheService.getOrSet`, under a key built from
 * its arguments (`{0}`, `{1.id}`, or a function), with the same stampede protection. The
 * provider is wrapped at startup through `DiscoveryService`.
 *
 * @example
 * ```ts
 * @Cacheable('product:{0}', { ttl: 60_000, tags: (id: string) => [`product:${id}`] })
 * findProduct(id: string) { return this.db.product(id); }
 * ```
 */
export function Cacheable(
  key: ArgumentTemplate,
  options: Omit<CacheGetOrSetOptions, 'tags'> & { tags?: CacheTags } = {},
): MethodDecorator {
  checkTemplate('@Cacheable', key);
  const { tags, ...rest } = options;
  return SetMetadata<string, CacheableMetadata>(CACHEABLE_METADATA, { key, tags, options: rest });
}

/**
 * After the decorated method resolves, removes the given keys (templates over its arguments)
 * and invalidates the given tags, in every instance.
 *
 * @example
 * ```ts
 * @CacheEvict('product:{0}', { tags: ['catalog'] })
 * updateProduct(id: string, patch: Patch) { ... }
 * ```
 */
export function CacheEvict(
  keys: ArgumentTemplate | ArgumentTemplate[],
  options: { tags?: CacheTags } = {},
): MethodDecorator {
  const list = Array.isArray(keys) ? keys : [keys];
  for (const k of list) checkTemplate('@CacheEvict', k);
  return SetMetadata<string, CacheEvictMetadata>(CACHE_EVICT_METADATA, {
    keys: list,
    tags: options.tags,
  });
}
