import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';

import { cacheKeys, MAX_REPLICAS, replicaNames } from '../../src/cache/cache.scripts.js';
import {
  CacheService,
  getRedisToken,
  RedisModule,
  type RedisClient,
  type RedisModuleOptions,
} from '../../src/index.js';
import { keySlot } from '../../src/toolkit/slots.js';
import { startApp } from '../support/app.js';
import { topologies, uniquePrefix, type TopologyCase } from '../support/redis.js';

describe.each(topologies().map((t) => [t.name, t] as const))(
  'CacheService replicas on %s',
  (_name, topology: TopologyCase) => {
    let app: INestApplication;
    let other: INestApplication;
    let cache: CacheService;
    let otherCache: CacheService;
    let raw: RedisClient;
    const prefix = uniquePrefix(`cache-replicas-${topology.name}`);
    let n = 0;
    const key = (label: string): string => `${label}-${++n}`;
    // Copy 0 is the entry itself; the others by name.
    const names = (k: string, copies: number): string[] => [
      cacheKeys.entry(k),
      ...replicaNames(k, prefix).slice(0, copies - 1),
    ];
    const readable = async (k: string, copies: number): Promise<number> => {
      let found = 0;
      for (const name of names(k, copies)) found += await raw.exists(name);
      return found;
    };

    beforeAll(async () => {
      const options: RedisModuleOptions = { ...topology.options, keyPrefix: prefix };
      [app, other] = await Promise.all([
        startApp({ imports: [RedisModule.forRoot(options)] }),
        startApp({ imports: [RedisModule.forRoot({ ...options, cache: { l1: false } })] }),
      ]);
      cache = app.get(CacheService);
      otherCache = other.get(CacheService);
      raw = app.get<RedisClient>(getRedisToken());
    });

    afterAll(async () => {
      await Promise.all([app?.close(), other?.close()]);
    });

    it('puts the copies of a key in different slots, the same names in every instance', () => {
      const k = key('slots');
      const slots = names(k, MAX_REPLICAS).map((name) => keySlot(prefix + name));
      expect(new Set(slots).size).toBe(MAX_REPLICAS);
      expect(replicaNames(k, prefix)).toEqual(replicaNames(k, prefix));
    });

    it('writes n copies, reads any of them, and a delete leaves none readable', async () => {
      const k = key('del');
      let loads = 0;
      const value = await cache.getOrSet(k, () => ({ loads: ++loads }), { replicas: 4 });
      expect(value).toEqual({ loads: 1 });
      expect(await readable(k, 4)).toBe(4);
      const ttl = await raw.pttl(names(k, 4)[3]);
      expect(ttl).toBeGreaterThan(0);
      // Another instance without L1 reads a copy at random every time: every read is a hit.
      for (let i = 0; i < 20; i++) {
        expect(await otherCache.getOrSet(k, () => ({ loads: -1 }), { replicas: 4 })).toEqual({
          loads: 1,
        });
      }
      expect(loads).toBe(1);
      await otherCache.del(k);
      expect(await readable(k, MAX_REPLICAS)).toBe(0);
      expect(await raw.exists(cacheKeys.replicas(k))).toBe(0);
      for (let i = 0; i < 8; i++) {
        expect(await otherCache.getOrSet(k, () => 'reloaded', { replicas: 4 })).toBe('reloaded');
      }
      expect(await cache.get(k)).toBe('reloaded');
    });

    it('a write with fewer copies removes the surplus; set keeps copies too', async () => {
      const k = key('fewer');
      await cache.set(k, 'four', { replicas: 4 });
      expect(await readable(k, 4)).toBe(4);
      await cache.set(k, 'two', { replicas: 2 });
      expect(await readable(k, MAX_REPLICAS)).toBe(2);
      await cache.set(k, 'one');
      expect(await readable(k, MAX_REPLICAS)).toBe(1);
      expect(await raw.exists(cacheKeys.replicas(k))).toBe(0);
      expect(await otherCache.getOrSet(k, () => 'never', { replicas: 2 })).toBe('one');
    });

    it('invalidates every copy with its tags and with clear()', async () => {
      const k = key('tags');
      await cache.getOrSet(k, () => 'tagged', { replicas: 3, tags: [`${k}-tag`] });
      await cache.invalidateTags([`${k}-tag`]);
      for (let i = 0; i < 8; i++) {
        expect(await otherCache.getOrSet(k, () => 'fresh', { replicas: 3 })).toBe('fresh');
      }
      const c = key('clear');
      await cache.getOrSet(c, () => 'x', { replicas: 5 });
      await cache.clear(c);
      expect(await readable(c, MAX_REPLICAS)).toBe(0);
      await cache.getOrSet(c, () => 'y', { replicas: 5 });
      await cache.clear();
      expect(await readable(c, MAX_REPLICAS)).toBe(0);
    });

    it('rejects a bad replica count before anything is sent, naming the value', async () => {
      const k = key('bad');
      for (const bad of [0, 9, 1.5, -1]) {
        await expect(cache.getOrSet(k, () => 1, { replicas: bad })).rejects.toThrow(
          `CacheService.getOrSet("${k}"): replicas must be an integer from 1 to 8 (copies of the entry), got ${bad}`,
        );
      }
      await expect(cache.set(k, 1, { replicas: '2' as unknown as number })).rejects.toBeInstanceOf(
        TypeError,
      );
      expect(await raw.exists(cacheKeys.entry(k))).toBe(0);
    });
  },
);
