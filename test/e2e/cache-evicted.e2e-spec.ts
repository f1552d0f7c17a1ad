import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';

import { READ_OR_LOCK } from '../../src/cache/cache.scripts.js';
import {
  CacheService,
  getRedisToken,
  RedisModule,
  type RedisClient,
  type CacheEvictedEvent,
  type KeyEventSubscription,
} from '../../src/index.js';
import { startApp } from '../support/app.js';
import {
  recordCommands,
  sendCommand,
  specDir,
  startStandalone,
  uniquePrefix,
  waitFor,
  type StandaloneServer,
} from '../support/redis.js';

/**
 * A server of its own: small `maxmemory`, an evicting policy, no keyspace events at first; and
 * free to `SCRIPT FLUSH`.
 */
describe('CacheService.onEvicted', () => {
  let server: StandaloneServer;
  let checking: INestApplication;
  let configuring: INestApplication;
  const prefix = uniquePrefix('cache-evicted');

  beforeAll(async () => {
    server = await startStandalone({
      baseDir: specDir('cache-evicted'),
      args: ['--maxmemory', '4mb', '--maxmemory-policy', 'allkeys-lru'],
    });
    [checking, configuring] = await Promise.all([
      startApp({ imports: [RedisModule.forRoot({ url: server.url, keyPrefix: prefix })] }),
      startApp({
        imports: [
          RedisModule.forRoot({
            url: server.url,
            keyPrefix: prefix,
            pubsub: { keyspaceEvents: 'configure' },
          }),
        ],
      }),
    ]);
  });

  afterAll(async () => {
    await Promise.all([checking?.close(), configuring?.close()]);
    await server?.stop();
  });

  it('says it is inactive, and why, when the server publishes no eviction events', async () => {
    const sub = await checking.get(CacheService).onEvicted(() => undefined);
    expect(sub.active).toBe(false);
    expect(sub.missingFlags).toContain('e');
    expect(sub.reason).toBeDefined();
    await sub.unsubscribe();
  });

  it('reports evicted entries by their cache key, without the prefix', async () => {
    const cache = configuring.get(CacheService);
    const events: CacheEvictedEvent[] = [];
    const sub: KeyEventSubscription = await cache.onEvicted((event) => {
      events.push(event);
    });
    expect(sub.active).toBe(true);
    const value = 'x'.repeat(64 * 1024);
    const written = new Set<string>();
    // About 16 MB into a 4 MB server: most of it is evicted, tags and locks aside.
    for (let i = 0; i < 256 && events.length === 0; i++) {
      const key = `big:${i}`;
      written.add(key);
      await cache.set(key, value, { ttl: 60_000 });
    }
    await waitFor(() => events.length > 0, { what: 'an eviction event', timeoutMs: 5_000 });
    expect(events.every((e) => e.reason === 'evicted' && written.has(e.key))).toBe(true);
    await sub.unsubscribe();
  });

  it('with { expired: true } also reports entries that expired', async () => {
    const cache = configuring.get(CacheService);
    const events: CacheEvictedEvent[] = [];
    const sub = await cache.onEvicted((event) => void events.push(event), { expired: true });
    expect(sub.active).toBe(true);
    await cache.set('short', 1, { ttl: 30 });
    await waitFor(() => events.some((e) => e.key === 'short' && e.reason === 'expired'), {
      what: 'the expiry of "short"',
      timeoutMs: 5_000,
    });
    await sub.unsubscribe();
    // The server's own flags were set by `configure`, not by the cache.
    const flags = await sendCommand({ host: server.host, port: server.port }, [
      'CONFIG',
      'GET',
      'notify-keyspace-events',
    ]);
    expect(String(flags)).toMatch(/e|A/);
  });

  it('a one-round-trip miss survives SCRIPT FLUSH (falls back to EVAL once)', async () => {
    const cache = checking.get(CacheService);
    for (let i = 0; i < 24; i++) await cache.getOrSet(`warm:${i}`, () => 'warm');
    await sendCommand({ host: server.host, port: server.port }, ['SCRIPT', 'FLUSH']);
    const client = checking.get<RedisClient>(getRedisToken());
    const sent = await recordCommands(client, () => cache.getOrSet('flushed', () => 'loaded'));
    expect(sent.slice(0, 2)).toEqual([`evalsha ${READ_OR_LOCK.sha}`, 'eval']);
    expect(await client.exists('cache:{flushed}:lock')).toBe(0);
    expect(await configuring.get(CacheService).get('flushed')).toBe('loaded');
  });

  it('rejects a handler that is not a function, naming it', async () => {
    const cache = configuring.get(CacheService);
    await expect(cache.onEvicted('nope' as never)).rejects.toThrow(
      'CacheService.onEvicted: handler must be a function, got "nope"',
    );
  });
});
