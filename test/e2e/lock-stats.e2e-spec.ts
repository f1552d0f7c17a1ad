import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';
import { metrics } from '@opentelemetry/api';
import { DataPointType, MeterProvider, type MetricData } from '@opentelemetry/sdk-metrics';

import {
  getRedisToken,
  LockLostError,
  LockNotAcquiredError,
  LockService,
  RedisModule,
  type LockStats,
  type RedisClient,
  type RedisModuleOptions,
} from '../../src/index.js';
import { startApp } from '../support/app.js';
import { ensureBuilt, killWorkersLeftRunning, startLockWorker } from '../support/coord-workers.js';
import { TestMetricReader } from '../support/metrics.js';
import {
  standaloneUrl,
  uniqueConnectionName,
  uniquePrefix,
  untilAborted,
  waitFor,
} from '../support/redis.js';

/** The figures of stats(); not the acquire-duration histogram of the traced operations. */
async function lockMetrics(reader: TestMetricReader): Promise<Map<string, MetricData>> {
  const out = new Map<string, MetricData>();
  for (const [name, m] of await reader.metrics()) {
    if (/^nestjs_redis\.lock\.[a-z]+$/.test(name) && m.dataPoints.length) out.set(name, m);
  }
  return out;
}

const ZERO: LockStats = { held: 0, waiting: 0, acquired: 0, handoffs: 0, losses: 0, timeouts: 0 };

afterEach(killWorkersLeftRunning);

/**
 * `LockService.stats()` counts exactly what happened to this process's locks, under real
 * contention, a timeout, an abort and losses (a TTL that passed while the holder's process
 * was stopped); the OpenTelemetry instruments report the same figures.
 */

