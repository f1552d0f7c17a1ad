/**
 * Telemetry benchmark: what observability costs on the two paths that matter, in one process
 * and one run, against the same server.
 *
 * Sections (`--only l1,l2,hook,dashboard`, default all):
 *  1. `l1`: `getOrSet` of one hot key already in L1, one call at a time: as the module runs it
 *     (L1 hits are counted, not traced), with no SDK, with the module's instruments on an SDK
 *     with no reader and with an exporter collecting every second; then wrapped in
 *     `trace('cache.getOrSet', ...)`, what tracing L1 hits would cost: traced with no
 *     API/SDK (no span factory, no subscriber), traced with the OpenTelemetry SDK and no parent
 *     span (the span factory asks for the active span and declines), and traced under a
 *     recording parent span with an in-memory span exporter (a child span per call).
 *  2. `l2`: a `GET` of a 1 KB value through the module's client, one call at a time: no SDK
 *     (the command path untouched), the SDK's MeterProvider with no reader (what an SDK without
 *     an exporter costs), and with an in-memory exporter collecting every second.
 *  2b. `hook`: the command hook alone, on a client that answers at once (a real ioredis
 *     `Command`, resolved with the reply inside `sendCommand`): the nanoseconds it adds per
 *     command, and that as a share of the `GET` measured in `l2` (load-independent where the
 *     `GET` ratio drowns in a loaded machine's noise). The hook hands durations to the SDK on
 *     `setImmediate`; this loop never idles, so its buffer fills and `histogram.record` runs
 *     inside it: the figure is the whole CPU per command, where `l2` shows what a caller waits.
 *  3. `dashboard`: the same `GET`, with and without one dashboard page open (its sampler
 *     subscribed, sampling every second: INFO, PING, command timing).
 *
 * Method: one warm-up round, then `rounds` rounds; in a round each variant runs `sliceMs` in
 * two halves, in a fresh random order and then in reverse (A B C C B A). A figure is the median
 * over rounds of calls per second; a ratio is the median over rounds of the within-round ratio
 * against the section's first variant. Target: >= 0.97 with an SDK (cost <= 3 %).
 *
 * Server: `REDIS_URL` if set, else a throwaway redis-server on a free loopback port, stopped at
 * the end. Keys: `bench:telemetry:<run>:*`, removed at the end.
 *
 * Usage: npm run bench -- telemetry [--rounds N] [--slice-ms MS] [--only LIST]
 *   or env BENCH_ROUNDS, BENCH_SLICE_MS, BENCH_ONLY. Last line: `BENCH_JSON {...}`.
 */
import 'reflect-metadata';
import os from 'node:os';
import { performance } from 'node:perf_hooks';

