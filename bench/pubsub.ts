/**
 * Pub/sub benchmark: `PubSubService.subscribe` against a raw ioredis subscriber, on the same
 * server, in one process and one run.
 *
 * Contenders, each with its own subscriber connection and its own channel:
 *  - `ours`: `PubSubService.subscribe(channel, handler)` from a Nest application context of
 *    `RedisModule.forRoot({ url })` (logger off, defaults: JSON decoding, a 1000-message buffer
 *    per subscription, handler timeout armed only for handlers that return a promise).
 *  - `raw`: `new Redis(url)` + `subscribe(channel)` + `on('message')` with `JSON.parse`, what a
 *    user would write by hand.
 * Both handlers do the same work: count, and note the arrival time of marked messages.
 * One publisher (a third plain ioredis connection) sends the same JSON payloads (~100 bytes,
 * as `PubSubService.publish` encodes them) to either channel.
 *
 * Scenarios:
 *  1. Throughput: `messages` messages published with `window` PUBLISH in flight; messages/s =
 *     messages / (time from the first publish to the last delivery). Target: ours >= 0.95x raw.
 *  2. Latency: `samples` messages published one at a time (each waits for its delivery);
 *     latency = delivery time - publish call time; p50 and p99 per contender.
 *  3. Keyspace expiry notice latency: `expiries` keys set with `PX 20` (20 at a time), heard by
 *     both `PubSubService.onKeyEvent('expired', ...)` and a raw `PSUBSCRIBE __keyspace@0__:...`
 *     connection; latency = arrival - (time the SET was sent + 20 ms), so it includes when
 *     Redis gets to expire the key (its active expiry cycle runs `hz` times a second). The
 *     module runs with `pubsub.keyspaceEvents: 'configure'`: it sets the `Kx` flags.
 * Contenders measure within every round, in a random order per round (harness
 * `pairedRounds`); `paired` = median over rounds of ours/raw within the round, with the
 * medians of each contender beside it. With --expose-gc a full GC runs before every slice.
 *
 * Server: `REDIS_URL` if set, else a throwaway redis-server on a free loopback port, stopped at
 * the end (also on error, SIGINT and SIGTERM). Channels: `bench:pubsub:<run>:*` (no keys).
 *
 * Usage: npm run bench -- pubsub [--rounds N] [--messages N] [--window N] [--samples N]
 *          [--expiries N] [--timeout-ms MS] [--check]
 *   or env BENCH_ROUNDS, BENCH_MESSAGES, BENCH_WINDOW, BENCH_SAMPLES, BENCH_EXPIRIES,
 *   BENCH_TIMEOUT_MS, BENCH_CHECK=1. The last line of output is `BENCH_JSON {...}` with every figure.
 */
import 'reflect-metadata';
import os from 'node:os';
import { performance } from 'node:perf_hooks';

import { Module, type INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Redis } from 'ioredis';

import { PubSubService, RedisModule } from '../src/index.js';

import {
  cleanupSteps,
  collectGarbage,
  cpuPressure,
  fmtLoad,
  median,
  packageVersion,
  pairedRounds,
  prng,
  quantile,
  readArgs,
  redisUrlFor,
  runBenchmark,
  stopThrowawayServer,
  table,
  type ThrowawayServer,
} from './harness.js';

const TARGET_RATIO = 0.95;

interface Settings {
  rounds: number;
  messages: number;
  window: number;
  samples: number;
  expiries: number;
  timeoutMs: number;
  check: boolean;
}

function readSettings(argv: string[]): Settings {
  const args = readArgs(
    argv,
    ['rounds', 'messages', 'window', 'samples', 'expiries', 'timeout-ms'],
    ['check'],
  );
  return {
    rounds: args.num('rounds', 8, 1, 1000),
    messages: args.num('messages', 20_000, 100, 10_000_000),
    window: args.num('window', 128, 1, 10_000),
    samples: args.num('samples', 500, 10, 1_000_000),
    expiries: args.num('expiries', 200, 20, 100_000),
    timeoutMs: args.num('timeout-ms', 120_000, 1_000, 3_600_000),
    check: args.on('check'),
  };
}

