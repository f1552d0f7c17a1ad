/**
 * Cache benchmark: `CacheService` against bentocache 1.6 (L1 memory +
 * L2 redis + redis bus, over ioredis), cache-manager 7 (in-memory Keyv in front of
 * `@keyv/redis`) and raw ioredis, on the same server, in one process and one run, with 1 KB
 * JSON values (a product with 20 fields).
 *
 * Sections (`--only l1,l2,fill,pipeline,stampede,memory`, default all):
 *  1. `l1`: hot-key L1 hits/s, one key already in every L1, one call in flight: ours `get` and
 *     `getOrSet`, bentocache `get` and `getOrSet` (memory driver defaults: entries kept
 *     serialized; plus, for context, `serialize: false`), cache-manager `get` and `wrap`.
 *     Target: ours >= 1.5x bentocache.
 *  2. `l2`: L2-only hits/s, ours with `cache: { l1: false }`, against raw ioredis
 *     `GET` + `JSON.parse` of the same 1 KB value, sequential and 64 in flight, over 1024 keys
 *     (no two calls in flight share a key, so our single flight of reads never coalesces).
 *     Target: ours >= 0.9x raw. Between the two, a ladder of raw variants that adds one piece
 *     of our read path at a time (Buffer reply, entry header, ioredis `keyPrefix`, the
 *     per-call timeout) shows what each costs; two suggestions are measured beside it (a timer
 *     shared by all calls in flight, and a lean read); the baseline on a second connection
 *     shows the noise.
 *  2b. `fill`: the miss path, a fresh key every call, instant loader, 64 in flight: ours
 *     `getOrSet` (L1+L2, and `l1: false`), bentocache L1+L2 `getOrSet`, and a naive
 *     `GET`, then `SET PX` of the JSON on a miss (no stampede protection). Targets: ours
 *     L1+L2 >= 1.0x bentocache L1+L2, >= 0.6x naive.
 *  3. `pipeline`: issue item 13 reproduced: explicit pipelines of 64 `GET`s of 1 KB values,
 *     string replies + `JSON.parse` vs Buffer replies + `JSON.parse(buf.toString())`.
 *  4. `stampede`: 1,000 concurrent `getOrSet` of one missing key split over two instances
 *     (two Nest application contexts / two caches, each with its own connections), 500 each,
 *     loader sleeps 50 ms: loader runs and time until all 1,000 have the value. One warm-up
 *     and `stampedeRuns` runs per library, libraries interleaved, a fresh key every run.
 *  5. `memory`: L1 byte bound. A separate instance with `l1: { maxBytes, maxEntries }`
 *     (maxEntries high enough never to bind), full GC, heapUsed; `memoryKeys` distinct keys
 *     (values 200 B - 1 KB) written through `set` with bounded concurrency and a short TTL (so
 *     Redis memory stays small); full GC, heapUsed. Target: growth <= maxBytes + 20%. Then,
 *     without Redis, `estimateSize` against the heap for several kinds of values.
 *
 * Method (throughput sections). One warm-up round, then `rounds` rounds. In a round every
 * configuration runs `sliceMs` in two halves, in a fresh random order and then in the reverse
 * order (A B C C B A), which cancels drift that is linear over the round; sequential L2 reads
 * are interleaved in bursts of 16 awaited calls instead (as in bench/overhead.ts). With
 * --expose-gc, a young-generation GC runs before every half and a full GC before every round.
 * A figure is the median over rounds; a ratio's `paired` value is the median over rounds of
 * the within-round ratio, with a 90% bootstrap interval. Verdict: MET when paired >= target,
 * MISSED when the whole interval is below it (with >= 8 rounds), else INCONCLUSIVE.
 *
 * Server: `REDIS_URL` if set, else a throwaway redis-server on a free loopback port, stopped at
 * the end (also on error, SIGINT and SIGTERM). Keys: `bench:cache:<run>:*`, removed at the end.
 *
 * Usage: npm run bench -- cache [--rounds N] [--slice-ms MS] [--seq-ms MS]
 *          [--stampede-runs N] [--memory-keys N] [--memory-max-bytes B]
 *          [--memory-concurrency N] [--only LIST] [--timeout-ms MS]
 *   or env BENCH_ROUNDS, BENCH_SLICE_MS, BENCH_SEQ_MS, BENCH_STAMPEDE_RUNS, BENCH_MEMORY_KEYS,
 *   BENCH_MEMORY_MAX_BYTES, BENCH_MEMORY_CONCURRENCY, BENCH_ONLY, BENCH_TIMEOUT_MS.
 *   The last line of output is `BENCH_JSON {...}` with every figure.
 */
import 'reflect-metadata';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

import KeyvRedis from '@keyv/redis';
import { Module, type INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { BentoCache, bentostore } from 'bentocache';
import { memoryDriver } from 'bentocache/drivers/memory';
import { redisBusDriver, redisDriver } from 'bentocache/drivers/redis';
import { createCache, type Cache as CacheManager } from 'cache-manager';
import { Redis, type RedisOptions } from 'ioredis';
import { Keyv } from 'keyv';
import { LRUCache } from 'lru-cache';

import type { StandaloneServer } from '../scripts/redis/servers.mjs';
import { decodeEntry, encodeEntry, type CacheEntry } from '../src/cache/cache-entry.js';
import { cacheKeys } from '../src/cache/cache.scripts.js';
import { jsonSerializer } from '../src/cache/serializer.js';
import { redactUrl } from '../src/config/redact.js';
import { withTimeout } from '../src/connection/wait.js';
import { CacheService, RedisModule } from '../src/index.js';

import {
  cleanupSteps,
  collectGarbage,
  collectRounds,
  cpuPressure,
  exposedGc,
  fmtLoad,
  gcMs,
  interleavedBursts,
  measureLoops,
  median,
  packageVersion,
  palindromicRound,
  prng,
  readArgs,
  redisUrlFor,
  runBenchmark,
  sampler,
  stopThrowawayServer,
  table,
  unlinkMatching,
  type Sample,
} from './harness.js';

type Bento = BentoCache<Record<string, ReturnType<typeof bentostore>>>;

const VALUE_BYTES = 1024;
const TTL_MS = 10 * 60_000;
const L2_KEYS = 1024;
const IN_FLIGHT = 64;
const SEQUENTIAL_BURST = 16;
const PIPELINE_DEPTH = 64;
const STAMPEDE_CALLS_PER_INSTANCE = 500;
const LOADER_MS = 50;
const MIN_ROUNDS_FOR_MISS = 8;
const MAX_OPS_PER_MEASUREMENT = 5_000_000;
const MEMORY_POOL = 4096;
const SHAPE_ENTRIES = 20_000;
const TARGETS = { l1VsBento: 1.5, l2VsRaw: 0.9, memory: 1.2 };
const SECTIONS = ['l1', 'l2', 'fill', 'pipeline', 'stampede', 'memory'] as const;
/** Fill section: TTL of the keys it fills (they are many, and only ever written once). */
const FILL_TTL_MS = 60_000;
const FILL_TARGETS = { vsBento: 1.0, vsNaive: 0.6 };
type Section = (typeof SECTIONS)[number];

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

interface Settings {
  rounds: number;
  sliceMs: number;
  seqMs: number;
  stampedeRuns: number;
  memoryKeys: number;
  memoryMaxBytes: number;
  memoryConcurrency: number;
  only: Section[];
  timeoutMs: number;
}

function readSettings(argv: string[]): Settings {
  const args = readArgs(argv, [
    'rounds',
    'slice-ms',
    'seq-ms',
    'stampede-runs',
    'memory-keys',
    'memory-max-bytes',
    'memory-concurrency',
    'only',
    'timeout-ms',
  ]);
  const onlyRaw = args.text('only');
  const only = onlyRaw ? onlyRaw.split(',').map((s) => s.trim()) : [...SECTIONS];
  for (const s of only) {
    if (!(SECTIONS as readonly string[]).includes(s)) {
      throw new Error(`--only: unknown section ${s} (known: ${SECTIONS.join(', ')})`);
    }
  }
  return {
    rounds: args.num('rounds', 12, 1, 1_000),
    sliceMs: args.num('slice-ms', 100, 10, 10_000),
    seqMs: args.num('seq-ms', 50, 5, 10_000),
    stampedeRuns: args.num('stampede-runs', 5, 1, 100),
    memoryKeys: args.num('memory-keys', 1_000_000, 1_000, 10_000_000),
    memoryMaxBytes: args.num('memory-max-bytes', 64 * 1024 * 1024, 1024 * 1024, 4 * 1024 ** 3),
    memoryConcurrency: args.num('memory-concurrency', 256, 1, 10_000),
    only: only as Section[],
    timeoutMs: args.num('timeout-ms', 300_000, 10_000, 3_600_000),
  };
}

// ---------------------------------------------------------------------------------------------
// Values: products of a given JSON size
// ---------------------------------------------------------------------------------------------

const WORDS = (
  'lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ' +
  'labore dolore magna aliqua enim minim veniam quis nostrud exercitation ullamco laboris nisi ' +
  'aliquip commodo consequat duis aute irure reprehenderit voluptate velit esse cillum fugiat'
).split(' ');
const BRANDS = ['Acme', 'Globex', 'Initech', 'Umbrella', 'Stark', 'Wayne', 'Wonka', 'Hooli'];
const CATEGORIES = ['kitchen', 'garden', 'outdoor', 'electronics', 'toys', 'books', 'office'];
const COLORS = ['red', 'green', 'blue', 'black', 'white', 'silver', 'amber'];
const MATERIALS = ['steel', 'oak', 'cotton', 'glass', 'ceramic', 'bamboo', 'recycled plastic'];

/**
 * The JSON text of a product of exactly `bytes` bytes (ASCII): the full 20-field shape from
 * 640 bytes up, a compact 9-field one below. The description pads it to size.
 */
function productText(i: number, bytes: number): string {
  const r = prng(i + 1);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(r() * a.length)];
  const words = (n: number): string => Array.from({ length: n }, () => pick(WORDS)).join(' ');
  const day = 1_700_000_000_000 + Math.floor(r() * 3e10);
  const base: Record<string, unknown> =
    bytes >= 640
      ? {
          id: i,
          sku: `SKU-${(1_000_000 + i).toString(36).toUpperCase()}`,
          name: `${pick(BRANDS)} ${words(3)}`,
          slug: `product-${i}`,
          brand: pick(BRANDS),
          category: pick(CATEGORIES),
          price: Math.round(r() * 100_000) / 100,
          currency: 'EUR',
          stock: Math.floor(r() * 500),
          rating: Math.round(r() * 50) / 10,
          reviewCount: Math.floor(r() * 2_000),
          active: r() > 0.1,
          tags: [pick(WORDS), pick(WORDS), pick(WORDS)],
          dimensions: {
            width: Math.round(r() * 1_000) / 10,
            height: Math.round(r() * 1_000) / 10,
            depth: Math.round(r() * 1_000) / 10,
            unit: 'cm',
          },
          weightGrams: Math.floor(r() * 20_000),
          imageUrl: `https://cdn.example.com/products/${i}/main.jpg`,
          createdAt: new Date(day).toISOString(),
          updatedAt: new Date(day + 86_400_000).toISOString(),
          attributes: {
            color: pick(COLORS),
            material: pick(MATERIALS),
            size: pick(['S', 'M', 'L']),
          },
          description: '',
        }
      : {
          id: i,
          sku: `SKU-${(1_000_000 + i).toString(36).toUpperCase()}`,
          name: `${pick(BRANDS)} ${words(2)}`,
          price: Math.round(r() * 100_000) / 100,
          currency: 'EUR',
          stock: Math.floor(r() * 500),
          active: r() > 0.1,
          updatedAt: new Date(day).toISOString(),
          description: '',
        };
  const head = JSON.stringify(base); // ends with "description":""}
  const need = bytes - head.length;
  let desc = '';
  while (desc.length < need) desc += (desc ? ' ' : '') + pick(WORDS);
  return head.slice(0, -2) + desc.slice(0, Math.max(0, need)) + '"}';
}

