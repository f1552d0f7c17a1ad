import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';
import type { Redis } from 'ioredis';

import type { RedisHealthMonitor } from '../../src/health/health-monitor.js';
import {
  getRedisToken,
  RedisAlerts,
  RedisHealthIndicator,
  RedisModule,
  type RedisAlert,
} from '../../src/index.js';
import { startApp } from '../support/app.js';
import { FaultProxy } from '../support/fault-proxy.js';
import {
  sendCommand,
  specDir,
  startStandalone,
  waitFor,
  type StandaloneServer,
} from '../support/redis.js';

describe('periodic health probe and alerts', () => {
  let redis: StandaloneServer;
  let proxy: FaultProxy;
  let app: INestApplication;
  let monitor: RedisHealthMonitor;
  const alerts: RedisAlert[] = [];
  const of = (check: string) => alerts.filter((a) => a.check === check).map((a) => a.type);

  /** Waits for `n` more probe rounds: a state held that long has been seen by several probes. */
  const rounds = async (n: number) => {
    const target = monitor.counts.rounds + n;
    await waitFor(() => monitor.counts.rounds >= target, { what: `${n} probe rounds` });
  };

  beforeAll(async () => {
    redis = await startStandalone({ baseDir: specDir('alerts') });
    proxy = await FaultProxy.start({ host: redis.host, port: redis.port });
    app = await startApp({
      imports: [
        RedisModule.forRoot({
          url: proxy.url,
          retry: { initialDelay: 20, maxDelay: 100 },
          connectTimeout: 2000,
          healthCheckInterval: 100,
          alerts: {
            timeout: 300,
            maxMemoryRatio: 0.5,
            requireEvictionPolicy: { policy: 'noeviction', mode: 'warn' },
          },
        }),
      ],
    });
    app.get(RedisAlerts).on((a) => alerts.push(a));
    monitor = app.get('RedisHealthMonitor:default');
    await rounds(1);
  });

  afterAll(async () => {
    await app?.close();
    await proxy?.close();
    await redis?.stop();
  });

  it('raises a memory alert once when maxmemory is crossed, and resolves it once', async () => {
    const info = String(await sendCommand(redis, ['INFO', 'memory']));
    const used = Number(/used_memory:(\d+)/.exec(info)?.[1]);
    await sendCommand(redis, ['CONFIG', 'SET', 'maxmemory', String(Math.round(used * 1.2))]);
    try {
      await waitFor(() => of('memory').length === 1, { what: 'the memory alert' });
      await rounds(3);
      expect(of('memory')).toEqual(['raised']);
      const raised = alerts.find((a) => a.check === 'memory')!;
      expect(raised).toMatchObject({ connection: 'default', threshold: 0.5 });
      expect(raised.value).toBeGreaterThan(0.5);
      expect(raised.at).toBeInstanceOf(Date);
      expect(
        app
          .get(RedisAlerts)
          .active()
          .map((a) => a.check),
      ).toContain('memory');
    } finally {
      await sendCommand(redis, ['CONFIG', 'SET', 'maxmemory', '0']);
    }
    await waitFor(() => of('memory').length === 2, { what: 'the memory alert to resolve' });
    await rounds(3);
    expect(of('memory')).toEqual(['raised', 'resolved']);
    expect(app.get(RedisAlerts).active()).toEqual([]);
  });

  it('warns once about an evicting policy and resolves when noeviction is back', async () => {
    await sendCommand(redis, ['CONFIG', 'SET', 'maxmemory-policy', 'allkeys-lru']);
    try {
      await waitFor(() => of('evictionPolicy').length === 1, { what: 'the policy alert' });
      await rounds(2);
      expect(alerts.filter((a) => a.check === 'evictionPolicy')).toEqual([
        expect.objectContaining({ type: 'raised', value: 'allkeys-lru', warn: true }),
      ]);
    } finally {
      await sendCommand(redis, ['CONFIG', 'SET', 'maxmemory-policy', 'noeviction']);
    }
    await waitFor(() => of('evictionPolicy').length === 2, { what: 'the policy alert to resolve' });
    expect(of('evictionPolicy')).toEqual(['raised', 'resolved']);
  });

  it('lets isHealthy answer from the warm result, or probe now with maxAge 0', async () => {
    const health = app.get(RedisHealthIndicator);
    // An explicit maxAge: the default (one interval) depends on how late the probe ran, and on
    // a loaded machine the last result can be older than that.
    await waitFor(
      async () => (await health.isHealthy('redis', { maxAge: 60_000 })).redis.age !== undefined,
      {
        what: 'a warm probe result',
      },
    );
    const warm = await health.isHealthy('redis', { maxAge: 60_000 });
    expect(warm.redis.status).toBe('up');
    expect(typeof warm.redis.age).toBe('number');
    const live = await health.isHealthy('redis', { maxAge: 0 });
    expect(live.redis.status).toBe('up');
    expect(live.redis.age).toBeUndefined();
  });

  it('destroys a silent half-open connection so that ioredis reconnects', async () => {
    const client = app.get<Redis>(getRedisToken());
    const accepted = proxy.counts.accepted;
    const destroyed = monitor.counts.destroyed;
    proxy.blackhole();
    try {
      await waitFor(() => of('reachable').length === 1, { what: 'the reachable alert' });
      // The round's own bound and the PING's are the same length: on a loaded machine the alert
      // can come a moment before the swallowed PING's socket is destroyed.
      await waitFor(() => monitor.counts.destroyed > destroyed, {
        what: 'the half-open socket to be destroyed',
      });
    } finally {
      proxy.resume();
    }
    await waitFor(() => of('reachable').length === 2, {
      what: 'the connection to come back',
      timeoutMs: 15_000,
    });
    expect(of('reachable')).toEqual(['raised', 'resolved']);
    expect(proxy.counts.accepted).toBeGreaterThan(accepted);
    expect(client.status).toBe('ready');
    expect(await client.ping()).toBe('PONG');
  });
});