import { Module, type INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { context, metrics, trace as otelTrace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import {
  InMemorySpanExporter,
  SimpleSpanProcessor,
  TracerProvider,
} from '@opentelemetry/sdk-trace';
import { Command, type Redis } from 'ioredis';
import type { Subscription } from 'rxjs';

import { RedisDashboardSampler } from '../src/dashboard/dashboard.sampler.js';
import {
  CacheService,
  RedisDashboardModule,
  RedisModule,
  getRedisToken,
  type RedisModuleOptions,
} from '../src/index.js';
import {
  createSpanFactory,
  instrumentConnection,
  type MetricSources,
} from '../src/telemetry/otel.js';
import { setSpanFactory, trace, type SpanFactory } from '../src/telemetry/tracing.js';

import {
  cleanupSteps,
  median,
  packageVersion,
  prng,
  readArgs,
  redisUrlFor,
  stopThrowawayServer,
  table,
  unlinkMatching,
  type ThrowawayServer,
} from './harness.js';

interface Variant {
  label: string;
  /** Prepares the variant (installs hooks); returns what undoes it. */
  enter: () => Promise<() => void> | (() => void);
  call: () => Promise<unknown>;
}

const args = readArgs(process.argv.slice(2), ['rounds', 'slice-ms', 'only']);
const rounds = args.num('rounds', 6, 1, 100);
const sliceMs = args.num('slice-ms', 400, 50, 10_000);
const only = new Set((args.text('only') ?? 'l1,l2,hook,dashboard').split(',').map((s) => s.trim()));
const run = Math.random().toString(36).slice(2, 8);
const rand = prng(42);

async function measure(v: Variant, ms: number): Promise<{ calls: number; ms: number }> {
  const undo = await v.enter();
  try {
    const start = performance.now();
    const end = start + ms;
    let calls = 0;
    while (performance.now() < end) {
      // Bursts of 16 awaited calls between clock reads.
      for (let i = 0; i < 16; i++) await v.call();
      calls += 16;
    }
    return { calls, ms: performance.now() - start };
  } finally {
    undo();
  }
}

async function section(name: string, variants: Variant[]): Promise<Record<string, unknown>> {
  const perRound: number[][] = variants.map(() => []);
  for (let round = -1; round < rounds; round++) {
    const order = variants.map((_, i) => i).sort(() => rand() - 0.5);
    const totals = variants.map(() => ({ calls: 0, ms: 0 }));
    for (const i of [...order, ...[...order].reverse()]) {
      const r = await measure(variants[i], sliceMs / 2);
      totals[i].calls += r.calls;
      totals[i].ms += r.ms;
    }
    if (round < 0) continue; // warm-up
    totals.forEach((t, i) => perRound[i].push((t.calls / t.ms) * 1000));
  }
  const base = perRound[0];
  const rows = variants.map((v, i) => {
    const ratios = perRound[i].map((x, r) => x / base[r]);
    return {
      label: v.label,
      perSec: median(perRound[i]),
      ratio: median(ratios),
      min: Math.min(...ratios),
      max: Math.max(...ratios),
    };
  });
  console.log(`\n${name}`);
  console.log(
    table(
      ['variant', 'calls/s (median)', 'ratio (median)', 'ratio range'],
      rows.map((r) => [
        r.label,
        r.perSec.toFixed(0),
        r.ratio.toFixed(3),
        `${r.min.toFixed(3)}..${r.max.toFixed(3)}`,
      ]),
    ),
  );
  return { rows };
}

async function openApp(url: string, dashboard: boolean): Promise<INestApplicationContext> {
  const options: RedisModuleOptions = { url, keyPrefix: `bench:telemetry:${run}:` };
  class BenchTelemetryModule {}
  Module({
    imports: [
      RedisModule.forRoot(options),
      ...(dashboard ? [RedisDashboardModule.register({ path: 'redis', interval: 1000 })] : []),
    ],
  })(BenchTelemetryModule);
  return NestFactory.createApplicationContext(BenchTelemetryModule, {
    logger: false,
    abortOnError: false,
  });
}

/** The OpenTelemetry SDK objects, registered globally once; variants switch what is hooked to them. */
interface Sdk {
  spans: InMemorySpanExporter;
  tracerProvider: TracerProvider;
  factory: SpanFactory;
  /** The SDK's MeterProvider with no reader. */
  noReader: MeterProvider;
  /** A MeterProvider with an in-memory exporter collecting every second. */
  withReader: MeterProvider;
}

async function registerSdk(): Promise<Sdk> {
  const spans = new InMemorySpanExporter();
  const tracerProvider = new TracerProvider({
    spanProcessors: [new SimpleSpanProcessor({ exporter: spans })],
  });
  otelTrace.setGlobalTracerProvider(tracerProvider);
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  const api = await import('@opentelemetry/api');
  const factory = createSpanFactory(api);
  const noReader = new MeterProvider();
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const withReader = new MeterProvider({
    readers: [new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 1000 })],
  });
  return { spans, tracerProvider, factory, noReader, withReader };
}

async function unregisterSdk(sdk: Sdk): Promise<void> {
  await sdk.withReader.shutdown();
  await sdk.noReader.shutdown();
  await sdk.tracerProvider.shutdown();
  metrics.disable();
  otelTrace.disable();
  context.disable();
}

