import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Injectable, type INestApplication } from '@nestjs/common';

import { READ_OR_LOCK, WRITE } from '../../src/cache/cache.scripts.js';
import { MAX_TTL_MS } from '../../src/common/checks.js';
import {
  CacheEvict,
  CacheLoaderTimeoutError,
  CacheService,
  Cacheable,
  getRedisToken,
  RedisModule,
  type CacheSerializer,
  type RedisClient,
  type RedisModuleOptions,
} from '../../src/index.js';
import { CapturingLogger, startApp } from '../support/app.js';
import {
  killConnection,
  recordCommands,
  sendCommand,
  specDir,
  startStandalone,
  topologies,
  uniqueConnectionName,
  uniquePrefix,
  waitFor,
  type TopologyCase,
} from '../support/redis.js';

@Injectable()
class CatalogService {
  calls = 0;

  @Cacheable('product:{0}', { ttl: 10_000, tags: (id: string) => [`product:${id}`] })
  async product(id: string): Promise<{ id: string; call: number }> {
    this.calls += 1;
    return { id, call: this.calls };
  }

  @CacheEvict('product:{0}')
  async rename(id: string): Promise<string> {
    return `renamed ${id}`;
  }
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Bytes that are not UTF-8 and contain '\n': they must reach `deserialize` untouched. */
const MAGIC = Buffer.from([0x0a, 0xff, 0x00]);
const binarySerializer: CacheSerializer = {
  serialize: (value) => Buffer.concat([MAGIC, Buffer.from(JSON.stringify(value))]),
  deserialize: (raw) => {
    if (!raw.subarray(0, MAGIC.length).equals(MAGIC)) throw new Error('not a binary entry');
    return JSON.parse(raw.subarray(MAGIC.length).toString('utf8')) as unknown;
  },
};

describe.each(topologies().map((t) => [t.name, t] as const))(
  'CacheService on %s',
  (_name, topology: TopologyCase) => {
    let a: INestApplication;
    let b: INestApplication;
    let cacheA: CacheService;
    let cacheB: CacheService;
    let raw: RedisClient;
    const prefix = uniquePrefix(`cache-${topology.name}`);
    const logsA = new CapturingLogger();
    const options: RedisModuleOptions = {
      ...topology.options,
      keyPrefix: prefix,
      // Short, so that take-over tests are quick; not shorter: on a loaded machine the event loop
      // can stall for a good part of a second, and joiners would then stop waiting.
      cache: { lockTtl: 1_500 },
    };
    let n = 0;
    const key = (label: string): string => `${label}-${++n}`;
    const connectionName = uniqueConnectionName('cache-a');

    beforeAll(async () => {
      [a, b] = await Promise.all([
        startApp(
          {
            imports: [RedisModule.forRoot({ ...options, connectionName })],
            providers: [CatalogService],
          },
          logsA,
        ),
        // Nest's logger is process-wide: both apps log into the same capture.
        startApp(
          {
            imports: [
              RedisModule.forRoot({ ...options, connectionName: uniqueConnectionName('cache-b') }),
            ],
          },
          logsA,
        ),
      ]);
      cacheA = a.get(CacheService);
      cacheB = b.get(CacheService);
      raw = a.get<RedisClient>(getRedisToken());
    });

    afterAll(async () => {
      await Promise.all([a?.close(), b?.close()]);
    });

    it('sets, gets and deletes; null is a value, a miss is undefined', async () => {
      const k = key('basic');
      expect(await cacheA.get(k)).toBeUndefined();
      await cacheA.set(k, { name: 'Ada', tags: ['x'] }, { ttl: 10_000 });
      expect(await cacheA.get(k)).toEqual({ name: 'Ada', tags: ['x'] });
      expect(await cacheB.get(k)).toEqual({ name: 'Ada', tags: ['x'] });
      const pttl = await raw.pttl(`cache:{${k}}`);
      expect(pttl).toBeGreaterThan(9_000);
      expect(pttl).toBeLessThanOrEqual(10_000);
      await cacheA.set(`${k}:null`, null);
      expect(await cacheB.get(`${k}:null`)).toBeNull();
      await cacheB.del(k, `${k}:null`);
      expect(await cacheB.get(k)).toBeUndefined();
      expect(await raw.exists(`cache:{${k}}`)).toBe(0);
      // A drops its L1 copy when the invalidation arrives, one round trip later.
      await waitFor(
        async () =>
          (await cacheA.get(k)) === undefined && (await cacheA.get(`${k}:null`)) === undefined,
        { what: 'the delete to reach A' },
      );
    });

    it('expires entries after their TTL', async () => {
      const k = key('ttl');
      await cacheA.set(k, 'short', { ttl: 80 });
      expect(await cacheA.get(k)).toBe('short');
      await waitFor(async () => (await cacheA.get(k)) === undefined, {
        what: 'the entry to expire',
      });
      // Redis drops the key at its PX; our logical expiry is measured from before the write.
      await waitFor(async () => (await raw.exists(`cache:{${k}}`)) === 0, {
        what: 'Redis to expire it',
      });
    });

    it('mset / mget over keys in different slots', async () => {
      const keys = Array.from({ length: 20 }, (_, i) => key(`m${i}`));
      await cacheA.mset(keys.map((k, i) => ({ key: k, value: i, ttl: 10_000 })));
      expect(await cacheB.mget<number>([...keys, key('absent')])).toEqual([
        ...keys.map((_, i) => i),
        undefined,
      ]);
    });

    it('rejects bad input with errors naming the key and value, writing nothing', async () => {
      const k = key('bad');
      for (const ttl of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, 1e20, MAX_TTL_MS + 1]) {
        await expect(cacheA.set(k, 1, { ttl })).rejects.toThrow(
          new RangeError(
            `CacheService.set("${k}"): ttl must be more than 0 and at most ${MAX_TTL_MS} milliseconds (1 year), got ${String(ttl)}`,
          ),
        );
      }
      await expect(cacheA.set(k, 1, { ttl: '10' as unknown as number })).rejects.toThrow(
        new TypeError(`CacheService.set("${k}"): ttl must be a number of milliseconds, got "10"`),
      );
      await expect(cacheA.set(k, 1, { grace: 1e20 })).rejects.toThrow(
        `CacheService.set("${k}"): grace must be from 0 to ${MAX_TTL_MS} milliseconds`,
      );
      await expect(cacheA.getOrSet(k, () => 1, { hardTimeout: 1e10 })).rejects.toThrow(
        `CacheService.getOrSet("${k}"): hardTimeout must be more than 0 and at most 2147483647 milliseconds`,
      );
      await expect(cacheA.getOrSet(k, () => 1, { timeout: -5 })).rejects.toThrow(RangeError);
      await expect(cacheA.set(k, undefined)).rejects.toThrow(
        `CacheService.set("${k}"): value undefined cannot be cached`,
      );
      await expect(cacheA.set(k, { n: 10n })).rejects.toThrow(
        `CacheService.set("${k}"): value cannot be serialized: property "n" is a bigint, which JSON cannot represent`,
      );
      const circular: Record<string, unknown> = {};
      circular.self = circular;
      await expect(cacheA.set(k, circular)).rejects.toThrow(
        `CacheService.set("${k}"): value cannot be serialized: the value refers back to itself (a circular structure)`,
      );
      // Keys that are not strings are described, never handed to JSON.stringify.
      await expect(cacheA.get(10n as unknown as string)).rejects.toThrow(
        new TypeError('CacheService.get: key must be a non-empty string, got 10n (a bigint)'),
      );
      await expect(cacheA.set(circular as unknown as string, 1)).rejects.toThrow(
        new TypeError('CacheService.set: key must be a non-empty string, got an object'),
      );
      // A long key is cut in messages: a 1 MB key does not make a 1 MB message.
      const long = 'k'.repeat(1 << 20);
      const error = (await cacheA.set(long, 1, { ttl: -1 }).catch((e: unknown) => e)) as Error;
      expect(error).toBeInstanceOf(RangeError);
      expect(error.message.length).toBeLessThan(400);
      expect(error.message).toContain(`"${'k'.repeat(100)}"… (1048576 characters)`);
      await expect(cacheA.set(k, new Map([[1, 2]]))).rejects.toThrow(
        'the value is a Map, which JSON turns into {}',
      );
      await expect(cacheA.set('', 1)).rejects.toThrow(
        'CacheService.set: key must be a non-empty string, got ""',
      );
      await expect(cacheA.getOrSet(k, async () => undefined)).rejects.toThrow(
        `CacheService.getOrSet("${k}"): the loader returned undefined`,
      );
      expect(await raw.exists(`cache:{${k}}`)).toBe(0);
    });

    it('rounds durations up to whole ms', async () => {
      const k = key('round');
      await cacheA.set(k, 1, { ttl: 0.2 });
      // 0.2 ms is 1 ms: the entry may already be gone, but it never had a fractional PX.
      await cacheA.set(k, 1, { ttl: 5_000.2, grace: 0.5 });
      const pttl = await raw.pttl(`cache:{${k}}`);
      expect(pttl).toBeGreaterThan(4_000);
      expect(pttl).toBeLessThanOrEqual(5_002);
    });

    it('bounds values by cache.maxValueBytes', async () => {
      const k = key('big');
      const big = 'x'.repeat(1024 * 1024); // 1 MiB of text is 1 MiB + 2 bytes of JSON
      await expect(cacheA.set(k, big)).rejects.toThrow(
        new RangeError(
          `CacheService.set("${k}"): value is 1048578 bytes serialized, more than cache.maxValueBytes (1048576); ` +
            'nothing was written. Cache a smaller value, or raise cache.maxValueBytes.',
        ),
      );
      expect(await raw.exists(`cache:{${k}}`)).toBe(0);
      // A loaded value over the bound is returned, not cached, and the stampede lock is let go.
      expect(await cacheA.getOrSet(k, () => big)).toBe(big);
      expect(await raw.exists(`cache:{${k}}`)).toBe(0);
      expect(await raw.exists(`cache:{${k}}:lock`)).toBe(0);
      expect(logsA.matching(`CacheService.getOrSet("${k}"): value is 1048578 bytes`)).toHaveLength(
        1,
      );
    });

    it('treats a corrupted entry as a miss: logged and deleted', async () => {
      const k = key('corrupt');
      await raw.set(`cache:{${k}}`, 'not an entry at all', 'PX', 10_000);
      expect(await cacheA.get(k)).toBeUndefined();
      expect(await raw.exists(`cache:{${k}}`)).toBe(0);
      await raw.set(
        `cache:{${k}}`,
        '{"f":9999999999999,"s":9999999999999}\n{broken json',
        'PX',
        10_000,
      );
      expect(await cacheA.getOrSet(k, async () => 'reloaded')).toBe('reloaded');
      expect(logsA.matching(`cache entry "${k}" is corrupted and was removed`)).toHaveLength(2);
    });

    it('reads from Redis alone (l1: false), as text or as bytes for another serializer', async () => {
      const apps = await Promise.all(
        [undefined, binarySerializer].map((serializer) =>
          startApp(
            {
              imports: [
                RedisModule.forRoot({
                  ...options,
                  keyPrefix: `${prefix}${serializer ? 'bytes' : 'text'}:`,
                  connectionName: uniqueConnectionName('cache-l2'),
                  cache: { ...options.cache, l1: false, serializer },
                }),
              ],
            },
            logsA,
          ),
        ),
      );
      try {
        for (const [i, app] of apps.entries()) {
          const cache = app.get(CacheService);
          const client = app.get<RedisClient>(getRedisToken());
          const k = key(`l2only${i}`);
          const tag = key(`l2tag${i}`);
          await cache.set(k, { name: 'Ada', n: [1, 2] }, { tags: [tag] });
          const before = cache.stats().l2.hits;
          const all = await Promise.all([cache.get(k), cache.getOrSet(k, async () => 'loader')]);
          expect(all).toEqual([
            { name: 'Ada', n: [1, 2] },
            { name: 'Ada', n: [1, 2] },
          ]);
          expect(cache.stats().l2.hits).toBe(before + 2);
          expect(cache.stats().l1).toMatchObject({ enabled: false, hits: 0 });
          await cache.invalidateTags([tag]);
          expect(await cache.get(k)).toBeUndefined();

          // Not an entry of this serializer: a miss, logged and deleted.
          const bad = key(`l2bad${i}`);
          await client.set(`cache:{${bad}}`, '{"f":9999999999999,"s":9999999999999}\nnot it');
          expect(await cache.get(bad)).toBeUndefined();
          expect(await client.exists(`cache:{${bad}}`)).toBe(0);
          expect(logsA.matching(`cache entry "${bad}" is corrupted and was removed`)).toHaveLength(
            1,
          );
        }
      } finally {
        await Promise.all(apps.map((app) => app.close()));
      }
    });

    it('runs the loader once for 1000 concurrent misses across two instances', async () => {
      const k = key('stampede');
      let loads = 0;
      const loader = async (): Promise<string> => {
        loads += 1;
        await delay(50);
        return 'loaded once';
      };
      const results = await Promise.all(
        Array.from({ length: 1000 }, (_, i) =>
          (i % 2 ? cacheA : cacheB).getOrSet(k, loader, { ttl: 10_000 }),
        ),
      );
      expect(loads).toBe(1);
      expect(new Set(results)).toEqual(new Set(['loaded once']));
      expect(await raw.exists(`cache:{${k}}:lock`)).toBe(0);
      expect(cacheA.stats().stampedeWaits + cacheB.stats().stampedeWaits).toBeGreaterThanOrEqual(
        999,
      );
    });

    it('while misses dominate, a miss costs one read (which also takes the lock) and one fill; while hits dominate, a hit is one GET', async () => {
      const k = key('miss-path');
      // Misses on fresh keys make the read-or-lock script the read (and load the scripts on
      // every node, so that no NOSCRIPT + EVAL shows below).
      for (let i = 0; i < 24; i++) await cacheA.getOrSet(`${k}-warm-${i}`, () => 'warm');
      await cacheA.getOrSet(k, () => 'first');
      await cacheA.del(k);
      const sent = await recordCommands(raw, () => cacheA.getOrSet(k, () => 'loaded'));
      // No notification: nobody waited, and no instance had a copy of a key without entry.
      expect(sent).toEqual([`evalsha ${READ_OR_LOCK.sha}`, `evalsha ${WRITE.sha}`]);
      expect(await raw.exists(`cache:{${k}}:lock`)).toBe(0);
      expect(await cacheB.get(k)).toBe('loaded');
      // Hits in B (without L1 copies: a fresh key each) turn its reads back into plain GETs.
      for (let i = 0; i < 24; i++) await cacheA.set(`${k}-hot-${i}`, i);
      for (let i = 0; i < 24; i++) await cacheB.getOrSet(`${k}-hot-${i}`, () => -1);
      await cacheA.set(`${k}-hit`, 'hit');
      const hit = await recordCommands(b.get<RedisClient>(getRedisToken()), () =>
        cacheB.getOrSet(`${k}-hit`, () => 'never'),
      );
      expect(hit).toEqual(['get']);
    });

    it('lets outside invalidation drop one L1 key or all of L1 (invalidateLocal, flushLocal)', async () => {
      const k = key('seam');
      const removeBehindItsBack = () => raw.unlink(`cache:{${k}}`);
      await cacheA.set(k, 'v1');
      await removeBehindItsBack();
      expect(await cacheA.get(k)).toBe('v1'); // L1 did not hear of it
      cacheA.invalidateLocal(k);
      expect(await cacheA.get(k)).toBeUndefined();
      await cacheA.set(k, 'v2');
      await removeBehindItsBack();
      expect(await cacheA.get(k)).toBe('v2');
      cacheA.flushLocal();
      expect(cacheA.stats().l1.size).toBe(0);
      expect(await cacheA.get(k)).toBeUndefined();
    });

    it('a caller waiting in another instance asks to be told, and the fill tells it', async () => {
      const k = key('told');
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      let sent: string[] = [];
      const leader = recordCommands(raw, () =>
        cacheA.getOrSet(k, async () => {
          await gate;
          return 'from A';
        }),
      ).then((commands) => (sent = commands));
      await waitFor(async () => (await raw.exists(`cache:{${k}}:lock`)) === 1, {
        what: 'A to take the lock',
      });
      let loadsInB = 0;
      const waiter = cacheB.getOrSet(k, () => {
        loadsInB += 1;
        return 'from B';
      });
      await waitFor(async () => (await raw.exists(`cache:{${k}}:wait`)) === 1, {
        what: 'B to ask to be told',
      });
      release();
      expect(await waiter).toBe('from A');
      await leader;
      expect(loadsInB).toBe(0);
      expect(sent).toContain(`evalsha ${WRITE.sha}`);
      expect(sent[sent.length - 1]).toBe('publish');
      expect(await raw.exists(`cache:{${k}}:wait`)).toBe(0);
    });

    it('takes over when the loading instance died (its lock expires), nobody waits forever', async () => {
      const k = key('orphan');
      // A leader that died mid-load leaves only its lock behind.
      await raw.set(`cache:{${k}}:lock`, 'dead-leader', 'PX', 300);
      let lockWhenLoading: string | null = 'not loaded';
      const value = await cacheB.getOrSet(
        k,
        async () => {
          lockWhenLoading = await raw.get(`cache:{${k}}:lock`);
          return 'taken over';
        },
        { ttl: 10_000 },
      );
      expect(value).toBe('taken over');
      // The loader ran only once the dead leader's lock had expired, under B's own lock.
      expect(lockWhenLoading).not.toBe('dead-leader');
      expect(lockWhenLoading).not.toBeNull();
    });

    it('a loader that hangs past the lock TTL does not block the other instance', async () => {
      const k = key('hang');
      void cacheA.getOrSet(k, () => new Promise<string>(() => undefined)).catch(() => undefined);
      await waitFor(async () => (await raw.exists(`cache:{${k}}:lock`)) === 1, {
        what: 'A to take the lock',
      });
      const value = await cacheB.getOrSet(k, async () => 'from B', { ttl: 10_000 });
      expect(value).toBe('from B');
      // Nor a caller in the same instance that joins the hung load (once it is overdue).
      await cacheA.del(k);
      expect(await cacheA.getOrSet(k, async () => 'from A, again', { ttl: 10_000 })).toBe(
        'from A, again',
      );
    });

    it('keeps L1 coherent: another instance overwriting a key reaches our next read', async () => {
      const k = key('coherent');
      await cacheA.set(k, 'v1');
      expect(await cacheA.get(k)).toBe('v1');
      const hitsBefore = cacheA.stats().l1.hits;
      expect(await cacheA.get(k)).toBe('v1'); // served by L1
      expect(cacheA.stats().l1.hits).toBe(hitsBefore + 1);
      await cacheB.set(k, 'v2');
      await waitFor(async () => (await cacheA.get(k)) === 'v2', {
        what: 'the invalidation to reach A',
      });
      await cacheB.del(k);
      await waitFor(async () => (await cacheA.get(k)) === undefined, {
        what: 'the delete to reach A',
      });
    });

    it('empties L1 when its subscriber connection comes back after a drop', async () => {
      const k = key('dropped');
      await cacheA.set(k, 'before');
      expect(await cacheA.get(k)).toBe('before');
      expect(cacheA.stats().l1.size).toBeGreaterThan(0);
      let killed = 0;
      for (const server of topology.servers)
        killed += await killConnection(server, `${connectionName}:subscriber`);
      expect(killed).toBe(1);
      // Written behind A's back while its subscriber is down: the invalidation is lost.
      await raw.set(
        `cache:{${k}}`,
        (await raw.getBuffer(`cache:{${k}}`))!.toString().replace('"before"', '"after"'),
      );
      await waitFor(async () => (await cacheA.get(k)) === 'after', {
        what: 'A to stop serving its L1 copy',
      });
      await waitFor(() => cacheA.stats().l1.size <= 1, { what: 'L1 to be emptied' });
    });

    it('serves the stale value when the loader fails within grace', async () => {
      const k = key('stale-error');
      expect(await cacheA.getOrSet(k, async () => 'old', { ttl: 60, grace: 10_000 })).toBe('old');
      await waitFor(async () => (await cacheA.get(k)) === undefined, {
        what: 'the entry to go stale',
      });
      const served = cacheA.stats().staleServed;
      const value = await cacheA.getOrSet(
        k,
        async () => {
          throw new Error('database down');
        },
        { ttl: 60, grace: 10_000 },
      );
      expect(value).toBe('old');
      expect(cacheA.stats().staleServed).toBe(served + 1);
      expect(
        logsA.matching(`loader for "${k}" failed, serving the stale value: database down`),
      ).toHaveLength(1);
    });

    it('serves the stale value at once while another instance is refreshing the key', async () => {
      const k = key('refreshing');
      await cacheA.getOrSet(k, async () => 'old', { ttl: 60, grace: 10_000 });
      await waitFor(async () => (await cacheB.get(k)) === undefined, {
        what: 'the entry to go stale',
      });
      // Another instance holds the key's stampede lock: it is loading right now.
      await raw.set(`cache:{${k}}:lock`, 'other-instance', 'PX', 5_000);
      let loads = 0;
      const value = await cacheB.getOrSet(
        k,
        async () => {
          loads += 1;
          return 'new';
        },
        { ttl: 60, grace: 10_000 },
      );
      expect(value).toBe('old');
      expect(loads).toBe(0);
      // Answered while the other instance still holds the lock: it did not wait for it.
      expect(await raw.get(`cache:{${k}}:lock`)).toBe('other-instance');
      await raw.del(`cache:{${k}}:lock`);
    });

    it('soft timeout: stale at the timeout, the fresh value lands afterwards', async () => {
      const k = key('soft');
      await cacheA.getOrSet(k, async () => 'old', { ttl: 60, grace: 10_000 });
      await waitFor(async () => (await cacheA.get(k)) === undefined, {
        what: 'the entry to go stale',
      });
      let finished = false;
      const value = await cacheA.getOrSet(
        k,
        async () => {
          await delay(300);
          finished = true;
          return 'new';
        },
        { ttl: 10_000, grace: 10_000, timeout: 50 },
      );
      expect(value).toBe('old');
      expect(finished).toBe(false); // answered before the loader finished
      await waitFor(async () => (await cacheB.get(k)) === 'new', {
        what: 'the background load to fill',
      });
    });

    it('hard timeout without a stale value: typed error, loader signal aborted', async () => {
      const k = key('hard');
      let aborted = false;
      const error = await cacheA
        .getOrSet(
          k,
          ({ signal }) =>
            new Promise<string>((resolve) => {
              signal.addEventListener('abort', () => {
                aborted = true;
                resolve('too late');
              });
            }),
          { hardTimeout: 100 },
        )
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(CacheLoaderTimeoutError);
      expect((error as Error).message).toContain(
        `Cache loader for "${k}" did not finish within hardTimeout (100 ms)`,
      );
      expect(aborted).toBe(true);
      expect(await cacheA.get(k)).toBeUndefined();
    });

    it('invalidates by tag across slots and instances', async () => {
      const tag = key('tag');
      const keys = Array.from({ length: 10 }, (_, i) => key(`tagged${i}`));
      await Promise.all(keys.map((k) => cacheA.set(k, k, { tags: [tag] })));
      await cacheA.set(key('untagged'), 'stays');
      expect(await cacheB.mget(keys)).toEqual(keys); // B caches them in its L1
      await cacheA.invalidateTags([tag]);
      expect(await cacheA.mget(keys)).toEqual(keys.map(() => undefined));
      await waitFor(async () => (await cacheB.mget(keys)).every((v) => v === undefined), {
        what: 'B to see the tag bump',
      });
      // Written after the bump: valid again.
      await cacheB.set(keys[0], 'rewritten', { tags: [tag] });
      expect(await cacheA.get(keys[0])).toBe('rewritten');
    });

    it('clear(prefix) removes matching keys on every master and from every L1', async () => {
      const group = key('group');
      const keys = Array.from({ length: 30 }, (_, i) => `${group}:${i}`);
      const other = key('other');
      await Promise.all([...keys, other].map((k) => cacheA.set(k, 'x')));
      expect(await cacheB.mget(keys)).toEqual(keys.map(() => 'x'));
      await cacheA.clear(`${group}:`);
      expect(await Promise.all(keys.map((k) => raw.exists(`cache:{${k}}`)))).toEqual(
        keys.map(() => 0),
      );
      await waitFor(async () => (await cacheB.mget(keys)).every((v) => v === undefined), {
        what: 'B to clear',
      });
      expect(await cacheB.get(other)).toBe('x');
    });

    it('refreshes hot keys early (XFetch) in the background', async () => {
      const k = key('xfetch');
      let loads = 0;
      const loader = async (): Promise<number> => {
        loads += 1;
        await delay(20);
        return loads;
      };
      expect(await cacheA.getOrSet(k, loader, { ttl: 5_000, earlyRefresh: 1e9 })).toBe(1);
      // beta is huge: the very next hit refreshes, while returning the current value at once.
      expect(await cacheA.getOrSet(k, loader, { ttl: 5_000, earlyRefresh: 1e9 })).toBe(1);
      await waitFor(async () => (await cacheB.get(k)) === 2, { what: 'the early refresh to land' });
      expect(cacheA.stats().earlyRefreshes).toBeGreaterThanOrEqual(1);
      // Without earlyRefresh, a fresh hit never reloads.
      const before = loads;
      await cacheA.getOrSet(k, loader, { ttl: 5_000 });
      expect(loads).toBe(before);
    });

    it('@Cacheable and @CacheEvict', async () => {
      const catalog = a.get(CatalogService);
      const first = await catalog.product('p1');
      expect(await catalog.product('p1')).toEqual(first);
      expect(catalog.calls).toBe(1);
      expect(await catalog.rename('p1')).toBe('renamed p1');
      expect(await catalog.product('p1')).toEqual({ id: 'p1', call: 2 });
      await cacheB.invalidateTags(['product:p1']);
      await waitFor(async () => (await catalog.product('p1')).call === 3, {
        what: 'the tag invalidation',
      });
    });

    it('invalidates after clear(): invalidate, clear, set, invalidate, get misses', async () => {
      const tag = key('life');
      const k = key('life-k');
      await cacheA.set(k, 'v0', { tags: [tag] });
      await cacheA.invalidateTags([tag]);
      await cacheA.clear(); // unlinks the tag counters too
      await cacheA.set(k, 'v1', { tags: [tag] });
      expect(await cacheA.get(k)).toBe('v1');
      expect(await cacheB.get(k)).toBe('v1');
      await cacheA.invalidateTags([tag]);
      expect(await cacheA.get(k)).toBeUndefined();
      await waitFor(async () => (await cacheB.get(k)) === undefined, {
        what: 'B to see the tag bump',
      });
      // Tag counters expire, never before the entries written under them.
      const pttl = await raw.pttl(`cache:tag:{${tag}}`);
      expect(pttl).toBeGreaterThan(0);
      await cacheB.set(k, 'v2', { tags: [tag], ttl: 120_000 });
      expect(await raw.pttl(`cache:tag:{${tag}}`)).toBeGreaterThan(100_000);
    });

    it('invalidates after a tag counter was evicted', async () => {
      const tag = key('evicted');
      const k = key('evicted-k');
      await cacheA.set(k, 'v0', { tags: [tag] });
      await cacheA.invalidateTags([tag]); // both instances remember the version
      await cacheA.set(k, 'v1', { tags: [tag] });
      expect(await cacheB.get(k)).toBe('v1');
      await raw.del(`cache:tag:{${tag}}`); // as maxmemory eviction would, without a message
      await cacheA.set(k, 'v2', { tags: [tag] });
      expect(await cacheA.get(k)).toBe('v2');
      await waitFor(async () => (await cacheB.get(k)) === 'v2', { what: 'B to read v2' });
      await cacheB.invalidateTags([tag]);
      expect(await cacheB.get(k)).toBeUndefined();
      await waitFor(async () => (await cacheA.get(k)) === undefined, {
        what: 'A to see the tag bump',
      });
    });

    it('reports stats per tier', async () => {
      const k = key('stats'); // the clear() above emptied L1
      await cacheA.set(k, 'x');
      expect(await cacheA.get(k)).toBe('x');
      const s = cacheA.stats();
      expect(s.l1.enabled).toBe(true);
      expect(s.l1.hits).toBeGreaterThan(0);
      expect(s.l2.hits).toBeGreaterThan(0);
      expect(s.l2.misses).toBeGreaterThan(0);
      expect(s.loads).toBeGreaterThan(0);
      expect(s.loadErrors).toBeGreaterThan(0);
      expect(s.l1.size).toBeGreaterThan(0);
      expect(s.l1.bytes).toBeGreaterThan(0);
    });
  },
);

