import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import { Injectable, type INestApplication } from '@nestjs/common';
import { DiscoveryService } from '@nestjs/core';
import { Test } from '@nestjs/testing';

import {
  Cacheable,
  CacheService,
  getCacheServiceToken,
  getLockServiceToken,
  getRedisHealthIndicatorToken,
  getRedisServiceToken,
  getSessionServiceToken,
  InjectCacheService,
  InjectLockService,
  InjectPubSubService,
  InjectRedisHealthIndicator,
  InjectRedisService,
  InjectSessionService,
  LockService,
  OnRedisMessage,
  PubSubService,
  RedisHealthIndicator,
  RedisModule,
  RedisService,
  SessionService,
  WithLock,
} from '../../src/index.js';
import { CapturingLogger, startApp } from '../support/app.js';
import {
  ourConnections,
  sendCommand,
  specDir,
  standaloneUrl,
  startStandalone,
  uniqueConnectionName,
  uniquePrefix,
  waitFor,
  type StandaloneServer,
} from '../support/redis.js';

const address = (url: string) => {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port) };
};

/** The keys under `prefix` on a server (test keys only: KEYS is fine at this size). */
async function keysOn(server: { host: string; port: number }, prefix: string): Promise<string[]> {
  return ((await sendCommand(server, ['KEYS', `${prefix}*`])) as string[]).sort();
}

@Injectable()
class Analytics {
  constructor(
    @InjectCacheService('analytics') readonly cache: CacheService,
    @InjectSessionService('analytics') readonly sessions: SessionService,
    @InjectLockService('analytics') readonly locks: LockService,
    @InjectRedisService('analytics') readonly redis: RedisService,
    @InjectRedisHealthIndicator('analytics') readonly health: RedisHealthIndicator,
    @InjectPubSubService('analytics') readonly pubsub: PubSubService,
  ) {}
}

@Injectable()
class Main {
  constructor(
    readonly cache: CacheService,
    readonly sessions: SessionService,
    readonly locks: LockService,
    readonly redis: RedisService,
    readonly health: RedisHealthIndicator,
    readonly pubsub: PubSubService,
  ) {}
}

/** Methods decorated for the default connection; the named one must leave them alone. */
@Injectable()
class Reports {
  runs = 0;
  lockedInside: boolean[] = [];
  received: string[] = [];
  constructor(private readonly locks: LockService) {}

  // Two decorators on one method: both wrap it, in either order.
  @Cacheable('report:{0}', { ttl: 10_000 })
  @WithLock('report-lock:{0}', { ttl: 5_000, wait: 5_000 })
  async build(id: string): Promise<string> {
    this.runs += 1;
    this.lockedInside.push(await this.locks.isLocked(`report-lock:${id}`));
    return `report ${id}`;
  }

  @OnRedisMessage('named-connections:events')
  onEvent(message: string): void {
    this.received.push(message);
  }
}

const ALIAS = 'Reports under a second token';

