import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';
import { metrics } from '@opentelemetry/api';
import { MeterProvider } from '@opentelemetry/sdk-metrics';

import {
  CacheService,
  getCacheServiceToken,
  getRedisToken,
  getStreamsServiceToken,
  RedisModule,
  RedisService,
  StreamsService,
  type RedisClient,
  type StreamCounters,
} from '../../src/index.js';
import { streamKeys } from '../../src/streams/streams.keys.js';
import { startApp } from '../support/app.js';
import { pointsOf, TestMetricReader, valueOf } from '../support/metrics.js';
import { standaloneUrl, uniqueConnectionName, uniquePrefix, waitFor } from '../support/redis.js';

// The instruments of each source, read through the OpenTelemetry SDK against a real server.
const reader = new TestMetricReader();
const meterProvider = new MeterProvider({ readers: [reader] });

beforeAll(() => {
  expect(metrics.setGlobalMeterProvider(meterProvider)).toBe(true);
});

afterAll(async () => {
  metrics.disable();
  await meterProvider.shutdown();
});

describe('L1 evictions', () => {
  let app: INestApplication;
  let cache: CacheService;

  beforeAll(async () => {
    app = await startApp({
      imports: [
        RedisModule.forRoot({
          url: standaloneUrl(),
          keyPrefix: uniquePrefix('l1ev'),
          connectionName: uniqueConnectionName('l1ev'),
          cache: { l1: { maxEntries: 3 } },
        }),
      ],
    });
    cache = app.get(CacheService);
    // L1 keeps values once the cache listens for invalidations.
    await waitFor(
      async () => {
        await cache.set('warm', 0);
        return cache.stats().l1.size === 1;
      },
      { what: 'L1 to keep a value' },
    );
  });

  afterAll(async () => {
    await app?.close();
  });

  it('counts entries pushed out by the bound, not replaced, deleted or cleared ones', async () => {
    expect(cache.stats().l1.evictions).toBe(0);
    // 'warm' plus five more in an L1 of three entries: three evicted.
    for (let i = 1; i <= 5; i++) await cache.set(`k${i}`, i);
    expect(cache.stats().l1).toMatchObject({ size: 3, evictions: 3 });

    await cache.set('k5', 'again'); // replaced in place
    await cache.del('k4'); // deleted
    expect(cache.stats().l1).toMatchObject({ size: 2, evictions: 3 });
    await cache.set('k6', 6); // room again: nothing evicted
    await cache.set('k7', 7); // one over
    expect(cache.stats().l1).toMatchObject({ size: 3, evictions: 4 });
    await cache.clear();
    expect(cache.stats().l1).toMatchObject({ size: 0, evictions: 4 });

    const all = await reader.metrics();
    const instrument = all.get('nestjs_redis.cache.l1.evictions');
    expect(instrument?.descriptor.unit).toBe('{entry}');
    expect(valueOf(instrument, { 'db.client.connection.pool.name': 'default' })).toBe(4);
    expect(valueOf(all.get('nestjs_redis.cache.l1.size'))).toBe(0);
  });
});

