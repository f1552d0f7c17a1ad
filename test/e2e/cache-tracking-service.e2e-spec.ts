import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';

import { cacheKeys } from '../../src/cache/cache.scripts.js';
import {
  CacheService,
  getRedisToken,
  RedisModule,
  type RedisClient,
  type RedisModuleOptions,
} from '../../src/index.js';
import { startApp } from '../support/app.js';
import { topologies, uniquePrefix, waitFor, type TopologyCase } from '../support/redis.js';

/**
 * `cache.l1.tracking` wired into CacheService: a write by a client that is not this module (here
 * another application's plain command connection, which publishes nothing on the cache's
 * invalidation channel) empties this instance's L1, while an instance without tracking keeps
 * serving the old value from its L1.
 */
describe.each(topologies().map((t) => [t.name, t] as const))(
  'CacheService with l1.tracking on %s',
  (_name, topology: TopologyCase) => {
    let tracked: INestApplication;
    let untracked: INestApplication;
    let writer: INestApplication;
    let cache: CacheService;
    let plainCache: CacheService;
    let external: RedisClient;
    const prefix = uniquePrefix(`cache-tracking-svc-${topology.name}`);
    let n = 0;
    const key = (label: string): string => `${label}-${++n}`;

    beforeAll(async () => {
      const options: RedisModuleOptions = { ...topology.options, keyPrefix: prefix };
      [tracked, untracked, writer] = await Promise.all([
        startApp({
          imports: [RedisModule.forRoot({ ...options, cache: { l1: { tracking: true } } })],
        }),
        startApp({ imports: [RedisModule.forRoot(options)] }),
        startApp({ imports: [RedisModule.forRoot(options)] }),
      ]);
      cache = tracked.get(CacheService);
      plainCache = untracked.get(CacheService);
      external = writer.get<RedisClient>(getRedisToken());
    });

    afterAll(async () => {
      await Promise.all([tracked?.close(), untracked?.close(), writer?.close()]);
    });

    it('drops an L1 entry that another client deleted; without tracking L1 keeps it', async () => {
      const k = key('external-del');
      await cache.set(k, 'v1', { ttl: 60_000 });
      // Tracking is confirmed asynchronously; until then L1 serves nothing.
      await waitFor(
        async () => {
          const before = cache.stats().l1.hits;
          await cache.get(k);
          return cache.stats().l1.hits > before;
        },
        { what: 'an L1 hit once tracking is active' },
      );
      // The untracked instance keeps L1 only once its invalidation channel is subscribed.
      await waitFor(
        async () => {
          const before = plainCache.stats().l1.hits;
          expect(await plainCache.get(k)).toBe('v1');
          return plainCache.stats().l1.hits > before;
        },
        { what: 'an L1 hit in the untracked instance' },
      );

      expect(await external.del(cacheKeys.entry(k))).toBe(1);

      await waitFor(async () => (await cache.get(k)) === undefined, {
        what: 'the tracked L1 to drop the deleted entry',
      });
      expect(await cache.get(k)).toBeUndefined();
      // The control: nothing told the untracked instance, its L1 still has the old value.
      expect(await plainCache.get(k)).toBe('v1');
    });

    it('drops an L1 entry that another client overwrote, and loads the new state', async () => {
      const k = key('external-set');
      let loads = 0;
      expect(await cache.getOrSet(k, () => `load-${++loads}`)).toBe('load-1');
      expect(await cache.getOrSet(k, () => `load-${++loads}`)).toBe('load-1');
      // Not an entry the cache can decode: a corrupted entry is a miss, so the loader runs.
      await external.set(cacheKeys.entry(k), 'not an entry');
      await waitFor(async () => (await cache.getOrSet(k, () => `load-${++loads}`)) !== 'load-1', {
        what: 'the overwritten entry to leave L1',
      });
      expect(loads).toBeGreaterThanOrEqual(2);
    });
  },
);
