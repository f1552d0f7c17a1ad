import diagnosticsChannel from 'node:diagnostics_channel';

import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';
import { context, metrics, trace as otelTrace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { DataPointType, MeterProvider, type MetricData } from '@opentelemetry/sdk-metrics';
import {
  InMemorySpanExporter,
  SimpleSpanProcessor,
  TracerProvider,
} from '@opentelemetry/sdk-trace';

import { CacheService, RedisModule, getRedisToken, type RedisClient } from '../../src/index.js';
import { RedisTelemetry } from '../../src/telemetry/redis-telemetry.js';
import { trace, type RedisTraceContext } from '../../src/telemetry/tracing.js';
import { startApp } from '../support/app.js';
import { TestMetricReader } from '../support/metrics.js';
import {
  killConnection,
  topologies,
  uniqueConnectionName,
  uniquePrefix,
  waitFor,
  type TopologyCase,
} from '../support/redis.js';

type Point = { attributes: Record<string, unknown>; value: unknown };
const points = (m: MetricData | undefined): Point[] => m?.dataPoints ?? [];

const text = (v: unknown): string => (typeof v === 'string' ? v : '');

/** Every attribute value of every data point and span, to prove no key leaked into one. */
function attributeValues(all: Map<string, MetricData>, spans: InMemorySpanExporter): string[] {
  const values: string[] = [];
  for (const m of all.values())
    for (const p of points(m)) values.push(...Object.values(p.attributes).map(String));
  for (const s of spans.getFinishedSpans())
    values.push(s.name, ...Object.values(s.attributes).map(String));
  return values;
}

describe('telemetry without an SDK', () => {
  it('leaves the command path untouched when no meter provider is registered', async () => {
    const app = await startApp({
      imports: [RedisModule.forRoot({ ...topologies()[0].options })],
      providers: [RedisTelemetry],
    });
    try {
      const client = app.get<RedisClient>(getRedisToken());
      expect(Object.prototype.hasOwnProperty.call(client, 'sendCommand')).toBe(false);
      // No parent span, no subscriber: the operation's own promise, untouched.
      const own = Promise.resolve(7);
      expect(trace('lock.acquire', {}, () => own)).toBe(own);
    } finally {
      await app.close();
    }
  });
});

describe('telemetry with the OpenTelemetry SDK', () => {
  const reader = new TestMetricReader();
  const spans = new InMemorySpanExporter();
  const meterProvider = new MeterProvider({ readers: [reader] });
  const tracerProvider = new TracerProvider({
    spanProcessors: [new SimpleSpanProcessor({ exporter: spans })],
  });
  const contextManager = new AsyncLocalStorageContextManager().enable();

  beforeAll(() => {
    expect(metrics.setGlobalMeterProvider(meterProvider)).toBe(true);
    expect(otelTrace.setGlobalTracerProvider(tracerProvider)).toBe(true);
    expect(context.setGlobalContextManager(contextManager)).toBe(true);
  });

  afterAll(async () => {
    metrics.disable();
    otelTrace.disable();
    context.disable();
    await meterProvider.shutdown();
    await tracerProvider.shutdown();
  });

  describe.each(topologies().map((t) => [t.name, t] as const))(
    'on %s',
    (_name, topology: TopologyCase) => {
      let app: INestApplication;
      let client: RedisClient;
      const prefix = uniquePrefix('otel');
      const name = uniqueConnectionName('otel');

      beforeAll(async () => {
        app = await startApp({
          imports: [
            RedisModule.forRoot({
              ...topology.options,
              keyPrefix: prefix,
              connectionName: name,
            }),
          ],
          providers: [RedisTelemetry],
        });
        client = app.get<RedisClient>(getRedisToken());
      });

      afterAll(async () => {
        await app?.close();
        expect(Object.prototype.hasOwnProperty.call(client, 'sendCommand')).toBe(false);
      });

      it('records command durations with the database semantic conventions', async () => {
        await client.set('{k}a', 'v');
        await client.get('{k}a');
        await expect(client.hset('{k}a', 'f', 'v')).rejects.toThrow(/WRONGTYPE/);
        await client.pipeline().get('{k}a').get('{k}b').exec();

        const all = await reader.metrics();
        const duration = all.get('db.client.operation.duration');
        expect(duration?.descriptor.unit).toBe('s');
        expect(duration?.dataPointType).toBe(DataPointType.HISTOGRAM);
        const byOp = new Map<string, Point>();
        for (const p of points(duration))
          byOp.set(
            `${text(p.attributes['db.operation.name'])}/${text(p.attributes['error.type'])}`,
            p,
          );
        const set = byOp.get('SET/');
        expect(set?.attributes).toEqual({
          'db.system.name': 'redis',
          'db.operation.name': 'SET',
          'db.namespace': '0',
          'db.client.connection.pool.name': 'default',
        });
        expect((set?.value as { count: number }).count).toBeGreaterThanOrEqual(1);
        // Two GETs through the pipeline and one alone: each command counts once.
        expect((byOp.get('GET/')?.value as { count: number }).count).toBeGreaterThanOrEqual(3);
        expect(byOp.get('HSET/WRONGTYPE')?.attributes['error.type']).toBe('WRONGTYPE');
      });

      // A cluster reconnects node by node: the Cluster object itself stays ready.
      const standaloneOrSentinel = topology.name === 'cluster' ? it.skip : it;
      standaloneOrSentinel('counts a reconnect of the command connection', async () => {
        const reconnects = async (): Promise<number> =>
          Number(
            points((await reader.metrics()).get('nestjs_redis.connection.reconnects'))[0]?.value,
          );
        const before = await reconnects();
        // Our command connection only, by its unique name, on every server that has it.
        let killed = 0;
        for (const server of topology.servers)
          killed += await killConnection(server, `${name}:command`);
        expect(killed).toBeGreaterThan(0);
        await waitFor(async () => (await reconnects()) >= before + 1, {
          what: 'the reconnect to be counted',
        });
        await expect(client.ping()).resolves.toBe('PONG');
      });

      it('reports connections, reconnects and the cache per tier', async () => {
        const cache = app.get(CacheService);
        // L1 keeps values once the cache listens for invalidations: read until one hits there.
        await waitFor(
          async () => {
            await cache.getOrSet('{c}x', () => Promise.resolve(1), { ttl: 60_000 });
            return cache.stats().l1.hits > 0;
          },
          { what: 'an L1 hit' },
        );

        const all = await reader.metrics();
        const conns = points(all.get('db.client.connection.count'));
        const command = conns.find(
          (p) => p.attributes['nestjs_redis.connection.role'] === 'command',
        );
        expect(command?.value).toBe(1);
        expect(all.get('db.client.connection.count')?.descriptor.unit).toBe('{connection}');
        expect(points(all.get('db.client.connection.max'))[0]?.value).toBe(10);

        const requests = points(all.get('nestjs_redis.cache.requests'));
        const value = (tier: string, result: string): unknown =>
          requests.find(
            (p) =>
              p.attributes['nestjs_redis.cache.tier'] === tier &&
              p.attributes['nestjs_redis.cache.result'] === result,
          )?.value;
        expect(value('l1', 'hit')).toBeGreaterThanOrEqual(1);
        expect(value('l1', 'miss')).toBeGreaterThanOrEqual(1);
        expect(value('l2', 'miss')).toBeGreaterThanOrEqual(1);
        expect(points(all.get('nestjs_redis.cache.loads'))[0]?.value).toBeGreaterThanOrEqual(1);
        expect(points(all.get('nestjs_redis.cache.l1.size'))[0]?.value).toBeGreaterThanOrEqual(1);
        expect(all.get('nestjs_redis.pubsub.messages')?.descriptor.unit).toBe('{message}');
      });

      it('makes child spans only under an active span, and publishes on the tracing channels', async () => {
        spans.reset();
        const seen: string[] = [];
        const handlers = {
          start: () => seen.push('start'),
          end: () => seen.push('end'),
          asyncStart: () => undefined,
          asyncEnd: (ctx: RedisTraceContext) => seen.push(`asyncEnd:${ctx.outcome}`),
          error: () => seen.push('error'),
        };
        const channel = diagnosticsChannel.tracingChannel<unknown, RedisTraceContext>(
          'nestjs-redis-infra:cache.getOrSet',
        );
        channel.subscribe(handlers);
        try {
          // Without a parent span: channel events, no span.
          const alone: RedisTraceContext = { connection: 'default' };
          await trace('cache.getOrSet', alone, async () => {
            alone.outcome = 'hit';
            return client.get('{k}a');
          });
          expect(spans.getFinishedSpans()).toHaveLength(0);

          const tracer = otelTrace.getTracer('test');
          await tracer.startActiveSpan('request', async (parent) => {
            const ctx: RedisTraceContext = { connection: 'default', tier: 'l2' };
            await trace('cache.getOrSet', ctx, async () => {
              ctx.outcome = 'loaded';
              return client.get('{k}a');
            });
            await expect(
              trace('lock.acquire', { connection: 'default' }, () =>
                Promise.reject(new Error(`could not lock ${prefix}resource`)),
              ),
            ).rejects.toThrow();
            parent.end();
          });
        } finally {
          channel.unsubscribe(handlers);
        }
        expect(seen).toEqual(['start', 'end', 'asyncEnd:hit', 'start', 'end', 'asyncEnd:loaded']);

        const finished = spans.getFinishedSpans();
        const parent = finished.find((s) => s.name === 'request');
        const child = finished.find((s) => s.name === 'cache.getOrSet');
        expect(child?.parentSpanContext?.spanId).toBe(parent?.spanContext().spanId);
        expect(child?.attributes).toEqual({
          'db.system.name': 'redis',
          'db.client.connection.pool.name': 'default',
          'nestjs_redis.tier': 'l2',
          'nestjs_redis.outcome': 'loaded',
        });
        const failed = finished.find((s) => s.name === 'lock.acquire');
        expect(failed?.status.code).toBe(2); // SpanStatusCode.ERROR
        expect(failed?.attributes['error.type']).toBe('Error');
        expect(failed?.events).toEqual([]);
      });

      it('turns lock, loader and session operations into metrics', async () => {
        await trace('lock.acquire', { connection: 'default' }, () => Promise.resolve('lock'));
        await trace('cache.load', { connection: 'default' }, () => Promise.resolve(1));
        await trace('session.create', { connection: 'default' }, () => Promise.resolve('s'));
        await trace('session.destroy', { connection: 'default' }, () => Promise.resolve(true));

        const all = await reader.metrics();
        const acquire = all.get('nestjs_redis.lock.acquire.duration');
        expect(acquire?.descriptor.unit).toBe('s');
        expect(
          points(acquire)
            .map((p) => p.attributes['nestjs_redis.outcome'])
            .sort(),
        ).toEqual(expect.arrayContaining(['acquired', 'error']));
        expect(all.get('nestjs_redis.cache.load.duration')?.dataPoints.length).toBeGreaterThan(0);
        const sessionOps = points(all.get('nestjs_redis.session.operations')).map(
          (p) => p.attributes['nestjs_redis.operation'],
        );
        expect(sessionOps).toEqual(expect.arrayContaining(['create', 'destroy']));
      });

      it('never puts a key, prefix or resource in an attribute', async () => {
        const all = await reader.metrics();
        const values = attributeValues(all, spans);
        expect(values.length).toBeGreaterThan(10);
        const leaked = values.filter(
          (v) => v.includes(prefix) || v.includes('{k}') || v.includes('{c}'),
        );
        expect(leaked).toEqual([]);
      });
    },
  );
});