describe('LockService.stats() and the nestjs_redis.lock.* instruments (standalone)', () => {
  const reader = new TestMetricReader();
  const meterProvider = new MeterProvider({ readers: [reader] });
  const prefix = uniquePrefix('lockstats');
  const connectionName = uniqueConnectionName('lockstats');
  const options: RedisModuleOptions = {
    url: standaloneUrl(),
    keyPrefix: prefix,
    lock: { retryInterval: 100 },
  };
  let app: INestApplication;
  let locks: LockService;
  let redis: RedisClient;

  beforeAll(async () => {
    ensureBuilt();
    expect(metrics.setGlobalMeterProvider(meterProvider)).toBe(true);
    app = await startApp({ imports: [RedisModule.forRoot({ ...options, connectionName })] });
    locks = app.get(LockService);
    redis = app.get<RedisClient>(getRedisToken());
  });

  afterAll(async () => {
    await app?.close();
    metrics.disable();
    await meterProvider.shutdown();
  });

  it('counts acquisitions, hand-offs, a timeout (not an abort) and a loss; gauges follow', async () => {
    expect(locks.stats()).toEqual(ZERO);
    const r = 'contended';
    const first = await locks.acquire(r, { ttl: 5_000 });
    expect(await locks.tryAcquire(r)).toBeNull();
    const sections = Array.from({ length: 4 }, () =>
      locks.withLock(r, () => redis.ping(), { wait: 10_000 }),
    );
    await waitFor(async () => (await locks.inspect(r)).waiting === 4, { what: '4 queued' });
    expect(locks.stats()).toEqual({ ...ZERO, held: 1, waiting: 4, acquired: 1 });

    await expect(locks.acquire(r, { wait: 100 })).rejects.toThrow(LockNotAcquiredError);
    const controller = new AbortController();
    const aborted = locks.acquire(r, { wait: 10_000, signal: controller.signal });
    await waitFor(async () => (await locks.inspect(r)).waiting === 5, { what: '5 queued' });
    expect(locks.stats().waiting).toBe(5);
    controller.abort();
    await expect(aborted).rejects.toThrow(/aborted/);
    expect(locks.stats()).toEqual({ ...ZERO, held: 1, waiting: 4, acquired: 1, timeouts: 1 });

    await first.release();
    await Promise.all(sections);
    expect(locks.stats()).toEqual({ ...ZERO, acquired: 5, handoffs: 4, timeouts: 1 });

    // A lock not renewed whose TTL passes while held is lost once (the signal aborts once).
    const lapsed = locks.withLock('lapsed', (lock) => untilAborted(lock.signal), {
      ttl: 200,
      autoExtend: false,
    });
    await expect(lapsed).rejects.toThrow(LockLostError);
    expect(locks.stats()).toEqual({ ...ZERO, acquired: 6, handoffs: 4, losses: 1, timeouts: 1 });
  }, 30_000);

  it('a holder stopped (SIGSTOP) past its TTL counts one loss in its own process', async () => {
    const r = 'stopped-holder';
    const worker = startLockWorker<{ outcome: string; error?: string; stats: LockStats }>({
      options: { ...options, connectionName: uniqueConnectionName('lockstats-worker') },
      resource: r,
      mode: 'hold',
      ttl: 400,
    });
    await worker.started;
    worker.send();
    await waitFor(() => /held \d+/.test(worker.output()), { what: 'the worker to hold the lock' });
    worker.child.kill('SIGSTOP');
    try {
      // Stopped, it cannot renew: the key expires and this process gets the lock (a hand-off
      // here if it queued, a plain acquisition if the key had expired already).
      const before = locks.stats();
      const next = await locks.acquire(r, { ttl: 5_000, wait: 10_000 });
      worker.child.kill('SIGCONT');
      const result = await worker.finished;
      expect(result).toMatchObject({ outcome: 'rejected', error: 'LockLostError' });
      expect(result.stats).toEqual({ ...ZERO, acquired: 1, losses: 1 });
      const after = locks.stats();
      expect(after.acquired).toBe(before.acquired + 1);
      expect(after.losses).toBe(before.losses);
      await next.release();
    } finally {
      worker.child.kill('SIGCONT');
    }
  }, 30_000);

  it('the six instruments report the figures of stats(), with the connection name as attribute', async () => {
    const held = await locks.acquire('observed', { ttl: 5_000 });
    const waiting = locks.acquire('observed', { ttl: 5_000, wait: 10_000 });
    await waitFor(async () => (await locks.inspect('observed')).waiting === 1, {
      what: 'a waiter',
    });
    const stats = locks.stats();
    const got = await lockMetrics(reader);
    const figures: Array<[string, keyof LockStats, boolean]> = [
      ['nestjs_redis.lock.held', 'held', false],
      ['nestjs_redis.lock.waiting', 'waiting', false],
      ['nestjs_redis.lock.acquired', 'acquired', true],
      ['nestjs_redis.lock.handoffs', 'handoffs', true],
      ['nestjs_redis.lock.losses', 'losses', true],
      ['nestjs_redis.lock.timeouts', 'timeouts', true],
    ];
    expect([...got.keys()].sort()).toEqual(figures.map(([name]) => name).sort());
    for (const [name, figure, monotonic] of figures) {
      const metric = got.get(name)!;
      expect(metric.dataPointType).toBe(DataPointType.SUM);
      expect((metric as { isMonotonic?: boolean }).isMonotonic).toBe(monotonic);
      expect(metric.dataPoints).toEqual([
        expect.objectContaining({
          attributes: { 'db.client.connection.pool.name': 'default' },
          value: stats[figure],
        }),
      ]);
    }
    expect(stats).toMatchObject({ held: 1, waiting: 1 });
    await held.release();
    await (await waiting).release();
    const after = await lockMetrics(reader);
    const value = (name: string): unknown => after.get(name)?.dataPoints[0]?.value;
    expect(value('nestjs_redis.lock.held')).toBe(0);
    expect(value('nestjs_redis.lock.waiting')).toBe(0);
    expect(value('nestjs_redis.lock.handoffs')).toBe(stats.handoffs + 1);
    expect(value('nestjs_redis.lock.acquired')).toBe(stats.acquired + 1);
  }, 30_000);
});