interface State extends ThrowawayServer {
  app?: INestApplicationContext;
  clients: Redis[];
}

/** A subscriber under test: counts deliveries and wakes whoever waits for the n-th. */
interface Contender {
  name: 'ours' | 'raw';
  channel: string;
  received: number;
  /** Resolves when `received` reaches `target`. */
  until(target: number): Promise<number>;
}

function counter(name: Contender['name'], channel: string) {
  let wake: { target: number; resolve: (at: number) => void } | undefined;
  const contender: Contender & { onMessage: (message: { n: number }) => void } = {
    name,
    channel,
    received: 0,
    onMessage(message) {
      contender.received += 1;
      if (message.n < 0) return; // never: keeps the decoded value in use for both
      if (wake && contender.received >= wake.target) {
        const w = wake;
        wake = undefined;
        w.resolve(performance.now());
      }
    },
    until(target) {
      if (contender.received >= target) return Promise.resolve(performance.now());
      return new Promise((resolve) => (wake = { target, resolve }));
    },
  };
  return contender;
}

function payload(n: number): string {
  return JSON.stringify({ n, kind: 'order.created', id: `order-${n}`, total: 42.5, items: 3 });
}

async function throughput(
  publisher: Redis,
  c: Contender,
  messages: number,
  window: number,
): Promise<number> {
  const start = c.received;
  const t0 = performance.now();
  let sent = 0;
  const inFlight = new Set<Promise<unknown>>();
  while (sent < messages) {
    while (inFlight.size < window && sent < messages) {
      const p: Promise<unknown> = publisher
        .publish(c.channel, payload(sent))
        .then(() => inFlight.delete(p));
      inFlight.add(p);
      sent += 1;
    }
    await Promise.race(inFlight);
  }
  const done = await c.until(start + messages);
  return messages / ((done - t0) / 1000);
}

async function latencies(publisher: Redis, c: Contender, samples: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < samples; i += 1) {
    const target = c.received + 1;
    const t0 = performance.now();
    const arrived = c.until(target);
    await publisher.publish(c.channel, payload(i));
    out.push((await arrived) - t0);
  }
  return out;
}

const EXPIRY_TTL_MS = 20;
const EXPIRY_BATCH = 20;

/**
 * Sets `count` keys that expire after EXPIRY_TTL_MS, EXPIRY_BATCH at a time, and records when
 * `onKeyEvent` and a raw keyspace subscriber hear each expiry, relative to its due time.
 */
async function expiryLatencies(
  pubsub: PubSubService,
  url: string,
  state: State,
  base: string,
  count: number,
): Promise<{ ours: number[]; raw: number[]; delta: number[] }> {
  const keys = `${base}ks:`;
  const heard = { ours: new Map<string, number>(), raw: new Map<string, number>() };
  let wake: (() => void) | undefined;
  const note = (who: 'ours' | 'raw', key: string): void => {
    heard[who].set(key, performance.now());
    wake?.();
  };
  const sub = await pubsub.onKeyEvent('expired', `${keys}*`, ({ key }) => note('ours', key));
  if (!sub.active) throw new Error(`keyspace notifications are off: ${sub.reason}`);
  const listener = new Redis(url);
  const writer = new Redis(url);
  state.clients.push(listener, writer);
  const channel = '__keyspace@0__:';
  await listener.psubscribe(`${channel}${keys}*`);
  listener.on('pmessage', (_pattern: string, from: string, event: string) => {
    if (event === 'expired') note('raw', from.slice(channel.length));
  });
  const due = new Map<string, number>();
  for (let n = 0; n < count; n += EXPIRY_BATCH) {
    const batch = Array.from(
      { length: Math.min(EXPIRY_BATCH, count - n) },
      (_, i) => keys + (n + i),
    );
    await Promise.all(
      batch.map((key) => {
        due.set(key, performance.now() + EXPIRY_TTL_MS);
        return writer.set(key, '1', 'PX', EXPIRY_TTL_MS);
      }),
    );
    const deadline = performance.now() + 10_000;
    while (!batch.every((k) => heard.ours.has(k) && heard.raw.has(k))) {
      if (performance.now() > deadline)
        throw new Error('expiry notices did not arrive within 10 s');
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 50);
      });
    }
  }
  await sub.unsubscribe();
  await listener.punsubscribe();
  const out = { ours: [] as number[], raw: [] as number[], delta: [] as number[] };
  for (const [key, at] of due) {
    out.ours.push(heard.ours.get(key)! - at);
    out.raw.push(heard.raw.get(key)! - at);
    out.delta.push(heard.ours.get(key)! - heard.raw.get(key)!);
  }
  return out;
}