async function printSetup(): Promise<void> {
  console.log(
    `telemetry bench: node ${process.version}, ${os.cpus().length} cpus, load ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}, @opentelemetry/api ${await packageVersion('@opentelemetry/api')}, ` +
      `sdk-metrics ${await packageVersion('@opentelemetry/sdk-metrics')}, rounds ${rounds}, slice ${sliceMs} ms`,
  );
}

const none = (): (() => void) => () => undefined;

/** `call` with the module's instruments on the SDK's meter provider: with no reader, then with the exporter. */
function instrumented(
  sdk: Sdk,
  connection: MetricSources,
  call: () => Promise<unknown>,
  [noReader, withReader]: [string, string],
): Variant[] {
  const on = (provider: MeterProvider) => () =>
    instrumentConnection(provider.getMeter('nestjs-redis-infra'), connection);
  return [
    { label: noReader, enter: on(sdk.noReader), call },
    { label: withReader, enter: on(sdk.withReader), call },
  ];
}

/**
 * Section `l1`: `getOrSet` of a hot key as the module runs it (hits counted, no trace call),
 * without and with the module's instruments on an SDK; then wrapped in `trace()` with and
 * without an SDK (what tracing L1 hits would cost: why the module does not).
 */
function l1Section(
  sdk: Sdk,
  connection: MetricSources,
  hot: () => Promise<unknown>,
): Promise<Record<string, unknown>> {
  const tracer = otelTrace.getTracer('bench');
  return section('L1 hit: getOrSet of a hot key', [
    { label: 'getOrSet, no trace call', enter: none, call: hot },
    ...instrumented(sdk, connection, hot, [
      'getOrSet, instruments, no reader',
      'getOrSet, instruments + exporter',
    ]),
    {
      label: 'traced, no API/SDK',
      enter: none,
      call: () => trace('cache.getOrSet', { connection: 'default' }, hot),
    },
    {
      label: 'traced, SDK, no parent span',
      enter: () => {
        setSpanFactory(sdk.factory);
        return () => setSpanFactory(undefined);
      },
      call: () => trace('cache.getOrSet', { connection: 'default' }, hot),
    },
    {
      label: 'traced, SDK, child span exported',
      enter: () => {
        setSpanFactory(sdk.factory);
        return () => {
          setSpanFactory(undefined);
          sdk.spans.reset();
        };
      },
      call: () =>
        tracer.startActiveSpan('request', (parent) =>
          trace('cache.getOrSet', { connection: 'default' }, hot).finally(() => parent.end()),
        ),
    },
    {
      label: 'request span alone (reference)',
      enter: () => () => sdk.spans.reset(),
      call: () => tracer.startActiveSpan('request', (parent) => hot().finally(() => parent.end())),
    },
  ]);
}

/** Section `l2`: a `GET` with no SDK, with a MeterProvider without reader, with an exporter. */
function l2Section(
  sdk: Sdk,
  connection: MetricSources,
  get: () => Promise<unknown>,
): Promise<Record<string, unknown>> {
  return section('L2 read: GET of 1 KB through the module client', [
    { label: 'no SDK (command path untouched)', enter: none, call: get },
    ...instrumented(sdk, connection, get, [
      'SDK MeterProvider, no reader',
      'SDK + in-memory exporter (1 s)',
    ]),
  ]);
}

/**
 * Section `hook`: the command hook on a client that answers at once; prints the nanoseconds it
 * adds per command and, when `l2` ran, that share of its `GET`.
 */
