/**
 * Coordination benchmark: `LockService.semaphore` against `redis-semaphore` 5.8.0 (its
 * `Semaphore` and `Mutex`), on the same server, in one process and one run.
 *
 * Contenders, each with its own connection(s), all with a 10 s TTL and auto-renewal on:
 *  - `ours N`: `LockService.semaphore(name, { limit: N })` from a Nest application context of
 *    `RedisModule.forRoot({ url, keyPrefix })` (logger off, lock options at their defaults:
 *    waiting is woken by the release notification, with a fallback poll of 250 ms).
 *  - `rs Semaphore N`: `new Semaphore(client, name, N)` of redis-semaphore over
 *    `new Redis(url, { keyPrefix })`; one instance per acquisition (an instance is one holder).
 *    Waiting: its documented default, a retry every 10 ms.
 *  - `rs Mutex`: `new Mutex(client, name)`, the same; compared with `ours 1`.
 *
 * Scenarios:
 *  1. Uncontended acquire + release per second: strictly sequential, and 16 in flight (each loop
 *     on its own names, so nothing contends). Semaphores with limit 8; `ours 1` vs `rs Mutex`.
 *  2. Contended hand-off: `workers` loops on one name with limit 1 (`ours 1` vs `rs Mutex`, and
 *     vs `rs Semaphore 1`) and limit 4 (`ours 4` vs `rs Semaphore 4`); each loop: acquire, an
 *     exclusion check and one event-loop turn, release. Sections per second, the median and p90
 *     hand-off latency for limit 1 (from a `release()` call to the next holder's acquire
 *     resolving), Redis commands per section (`total_commands_processed`), and exclusion
 *     violations (must be 0).
 *
 * Method: contenders alternate within the run: each round runs every contender's slice in a
 * fresh random order; figures are medians over rounds, ratios are the median of the per-round
 * ratios (ours / peer; above 1 means ours does more per second). A full GC runs before every
 * slice when --expose-gc is given (scripts/bench.sh does).
 *
 * Server: `REDIS_URL` if set, else a throwaway redis-server on a free loopback port, stopped at
 * the end. Keys: `bench:coord:<run>:*`, deleted at the end.
 *
 * Usage: npm run bench -- coordination [--rounds N] [--slice-ms MS] [--workers N]
 *          [--timeout-ms MS]
 *   or env BENCH_ROUNDS (6), BENCH_SLICE_MS (400), BENCH_WORKERS (10), BENCH_TIMEOUT_MS (120000).
 *   The last line of output is `BENCH_JSON {...}` with every figure. About 45 s with defaults.
 */
import 'reflect-metadata';
import os from 'node:os';
import { performance } from 'node:perf_hooks';

import { Module, type INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Redis } from 'ioredis';
import { Mutex, Semaphore } from 'redis-semaphore';

import { LockService, RedisModule, type Permit } from '../src/index.js';

import {
  cleanupSteps,
  collectGarbage,
  cpuPressure,
  fmtLoad,
  median,
  packageVersion,
  quantile,
  readArgs,
  redisUrlFor,
  runBenchmark,
  stopThrowawayServer,
  table,
  unlinkMatching,
  type ThrowawayServer,
} from './harness.js';

const TTL = 10_000;
const WAIT = 10_000;
const IN_FLIGHT = [1, 16] as const;
const UNCONTENDED_LIMIT = 8;
/** Names per uncontended loop, cycled. */
const NAMES_PER_LOOP = 32;

interface Settings {
  rounds: number;
  sliceMs: number;
  workers: number;
  timeoutMs: number;
}

function readSettings(argv: string[]): Settings {
  const args = readArgs(argv, ['rounds', 'slice-ms', 'workers', 'timeout-ms']);
  return {
    rounds: args.num('rounds', 6, 1, 100),
    sliceMs: args.num('slice-ms', 400, 50, 10_000),
    workers: args.num('workers', 10, 2, 100),
    timeoutMs: args.num('timeout-ms', 120_000, 10_000, 3_600_000),
  };
}

interface State extends ThrowawayServer {
  app?: INestApplicationContext;
  clients: Redis[];
  prefix?: string;
}

/** One holder of something: what a contender's acquire returns. */
type Release = () => Promise<unknown>;

/** A contender: acquires a hold on `name` (waiting), returning how to release it. */
interface Contender {
  label: string;
  acquire(name: string): Promise<Release>;
}