describe('CacheService while Redis is down', () => {
  it('degrades to the loader, never throws or hangs, logs once, and recovers', async () => {
    const server = await startStandalone({ baseDir: specDir('cache-outage') });
    const logs = new CapturingLogger();
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown): void => {
      rejections.push(reason);
    };
    process.on('unhandledRejection', onRejection);
    const app = await startApp(
      {
        imports: [
          RedisModule.forRoot({
            url: server.url,
            retry: { initialDelay: 20, maxDelay: 100 },
            cache: { timeout: 200 },
          }),
        ],
      },
      logs,
    );
    try {
      const cache = app.get(CacheService);
      await cache.set('k', 'cached');
      expect(await cache.get('k')).toBe('cached');

      await server.pause(); // slow: connected, but no answer
      expect(await cache.get('never-read')).toBeUndefined(); // given up after cache.timeout
      expect(await cache.getOrSet('slow', async () => 'from loader')).toBe('from loader');
      // clear() is bounded by cache.timeout too: it returns while the server is still frozen.
      await cache.clear();
      await cache.clear('some:');
      await server.resume();

      // The pause was one outage (logged once, however many calls failed); now another.
      expect(logs.matching('Redis unavailable')).toHaveLength(1);
      const logged =
        logs.matching('Redis unavailable').length + logs.matching('answers again').length;
      await server.stop(); // down: connection refused
      await waitFor(() => app.get<RedisClient>(getRedisToken()).status !== 'ready', {
        what: 'the outage to be noticed',
      });
      expect(await cache.get('k')).toBeUndefined();
      expect(await cache.getOrSet('k2', async () => 'loader value')).toBe('loader value');
      await cache.set('k3', 'dropped');
      await cache.del('k3');
      await cache.invalidateTags(['t']);
      await cache.clear();
      // At most one line for this outage, though every call above failed.
      expect(
        logs.matching('Redis unavailable').length + logs.matching('answers again').length,
      ).toBeLessThanOrEqual(logged + 2);

      await server.restart();
      await waitFor(() => app.get<RedisClient>(getRedisToken()).status === 'ready', {
        what: 'reconnection',
      });
      await cache.set('k4', 'back');
      expect(await cache.get('k4')).toBe('back');
      expect(logs.matching('Redis answers again').length).toBeGreaterThanOrEqual(1);
      expect(cache.stats().redisErrors).toBeGreaterThan(0);
    } finally {
      process.off('unhandledRejection', onRejection);
      await app.close();
      await server.stop();
    }
    expect(rejections).toEqual([]);
  });
});

