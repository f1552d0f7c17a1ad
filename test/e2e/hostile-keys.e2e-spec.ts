import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';

import { cacheKeys } from '../../src/cache/cache.scripts.js';
import {
  CacheService,
  getRedisToken,
  RedisModule,
  SessionService,
  type RedisClient,
} from '../../src/index.js';
import { addressOfId } from '../../src/session/session-id.js';
import { sessionKeys } from '../../src/session/session.scripts.js';
import { CapturingLogger, startApp } from '../support/app.js';
import {
  sendCommand,
  topologies,
  uniqueConnectionName,
  uniquePrefix,
  type TopologyCase,
} from '../support/redis.js';

/**
 * Strings whose braces would end a `{hash tag}` early, leave it empty (Redis then hashes the
 * whole name, so an entry and its lock land in different slots), or open a second one.
 */
const HOSTILE = [
  '}x',
  '{',
  '}',
  '}{',
  '{}',
  'a}b',
  '{x}',
  'x{y}z',
  '{}x}',
  '}:lock',
  ':lock',
  'é}ü',
  '}'.repeat(300),
];

describe.each(topologies().map((t) => [t.name, t] as const))(
  'hostile keys on %s',
  (_name, topology: TopologyCase) => {
    let app: INestApplication;
    let cache: CacheService;
    let sessions: SessionService;
    let raw: RedisClient;
    const prefix = uniquePrefix(`hostile-${topology.name}`);
    const logs = new CapturingLogger();

    /** The hash slot of a name as the server computes it (with our key prefix). */
    const slot = async (name: string): Promise<number> =>
      Number(await sendCommand(topology.masters[0], ['CLUSTER', 'KEYSLOT', prefix + name]));

    beforeAll(async () => {
      app = await startApp(
        {
          imports: [
            RedisModule.forRoot({
              ...topology.options,
              keyPrefix: prefix,
              connectionName: uniqueConnectionName('hostile'),
              // Long enough that a leftover stampede lock would time the test out.
              cache: { lockTtl: 20_000 },
            }),
          ],
        },
        logs,
      );
      cache = app.get(CacheService);
      sessions = app.get(SessionService);
      raw = app.get<RedisClient>(getRedisToken());
    });

    afterAll(async () => {
      await app?.close();
    });

    it.each(HOSTILE.map((s) => [JSON.stringify(s).slice(0, 20), s]))(
      'cache key %s: entry and lock in one slot, filled once, no leftover lock, no waiting',
      async (_label, key) => {
        if (topology.name === 'cluster') {
          expect(await slot(cacheKeys.lock(key))).toBe(await slot(cacheKeys.entry(key)));
        }
        const before = cache.stats();
        let loads = 0;
        const loader = (): { key: string } => {
          loads += 1;
          return { key };
        };
        expect(await cache.getOrSet(key, loader)).toEqual({ key });
        expect(await raw.exists(cacheKeys.lock(key))).toBe(0);
        expect(await raw.pttl(cacheKeys.entry(key))).toBeGreaterThan(0);
        expect(await cache.getOrSet(key, loader)).toEqual({ key });
        expect(await cache.get(key)).toEqual({ key });
        expect(loads).toBe(1);

        await cache.set(key, 'tagged', { tags: [key] });
        expect(await cache.get(key)).toBe('tagged');
        await cache.invalidateTags([key]);
        expect(await cache.get(key)).toBeUndefined();
        await cache.set(key, 'again');
        await cache.del(key);
        expect(await cache.get(key)).toBeUndefined();
        expect(await raw.exists(cacheKeys.entry(key))).toBe(0);

        const after = cache.stats();
        expect(after.stampedeWaits).toBe(before.stampedeWaits);
        expect(after.redisErrors).toBe(before.redisErrors);
        expect(logs.matching('CROSSSLOT')).toEqual([]);
      },
    );

    it('an empty key is refused before anything is sent', async () => {
      await expect(cache.getOrSet('', () => 1)).rejects.toThrow(
        'CacheService.getOrSet: key must be a non-empty string, got ""',
      );
    });

    it('clear(prefix) with braces removes exactly the keys that start with it', async () => {
      const keys = ['p}1', 'p}2', 'p3', 'q}1', 'p{}'];
      for (const key of keys) await cache.set(key, key);
      await cache.clear('p}');
      const left = async (): Promise<string[]> => {
        const out: string[] = [];
        for (const key of keys) if (await raw.exists(cacheKeys.entry(key))) out.push(key);
        return out;
      };
      expect(await left()).toEqual(['p3', 'q}1', 'p{}']);
      await cache.clear('p');
      expect(await left()).toEqual(['q}1']);
      await cache.clear('q}');
      expect(await left()).toEqual([]);
    });

    it.each(HOSTILE.map((s) => [JSON.stringify(s).slice(0, 20), s]))(
      'sessions of user %s: record and index in one slot, listed, rotated, ended',
      async (_label, userId) => {
        const s = await sessions.create(userId, { n: 1 });
        const record = sessionKeys.record(addressOfId(s.id));
        const index = sessionKeys.index(userId);
        if (topology.name === 'cluster') expect(await slot(index)).toBe(await slot(record));
        expect(await raw.pttl(index)).toBeGreaterThan(0);
        expect((await sessions.listByUser(userId)).map((x) => x.handle)).toEqual([s.handle]);
        const rotated = await sessions.rotate(s.id);
        expect(rotated?.userId).toBe(userId);
        expect(await sessions.get(s.id)).toBeNull();
        expect(await sessions.destroyAllForUser(userId)).toBe(1);
        expect(await raw.exists(index)).toBe(0);
      },
    );
  },
);