function shuffle<T>(items: T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

async function commandsProcessed(client: Redis): Promise<number> {
  const info = await client.info('stats');
  return Number(/total_commands_processed:(\d+)/.exec(info)?.[1] ?? 0);
}

const fmt = (n: number, digits = 0): string =>
  Number.isFinite(n) ? n.toFixed(digits).replace(/\B(?=(\d{3})+(?!\d))/g, ',') : '-';
const ratio = (xs: number[]): string => (xs.length ? `${median(xs).toFixed(2)}x` : '-');

/** The module, the peers' clients and the contenders of one run. */
interface Bench {
  settings: Settings;
  /** A plain client that reads the server's command count. */
  stats: Redis;
  ours(limit: number): Contender;
  rsSemaphore(limit: number): Contender;
  rsMutex: Contender;
  /** Slices measured so far: each uses names of its own. */
  slices: number;
}

/** Per contender and setting (`label|suffix`), one figure per round. */
type Figures = Map<string, number[]>;

function addFigure(figures: Figures, key: string, ...values: number[]): void {
  figures.set(key, [...(figures.get(key) ?? []), ...values]);
}

/** Ratios a / b of the rounds both were measured in. */
function pairRatios(a: string, b: string, suffix: string, source: Figures): number[] {
  const xs = source.get(`${a}|${suffix}`) ?? [];
  const ys = source.get(`${b}|${suffix}`) ?? [];
  return xs.map((x, i) => x / (ys[i] ?? NaN)).filter(Number.isFinite);
}

async function openBench(settings: Settings, state: State): Promise<Bench> {
  const url = await redisUrlFor(state);
  const prefix = `bench:coord:${process.pid}-${Date.now()}:`;
  state.prefix = prefix;

  @Module({ imports: [RedisModule.forRoot({ url, keyPrefix: prefix })] })
  class BenchModule {}
  state.app = await NestFactory.createApplicationContext(BenchModule, { logger: false });
  const locks = state.app.get(LockService);
  const client = (): Redis => {
    const c = new Redis(url, { keyPrefix: prefix });
    state.clients.push(c);
    return c;
  };
  const stats = client();
  const rsClient = client();

  const ours = (limit: number): Contender => {
    const cache = new Map<string, ReturnType<LockService['semaphore']>>();
    return {
      label: `ours ${limit}`,
      async acquire(name) {
        let sem = cache.get(name);
        if (!sem) cache.set(name, (sem = locks.semaphore(`o:${name}`, { limit, ttl: TTL })));
        const permit: Permit = await sem.acquire({ wait: WAIT });
        return () => permit.release();
      },
    };
  };
  const rsSemaphore = (limit: number): Contender => ({
    label: `rs Semaphore ${limit}`,
    async acquire(name) {
      const sem = new Semaphore(rsClient, `s:${name}`, limit, {
        lockTimeout: TTL,
        acquireTimeout: WAIT,
      });
      await sem.acquire();
      return () => sem.release();
    },
  });
  const rsMutex: Contender = {
    label: 'rs Mutex',
    async acquire(name) {
      const mutex = new Mutex(rsClient, `m:${name}`, { lockTimeout: TTL, acquireTimeout: WAIT });
      await mutex.acquire();
      return () => mutex.release();
    },
  };
  return { settings, stats, ours, rsSemaphore, rsMutex, slices: 0 };
}

/** Acquire + release per second by `inFlight` loops, each on names of its own. */
async function uncontendedSlice(bench: Bench, c: Contender, inFlight: number): Promise<number> {
  collectGarbage('major');
  const id = bench.slices++;
  const deadline = performance.now() + bench.settings.sliceMs;
  let ops = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async (_, loop) => {
      for (let i = 0; performance.now() < deadline; i++) {
        const release = await c.acquire(`u${id}:${loop}:${i % NAMES_PER_LOOP}`);
        await release();
        ops += 1;
      }
    }),
  );
  return ops / ((performance.now() - start) / 1000);
}