describe('stream counters, backlog and instruments', () => {
  let app: INestApplication;
  let streams: StreamsService;
  let client: RedisClient;
  const prefix = uniquePrefix('streamtel');

  beforeAll(async () => {
    app = await startApp({
      imports: [
        RedisModule.forRoot({
          url: standaloneUrl(),
          keyPrefix: prefix,
          connectionName: uniqueConnectionName('streamtel'),
          maxConnections: 20,
        }),
      ],
    });
    streams = app.get(StreamsService);
    client = app.get<RedisClient>(getRedisToken());
  });

  afterAll(async () => {
    await app?.close();
    const cleaner = await startApp({
      imports: [RedisModule.forRoot({ url: standaloneUrl(), keyPrefix: prefix })],
    });
    await cleaner.get(RedisService).unlinkByPattern('*');
    await cleaner.close();
  });

  it('counts deliveries, acks, failures, retries and dead letters exactly', async () => {
    const before = streams.counters();
    expect(before).toEqual({
      delivered: 0,
      acked: 0,
      failed: 0,
      retried: 0,
      deadLettered: 0,
      handlerFailures: 0,
    } satisfies StreamCounters);
    const producer = streams.producer<{ kind: string }>('outcomes');
    await producer.add({ kind: 'ok' });
    await producer.add({ kind: 'always-fails' });
    await producer.add({ kind: 'fails-once' });
    // Not written by a producer of this module: dead-lettered without a delivery.
    await client.xadd(streamKeys('outcomes').stream, '*', 'x', '1');

    await streams.consumer<{ kind: string }>(
      'outcomes',
      'workers',
      (message, ctx) => {
        if (message.kind === 'always-fails') throw new Error('no');
        if (message.kind === 'fails-once' && ctx.deliveries === 1) throw new Error('not yet');
      },
      { visibilityTimeout: 100, maxAttempts: 2 },
    );
    await waitFor(
      () => {
        const c = streams.counters();
        return c.acked === 2 && c.deadLettered === 2;
      },
      { what: 'every message to be settled' },
    );
    // ok: delivered, acked. always-fails: failed, retried, failed again at maxAttempts and
    // dead-lettered. fails-once: failed, retried, acked. The raw entry: dead-lettered.
    const expected: StreamCounters = {
      delivered: 5,
      acked: 2,
      failed: 2,
      retried: 2,
      deadLettered: 2,
      handlerFailures: 3,
    };
    expect(streams.counters()).toEqual(expected);
    await expect(streams.backlog('outcomes', 'workers')).resolves.toEqual({
      pending: 0,
      lag: 0,
      consumers: 1,
    });
    await expect(streams.backlog('outcomes', 'nobody')).resolves.toBeUndefined();
    await expect(streams.backlog('no-such-stream', 'workers')).resolves.toBeUndefined();

    const all = await reader.metrics();
    const messages = all.get('nestjs_redis.stream.messages');
    expect(messages?.descriptor.unit).toBe('{message}');
    const byState = Object.fromEntries(
      pointsOf(messages).map((p) => [String(p.attributes['nestjs_redis.stream.state']), p.value]),
    );
    expect(byState).toEqual({
      delivered: 5,
      acked: 2,
      failed: 2,
      retried: 2,
      dead_lettered: 2,
    });
    expect(
      valueOf(all.get('nestjs_redis.stream.handler_failures'), {
        'db.client.connection.pool.name': 'default',
      }),
    ).toBe(3);
    const group = {
      'messaging.destination.name': 'outcomes',
      'messaging.consumer.group.name': 'workers',
    };
    expect(valueOf(all.get('nestjs_redis.stream.pending'), group)).toBe(0);
    expect(valueOf(all.get('nestjs_redis.stream.lag'), group)).toBe(0);
    expect(valueOf(all.get('nestjs_redis.stream.consumers'), group)).toBe(1);
    expect(valueOf(all.get('nestjs_redis.stream.in_flight'), group)).toBe(0);
  });

  it('reads lag, pending and in-flight of consumed groups only', async () => {
    // A group nobody here consumes: never read by the metrics.
    await client.xgroup('CREATE', streamKeys('elsewhere').stream, 'others', '0', 'MKSTREAM');
    const producer = streams.producer<number>('slow');
    for (let i = 0; i < 4; i++) await producer.add(i);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let entered = 0;
    await streams.consumer<number>('slow', 'careful', async () => {
      entered += 1;
      await gate;
    });
    await waitFor(() => entered === 1, { what: 'the first handler to start' });

    // One message read and running (concurrency 1 reads no more), three not yet delivered.
    await expect(streams.backlog('slow', 'careful')).resolves.toEqual({
      pending: 1,
      lag: 3,
      consumers: 1,
    });
    const all = await reader.metrics();
    const group = {
      'messaging.destination.name': 'slow',
      'messaging.consumer.group.name': 'careful',
    };
    expect(valueOf(all.get('nestjs_redis.stream.in_flight'), group)).toBe(1);
    expect(valueOf(all.get('nestjs_redis.stream.pending'), group)).toBe(1);
    expect(valueOf(all.get('nestjs_redis.stream.lag'), group)).toBe(3);
    const groupsRead = pointsOf(all.get('nestjs_redis.stream.lag')).map(
      (p) => p.attributes['messaging.consumer.group.name'],
    );
    expect(groupsRead.sort()).toEqual(['careful', 'workers']);

    release();
    await waitFor(
      async () => (await streams.backlog('slow', 'careful'))?.pending === 0 && entered === 4,
      { what: 'the slow group to catch up' },
    );
    expect(await streams.backlog('slow', 'careful')).toEqual({ pending: 0, lag: 0, consumers: 1 });
  });
});