describe('CacheService under an ACL user without channel rights', () => {
  it('every write succeeds; the refused PUBLISH is logged once and turns notifications off', async () => {
    const server = await startStandalone({ baseDir: specDir('cache-acl') });
    const target = { host: server.host, port: server.port };
    // Redis 7 users get no channel rights unless given some: what a least-privilege user looks like.
    await sendCommand(target, [
      'ACL',
      'SETUSER',
      'cache-user',
      'on',
      '>cache-user-secret',
      '~*',
      '+@all',
      'resetchannels',
    ]);
    const logs = new CapturingLogger();
    const app = await startApp(
      {
        imports: [
          RedisModule.forRoot({
            url: `redis://cache-user:cache-user-secret@${server.host}:${server.port}`,
            keyPrefix: 'acl:',
          }),
        ],
      },
      logs,
    );
    try {
      const cache = app.get(CacheService);
      await cache.set('k', 'stored', { tags: ['t'] });
      expect(await sendCommand(target, ['EXISTS', 'acl:cache:{k}'])).toBe(1);
      expect(await cache.get('k')).toBe('stored');
      // A fill: the value is stored and the stampede lock given up, in one script.
      expect(await cache.getOrSet('filled', () => 'loaded')).toBe('loaded');
      expect(await sendCommand(target, ['EXISTS', 'acl:cache:{filled}'])).toBe(1);
      expect(await sendCommand(target, ['EXISTS', 'acl:cache:{filled}:lock'])).toBe(0);
      // A failed load gives the lock up too.
      await expect(
        cache.getOrSet('failing', () => {
          throw new Error('loader failed');
        }),
      ).rejects.toThrow('loader failed');
      expect(await sendCommand(target, ['EXISTS', 'acl:cache:{failing}:lock'])).toBe(0);
      await cache.invalidateTags(['t']);
      expect(await cache.get('k')).toBeUndefined();
      await cache.set('gone', 1);
      await cache.del('gone');
      expect(await sendCommand(target, ['EXISTS', 'acl:cache:{gone}'])).toBe(0);
      await cache.set('cleared', 1);
      await cache.clear();
      expect(await sendCommand(target, ['EXISTS', 'acl:cache:{cleared}'])).toBe(0);

      expect(cache.stats().redisErrors).toBe(0);
      expect(logs.matching('Redis unavailable')).toEqual([]);
      expect(logs.matching('PUBLISH to "acl:cache:invalidate" is refused')).toHaveLength(1);
      expect(logs.text).not.toContain('cache-user-secret');
    } finally {
      await app.close();
      await server.stop();
    }
  });
});