interface Product {
  id: number;
}

/** Other kinds of values, to check `estimateSize` beyond products (JSON texts). */
const SHAPES: Record<string, (i: number) => string> = {
  'product 200 B-1 KB': (i) => productText(i, 200 + Math.floor(prng(i * 7 + 3)() * 825)),
  'product 1 KB': (i) => productText(i, VALUE_BYTES),
  'text blob 900 B': (i) => JSON.stringify({ id: i, body: productText(i, 900).replace(/"/g, '') }),
  // One character outside Latin-1 (here "—" and "€") makes V8 store the whole string with two
  // bytes per character.
  'text blob 900 B with "€"': (i) =>
    JSON.stringify({ id: i, body: `${productText(i, 880).replace(/"/g, '')} — 12 €` }),
  'order lines (objects)': (i) =>
    JSON.stringify(
      Array.from({ length: 3 + (i % 12) }, (_, k) => ({
        id: i * 100 + k,
        qty: 1 + (k % 5),
        price: ((k * 37 + i) % 9000) / 100,
        sku: `S${(i + k) % 99_999}`,
      })),
    ),
  'integer array': (i) =>
    JSON.stringify(Array.from({ length: 50 + (i % 150) }, (_, k) => (i * 31 + k * 7) % 100_000)),
  'float array': (i) =>
    JSON.stringify(
      Array.from({ length: 30 + (i % 60) }, (_, k) => ((i * 31 + k * 7) % 100_000) / 7),
    ),
  'small object': (i) => JSON.stringify({ id: i, ok: true, n: i % 100 }),
};

/** A fresh object with flat strings, as a database driver or `JSON.parse` hands it over. */
const product = (i: number, bytes: number): Product => JSON.parse(productText(i, bytes)) as Product;

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

/** Seeded, so that runs shuffle and resample alike. */
// sampler's functions are closures over the seeded state: they do not use `this`.
// eslint-disable-next-line @typescript-eslint/unbound-method -- see above
const { shuffle, medianInterval } = sampler(0x2545f491);

type Verdict = 'MET' | 'MISSED' | 'INCONCLUSIVE';

interface Ratio {
  a: string;
  b: string;
  /** median(a) / median(b) */
  ratio: number;
  /** median over rounds of a/b within the round */
  paired: number;
  interval: [number, number];
  target?: number;
  verdict?: Verdict;
}

function verdictOf(paired: number, interval: [number, number], target: number, rounds: number) {
  if (paired >= target) return 'MET' as const;
  if (rounds >= MIN_ROUNDS_FOR_MISS && interval[1] < target) return 'MISSED' as const;
  return 'INCONCLUSIVE' as const;
}

// ---------------------------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------------------------

/** One call; `loop` is which of the concurrent loops calls, `n` its iteration. */
type Op = (loop: number, n: number) => Promise<unknown>;

interface Config {
  id: string;
  label: string;
  op: Op;
  /** Calls `op` counts for (a pipeline of 64 GETs counts 64). */
  weight?: number;
}

/** A round: every configuration `sliceMs`, in halves, A B C C B A. */
async function sliceRound(
  configs: Config[],
  concurrency: number,
  sliceMs: number,
): Promise<Map<string, Sample>> {
  collectGarbage('major');
  const halves = await palindromicRound(shuffle([...configs]), (c) =>
    measureLoops(c.op, {
      concurrency,
      durationMs: sliceMs / 2,
      // One call in flight: check the clock every 16 calls (an L1 hit costs little more than
      // reading it). More in flight: every call, so that all loops stop together.
      burst: concurrency === 1 ? 16 : 1,
      maxOps: MAX_OPS_PER_MEASUREMENT,
      weight: c.weight,
    }),
  );
  return new Map([...halves].map(([c, sample]) => [c.id, sample]));
}

/**
 * A round of strictly sequential calls: bursts of 16 awaited calls of each configuration in a
 * fresh random order every cycle, until `seqMs` per configuration has passed.
 */
async function sequentialRound(configs: Config[], seqMs: number): Promise<Map<string, Sample>> {
  collectGarbage('major');
  const samples = await interleavedBursts(
    configs.map((c) => (n: number) => c.op(0, n)),
    {
      durationMs: seqMs * configs.length,
      burst: SEQUENTIAL_BURST,
      shuffle,
      maxOps: MAX_OPS_PER_MEASUREMENT,
    },
  );
  return new Map(configs.map((c, i) => [c.id, samples[i]]));
}

interface ScenarioResult {
  id: string;
  label: string;
  samples: Record<string, number[]>;
  medians: Record<string, number>;
}

async function runScenario(
  id: string,
  label: string,
  configs: Config[],
  settings: Settings,
  mode: { concurrency: number } | 'sequential',
): Promise<ScenarioResult> {
  const t0 = performance.now();
  const rounds = await collectRounds({
    ids: configs.map((c) => c.id),
    rounds: settings.rounds,
    warmup: 1,
    round: () =>
      mode === 'sequential'
        ? sequentialRound(configs, settings.seqMs)
        : sliceRound(configs, mode.concurrency, settings.sliceMs),
  });
  const samples: Record<string, number[]> = Object.fromEntries(
    configs.map((c) => [c.id, rounds[c.id].map((x) => x.opsPerSec)]),
  );
  const medians = Object.fromEntries(configs.map((c) => [c.id, median(samples[c.id])]));
  console.log(`  ${label}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return { id, label, samples, medians };
}

function ratioOf(
  s: ScenarioResult,
  a: string,
  b: string,
  settings: Settings,
  target?: number,
): Ratio {
  const per = s.samples[a].map((x, i) => x / s.samples[b][i]);
  const paired = median(per);
  const interval = medianInterval(per);
  return {
    a,
    b,
    ratio: s.medians[a] / s.medians[b],
    paired,
    interval,
    ...(target === undefined
      ? {}
      : { target, verdict: verdictOf(paired, interval, target, settings.rounds) }),
  };
}

/**
 * What the per-call timeout of our Redis calls could cost instead (a measured suggestion, not
 * used by src/): no timer per call, one timer for all calls in flight that rejects the overdue
 * ones (granularity: a tenth of the bound, at least 5 ms).
 */
class DeadlineSweeper {
  private readonly pending = new Set<{ deadline: number; expire: () => void }>();
  private timer?: NodeJS.Timeout;

  bound<T>(promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry = { deadline: performance.now() + ms, expire: () => reject(onTimeout()) };
      this.pending.add(entry);
      this.timer ??= setInterval(() => this.sweep(), Math.max(5, ms / 10)).unref();
      promise.then(
        (value) => {
          this.pending.delete(entry);
          resolve(value);
        },
        (err: unknown) => {
          this.pending.delete(entry);
          reject(err);
        },
      );
    });
  }

  private sweep(): void {
    const now = performance.now();
    for (const entry of this.pending) {
      if (entry.deadline <= now) {
        this.pending.delete(entry);
        entry.expire();
      }
    }
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

interface Closer {
  what: string;
  close: () => Promise<unknown>;
}

interface State {
  closers: Closer[];
  setup?: Redis;
  pattern?: string;
  server?: StandaloneServer;
  baseDir?: string;
}

async function openOurs(
  state: State,
  url: string,
  keyPrefix: string,
  cache: NonNullable<Parameters<typeof RedisModule.forRoot>[0]>['cache'],
  extra: Partial<NonNullable<Parameters<typeof RedisModule.forRoot>[0]>> = {},
): Promise<{ app: INestApplicationContext; cache: CacheService; closer: Closer }> {
  class BenchCacheModule {}
  Module({ imports: [RedisModule.forRoot({ url, keyPrefix, cache, ...extra })] })(BenchCacheModule);
  const app = await NestFactory.createApplicationContext(BenchCacheModule, {
    logger: false,
    abortOnError: false,
  });
  const closer = { what: `Nest app ${keyPrefix}`, close: () => app.close() };
  state.closers.push(closer);
  return { app, cache: app.get(CacheService), closer };
}

/** L1 is used only once the instance is subscribed to invalidations: wait for it. */
async function waitForL1(cache: CacheService, key: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    await cache.set(key, 1, { ttl: 60_000 });
    const before = cache.stats().l1.hits;
    await cache.get(key);
    if (cache.stats().l1.hits > before) break;
    if (Date.now() > deadline) throw new Error('L1 never became active (no subscription?)');
    await sleep(10);
  }
  await cache.del(key);
}

async function openRaw(state: State, url: string, options: RedisOptions = {}): Promise<Redis> {
  const client = new Redis(url, { lazyConnect: true, ...options });
  client.on('error', () => undefined); // surfaced by the failing commands instead
  await client.connect();
  state.closers.push({ what: 'raw ioredis', close: () => quit(client) });
  return client;
}

async function quit(client: Redis): Promise<void> {
  if (client.status === 'ready') await client.quit().catch(() => client.disconnect());
  else client.disconnect();
}

function redisOptionsFromUrl(url: string): RedisOptions {
  const u = new URL(url);
  return {
    host: u.hostname,
    port: Number(u.port || 6379),
    username: u.username ? decodeURIComponent(u.username) : undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
    db: u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0,
  };
}

/**
 * bentocache's two-tier setup (its documentation's multi-tier store): memory L1, redis L2,
 * redis bus to keep the L1s of several instances in sync. Its own connections (L2 + bus
 * publisher + bus subscriber).
 */
function openBento(state: State, url: string, prefix: string, serialize = true): Bento {
  const connection = redisOptionsFromUrl(url);
  const bento = new BentoCache({
    default: 'cache',
    prefix,
    ttl: TTL_MS,
    stores: {
      cache: bentostore()
        .useL1Layer(
          memoryDriver(
            serialize ? { maxItems: 10_000, maxSize: '64mb' } : { maxItems: 10_000, serialize },
          ),
        )
        .useL2Layer(redisDriver({ connection }))
        .useBus(redisBusDriver({ connection })),
    },
  }) as Bento;
  state.closers.push({ what: 'bentocache', close: () => bento.disconnectAll() });
  return bento;
}

/**
 * cache-manager's two-tier setup (its README): the in-memory Keyv (its default Map store) in
 * front of `@keyv/redis` (node-redis underneath: ioredis is not an option there). Not lru-cache
 * 11 as the L1 store: Keyv passes the TTL as a number where lru-cache expects an options
 * object, every write to it throws, Keyv swallows the error, and every read goes to Redis.
 */
function openCacheManager(state: State, url: string, namespace: string): CacheManager {
  const cm = createCache({
    stores: [new Keyv(), new Keyv({ store: new KeyvRedis(url), namespace })],
    ttl: TTL_MS,
  });
  state.closers.push({ what: 'cache-manager', close: () => cm.disconnect() });
  return cm;
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

const fmtOps = (n: number): string => Math.round(n).toLocaleString('en-US');
const fmtRatio = (n: number): string => n.toFixed(2);
const fmtInterval = ([lo, hi]: [number, number]): string => `${lo.toFixed(2)}-${hi.toFixed(2)}`;
const fmtMiB = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

function ratioRow(label: string, r: Ratio): string[] {
  return [
    label,
    fmtRatio(r.ratio),
    fmtRatio(r.paired),
    fmtInterval(r.interval),
    r.target === undefined ? '' : `>= ${r.target}`,
    r.verdict ?? '',
  ];
}
const RATIO_HEADER = ['comparison', 'ratio', 'paired', '90% interval', 'target', 'verdict'];

async function redisCommandCalls(client: Redis, command: string): Promise<number> {
  const info = String(await client.info('commandstats'));
  return Number(new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'm').exec(info)?.[1] ?? 0);
}

// ---------------------------------------------------------------------------------------------
// Sections
// ---------------------------------------------------------------------------------------------

interface Context {
  url: string;
  base: string;
  settings: Settings;
  state: State;
  setup: Redis;
}

/** The hot-key contenders, each holding `key` in its L1 already. */
async function openL1(ctx: Context, key: string, value: Product) {
  const { url, base, state } = ctx;
  const ours = (await openOurs(state, url, `${base}l1:`, { ttl: TTL_MS })).cache;
  await waitForL1(ours, 'probe');
  const bento = openBento(state, url, `${base}bento-l1`);
  const bentoRaw = openBento(state, url, `${base}bento-l1-noser`, false);
  const cm = openCacheManager(state, url, `${base}cm-l1`);
  await ours.set(key, value, { ttl: TTL_MS });
  await bento.set({ key, value, ttl: TTL_MS });
  await bentoRaw.set({ key, value, ttl: TTL_MS });
  await cm.set(key, value, TTL_MS);
  // Every one must answer the value, from L1 (checked below with Redis' GET counter).
  for (const [name, got] of [
    ['ours', await ours.get<Product>(key)],
    ['bentocache', await bento.get<Product>({ key })],
    ['bentocache serialize:false', await bentoRaw.get<Product>({ key })],
    ['cache-manager', await cm.get<Product>(key)],
  ] as const) {
    if (got?.id !== value.id) throw new Error(`${name}: hot key not readable`);
  }
  return { ours, bento, bentoRaw, cm };
}

function l1Configs(
  { ours, bento, bentoRaw, cm }: Awaited<ReturnType<typeof openL1>>,
  key: string,
  loader: () => Promise<Product>,
): Config[] {
  return [
    { id: 'ours-get', label: 'ours get', op: () => ours.get(key) },
    {
      id: 'ours-getOrSet',
      label: 'ours getOrSet',
      op: () => ours.getOrSet(key, loader, { ttl: TTL_MS }),
    },
    { id: 'bento-get', label: 'bentocache get', op: () => bento.get({ key }) },
    {
      id: 'bento-getOrSet',
      label: 'bentocache getOrSet',
      op: () => bento.getOrSet({ key, factory: loader, ttl: TTL_MS }),
    },
    { id: 'cm-get', label: 'cache-manager get', op: () => cm.get(key) },
    { id: 'cm-wrap', label: 'cache-manager wrap', op: () => cm.wrap(key, loader, TTL_MS) },
    {
      id: 'bento-noser-get',
      label: 'bentocache get (L1 serialize:false)',
      op: () => bentoRaw.get({ key }),
    },
    {
      id: 'bento-noser-getOrSet',
      label: 'bentocache getOrSet (L1 serialize:false)',
      op: () => bentoRaw.getOrSet({ key, factory: loader, ttl: TTL_MS }),
    },
  ];
}

function l1Ratios(s: ScenarioResult, settings: Settings) {
  return {
    getVsBento: ratioOf(s, 'ours-get', 'bento-get', settings, TARGETS.l1VsBento),
    getOrSetVsBento: ratioOf(s, 'ours-getOrSet', 'bento-getOrSet', settings, TARGETS.l1VsBento),
    getVsCacheManager: ratioOf(s, 'ours-get', 'cm-get', settings),
    getOrSetVsCacheManager: ratioOf(s, 'ours-getOrSet', 'cm-wrap', settings),
    getVsBentoNoSerialize: ratioOf(s, 'ours-get', 'bento-noser-get', settings),
    getOrSetVsBentoNoSerialize: ratioOf(s, 'ours-getOrSet', 'bento-noser-getOrSet', settings),
    getOrSetVsGet: ratioOf(s, 'ours-getOrSet', 'ours-get', settings),
  };
}

function printL1(
  s: ScenarioResult,
  configs: Config[],
  ratios: ReturnType<typeof l1Ratios>,
  redisGets: number,
  oursMisses: number,
): void {
  console.log(
    table(
      ['configuration', 'hits/s (median)'],
      configs.map((c) => [c.label, fmtOps(s.medians[c.id])]),
    ),
  );
  console.log(
    table(RATIO_HEADER, [
      ratioRow('ours get / bentocache get', ratios.getVsBento),
      ratioRow('ours getOrSet / bentocache getOrSet', ratios.getOrSetVsBento),
      ratioRow('ours get / cache-manager get', ratios.getVsCacheManager),
      ratioRow('ours getOrSet / cache-manager wrap', ratios.getOrSetVsCacheManager),
      ratioRow('ours get / bentocache get (serialize:false)', ratios.getVsBentoNoSerialize),
      ratioRow(
        'ours getOrSet / bentocache getOrSet (ser:false)',
        ratios.getOrSetVsBentoNoSerialize,
      ),
      ratioRow('ours getOrSet / ours get', ratios.getOrSetVsGet),
    ]),
  );
  console.log(
    `  Redis GETs during the section: ${redisGets}` +
      (redisGets === 0 ? ' (every hit was an L1 hit)' : ' (WARNING: some library read from L2)') +
      `; ours L1 misses: ${oursMisses}`,
  );
}

async function sectionL1(ctx: Context) {
  const { settings, setup } = ctx;
  console.log('\n== Hot-key L1 hits (one key already in every L1, one call in flight)');
  const key = 'product:1';
  const value = product(1, VALUE_BYTES);
  let loads = 0;
  const loader = async (): Promise<Product> => {
    loads += 1;
    return value;
  };
  const contenders = await openL1(ctx, key, value);
  const configs = l1Configs(contenders, key, loader);
  const getsBefore = await redisCommandCalls(setup, 'get');
  const l1Before = contenders.ours.stats().l1;
  const s = await runScenario('l1', 'hot-key L1 hits', configs, settings, { concurrency: 1 });
  const redisGets = (await redisCommandCalls(setup, 'get')) - getsBefore;
  const oursMisses = contenders.ours.stats().l1.misses - l1Before.misses;
  if (loads > 0) throw new Error(`hot-key section: a loader ran ${loads} time(s)`);
  const ratios = l1Ratios(s, settings);
  printL1(s, configs, ratios, redisGets, oursMisses);
  return { scenario: s, ratios, redisGets, oursL1Misses: oursMisses };
}

/** Our entry as stored in Redis (a Buffer), decoded as our L2 read path does. */
function decodeOurs(buf: Buffer | null, key: string): unknown {
  if (!buf) throw new Error(`missing ${key}`);
  return decodeEntry(buf, jsonSerializer, key.length).value;
}

/** Our entry read as a string: the header line split off, then the JSON after it. */
function decodeString(text: string | null): unknown {
  if (text === null) throw new Error('missing');
  const nl = text.indexOf('\n');
  const h = JSON.parse(text.slice(0, nl)) as { f: number };
  if (typeof h.f !== 'number') throw new Error('bad header');
  return JSON.parse(text.slice(nl + 1));
}

const timeoutError = (): Error => new Error('timeout');

/** Ours without L1, raw clients, and the 1024 values each reads, written once. */
async function openL2(ctx: Context) {
  const { url, base, state } = ctx;
  const prefix = `${base}l2:`;
  const ours = (await openOurs(state, url, prefix, { ttl: TTL_MS, l1: false })).cache;
  const raw = await openRaw(state, url);
  const rawPrefixed = await openRaw(state, url, { keyPrefix: prefix });
  const raw2 = await openRaw(state, url);
  const keys = Array.from({ length: L2_KEYS }, (_, k) => `product:${k}`);
  const plainKeys = keys.map((k) => `${base}raw:${k}`);
  const entryKeys = keys.map((k) => cacheKeys.entry(k));
  const fullEntryKeys = entryKeys.map((k) => prefix + k);
  for (let k = 0; k < L2_KEYS; k += 1) {
    const text = productText(k, VALUE_BYTES);
    await ours.set(keys[k], JSON.parse(text) as Product, { ttl: TTL_MS });
    await raw.set(plainKeys[k], text, 'PX', TTL_MS);
  }
  const sweeper = new DeadlineSweeper();
  state.closers.push({ what: 'sweeper', close: async () => sweeper.stop() });
  return { ours, raw, rawPrefixed, raw2, keys, plainKeys, entryKeys, fullEntryKeys, sweeper };
}

/**
 * The L2 ladder at `concurrency` in flight: raw reads, our read path one piece at a time,
 * two suggestions, and ours. No two calls in flight share a key.
 */
function l2Configs(
  readers: Awaited<ReturnType<typeof openL2>>,
  concurrency: number,
  loader: () => Promise<Product>,
): Config[] {
  const { ours, raw, rawPrefixed, raw2, keys, plainKeys, entryKeys, fullEntryKeys, sweeper } =
    readers;
  const key = (l: number, n: number): number => (l + concurrency * n) % L2_KEYS;
  const decode = (buf: Buffer | null, k: number): unknown => decodeOurs(buf, keys[k]);
  return [
    {
      id: 'raw-get',
      label: 'raw GET + JSON.parse',
      op: async (l, n) => JSON.parse((await raw.get(plainKeys[key(l, n)]))!) as unknown,
    },
    {
      id: 'raw-get-control',
      label: 'raw GET + JSON.parse, 2nd connection (noise)',
      op: async (l, n) => JSON.parse((await raw2.get(plainKeys[key(l, n)]))!) as unknown,
    },
    {
      id: 'raw-getBuffer',
      label: 'raw getBuffer + JSON.parse(buf.toString())',
      op: async (l, n) =>
        JSON.parse((await raw.getBuffer(plainKeys[key(l, n)]))!.toString()) as unknown,
    },
    {
      id: 'entry-get',
      label: '  our entry: GET (string) + header split',
      op: async (l, n) => decodeString(await raw.get(fullEntryKeys[key(l, n)])),
    },
    {
      id: 'entry-getBuffer',
      label: '  our entry: getBuffer + decodeEntry',
      op: async (l, n) => {
        const k = key(l, n);
        return decode(await raw.getBuffer(fullEntryKeys[k]), k);
      },
    },
    {
      id: 'entry-getBuffer-prefix',
      label: '  + ioredis keyPrefix',
      op: async (l, n) => {
        const k = key(l, n);
        return decode(await rawPrefixed.getBuffer(entryKeys[k]), k);
      },
    },
    {
      id: 'entry-getBuffer-prefix-timeout',
      label: '  + withTimeout (cache.timeout)',
      op: async (l, n) => {
        const k = key(l, n);
        const buf = await withTimeout(rawPrefixed.getBuffer(entryKeys[k]), 1000, timeoutError);
        return decode(buf, k);
      },
    },
    {
      id: 'entry-getBuffer-prefix-sweeper',
      label: '  + shared-sweeper timeout instead (suggestion)',
      op: async (l, n) => {
        const k = key(l, n);
        const buf = await sweeper.bound(rawPrefixed.getBuffer(entryKeys[k]), 1000, timeoutError);
        return decode(buf, k);
      },
    },
    {
      id: 'entry-lean',
      label: '  lean read: keyPrefix, GET string + split, sweeper',
      op: async (l, n) => {
        const k = key(l, n);
        return decodeString(await sweeper.bound(rawPrefixed.get(entryKeys[k]), 1000, timeoutError));
      },
    },
    { id: 'ours-get', label: 'ours get (l1: false)', op: (l, n) => ours.get(keys[key(l, n)]) },
    {
      id: 'ours-getOrSet',
      label: 'ours getOrSet (l1: false)',
      op: (l, n) => ours.getOrSet(keys[key(l, n)], loader, { ttl: TTL_MS }),
    },
  ];
}

function l2Ratios(s: ScenarioResult, settings: Settings) {
  return {
    getVsRaw: ratioOf(s, 'ours-get', 'raw-get', settings, TARGETS.l2VsRaw),
    getOrSetVsRaw: ratioOf(s, 'ours-getOrSet', 'raw-get', settings, TARGETS.l2VsRaw),
    control: ratioOf(s, 'raw-get-control', 'raw-get', settings),
    getBufferVsGet: ratioOf(s, 'raw-getBuffer', 'raw-get', settings),
    entryGetBufferVsEntryGet: ratioOf(s, 'entry-getBuffer', 'entry-get', settings),
    entryVsPlain: ratioOf(s, 'entry-getBuffer', 'raw-getBuffer', settings),
    keyPrefix: ratioOf(s, 'entry-getBuffer-prefix', 'entry-getBuffer', settings),
    timeout: ratioOf(s, 'entry-getBuffer-prefix-timeout', 'entry-getBuffer-prefix', settings),
    sweeper: ratioOf(s, 'entry-getBuffer-prefix-sweeper', 'entry-getBuffer-prefix', settings),
    serviceLayer: ratioOf(s, 'ours-get', 'entry-getBuffer-prefix-timeout', settings),
    leanVsRaw: ratioOf(s, 'entry-lean', 'raw-get', settings),
  };
}

type L2Ratios = ReturnType<typeof l2Ratios>;

function printL2(
  seq: ScenarioResult,
  conc: ScenarioResult,
  configs: Config[],
  ratios: { sequential: L2Ratios; inFlight64: L2Ratios },
): void {
  console.log(
    table(
      ['configuration', 'sequential hits/s', `${IN_FLIGHT} in flight hits/s`],
      configs.map((c) => [c.label, fmtOps(seq.medians[c.id]), fmtOps(conc.medians[c.id])]),
    ),
  );
  const rows = (label: string, r: L2Ratios): string[][] => [
    ratioRow(`${label}: ours get / raw GET+parse`, r.getVsRaw),
    ratioRow(`${label}: ours getOrSet / raw GET+parse`, r.getOrSetVsRaw),
    ratioRow(`${label}: noise: same config, 2nd connection`, r.control),
    ratioRow(`${label}: raw getBuffer / raw GET`, r.getBufferVsGet),
    ratioRow(`${label}: entry getBuffer / entry GET`, r.entryGetBufferVsEntryGet),
    ratioRow(`${label}: entry format (header) cost`, r.entryVsPlain),
    ratioRow(`${label}: ioredis keyPrefix cost`, r.keyPrefix),
    ratioRow(`${label}: withTimeout cost`, r.timeout),
    ratioRow(`${label}: shared-sweeper timeout cost`, r.sweeper),
    ratioRow(`${label}: CacheService layer cost`, r.serviceLayer),
    ratioRow(`${label}: lean read / raw GET+parse`, r.leanVsRaw),
  ];
  console.log(
    table(RATIO_HEADER, [...rows('seq', ratios.sequential), ...rows('c64', ratios.inFlight64)]),
  );
}

async function sectionL2(ctx: Context) {
  const { settings } = ctx;
  console.log(
    `\n== L2-only hits (ours with l1: false) vs raw ioredis, ${L2_KEYS} keys of ${VALUE_BYTES} B`,
  );
  const readers = await openL2(ctx);
  const ours = readers.ours;
  let loads = 0;
  const loader = async (): Promise<Product> => {
    loads += 1;
    return { id: -1 };
  };
  const build = (concurrency: number): Config[] => l2Configs(readers, concurrency, loader);
  // Sanity: every configuration reads the right value.
  for (const c of build(1)) {
    const v = (await c.op(0, 7)) as Product;
    if (v?.id !== 7) throw new Error(`${c.label}: read ${JSON.stringify(v)?.slice(0, 80)}`);
  }
  const errorsBefore = ours.stats().redisErrors;
  const seq = await runScenario('l2-seq', 'L2 hits sequential', build(1), settings, 'sequential');
  const conc = await runScenario(
    'l2-c64',
    `L2 hits ${IN_FLIGHT} in flight`,
    build(IN_FLIGHT),
    settings,
    { concurrency: IN_FLIGHT },
  );
  if (loads > 0) throw new Error(`L2 section: a loader ran ${loads} time(s)`);
  const stats = ours.stats();
  if (stats.redisErrors > errorsBefore || stats.l2.misses > 0) {
    throw new Error(`L2 section: ${stats.redisErrors} Redis errors, ${stats.l2.misses} misses`);
  }
  const ratios = { sequential: l2Ratios(seq, settings), inFlight64: l2Ratios(conc, settings) };
  printL2(seq, conc, build(1), ratios);
  return { sequential: seq, inFlight64: conc, ratios };
}

async function sectionFill(ctx: Context) {
  const { url, base, settings, state } = ctx;
  console.log(
    `\n== Miss path: getOrSet of a fresh key every call, instant loader, ${IN_FLIGHT} in flight`,
  );
  const ours = (await openOurs(state, url, `${base}fill:`, { ttl: FILL_TTL_MS })).cache;
  await waitForL1(ours, 'probe');
  const oursL2 = (await openOurs(state, url, `${base}fill-l2:`, { ttl: FILL_TTL_MS, l1: false }))
    .cache;
  const bento = openBento(state, url, `${base}bento-fill`);
  const raw = await openRaw(state, url);
  const value = JSON.parse(productText(1, VALUE_BYTES)) as Product;
  const loader = (): Product => value;
  let next = 0;
  const fresh = (lib: string): string => `${lib}:${(next += 1)}`;
  const configs: Config[] = [
    {
      id: 'ours',
      label: 'ours getOrSet (L1+L2)',
      op: () => ours.getOrSet(fresh('o'), loader, { ttl: FILL_TTL_MS }),
    },
    {
      id: 'ours-l2',
      label: 'ours getOrSet (l1: false)',
      op: () => oursL2.getOrSet(fresh('o2'), loader, { ttl: FILL_TTL_MS }),
    },
    {
      id: 'bento',
      label: 'bentocache getOrSet (L1+L2)',
      op: () => bento.getOrSet({ key: fresh('b'), factory: loader, ttl: FILL_TTL_MS }),
    },
    {
      id: 'naive',
      label: 'naive GET, then SET PX',
      op: async () => {
        const key = `${base}naive:${(next += 1)}`;
        const text = await raw.get(key);
        if (text !== null) return JSON.parse(text) as Product;
        const loaded = loader();
        await raw.set(key, JSON.stringify(loaded), 'PX', FILL_TTL_MS);
        return loaded;
      },
    },
  ];
  const scenario = await runScenario('fill', 'fill, 64 in flight', configs, settings, {
    concurrency: IN_FLIGHT,
  });
  const ratios = {
    vsBento: ratioOf(scenario, 'ours', 'bento', settings, FILL_TARGETS.vsBento),
    vsNaive: ratioOf(scenario, 'ours', 'naive', settings, FILL_TARGETS.vsNaive),
    l2VsNaive: ratioOf(scenario, 'ours-l2', 'naive', settings),
  };
  console.log(
    table(
      ['configuration', 'fills/s (median)'],
      configs.map((c) => [c.label, fmtOps(scenario.medians[c.id])]),
    ),
  );
  console.log(
    table(RATIO_HEADER, [
      ratioRow('ours L1+L2 / bentocache L1+L2', ratios.vsBento),
      ratioRow('ours L1+L2 / naive GET+SET', ratios.vsNaive),
      ratioRow('ours l1:false / naive GET+SET', ratios.l2VsNaive),
    ]),
  );
  return { scenario, ratios };
}

async function sectionPipeline(ctx: Context) {
  const { url, base, settings, state } = ctx;
  console.log(`\n== Pipelines of ${PIPELINE_DEPTH} GETs of ${VALUE_BYTES} B (issue item 13)`);
  const raw = await openRaw(state, url);
  const keys = Array.from({ length: PIPELINE_DEPTH }, (_, k) => `${base}pipe:${k}`);
  for (const [k, key] of keys.entries())
    await raw.set(key, productText(k, VALUE_BYTES), 'PX', TTL_MS);
  const configs: Config[] = [
    {
      id: 'get',
      label: 'pipeline GET + JSON.parse',
      weight: PIPELINE_DEPTH,
      op: async () => {
        const p = raw.pipeline();
        for (const key of keys) p.get(key);
        const replies = (await p.exec())!;
        for (const [err, text] of replies) {
          if (err) throw err;
          JSON.parse(text as string);
        }
      },
    },
    {
      id: 'getBuffer',
      label: 'pipeline getBuffer + JSON.parse(toString)',
      weight: PIPELINE_DEPTH,
      op: async () => {
        const p = raw.pipeline();
        for (const key of keys) p.getBuffer(key);
        const replies = (await p.exec())!;
        for (const [err, buf] of replies) {
          if (err) throw err;
          JSON.parse((buf as Buffer).toString());
        }
      },
    },
  ];
  const s = await runScenario('pipeline', 'pipelined GETs', configs, settings, { concurrency: 1 });
  const ratio = ratioOf(s, 'getBuffer', 'get', settings);
  console.log(
    table(
      ['configuration', 'GETs/s (median)'],
      configs.map((c) => [c.label, fmtOps(s.medians[c.id])]),
    ),
  );
  console.log(table(RATIO_HEADER, [ratioRow('getBuffer / GET', ratio)]));
  return { scenario: s, ratio };
}

interface StampedeRun {
  loads: number;
  loadsPerInstance: [number, number];
  /** Until all 1,000 callers have the value. */
  ms: number;
  /** Median caller. */
  p50Ms: number;
  ok: boolean;
}

type StampedeCall = (key: string, loader: () => Promise<Product>) => Promise<Product>;

/** Two instances of each library, sharing their Redis keys: `[instance A, instance B]`. */
async function openStampede(ctx: Context): Promise<Record<string, [StampedeCall, StampedeCall]>> {
  const { url, base, state } = ctx;
  const oursA = (await openOurs(state, url, `${base}st:`, { ttl: TTL_MS })).cache;
  const oursB = (await openOurs(state, url, `${base}st:`, { ttl: TTL_MS })).cache;
  await waitForL1(oursA, 'probe-a');
  await waitForL1(oursB, 'probe-b');
  const bentoA = openBento(state, url, `${base}bento-st`);
  const bentoB = openBento(state, url, `${base}bento-st`);
  const cmA = openCacheManager(state, url, `${base}cm-st`);
  const cmB = openCacheManager(state, url, `${base}cm-st`);
  return {
    ours: [
      (key, loader) => oursA.getOrSet(key, loader, { ttl: TTL_MS }),
      (key, loader) => oursB.getOrSet(key, loader, { ttl: TTL_MS }),
    ],
    bentocache: [
      (key, factory) => bentoA.getOrSet({ key, factory, ttl: TTL_MS }),
      (key, factory) => bentoB.getOrSet({ key, factory, ttl: TTL_MS }),
    ],
    'cache-manager': [
      (key, loader) => cmA.wrap(key, loader, TTL_MS),
      (key, loader) => cmB.wrap(key, loader, TTL_MS),
    ],
  };
}

/** One stampede: 500 calls on each instance at once, for a key none has. */
async function stampedeOnce(
  [a, b]: [StampedeCall, StampedeCall],
  key: string,
  id: number,
): Promise<StampedeRun> {
  const value = product(id, VALUE_BYTES);
  const loads: [number, number] = [0, 0];
  const loader = (i: 0 | 1) => async (): Promise<Product> => {
    loads[i] += 1;
    await sleep(LOADER_MS);
    return value;
  };
  const la = loader(0);
  const lb = loader(1);
  const done: number[] = [];
  const t0 = performance.now();
  const calls: Array<Promise<Product>> = [];
  for (let i = 0; i < STAMPEDE_CALLS_PER_INSTANCE; i += 1) {
    for (const call of [a(key, la), b(key, lb)]) {
      calls.push(
        call.then((v) => {
          done.push(performance.now() - t0);
          return v;
        }),
      );
    }
  }
  const results = await Promise.all(calls);
  const ms = performance.now() - t0;
  return {
    loads: loads[0] + loads[1],
    loadsPerInstance: loads,
    ms,
    p50Ms: median(done),
    ok: results.every((r) => r?.id === id),
  };
}

function summariseStampede(runs: Record<string, StampedeRun[]>) {
  return Object.fromEntries(
    Object.entries(runs).map(([lib, rs]) => [
      lib,
      {
        loadsMedian: median(rs.map((x) => x.loads)),
        loadsAll: rs.map((x) => x.loads),
        msMedian: median(rs.map((x) => x.ms)),
        msAll: rs.map((x) => Math.round(x.ms * 10) / 10),
        p50Median: median(rs.map((x) => x.p50Ms)),
        allOk: rs.every((x) => x.ok),
      },
    ]),
  );
}

function printStampede(summary: ReturnType<typeof summariseStampede>): void {
  console.log(
    table(
      [
        'library',
        'loader runs (median)',
        'per run',
        'all have value (ms, median)',
        'per run (ms)',
        'median caller (ms)',
        'values ok',
      ],
      Object.entries(summary).map(([lib, x]) => [
        lib,
        String(x.loadsMedian),
        x.loadsAll.join(' '),
        x.msMedian.toFixed(1),
        x.msAll.map((m) => m.toFixed(0)).join(' '),
        x.p50Median.toFixed(1),
        x.allOk ? 'yes' : 'NO',
      ]),
    ),
  );
}

async function sectionStampede(ctx: Context) {
  const { settings } = ctx;
  const total = 2 * STAMPEDE_CALLS_PER_INSTANCE;
  console.log(
    `\n== Stampede: ${total} getOrSet of one missing key over 2 instances, loader ${LOADER_MS} ms`,
  );
  const libs = await openStampede(ctx);
  const runs: Record<string, StampedeRun[]> = Object.fromEntries(
    Object.keys(libs).map((l) => [l, []]),
  );
  for (const lib of Object.keys(libs)) {
    await stampedeOnce(libs[lib], `stampede:${lib}:warm-up`, 0); // warm-up
  }
  for (let r = 0; r < settings.stampedeRuns; r += 1) {
    for (const lib of shuffle(Object.keys(libs))) {
      await sleep(50); // let the previous run's invalidations and bus messages settle
      runs[lib].push(await stampedeOnce(libs[lib], `stampede:${lib}:${r}`, 1000 + r));
    }
  }
  const summary = summariseStampede(runs);
  printStampede(summary);
  return { runs, summary };
}

interface ShapeCheck {
  shape: string;
  /** Mean encoded entry (header + JSON), bytes. */
  serialized: number;
  /** Mean `estimateSize`, bytes. */
  estimated: number;
  /** Mean heap growth per entry, bytes. */
  real: number;
  /** real / estimated: above 1, L1 exceeds its byte bound by that factor. */
  ratio: number;
}

/**
 * `estimateSize` against the heap, per kind of value, without Redis: entries built as L1 builds
 * them from an L2 read (`encodeEntry` then `decodeEntry`), in an lru-cache configured like ours.
 */
function checkEstimates(gcFull: () => number): ShapeCheck[] {
  const out: ShapeCheck[] = [];
  for (const [shape, make] of Object.entries(SHAPES)) {
    const l1 = new LRUCache<string, CacheEntry>({
      max: SHAPE_ENTRIES,
      maxSize: Number.MAX_SAFE_INTEGER,
      sizeCalculation: (entry) => entry.size,
    });
    let serialized = 0;
    const h0 = gcFull();
    for (let i = 0; i < SHAPE_ENTRIES; i += 1) {
      const key = `product:${i}`;
      const now = Date.now();
      const raw = encodeEntry(
        { freshUntil: now + TTL_MS, staleUntil: now + TTL_MS, loadMs: 3 },
        make(i),
      );
      serialized += raw.length;
      l1.set(key, decodeEntry(raw, jsonSerializer, key.length));
    }
    const real = (gcFull() - h0) / l1.size;
    const estimated = l1.calculatedSize / l1.size;
    out.push({ shape, serialized: serialized / l1.size, estimated, real, ratio: real / estimated });
  }
  return out;
}

/**
 * A full collection, then the heap in use. `gc()` without options: `gc({ type: 'major' })`
 * leaves up to ~150 B per key written behind here (measured), which would be charged to L1.
 */
function gcFull(): number {
  exposedGc?.();
  exposedGc?.();
  return process.memoryUsage().heapUsed;
}

/**
 * Writes `n` keys through `set`, `concurrency` at a time, with texts from `pool`; returns the
 * order in which the writes completed and how long they took, logging progress every 10 s.
 */
async function writeMemoryKeys(
  cache: CacheService,
  pool: string[],
  n: number,
  concurrency: number,
): Promise<{ order: Uint32Array; completed: number; insertMs: number }> {
  const order = new Uint32Array(n);
  let next = 0;
  let completed = 0;
  const t0 = performance.now();
  const worker = async (): Promise<void> => {
    for (;;) {
      const i = next++;
      if (i >= n) return;
      await cache.set(`m:${i}`, JSON.parse(pool[i % MEMORY_POOL]) as Product, { ttl: 2_000 });
      order[completed++] = i;
    }
  };
  let lastReport = t0;
  const progress = setInterval(() => {
    const now = performance.now();
    if (now - lastReport >= 10_000) {
      lastReport = now;
      console.log(
        `  ${completed.toLocaleString('en-US')} keys, ${((now - t0) / 1000).toFixed(0)} s`,
      );
    }
  }, 1_000);
  try {
    await Promise.all(Array.from({ length: concurrency }, worker));
  } finally {
    clearInterval(progress);
  }
  return { order, completed, insertMs: performance.now() - t0 };
}

interface MemoryResult {
  keys: number;
  maxBytes: number;
  maxEntries: number;
  insertSeconds: number;
  setsPerSec: number;
  redisErrors: number;
  heapBeforeBoot: number;
  heapBefore: number;
  heapAfter: number;
  growth: number;
  growthOverBound: number;
  l1Entries: number;
  l1EstimatedBytes: number;
  estimatedPerEntry: number;
  realPerEntry: number;
  meanPayloadBytes: number;
  meanKeyLength: number;
  lruPreallocatedHeap: number;
  redisUsedMemoryAfter: number;
  target: number;
  verdict: Verdict;
}

function printMemory(r: MemoryResult): void {
  console.log(
    table(
      ['figure', 'value'],
      [
        ['keys written', r.keys.toLocaleString('en-US')],
        ['time / rate', `${r.insertSeconds.toFixed(1)} s, ${fmtOps(r.setsPerSec)} sets/s`],
        ['heap after boot -> after writes', `${fmtMiB(r.heapBefore)} -> ${fmtMiB(r.heapAfter)}`],
        [
          'heap growth / bound',
          `${fmtMiB(r.growth)} / ${fmtMiB(r.maxBytes)} = ${r.growthOverBound.toFixed(3)}`,
        ],
        ['target', `<= ${TARGETS.memory} x bound: ${r.verdict}`],
        [
          'L1 entries / estimated bytes',
          `${r.l1Entries.toLocaleString('en-US')} / ${fmtMiB(r.l1EstimatedBytes)}`,
        ],
        [
          'per entry: estimated / real (growth)',
          `${r.estimatedPerEntry.toFixed(0)} B / ${r.realPerEntry.toFixed(0)} B`,
        ],
        ['mean JSON payload of entries in L1', `${r.meanPayloadBytes.toFixed(0)} B`],
        ['boot heap of the instance (LRU arrays incl.)', fmtMiB(r.lruPreallocatedHeap)],
        ['Redis used_memory after', fmtMiB(r.redisUsedMemoryAfter)],
        ['Redis errors during writes', String(r.redisErrors)],
      ],
    ),
  );
}

function printShapes(shapes: ShapeCheck[]): void {
  console.log(
    `\n  estimateSize vs heap by kind of value (${SHAPE_ENTRIES.toLocaleString('en-US')} entries each, as read from L2)`,
  );
  console.log(
    table(
      ['value', 'serialized B', 'estimate B', 'heap B', 'heap / estimate'],
      shapes.map((x) => [
        x.shape,
        x.serialized.toFixed(0),
        x.estimated.toFixed(0),
        x.real.toFixed(0),
        x.ratio.toFixed(2),
      ]),
    ),
  );
}

async function sectionMemory(ctx: Context) {
  const { url, base, settings, state, setup } = ctx;
  const maxBytes = settings.memoryMaxBytes;
  const n = settings.memoryKeys;
  // Never binds before the byte bound: every entry is estimated at 200 B or more.
  const maxEntries = Math.min(n, Math.max(10_000, Math.ceil(maxBytes / 200)));
  console.log(
    `\n== L1 memory bound: ${n.toLocaleString('en-US')} keys through set, ` +
      `l1 { maxBytes: ${fmtMiB(maxBytes)}, maxEntries: ${maxEntries.toLocaleString('en-US')} }`,
  );
  if (!exposedGc) console.log('  (no --expose-gc: heap figures include garbage)');
  const heapBeforeBoot = gcFull();
  const l1 = { maxBytes, maxEntries };
  const opened = await openOurs(
    state,
    url,
    `${base}mem:`,
    { ttl: 2_000, l1 },
    { autoPipelining: true },
  );
  const cache = opened.cache;
  await waitForL1(cache, 'probe');
  const heapAfterBoot = gcFull();
  // Texts from a pool (generating a product costs as much as writing it); every key still gets
  // an object of its own, parsed from its text as a database driver would hand it over.
  const pool = Array.from({ length: MEMORY_POOL }, (_, k) =>
    productText(k, 200 + Math.floor(prng(k * 7 + 3)() * 825)),
  ); // 200 B - 1 KB
  const before = gcFull();
  const { order, completed, insertMs } = await writeMemoryKeys(
    cache,
    pool,
    n,
    settings.memoryConcurrency,
  );
  const errors = cache.stats().redisErrors;
  await sleep(500); // our own invalidation messages still arriving
  const after = gcFull();
  const stats = cache.stats().l1;
  const growth = after - before;
  // Entries in L1: the most recently written `stats.size`.
  let payloadSum = 0;
  for (let k = completed - stats.size; k < completed; k += 1) {
    payloadSum += pool[order[k] % MEMORY_POOL].length;
  }
  const redisMemory = Number(
    /used_memory:(\d+)/.exec(String(await setup.info('memory')))?.[1] ?? 0,
  );
  const result: MemoryResult = {
    keys: n,
    maxBytes,
    maxEntries,
    insertSeconds: Math.round(insertMs) / 1000,
    setsPerSec: Math.round((n * 1000) / insertMs),
    redisErrors: errors,
    heapBeforeBoot,
    heapBefore: before,
    heapAfter: after,
    growth,
    growthOverBound: growth / maxBytes,
    l1Entries: stats.size,
    l1EstimatedBytes: stats.bytes,
    estimatedPerEntry: stats.size ? stats.bytes / stats.size : 0,
    realPerEntry: stats.size ? growth / stats.size : 0,
    meanPayloadBytes: stats.size ? payloadSum / stats.size : 0,
    meanKeyLength: `m:${Math.floor(n / 2)}`.length,
    lruPreallocatedHeap: heapAfterBoot - heapBeforeBoot,
    redisUsedMemoryAfter: redisMemory,
    target: TARGETS.memory,
    verdict: growth <= TARGETS.memory * maxBytes ? 'MET' : 'MISSED',
  };
  printMemory(result);
  await cache.clear();
  state.closers.splice(state.closers.indexOf(opened.closer), 1);
  await opened.app.close();

  const shapes = checkEstimates(gcFull);
  printShapes(shapes);
  return { ...result, shapes };
}

// ---------------------------------------------------------------------------------------------
// Run
// ---------------------------------------------------------------------------------------------

async function cleanup(state: State): Promise<void> {
  const steps = cleanupSteps();
  const bounded = (what: string, fn: () => Promise<unknown>) => () =>
    withTimeout(fn(), 10_000, () => new Error(`${what}: not closed within 10 s`));
  for (const c of state.closers.splice(0).reverse()) await steps.run(bounded(c.what, c.close));
  const setup = state.setup;
  state.setup = undefined;
  if (setup && state.pattern && setup.status === 'ready') {
    const pattern = state.pattern;
    await steps.run(bounded('delete keys', () => unlinkMatching(setup, pattern)));
  }
  if (setup) await steps.run(bounded('setup client', () => quit(setup)));
  await stopThrowawayServer(state, steps);
  steps.report();
}

async function readVersions(setup: Redis) {
  const redisVersion = /redis_version:(\S+)/.exec(String(await setup.info('server')))?.[1] ?? '?';
  return {
    node: process.version,
    ioredis: await packageVersion('ioredis'),
    bentocache: await packageVersion('bentocache'),
    'cache-manager': await packageVersion('cache-manager'),
    keyv: await packageVersion('keyv'),
    '@keyv/redis': await packageVersion('@keyv/redis'),
    'lru-cache': await packageVersion('lru-cache'),
    redis: redisVersion,
  };
}

/** What the sections measured (those that ran). */
interface Sections {
  l1?: Awaited<ReturnType<typeof sectionL1>>;
  l2?: Awaited<ReturnType<typeof sectionL2>>;
  fill?: Awaited<ReturnType<typeof sectionFill>>;
  pipeline?: Awaited<ReturnType<typeof sectionPipeline>>;
  stampede?: Awaited<ReturnType<typeof sectionStampede>>;
  memory?: Awaited<ReturnType<typeof sectionMemory>>;
}

async function runSections(ctx: Context): Promise<Sections> {
  const has = (s: Section): boolean => ctx.settings.only.includes(s);
  return {
    l1: has('l1') ? await sectionL1(ctx) : undefined,
    l2: has('l2') ? await sectionL2(ctx) : undefined,
    fill: has('fill') ? await sectionFill(ctx) : undefined,
    pipeline: has('pipeline') ? await sectionPipeline(ctx) : undefined,
    stampede: has('stampede') ? await sectionStampede(ctx) : undefined,
    memory: has('memory') ? await sectionMemory(ctx) : undefined,
  };
}

/** The summary table's rows, and the verdicts among them. */
function summary({ l1, l2, fill, pipeline, stampede, memory }: Sections) {
  const rows: string[][] = [];
  const verdicts: Verdict[] = [];
  const add = (label: string, figure: string, target: string, verdict: Verdict | ''): void => {
    rows.push([label, figure, target, verdict]);
    if (verdict) verdicts.push(verdict);
  };
  const pr = (r: Ratio): string => `${fmtRatio(r.paired)} (${fmtInterval(r.interval)})`;
  const addRatio = (label: string, r: Ratio, target = ''): void =>
    add(label, pr(r), target, target ? r.verdict! : '');
  if (l1) {
    addRatio('L1 hot key: ours get / bentocache get', l1.ratios.getVsBento, '>= 1.5');
    addRatio(
      'L1 hot key: ours getOrSet / bentocache getOrSet',
      l1.ratios.getOrSetVsBento,
      '>= 1.5',
    );
    addRatio('L1 hot key: ours get / cache-manager get', l1.ratios.getVsCacheManager);
    addRatio('L1 hot key: ours getOrSet / cache-manager wrap', l1.ratios.getOrSetVsCacheManager);
  }
  if (l2) {
    for (const [mode, r] of [
      ['sequential', l2.ratios.sequential],
      [`${IN_FLIGHT} in flight`, l2.ratios.inFlight64],
    ] as const) {
      addRatio(`L2 ${mode}: ours get / raw GET+parse`, r.getVsRaw, '>= 0.9');
      addRatio(`L2 ${mode}: ours getOrSet / raw GET+parse`, r.getOrSetVsRaw, '>= 0.9');
      addRatio(`L2 ${mode}: raw getBuffer / raw GET`, r.getBufferVsGet);
    }
  }
  if (fill) {
    addRatio('fill: ours L1+L2 / bentocache L1+L2', fill.ratios.vsBento, '>= 1.0');
    addRatio('fill: ours L1+L2 / naive GET+SET', fill.ratios.vsNaive, '>= 0.6');
    addRatio('fill: ours l1:false / naive GET+SET', fill.ratios.l2VsNaive);
  }
  if (pipeline) addRatio(`pipeline of ${PIPELINE_DEPTH}: getBuffer / GET`, pipeline.ratio);
  for (const [lib, x] of Object.entries(stampede?.summary ?? {})) {
    const ours = lib === 'ours';
    const met = x.loadsMedian === 1 && x.msMedian < 150 && x.allOk;
    add(
      `stampede ${lib}: loader runs, all served (ms)`,
      `${x.loadsMedian}, ${x.msMedian.toFixed(1)}`,
      ours ? '1, < 150' : '',
      ours ? (met ? 'MET' : 'MISSED') : '',
    );
  }
  if (memory) {
    add(
      'L1 memory: heap growth / maxBytes',
      memory.growthOverBound.toFixed(3),
      '<= 1.2',
      memory.verdict,
    );
  }
  return { rows, verdicts };
}

function benchJson(
  sections: Sections,
  verdicts: Verdict[],
  run: {
    versions: Awaited<ReturnType<typeof readVersions>>;
    settings: Settings;
    load: { start: number[]; end: number[] };
    pressure: { start?: number; end?: number };
    seconds: number;
  },
) {
  const { l1, l2, fill, pipeline, stampede, memory } = sections;
  return {
    bench: 'cache',
    date: new Date().toISOString(),
    versions: run.versions,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    loadavg: run.load,
    cpuPressureAvg60: { start: run.pressure.start ?? null, end: run.pressure.end ?? null },
    server: process.env.REDIS_URL ? 'REDIS_URL' : 'ephemeral',
    settings: {
      ...run.settings,
      valueBytes: VALUE_BYTES,
      inFlight: IN_FLIGHT,
      gc: Boolean(exposedGc),
    },
    l1: l1 && {
      medians: l1.scenario.medians,
      samples: l1.scenario.samples,
      ratios: l1.ratios,
      redisGets: l1.redisGets,
    },
    l2: l2 && {
      sequential: { medians: l2.sequential.medians, samples: l2.sequential.samples },
      inFlight64: { medians: l2.inFlight64.medians, samples: l2.inFlight64.samples },
      ratios: l2.ratios,
    },
    fill: fill && {
      medians: fill.scenario.medians,
      samples: fill.scenario.samples,
      ratios: fill.ratios,
    },
    pipeline: pipeline && { medians: pipeline.scenario.medians, ratio: pipeline.ratio },
    stampede: stampede?.summary,
    memory,
    verdict: verdicts.includes('MISSED')
      ? 'MISSED'
      : verdicts.includes('INCONCLUSIVE')
        ? 'INCONCLUSIVE'
        : 'MET',
    seconds: Math.round(run.seconds * 10) / 10,
    gcSeconds: Math.round(gcMs() / 100) / 10,
  };
}

async function run(settings: Settings, state: State): Promise<void> {
  const wall = performance.now();
  const loadStart = os.loadavg();
  const pressureStart = cpuPressure();
  const url = await redisUrlFor(state);
  const where = redactUrl(url);
  const runId = `${process.pid}-${Date.now().toString(36)}`;
  const base = `bench:cache:${runId}:`;
  state.pattern = `${base}*`;
  const setup = new Redis(url, { lazyConnect: true });
  setup.on('error', () => undefined);
  state.setup = setup;
  await setup.connect();
  const versions = await readVersions(setup);
  console.log(
    `cache benchmark: ${Object.entries(versions)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')} at ${where}; ` +
      `${os.cpus().length} CPUs, ${fmtLoad(loadStart, pressureStart)}`,
  );
  console.log(
    `sections ${settings.only.join(', ')}; 1 warm-up + ${settings.rounds} rounds, ${settings.sliceMs} ms ` +
      `per configuration per round (sequential L2: ${settings.seqMs} ms)` +
      (exposedGc ? '' : ' (run node with --expose-gc for GC between slices and heap figures)'),
  );
  const sections = await runSections({ url, base, settings, state, setup });
  const { rows, verdicts } = summary(sections);
  const loadEnd = os.loadavg();
  const pressureEnd = cpuPressure();
  const seconds = (performance.now() - wall) / 1000;
  console.log('\nSummary (paired ratio, 90% interval)');
  console.log(table(['figure', 'value', 'target', 'verdict'], rows));
  console.log(
    `${seconds.toFixed(1)} s (gc ${(gcMs() / 1000).toFixed(1)} s), ${fmtLoad(loadEnd, pressureEnd)}`,
  );
  const json = benchJson(sections, verdicts, {
    versions,
    settings,
    load: { start: loadStart, end: loadEnd },
    pressure: { start: pressureStart, end: pressureEnd },
    seconds,
  });
  console.log(`BENCH_JSON ${JSON.stringify(json)}`);
}

await runBenchmark('cache', {
  readSettings,
  state: { closers: [] },
  run: run,
  cleanup,
});
