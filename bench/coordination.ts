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

async function run(settings: Settings, state: State): Promise<void> {
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

  // --- 1. uncontended ----------------------------------------------------------------------
  const uncontended = [ours(UNCONTENDED_LIMIT), rsSemaphore(UNCONTENDED_LIMIT), ours(1), rsMutex];
  const opsPerSec = new Map<string, number[]>();
  let slice = 0;
  const uncontendedSlice = async (c: Contender, inFlight: number): Promise<number> => {
    collectGarbage('major');
    const id = slice++;
    const deadline = performance.now() + settings.sliceMs;
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
  };
  for (let round = -1; round < settings.rounds; round++) {
    for (const inFlight of IN_FLIGHT) {
      for (const c of shuffle(uncontended)) {
        const rate = await uncontendedSlice(c, inFlight);
        if (round >= 0) {
          const key = `${c.label}|${inFlight}`;
          opsPerSec.set(key, [...(opsPerSec.get(key) ?? []), rate]);
        }
      }
    }
  }
  const pairRatios = (a: string, b: string, suffix: string, source: Map<string, number[]>) => {
    const xs = source.get(`${a}|${suffix}`) ?? [];
    const ys = source.get(`${b}|${suffix}`) ?? [];
    return xs.map((x, i) => x / (ys[i] ?? NaN)).filter(Number.isFinite);
  };
  const rows1: string[][] = [];
  const json1: Record<string, unknown> = {};
  for (const inFlight of IN_FLIGHT) {
    for (const c of uncontended) {
      const xs = opsPerSec.get(`${c.label}|${inFlight}`) ?? [];
      json1[`${c.label} @${inFlight}`] = Math.round(median(xs));
      rows1.push([`${c.label}`, String(inFlight), fmt(median(xs))]);
    }
  }
  const r1 = {
    [`ours ${UNCONTENDED_LIMIT} / rs Semaphore @1`]: ratio(
      pairRatios(`ours ${UNCONTENDED_LIMIT}`, `rs Semaphore ${UNCONTENDED_LIMIT}`, '1', opsPerSec),
    ),
    [`ours ${UNCONTENDED_LIMIT} / rs Semaphore @16`]: ratio(
      pairRatios(`ours ${UNCONTENDED_LIMIT}`, `rs Semaphore ${UNCONTENDED_LIMIT}`, '16', opsPerSec),
    ),
    'ours 1 / rs Mutex @1': ratio(pairRatios('ours 1', 'rs Mutex', '1', opsPerSec)),
    'ours 1 / rs Mutex @16': ratio(pairRatios('ours 1', 'rs Mutex', '16', opsPerSec)),
  };
  console.log('\n1. Uncontended acquire + release per second (median over rounds)\n');
  console.log(table(['contender', 'in flight', 'ops/s'], rows1));
  console.log('\nratios (median of per-round ratios):', JSON.stringify(r1));

  // --- 2. contended ------------------------------------------------------------------------
  const contended: Array<{ c: Contender; limit: number }> = [
    { c: ours(1), limit: 1 },
    { c: rsMutex, limit: 1 },
    { c: rsSemaphore(1), limit: 1 },
    { c: ours(4), limit: 4 },
    { c: rsSemaphore(4), limit: 4 },
  ];
  const tput = new Map<string, number[]>();
  const handoffs = new Map<string, number[]>();
  const perSection = new Map<string, number[]>();
  const fairness = new Map<string, number[]>();
  let violations = 0;
  const contendedSlice = async (c: Contender, limit: number): Promise<void> => {
    collectGarbage('major');
    const name = `c${slice++}`;
    let active = 0;
    let sections = 0;
    let releasedAt: number | undefined;
    const gaps: number[] = [];
    const before = await commandsProcessed(stats);
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
          if (active > limit) violations += 1;
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
    const commands = (await commandsProcessed(stats)) - before - 1;
    const key = `${c.label}|${limit}`;
    tput.set(key, [...(tput.get(key) ?? []), sections / elapsed]);
    perSection.set(key, [...(perSection.get(key) ?? []), commands / Math.max(1, sections)]);
    fairness.set(key, [...(fairness.get(key) ?? []), jain(perWorker)]);
    if (limit === 1) handoffs.set(key, [...(handoffs.get(key) ?? []), ...gaps]);
  };
  for (let round = -1; round < settings.rounds; round++) {
    for (const { c, limit } of shuffle(contended)) {
      if (round < 0) {
        // Warm-up: same work, figures dropped.
        const keep = [tput, perSection, handoffs, fairness].map((m) => new Map(m));
        await contendedSlice(c, limit);
        [tput, perSection, handoffs, fairness].forEach((m, i) => {
          m.clear();
          for (const [k, v] of keep[i]) m.set(k, v);
        });
      } else {
        await contendedSlice(c, limit);
      }
    }
  }
  const rows2: string[][] = [];
  const json2: Record<string, unknown> = {};
  for (const { c, limit } of contended) {
    const key = `${c.label}|${limit}`;
    const gaps = handoffs.get(key) ?? [];
    const figures = {
      sectionsPerSec: Math.round(median(tput.get(key) ?? [])),
      commandsPerSection: Number(median(perSection.get(key) ?? []).toFixed(1)),
      handoffMedianMs: gaps.length ? Number(quantile(gaps, 0.5).toFixed(2)) : undefined,
      handoffP90Ms: gaps.length ? Number(quantile(gaps, 0.9).toFixed(2)) : undefined,
      // Sections spread over the workers (1 = even): a holder that takes a freed permit again
      // at once (barging) gets high throughput and a low index.
      jain: Number(median(fairness.get(key) ?? []).toFixed(3)),
    };
    json2[`${c.label} (limit ${limit})`] = figures;
    rows2.push([
      c.label,
      String(limit),
      fmt(figures.sectionsPerSec),
      figures.commandsPerSection.toFixed(1),
      figures.handoffMedianMs?.toFixed(2) ?? '-',
      figures.handoffP90Ms?.toFixed(2) ?? '-',
      figures.jain.toFixed(3),
    ]);
  }
  const r2 = {
    'ours 1 / rs Mutex': ratio(pairRatios('ours 1', 'rs Mutex', '1', tput)),
    'ours 1 / rs Semaphore 1': ratio(pairRatios('ours 1', 'rs Semaphore 1', '1', tput)),
    'ours 4 / rs Semaphore 4': ratio(pairRatios('ours 4', 'rs Semaphore 4', '4', tput)),
  };
  console.log(
    `\n2. Contended: ${settings.workers} workers on one name (median over rounds; hand-off over all)\n`,
  );
  console.log(
    table(
      ['contender', 'limit', 'sections/s', 'cmds/section', 'hand-off p50 ms', 'p90 ms', 'Jain'],
      rows2,
    ),
  );
  console.log('\nthroughput ratios (median of per-round ratios):', JSON.stringify(r2));
  console.log(`exclusion violations: ${violations}`);
  console.log(
    `BENCH_JSON ${JSON.stringify({ versions, settings, uncontended: json1, uncontendedRatios: r1, contended: json2, contendedRatios: r2, violations })}`,
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