describe('named connections: every service per connection', () => {
  let second: StandaloneServer;
  let app: INestApplication;
  const main = address(standaloneUrl());
  const prefixA = uniquePrefix('named-main');
  const prefixB = uniquePrefix('named-analytics');
  const nameA = uniqueConnectionName('named-main');
  const nameB = uniqueConnectionName('named-analytics');
  let walks = 0;
  let closed = false;

  beforeAll(async () => {
    second = await startStandalone({ baseDir: specDir('named-connections') });
    // Counts the walks over the application's providers (calling through).
    const spy = jest.spyOn(DiscoveryService.prototype, 'getProviders');
    try {
      app = await startApp({
        imports: [
          RedisModule.forRoot({ url: standaloneUrl(), keyPrefix: prefixA, connectionName: nameA }),
          RedisModule.forRootAsync({
            name: 'analytics',
            useFactory: () => ({ url: second.url, keyPrefix: prefixB, connectionName: nameB }),
          }),
        ],
        providers: [
          Analytics,
          Main,
          Reports,
          // The same instance under a second token: its methods must still be wrapped once.
          { provide: ALIAS, useFactory: (r: Reports) => r, inject: [Reports] },
        ],
      });
    } finally {
      walks = spy.mock.calls.length;
      spy.mockRestore();
    }
  });

  afterAll(async () => {
    if (!closed) await app?.close();
    await second?.stop();
  });

  it('injects each connection its own instances; the default one also by class', () => {
    const a = app.get(Main);
    const b = app.get(Analytics);
    for (const key of ['cache', 'sessions', 'locks', 'redis', 'health', 'pubsub'] as const) {
      expect(b[key]).not.toBe(a[key]);
    }
    expect(app.get(getCacheServiceToken())).toBe(a.cache);
    expect(app.get(getSessionServiceToken())).toBe(a.sessions);
    expect(app.get(getLockServiceToken())).toBe(a.locks);
    expect(app.get(getRedisServiceToken())).toBe(a.redis);
    expect(app.get(getRedisHealthIndicatorToken())).toBe(a.health);
    expect(app.get(getCacheServiceToken('analytics'))).toBe(b.cache);
    expect(b.cache).toBeInstanceOf(CacheService);
  });

  it('cache, sessions, locks and RedisService of each connection land on its own server', async () => {
    const a = app.get(Main);
    const b = app.get(Analytics);
    await a.cache.set('who', 'main');
    await b.cache.set('who', 'analytics');
    expect(await a.cache.get('who')).toBe('main');
    expect(await b.cache.get('who')).toBe('analytics');

    const sa = await a.sessions.create('user-1', { on: 'main' });
    const sb = await b.sessions.create('user-1', { on: 'analytics' });
    expect((await a.sessions.get(sa.id))?.data).toEqual({ on: 'main' });
    expect(await a.sessions.get(sb.id)).toBeNull();
    expect((await b.sessions.get(sb.id))?.data).toEqual({ on: 'analytics' });

    // The same resource on two servers: two independent locks.
    const la = await a.locks.tryAcquire('shared', { ttl: 10_000 });
    const lb = await b.locks.tryAcquire('shared', { ttl: 10_000 });

    const keysA = await keysOn(main, prefixA);
    const keysB = await keysOn(second, prefixB);
    expect(keysA.length).toBeGreaterThan(0);
    expect(keysB.length).toBeGreaterThan(0);
    // Nothing of one connection reached the other's server.
    expect(await keysOn(main, prefixB)).toEqual([]);
    expect(await keysOn(second, prefixA)).toEqual([]);
    expect(keysA.some((k) => k.includes('shared'))).toBe(true);
    expect(keysB.some((k) => k.includes('shared'))).toBe(true);
    expect(la).not.toBeNull();
    expect(lb).not.toBeNull();
    await Promise.all([la?.release(), lb?.release()]);

    expect((await a.redis.info('server')).server?.tcp_port).toBe(main.port);
    expect((await b.redis.info('server')).server?.tcp_port).toBe(second.port);
    expect(await ourConnections(second, nameB)).toContain(`${nameB}:command`);
  });

  it('the decorators are served by the default connection, each method wrapped once', async () => {
    const reports = app.get(Reports);
    expect(app.get(ALIAS)).toBe(reports);
    expect(await reports.build('q1')).toBe('report q1');
    expect(await reports.build('q1')).toBe('report q1');
    // Cached after the first call, and the lock was held while it ran.
    expect(reports.runs).toBe(1);
    expect(reports.lockedInside).toEqual([true]);
    expect((await keysOn(main, prefixA)).some((k) => k.includes('report:q1'))).toBe(true);
    expect((await keysOn(second, prefixB)).some((k) => k.includes('report'))).toBe(false);

    const a = app.get(Main);
    const b = app.get(Analytics);
    // One subscription for the handler (not one per token, not one per connection).
    expect(a.pubsub.stats().subscriptions).toBe(1);
    expect(b.pubsub.stats().subscriptions).toBe(0);
    await b.pubsub.publish('named-connections:events', 'to analytics');
    await a.pubsub.publish('named-connections:events', 'to main');
    await waitFor(() => reports.received.includes('to main'), { what: 'the default message' });
    expect(reports.received).toEqual(['to main']);
    // The providers were walked once for every decorator and both connections.
    expect(walks).toBe(1);
  });

  it('the health indicator of each connection probes its own server', async () => {
    const a = app.get(Main);
    const b = app.get(Analytics);
    expect((await a.health.isHealthy('main')).main.status).toBe('up');
    expect((await b.health.isHealthy('analytics')).analytics.status).toBe('up');
    await second.pause();
    try {
      const down = await b.health.isHealthy('analytics', { timeout: 500 });
      expect(down.analytics.status).toBe('down');
      expect((await a.health.isHealthy('main', { timeout: 2_000 })).main.status).toBe('up');
    } finally {
      await second.resume();
    }
    await waitFor(async () => (await b.health.isHealthy('analytics')).analytics.status === 'up', {
      what: 'the analytics connection to answer again',
    });
  });

  it('a service of a connection nobody registered is a DI error naming it', async () => {
    @Injectable()
    class NeedsMissing {
      constructor(@InjectCacheService('missing') readonly cache: CacheService) {}
    }
    await expect(
      Test.createTestingModule({
        imports: [RedisModule.forRoot({ url: standaloneUrl(), lazyConnect: true })],
        providers: [NeedsMissing],
      })
        .setLogger(new CapturingLogger())
        .compile(),
    ).rejects.toThrow(/nestjs-redis-infra:CacheService:missing/);
  });

  it('app.close() closes every connection of both registrations', async () => {
    closed = true;
    await app.close();
    await waitFor(async () => (await ourConnections(second, nameB)).length === 0, {
      what: 'no connection of the named registration left',
    });
    await waitFor(async () => (await ourConnections(main, nameA)).length === 0, {
      what: 'no connection of the default registration left',
    });
  });
});