/** Our subscriber (through `PubSubService`) and a raw ioredis one, each on a channel of its own. */
async function openContenders(url: string, base: string, state: State) {
  const publisher = new Redis(url);
  const rawSub = new Redis(url);
  state.clients.push(publisher, rawSub);

  @Module({ imports: [RedisModule.forRoot({ url, pubsub: { keyspaceEvents: 'configure' } })] })
  class BenchModule {}
  state.app = await NestFactory.createApplicationContext(BenchModule, { logger: false });
  const pubsub = state.app.get(PubSubService);

  const ours = counter('ours', `${base}ours`);
  const raw = counter('raw', `${base}raw`);
  await pubsub.subscribe<{ n: number }>(ours.channel, (m) => ours.onMessage(m));
  await rawSub.subscribe(raw.channel);
  rawSub.on('message', (_channel: string, message: string) =>
    raw.onMessage(JSON.parse(message) as { n: number }),
  );
  return { publisher, pubsub, contenders: [ours, raw] };
}

/** Throughput and latency of both, in paired rounds after a warm-up that is not counted. */
async function measure(publisher: Redis, contenders: Contender[], settings: Settings) {
  const random = prng(20261203);
  const lat: Record<Contender['name'], number[]> = { ours: [], raw: [] };
  // Warm-up: JIT and connections, not counted.
  for (const c of contenders) {
    await throughput(publisher, c, Math.min(settings.messages, 5_000), settings.window);
    await latencies(publisher, c, 50);
  }
  const rounds = await pairedRounds({
    rounds: settings.rounds,
    random,
    between: () => collectGarbage('major'),
    contenders: contenders.map((c) => ({
      name: c.name,
      measure: () => throughput(publisher, c, settings.messages, settings.window),
    })),
  });
  await pairedRounds({
    rounds: settings.rounds,
    random,
    between: () => collectGarbage('minor'),
    contenders: contenders.map((c) => ({
      name: c.name,
      measure: async () => {
        const values = await latencies(publisher, c, settings.samples);
        lat[c.name].push(...values);
        return median(values);
      },
    })),
  });
  return { rates: rounds.samples, paired: rounds.ratios('ours', 'raw'), lat };
}

type Measured = Awaited<ReturnType<typeof measure>>;
type Expiry = Awaited<ReturnType<typeof expiryLatencies>>;

async function figuresOf(m: Measured, expiry: Expiry, pubsub: PubSubService, settings: Settings) {
  const { rates, paired, lat } = m;
  return {
    settings,
    versions: { ioredis: await packageVersion('ioredis'), node: process.versions.node },
    load: os.loadavg(),
    cpuPressure: cpuPressure(),
    throughput: {
      ours: median(rates.ours),
      raw: median(rates.raw),
      ratio: median(rates.ours) / median(rates.raw),
      paired: median(paired),
      pairedMin: Math.min(...paired),
      pairedMax: Math.max(...paired),
    },
    latencyMs: {
      ours: { p50: quantile(lat.ours, 0.5), p99: quantile(lat.ours, 0.99) },
      raw: { p50: quantile(lat.raw, 0.5), p99: quantile(lat.raw, 0.99) },
    },
    expiryNoticeMs: {
      ours: { p50: quantile(expiry.ours, 0.5), p99: quantile(expiry.ours, 0.99) },
      raw: { p50: quantile(expiry.raw, 0.5), p99: quantile(expiry.raw, 0.99) },
      oursMinusRaw: { p50: quantile(expiry.delta, 0.5), p99: quantile(expiry.delta, 0.99) },
      keys: expiry.ours.length,
    },
    stats: pubsub.stats(),
  };
}