describe('telemetry per named connection', () => {
  let app: INestApplication;
  const prefix = uniquePrefix('named-otel');
  const pool = (name: string) => ({ 'db.client.connection.pool.name': name });
  const connection = (name: string) =>
    RedisModule.forRoot({
      name,
      url: standaloneUrl(),
      keyPrefix: `${prefix}${name}:`,
      connectionName: uniqueConnectionName(name),
      cache: { l1: { maxEntries: 1 } },
    });

  beforeAll(async () => {
    app = await startApp({ imports: [connection('alpha'), connection('beta')] });
  });

  afterAll(async () => {
    await app?.close();
    const cleaner = await startApp({
      imports: [RedisModule.forRoot({ url: standaloneUrl(), keyPrefix: prefix })],
    });
    await cleaner.get(RedisService).unlinkByPattern('*');
    await cleaner.close();
  });

  it("labels each connection's instruments with its name and reads only its services", async () => {
    const alpha = app.get<RedisClient>(getRedisToken('alpha'));
    const beta = app.get<RedisClient>(getRedisToken('beta'));
    for (let i = 0; i < 3; i++) await alpha.echo('a');
    for (let i = 0; i < 2; i++) await beta.echo('b');

    // Alpha's cache: two loads, and its one-entry L1 evicts one of them.
    const cacheA = app.get<CacheService>(getCacheServiceToken('alpha'));
    await waitFor(
      async () => {
        await cacheA.set('warm', 0);
        return cacheA.stats().l1.size === 1;
      },
      { what: "alpha's L1 to keep a value" },
    );
    const evictedBefore = cacheA.stats().l1.evictions;
    await cacheA.getOrSet('x', () => Promise.resolve(1));
    await cacheA.getOrSet('y', () => Promise.resolve(2));
    expect(cacheA.stats().l1.evictions).toBe(evictedBefore + 2);

    // Beta's streams: two messages handled.
    const streamsB = app.get<StreamsService>(getStreamsServiceToken('beta'));
    const producer = streamsB.producer<number>('jobs');
    await producer.add(1);
    await producer.add(2);
    await streamsB.consumer<number>('jobs', 'workers', () => undefined);
    await waitFor(() => streamsB.counters().acked === 2, { what: "beta's messages" });

    const all = await reader.metrics();
    const duration = all.get('db.client.operation.duration');
    const echoes = (name: string): unknown =>
      (valueOf(duration, { ...pool(name), 'db.operation.name': 'ECHO' }) as { count: number })
        ?.count;
    expect(echoes('alpha')).toBe(3);
    expect(echoes('beta')).toBe(2);

    const evictions = all.get('nestjs_redis.cache.l1.evictions');
    expect(valueOf(evictions, pool('alpha'))).toBe(evictedBefore + 2);
    expect(valueOf(evictions, pool('beta'))).toBe(0);
    const loads = all.get('nestjs_redis.cache.loads');
    expect(valueOf(loads, pool('alpha'))).toBe(2);
    expect(valueOf(loads, pool('beta'))).toBe(0);
    // Fed by the tracing channels every connection shares: each operation counted once, under
    // its own connection.
    const loadDuration = all.get('nestjs_redis.cache.load.duration');
    expect((valueOf(loadDuration, pool('alpha')) as { count: number }).count).toBe(2);
    expect(pointsOf(loadDuration, pool('beta'))).toEqual([]);

    const delivered = (name: string): unknown =>
      valueOf(all.get('nestjs_redis.stream.messages'), {
        ...pool(name),
        'nestjs_redis.stream.state': 'delivered',
      });
    expect(delivered('beta')).toBe(2);
    expect(delivered('alpha')).toBe(0);
    const lag = all.get('nestjs_redis.stream.lag');
    expect(valueOf(lag, { ...pool('beta'), 'messaging.consumer.group.name': 'workers' })).toBe(0);
    expect(pointsOf(lag, pool('alpha'))).toEqual([]);

    const commandConnections = all.get('db.client.connection.count');
    for (const name of ['alpha', 'beta'])
      expect(
        valueOf(commandConnections, { ...pool(name), 'nestjs_redis.connection.role': 'command' }),
      ).toBe(1);
    // Every point of every instrument names its connection.
    for (const metric of all.values())
      for (const p of pointsOf(metric))
        expect(['alpha', 'beta', 'default']).toContain(
          p.attributes['db.client.connection.pool.name'],
        );
  });
});