async function hookSection(
  sdk: Sdk,
  connection: MetricSources,
  l2: { rows: Array<{ perSec: number }> } | undefined,
): Promise<Record<string, unknown>> {
  // A client whose commands are answered at once, as ioredis answers them (the real `Command`,
  // its `resolve` called with the reply): what is left is the hook's own cost.
  const reply = Buffer.from('OK');
  const fake = {
    sendCommand(command: Command): Promise<unknown> {
      command.resolve(reply);
      return command.promise;
    },
  };
  const fakeSources = { ...connection, client: fake as unknown as Redis };
  const send = (): Promise<unknown> => fake.sendCommand(new Command('get', ['k']));
  const hook = await section('Hook alone: per command, with an instant reply', [
    { label: 'no hook', enter: none, call: send },
    {
      label: 'hook + SDK, no reader',
      enter: () => instrumentConnection(sdk.noReader.getMeter('nestjs-redis-infra'), fakeSources),
      call: send,
    },
    {
      label: 'hook + SDK + exporter',
      enter: () => instrumentConnection(sdk.withReader.getMeter('nestjs-redis-infra'), fakeSources),
      call: send,
    },
  ]);
  const rows = (hook as { rows: Array<{ label: string; perSec: number }> }).rows;
  const baseNs = 1e9 / rows[0].perSec;
  const getNs = l2 ? 1e9 / l2.rows[0].perSec : undefined;
  for (const r of rows.slice(1)) {
    const added = 1e9 / r.perSec - baseNs;
    console.log(
      `${r.label}: +${added.toFixed(0)} ns per command` +
        (getNs
          ? ` = ${((100 * added) / getNs).toFixed(2)} % of this run's GET (${(getNs / 1000).toFixed(0)} us)`
          : ''),
    );
  }
  return hook;
}

/** Section `dashboard`: a `GET` with and without one dashboard page's sampler subscribed. */
function dashboardSection(
  app: INestApplicationContext,
  get: () => Promise<unknown>,
): Promise<Record<string, unknown>> {
  const sampler = app.get(RedisDashboardSampler);
  return section('Dashboard: GET of 1 KB with one page open', [
    { label: 'no page open', enter: none, call: get },
    {
      label: 'one page open (1 s samples)',
      enter: () => {
        const sub: Subscription = sampler.samples.subscribe();
        return () => sub.unsubscribe();
      },
      call: get,
    },
  ]);
}

/** Writes the keys the sections read, prints the setup, then runs the sections `--only` names. */
async function runSections(app: INestApplicationContext): Promise<Record<string, unknown>> {
  const results: Record<string, unknown> = {};
  const client = app.get<Redis>(getRedisToken());
  const cache = app.get(CacheService);
  const value = JSON.stringify({ payload: 'x'.repeat(1000) });
  await client.set('v', value);
  await cache.getOrSet('hot', () => Promise.resolve({ id: 1 }), { ttl: 600_000 });
  await printSetup();

  const sdk = await registerSdk();
  const hot = (): Promise<unknown> =>
    cache.getOrSet('hot', () => Promise.resolve({ id: 1 }), { ttl: 600_000 });
  const connection: MetricSources = {
    name: 'default',
    database: 0,
    client,
    connections: () => ({ byRole: { command: 1 }, max: 10 }),
    reconnects: () => 0,
    cache: () => cache.stats(),
  };
  const get = (): Promise<unknown> => client.getBuffer('v');

  if (only.has('l1')) results.l1 = await l1Section(sdk, connection, hot);
  if (only.has('l2')) results.l2 = await l2Section(sdk, connection, get);
  if (only.has('hook')) {
    const l2 = results.l2 as { rows: Array<{ perSec: number }> } | undefined;
    results.hook = await hookSection(sdk, connection, l2);
  }
  if (only.has('dashboard')) results.dashboard = await dashboardSection(app, get);
  await unregisterSdk(sdk);
  return results;
}

async function main(): Promise<void> {
  const holder: ThrowawayServer = {};
  const steps = cleanupSteps();
  let app: INestApplicationContext | undefined;
  const stop = async (): Promise<void> => {
    if (app) {
      const client = app.get<Redis>(getRedisToken());
      await steps.run(() => unlinkMatching(client, `bench:telemetry:${run}:*`));
      await steps.run(() => app!.close());
      app = undefined;
    }
    await stopThrowawayServer(holder, steps);
    steps.report();
  };
  process.once('SIGINT', () => void stop().then(() => process.exit(130)));
  try {
    const url = await redisUrlFor(holder);
    app = await openApp(url, only.has('dashboard'));
    const results = await runSections(app);
    console.log(`BENCH_JSON ${JSON.stringify({ rounds, sliceMs, results })}`);
  } finally {
    await stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