/** Section 1: measures, prints and returns the uncontended figures and ratios. */
async function measureUncontended(
  bench: Bench,
): Promise<{ json: Record<string, unknown>; ratios: Record<string, string> }> {
  const uncontended = [
    bench.ours(UNCONTENDED_LIMIT),
    bench.rsSemaphore(UNCONTENDED_LIMIT),
    bench.ours(1),
    bench.rsMutex,
  ];
  const opsPerSec: Figures = new Map();
  for (let round = -1; round < bench.settings.rounds; round++) {
    for (const inFlight of IN_FLIGHT) {
      for (const c of shuffle(uncontended)) {
        const rate = await uncontendedSlice(bench, c, inFlight);
        if (round >= 0) addFigure(opsPerSec, `${c.label}|${inFlight}`, rate);
      }
    }
  }
  const rows: string[][] = [];
  const json: Record<string, unknown> = {};
  for (const inFlight of IN_FLIGHT) {
    for (const c of uncontended) {
      const xs = opsPerSec.get(`${c.label}|${inFlight}`) ?? [];
      json[`${c.label} @${inFlight}`] = Math.round(median(xs));
      rows.push([`${c.label}`, String(inFlight), fmt(median(xs))]);
    }
  }
  const ours = `ours ${UNCONTENDED_LIMIT}`;
  const theirs = `rs Semaphore ${UNCONTENDED_LIMIT}`;
  const ratios = {
    [`${ours} / rs Semaphore @1`]: ratio(pairRatios(ours, theirs, '1', opsPerSec)),
    [`${ours} / rs Semaphore @16`]: ratio(pairRatios(ours, theirs, '16', opsPerSec)),
    'ours 1 / rs Mutex @1': ratio(pairRatios('ours 1', 'rs Mutex', '1', opsPerSec)),
    'ours 1 / rs Mutex @16': ratio(pairRatios('ours 1', 'rs Mutex', '16', opsPerSec)),
  };
  console.log('\n1. Uncontended acquire + release per second (median over rounds)\n');
  console.log(table(['contender', 'in flight', 'ops/s'], rows));
  console.log('\nratios (median of per-round ratios):', JSON.stringify(ratios));
  return { json, ratios };
}

/** What the contended slices collect, per `label|limit`. */
interface ContendedFigures {
  tput: Figures;
  handoffs: Figures;
  perSection: Figures;
  fairness: Figures;
  violations: number;
}

/** `settings.workers` workers contend for one name for one slice; adds its figures. */
async function contendedSlice(
  bench: Bench,
  figures: ContendedFigures,
  c: Contender,
  limit: number,
): Promise<void> {
  const { settings } = bench;
  collectGarbage('major');
  const name = `c${bench.slices++}`;
  let active = 0;
  let sections = 0;
  let releasedAt: number | undefined;
  const gaps: number[] = [];
  const before = await commandsProcessed(bench.stats);
  const start = performance.now();
  const deadline = start + settings.sliceMs;
  const perWorker = new Array<number>(settings.workers).fill(0);
  await Promise.all(
    Array.from({ length: settings.workers }, async (_, worker) => {
      while (performance.now() < deadline) {
        const release = await c.acquire(name);
        const now = performance.now();
        if (limit === 1 && releasedAt !== undefined) gaps.push(now - releasedAt);
        active += 1;
        if (active > limit) figures.violations += 1;
        await new Promise<void>((resolve) => setImmediate(resolve));
        active -= 1;
        sections += 1;
        perWorker[worker] += 1;
        releasedAt = performance.now();
        await release();
      }
    }),
  );
  const elapsed = (performance.now() - start) / 1000;
  const commands = (await commandsProcessed(bench.stats)) - before - 1;
  const key = `${c.label}|${limit}`;
  addFigure(figures.tput, key, sections / elapsed);
  addFigure(figures.perSection, key, commands / Math.max(1, sections));
  addFigure(figures.fairness, key, jain(perWorker));
  if (limit === 1) addFigure(figures.handoffs, key, ...gaps);
}

/** Section 2: measures, prints and returns the contended figures, ratios and violations. */
async function measureContended(
  bench: Bench,
): Promise<{ json: Record<string, unknown>; ratios: Record<string, string>; violations: number }> {
  const contended: Array<{ c: Contender; limit: number }> = [
    { c: bench.ours(1), limit: 1 },
    { c: bench.rsMutex, limit: 1 },
    { c: bench.rsSemaphore(1), limit: 1 },
    { c: bench.ours(4), limit: 4 },
    { c: bench.rsSemaphore(4), limit: 4 },
  ];
  const figures: ContendedFigures = {
    tput: new Map(),
    handoffs: new Map(),
    perSection: new Map(),
    fairness: new Map(),
    violations: 0,
  };
  for (let round = -1; round < bench.settings.rounds; round++) {
    for (const { c, limit } of shuffle(contended)) {
      // The warm-up round does the same work into figures that are dropped.
      const into: ContendedFigures =
        round < 0
          ? {
              tput: new Map(),
              handoffs: new Map(),
              perSection: new Map(),
              fairness: new Map(),
              violations: 0,
            }
          : figures;
      await contendedSlice(bench, into, c, limit);
      if (round < 0) figures.violations += into.violations;
    }
  }
  const json = reportContended(bench, contended, figures);
  const ratios = {
    'ours 1 / rs Mutex': ratio(pairRatios('ours 1', 'rs Mutex', '1', figures.tput)),
    'ours 1 / rs Semaphore 1': ratio(pairRatios('ours 1', 'rs Semaphore 1', '1', figures.tput)),
    'ours 4 / rs Semaphore 4': ratio(pairRatios('ours 4', 'rs Semaphore 4', '4', figures.tput)),
  };
  console.log('\nthroughput ratios (median of per-round ratios):', JSON.stringify(ratios));
  console.log(`exclusion violations: ${figures.violations}`);
  return { json, ratios, violations: figures.violations };
}