type Figures = Awaited<ReturnType<typeof figuresOf>>;

const f0 = (n: number): string => Math.round(n).toLocaleString('en-US');
const f3 = (n: number): string => n.toFixed(3);

function print(figures: Figures, verdict: string, settings: Settings): void {
  const { versions, throughput: t, latencyMs: lat } = figures;
  console.log(
    `pub/sub: PubSubService vs raw ioredis subscriber — ioredis ${versions.ioredis}, node ${versions.node}, ` +
      `${settings.rounds} rounds × ${settings.messages} messages (window ${settings.window}), ` +
      `${settings.samples} latency samples per round; ${fmtLoad(figures.load, figures.cpuPressure)}`,
  );
  console.log(
    table(
      ['contender', 'messages/s (median)', 'latency p50 ms', 'latency p99 ms'],
      [
        ['ours', f0(t.ours), f3(lat.ours.p50), f3(lat.ours.p99)],
        ['raw', f0(t.raw), f3(lat.raw.p50), f3(lat.raw.p99)],
      ],
    ),
  );
  console.log(
    `throughput ours/raw: paired ${t.paired.toFixed(3)} (rounds ${f3(t.pairedMin)}..${f3(t.pairedMax)}), ` +
      `ratio of medians ${f3(t.ratio)}; target >= ${TARGET_RATIO}: ${verdict}`,
  );
  const e = figures.expiryNoticeMs;
  console.log(
    `\nkeyspace expiry notice latency (${e.keys} keys, PX ${EXPIRY_TTL_MS}; from the due time to arrival):`,
  );
  console.log(
    table(
      ['listener', 'p50 ms', 'p99 ms'],
      [
        ['ours (onKeyEvent)', f3(e.ours.p50), f3(e.ours.p99)],
        ['raw PSUBSCRIBE', f3(e.raw.p50), f3(e.raw.p99)],
        ['ours - raw, same key', f3(e.oursMinusRaw.p50), f3(e.oursMinusRaw.p99)],
      ],
    ),
  );
}

async function run(settings: Settings, state: State): Promise<number> {
  const url = await redisUrlFor(state);
  const base = `bench:pubsub:${process.pid}-${Date.now()}:`;
  const { publisher, pubsub, contenders } = await openContenders(url, base, state);
  const measured = await measure(publisher, contenders, settings);
  const expiry = await expiryLatencies(pubsub, url, state, base, settings.expiries);
  const figures = await figuresOf(measured, expiry, pubsub, settings);
  const verdict = figures.throughput.paired >= TARGET_RATIO ? 'MET' : 'MISSED';
  print(figures, verdict, settings);
  console.log(`BENCH_JSON ${JSON.stringify({ verdict, ...figures })}`);
  return settings.check && verdict === 'MISSED' ? 1 : 0;
}

async function cleanup(state: State): Promise<void> {
  const steps = cleanupSteps();
  if (state.app) {
    const app = state.app;
    state.app = undefined;
    await steps.run(() => app.close());
  }
  for (const client of state.clients.splice(0))
    await steps.run(() => Promise.resolve(client.disconnect()));
  await stopThrowawayServer(state, steps);
  steps.report();
}

await runBenchmark('pubsub', {
  readSettings,
  state: { clients: [] },
  run,
  cleanup,
});