/** Prints the contended table; returns its figures for the JSON line. */
function reportContended(
  bench: Bench,
  contended: Array<{ c: Contender; limit: number }>,
  figures: ContendedFigures,
): Record<string, unknown> {
  const rows: string[][] = [];
  const json: Record<string, unknown> = {};
  for (const { c, limit } of contended) {
    const key = `${c.label}|${limit}`;
    const gaps = figures.handoffs.get(key) ?? [];
    const row = {
      sectionsPerSec: Math.round(median(figures.tput.get(key) ?? [])),
      commandsPerSection: Number(median(figures.perSection.get(key) ?? []).toFixed(1)),
      handoffMedianMs: gaps.length ? Number(quantile(gaps, 0.5).toFixed(2)) : undefined,
      handoffP90Ms: gaps.length ? Number(quantile(gaps, 0.9).toFixed(2)) : undefined,
      // Sections spread over the workers (1 = even): a holder that takes a freed permit again
      // at once (barging) gets high throughput and a low index.
      jain: Number(median(figures.fairness.get(key) ?? []).toFixed(3)),
    };
    json[`${c.label} (limit ${limit})`] = row;
    rows.push([
      c.label,
      String(limit),
      fmt(row.sectionsPerSec),
      row.commandsPerSection.toFixed(1),
      row.handoffMedianMs?.toFixed(2) ?? '-',
      row.handoffP90Ms?.toFixed(2) ?? '-',
      row.jain.toFixed(3),
    ]);
  }
  console.log(
    `\n2. Contended: ${bench.settings.workers} workers on one name (median over rounds; hand-off over all)\n`,
  );
  console.log(
    table(
      ['contender', 'limit', 'sections/s', 'cmds/section', 'hand-off p50 ms', 'p90 ms', 'Jain'],
      rows,
    ),
  );
  return json;
}

async function run(settings: Settings, state: State): Promise<void> {
  const bench = await openBench(settings, state);
  const versions = {
    node: process.version,
    ioredis: await packageVersion('ioredis'),
    'redis-semaphore': await packageVersion('redis-semaphore'),
  };
  console.log(
    `coordination benchmark: ${JSON.stringify(versions)}, ${os.cpus().length} cpus, ` +
      `load ${fmtLoad(os.loadavg(), cpuPressure())}, rounds ${settings.rounds}, slice ${settings.sliceMs} ms, ` +
      `${settings.workers} contending workers`,
  );
  const uncontended = await measureUncontended(bench);
  const contended = await measureContended(bench);
  const { violations } = contended;
  console.log(
    `BENCH_JSON ${JSON.stringify({ versions, settings, uncontended: uncontended.json, uncontendedRatios: uncontended.ratios, contended: contended.json, contendedRatios: contended.ratios, violations })}`,
  );
  if (violations > 0) throw new Error(`${violations} exclusion violations`);
}

/** Jain's fairness index of per-worker counts: 1 when even, 1/n when one worker did all. */
function jain(counts: number[]): number {
  const sum = counts.reduce((a, b) => a + b, 0);
  const squares = counts.reduce((a, b) => a + b * b, 0);
  return squares === 0 ? 1 : (sum * sum) / (counts.length * squares);
}

async function cleanup(state: State): Promise<void> {
  const steps = cleanupSteps();
  const [first] = state.clients;
  if (first && state.prefix) {
    // The clients add the prefix to keys, not to SCAN patterns.
    const raw = new Redis(first.options.port ?? 6379, first.options.host ?? '127.0.0.1');
    state.clients.push(raw);
    await steps.run(() => unlinkMatching(raw, `${state.prefix}*`));
  }
  await steps.run(async () => state.app?.close());
  for (const c of state.clients) c.disconnect();
  await stopThrowawayServer(state, steps);
  steps.report();
}

await runBenchmark('coordination', { readSettings, state: { clients: [] }, run, cleanup });
