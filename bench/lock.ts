/**
 * Lock benchmark: `LockService` against `@sesamecare-oss/redlock` 1.4.0 and
 * `redlock` 5.0.0-beta.2 (both single-instance Redlock over one ioredis client), on the same
 * server, in one process and one run.
 *
 * Contenders, each with its own connection(s):
 *  - `ours`: `LockService` from a Nest application context of `RedisModule.forRoot({ url,
 *    keyPrefix })` (logger off, every lock option at its default: wait 10 s, fallback poll
 *    250 ms jittered). Waiting = `acquire(resource, { ttl, wait })`, woken by the release
 *    notification on the shared subscriber connection.
 *  - `sesame` (`@sesamecare-oss/redlock`) and `redlock5` (`redlock` 5 beta), each over
 *    `new Redis(url, { keyPrefix })` (same client options as ours), constructed with the
 *    settings their README documents: driftFactor 0.01, retryCount 10, retryDelay 200 ms,
 *    retryJitter 200 ms, automaticExtensionThreshold 500 ms. Waiting = their retry loop:
 *     - `defaults`: those settings (a retry every 0-400 ms, giving up after 10 retries);
 *     - `tuned`: retryDelay 10 ms, retryJitter 5 ms, retryCount 1000 (about the 10 s wait of
 *       ours), passed per call.
 *
 * Scenarios:
 *  1. Uncontended acquire + release per second, strictly sequential and 16 in flight (each loop
 *     on its own 64 resources, so nothing ever contends). Ours three ways: `acquire` +
 *     `release` (the headline, like the peers' `acquire` + `release`), `tryAcquire` + `release`,
 *     `withLock(resource, noop)`. Target: ours (`acquire`) >= 1.0x each peer.
 *  2. Hand-off latency: N + 1 workers (N = 1, 10) on one resource; the holder keeps the lock for
 *     `holdMs`, releases, and once someone else holds it, queues again. A hand-off is the time
 *     from the holder calling `release()` to the next holder's acquire resolving. Median and p99
 *     over `handoffs` hand-offs per contender and N (the first hand-off of each session is a
 *     warm-up and not counted). Target: ours <= 0.2x each peer's `defaults`.
 *  3. 20 workers on one resource for `tpMs` per contender per round, each looping: acquire, a
 *     tiny critical section (an exclusion check and one event-loop turn), release. Sections/s
 *     (median over rounds) and fairness: sections per worker over all rounds (min / max and
 *     Jain's index, 1 = perfectly even). Peers' give-ups (ExecutionError after retryCount
 *     retries; the worker simply asks again) are counted. Report only.
 * Every contended scenario counts exclusion violations (two holders at once): must be 0.
 *
 * Method. Other work on the machine varies over seconds, so contenders alternate within the
 * run: scenario 1 interleaves them in bursts of 16 awaited operations in a fresh random order
 * (sequential) and in A B ... B A slices (16 in flight), over `rounds` rounds after a warm-up
 * round; `paired` = median over rounds of ours/peer within the round, with a 90% bootstrap
 * interval. Scenario 2 runs `handoffRounds` rounds; in each, the fast contenders (ours and the
 * tuned peers) run one after the other in a random order, then the peers' `defaults` sessions
 * (whose hand-offs wait out 0-400 ms timers and use almost no CPU) run side by side, so that
 * the whole run stays near 100 s. Scenario 3 runs `tpRounds` rounds, contenders in a random
 * order each round. With --expose-gc, a full GC runs before every round and a young-generation
 * one before every slice.
 *
 * Server: `REDIS_URL` if set, else a throwaway redis-server on a free loopback port, stopped at
 * the end (also on error, SIGINT and SIGTERM). Keys: `bench:lock:<run>:*`, deleted at the end.
 *
 * Usage: npm run bench -- lock [--rounds N] [--slice-ms MS] [--seq-ms MS] [--handoffs N]
 *          [--handoff-rounds N] [--hold-ms MS] [--tp-ms MS] [--tp-rounds N] [--timeout-ms MS]
 *          [--check] [--uncontended-only]
 *   or env BENCH_ROUNDS, BENCH_SLICE_MS, BENCH_SEQ_MS, BENCH_HANDOFFS, BENCH_HANDOFF_ROUNDS,
 *   BENCH_HOLD_MS, BENCH_TP_MS, BENCH_TP_ROUNDS, BENCH_TIMEOUT_MS, BENCH_CHECK=1,
 *   BENCH_UNCONTENDED_ONLY=1.
 *   `--uncontended-only`: scenario 1 alone (about 15 s), for iterating on the per-lock cost.
 *   `--check`: exit code 1 when a target is MISSED. The last line of output is
 *   `BENCH_JSON {...}` with every figure.
 */
import 'reflect-metadata';
import { spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

import { Module, type INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import {
  Redlock as SesameRedlock,
  ExecutionError as SesameExecutionError,
} from '@sesamecare-oss/redlock';
import { Redis } from 'ioredis';

import type { StandaloneServer } from '../scripts/redis/servers.mjs';
import { redactUrl } from '../src/config/redact.js';
import { LockService, RedisModule } from '../src/index.js';

import {
  cleanupSteps,
  collectGarbage,
  cpuPressure,
  exposedGc,
  fmtLoad,
  median,
  packageVersion,
  quantile,
  readArgs,
  redisUrlFor,
  runBenchmark,
  sampler,
  stopThrowawayServer,
  table,
  unlinkMatching,
} from './harness.js';
import type { ContenderSpec } from './workers/lock-contender.js';

const UNCONTENDED_TARGET = 1.0;
const HANDOFF_TARGET = 0.2;
const IN_FLIGHT = [1, 16] as const;
const WAITERS = [1, 10] as const;
const TP_WORKERS = 20;
/** Resources per uncontended loop (cycled, so the fencing counters stay few). */
const RESOURCES_PER_LOOP = 64;
const SEQUENTIAL_BURST = 16;
const TTL = 10_000;
/** Ours: how long `acquire` may wait (the module's default `lock.wait`). */
const OURS_WAIT = 10_000;
const MIN_ROUNDS_FOR_MISS = 6;

/** The settings both peers' READMEs show when constructing a Redlock. */
const PEER_DOCUMENTED = {
  driftFactor: 0.01,
  retryCount: 10,
  retryDelay: 200,
  retryJitter: 200,
  automaticExtensionThreshold: 500,
} as const;
/** A small retry delay, with enough retries to wait about as long as ours (10 s). */
const PEER_TUNED = { retryDelay: 10, retryJitter: 5, retryCount: 1_000 } as const;

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

interface Settings {
  rounds: number;
  sliceMs: number;
  seqMs: number;
  handoffs: number;
  handoffRounds: number;
  holdMs: number;
  tpMs: number;
  tpRounds: number;
  timeoutMs: number;
  check: boolean;
  /** Run scenario 1 only (a quick check of the uncontended figures). */
  uncontendedOnly: boolean;
  /** Run scenario 4 only: `procs` processes contending for one resource. */
  processes: boolean;
  procs: number;
  sections: number;
  /** Bound on one process session's run (after its workers started), in ms. */
  procSessionMs: number;
}

function readSettings(argv: string[]): Settings {
  const args = readArgs(
    argv,
    [
      'rounds',
      'slice-ms',
      'seq-ms',
      'handoffs',
      'handoff-rounds',
      'hold-ms',
      'tp-ms',
      'tp-rounds',
      'timeout-ms',
      'procs',
      'sections',
      'proc-session-ms',
    ],
    ['check', 'uncontended-only', 'processes'],
  );
  return {
    rounds: args.num('rounds', 10, 1, 1_000),
    sliceMs: args.num('slice-ms', 100, 10, 10_000),
    seqMs: args.num('seq-ms', 30, 5, 10_000),
    handoffs: args.num('handoffs', 200, 10, 100_000),
    handoffRounds: args.num('handoff-rounds', 4, 1, 100),
    holdMs: args.num('hold-ms', 2, 0, 10_000),
    tpMs: args.num('tp-ms', 1_500, 100, 60_000),
    tpRounds: args.num('tp-rounds', 3, 1, 100),
    // Three process sessions may each take PROC_READY_MS to start plus their run.
    timeoutMs: args.num('timeout-ms', args.on('processes') ? 900_000 : 300_000, 10_000, 3_600_000),
    check: args.on('check'),
    uncontendedOnly: args.on('uncontended-only'),
    processes: args.on('processes'),
    procs: args.num('procs', 20, 2, 64),
    sections: args.num('sections', 1_000, 20, 100_000),
    procSessionMs: args.num('proc-session-ms', 60_000, 1_000, 600_000),
  };
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

/** Seeded, so that runs shuffle and resample alike. */
// sampler's functions are closures over the seeded state: they do not use `this`.
// eslint-disable-next-line @typescript-eslint/unbound-method -- see above
const { shuffle, medianInterval } = sampler(0x1b873593);

/** Jain's fairness index: 1 when every worker got the same share, 1/n when one got all. */
function jain(counts: number[]): number {
  const sum = counts.reduce((a, b) => a + b, 0);
  const squares = counts.reduce((a, b) => a + b * b, 0);
  return squares === 0 ? NaN : (sum * sum) / (counts.length * squares);
}

const epochNow = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

// ---------------------------------------------------------------------------------------------
// Contenders
// ---------------------------------------------------------------------------------------------

/** A held lock, whoever issued it. */
interface Held {
  release(): Promise<unknown>;
}

/** The part of both Redlock classes this benchmark uses. */
interface PeerRedlock {
  acquire(
    resources: string[],
    duration: number,
    settings?: Partial<Record<string, number>>,
  ): Promise<Held>;
  on(event: 'error', listener: (err: unknown) => void): unknown;
}

type Lib = 'ours' | 'sesame' | 'redlock5';

/** Waits for the lock the contender's way; a peer's give-up is a `GaveUp`. */
interface Contender {
  id: string;
  label: string;
  lib: Lib;
  /** `signal` stops the wait (ours only: the peers' retry loops cannot be interrupted). */
  acquire(resource: string, signal: AbortSignal): Promise<Held>;
}

/** A peer's retry loop ran out (ExecutionError): the caller may simply ask again. */
class GaveUp extends Error {}

function oursContender(locks: LockService): Contender {
  return {
    id: 'ours',
    label: 'ours (acquire, woken on release)',
    lib: 'ours',
    acquire: (resource, signal) => locks.acquire(resource, { ttl: TTL, wait: OURS_WAIT, signal }),
  };
}

function peerContender(
  lib: Exclude<Lib, 'ours'>,
  redlock: PeerRedlock,
  isExecutionError: (err: unknown) => boolean,
  tuned: boolean,
): Contender {
  const settings = tuned ? PEER_TUNED : undefined;
  const name = lib === 'sesame' ? '@sesamecare-oss/redlock' : 'redlock 5 beta';
  return {
    id: `${lib}-${tuned ? 'tuned' : 'defaults'}`,
    label: tuned
      ? `${name} tuned (retry ${PEER_TUNED.retryDelay}±${PEER_TUNED.retryJitter} ms)`
      : `${name} defaults (retry ${PEER_DOCUMENTED.retryDelay}±${PEER_DOCUMENTED.retryJitter} ms)`,
    lib,
    acquire: async (resource) => {
      try {
        return await redlock.acquire([resource], TTL, settings);
      } catch (err) {
        if (isExecutionError(err)) throw new GaveUp((err as Error).message);
        throw err;
      }
    },
  };
}

/** An uncontended operation: acquire + release of a free resource. */
interface UncontendedSpec {
  id: string;
  label: string;
  lib: Lib;
  op: (resource: string) => Promise<unknown>;
}

// ---------------------------------------------------------------------------------------------
// Scenario 1: uncontended
// ---------------------------------------------------------------------------------------------

interface Sample {
  ops: number;
  ms: number;
  opsPerSec: number;
  /** CPU time of this process (user + system, all threads) per operation, µs */
  cpuUsPerOp: number;
}

/** CPU time (user + system) of this process so far, µs. */
function cpuNow(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

/** Loop `loop` cycles through its own resources, so no two operations ever contend. */
function resourceCycler(prefix: string, loop: number): () => string {
  let n = 0;
  return () => `${prefix}:${loop}:${(n++ % RESOURCES_PER_LOOP).toString()}`;
}

async function measureConcurrent(
  spec: UncontendedSpec,
  concurrency: number,
  durationMs: number,
): Promise<Sample> {
  let ops = 0;
  const cpu0 = cpuNow();
  const start = performance.now();
  const deadline = start + durationMs;
  const loop = async (i: number): Promise<void> => {
    const next = resourceCycler(`u${concurrency}`, i);
    while (performance.now() < deadline) {
      await spec.op(next());
      ops += 1;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, i) => loop(i)));
  const ms = performance.now() - start;
  return { ops, ms, opsPerSec: (ops * 1000) / ms, cpuUsPerOp: (cpuNow() - cpu0) / ops };
}

/** Bursts of SEQUENTIAL_BURST awaited operations per contender, in a fresh random order. */
async function measureSequential(specs: UncontendedSpec[], durationMs: number): Promise<Sample[]> {
  const count = specs.map(() => 0);
  const time = specs.map(() => 0);
  const cpu = specs.map(() => 0);
  const next = specs.map(() => resourceCycler('u1', 0));
  const order = specs.map((_, i) => i);
  const deadline = performance.now() + durationMs;
  while (performance.now() < deadline) {
    shuffle(order);
    for (const i of order) {
      const c0 = cpuNow();
      const t0 = performance.now();
      for (let k = 0; k < SEQUENTIAL_BURST; k += 1) await specs[i].op(next[i]());
      time[i] += performance.now() - t0;
      cpu[i] += cpuNow() - c0;
      count[i] += SEQUENTIAL_BURST;
    }
  }
  return count.map((c, i) => ({
    ops: c,
    ms: time[i],
    opsPerSec: (c * 1000) / time[i],
    cpuUsPerOp: cpu[i] / c,
  }));
}

async function uncontendedRound(
  specs: UncontendedSpec[],
  concurrency: number,
  settings: Settings,
): Promise<Map<string, Sample>> {
  collectGarbage('major');
  const out = new Map<string, Sample>();
  if (concurrency === 1) {
    const samples = await measureSequential(specs, settings.seqMs * specs.length);
    specs.forEach((s, i) => out.set(s.id, samples[i]));
    return out;
  }
  // A B C ... C B A: each contender's two halves straddle the others' (cancels linear drift).
  const order = shuffle([...specs]);
  const halves = new Map<string, Sample[]>();
  for (const spec of [...order, ...[...order].reverse()]) {
    collectGarbage('minor');
    const sample = await measureConcurrent(spec, concurrency, settings.sliceMs / 2);
    halves.set(spec.id, [...(halves.get(spec.id) ?? []), sample]);
  }
  for (const [id, [a, b]] of halves) {
    const ops = a.ops + b.ops;
    const ms = a.ms + b.ms;
    const cpuUsPerOp = (a.cpuUsPerOp * a.ops + b.cpuUsPerOp * b.ops) / ops;
    out.set(id, { ops, ms, opsPerSec: (ops * 1000) / ms, cpuUsPerOp });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Scenario 2: hand-off latency
// ---------------------------------------------------------------------------------------------

interface HandoffResult {
  /** ms from the holder calling release() to the next holder's acquire resolving */
  latencies: number[];
  /** ms of the holder's release() call itself */
  releaseMs: number[];
  gaveUp: number;
  violations: number;
  /** hand-offs that went back to the worker that released */
  selfHandoffs: number;
}

/**
 * N + 1 workers on one resource until `count` hand-offs (plus one warm-up) were seen. A worker
 * that released queues again only once someone else holds the lock, so every hand-off goes to
 * one of N waiters that were already waiting.
 */
async function handoffSession(
  contender: Contender,
  resource: string,
  waiters: number,
  count: number,
  holdMs: number,
): Promise<HandoffResult> {
  const result: HandoffResult = {
    latencies: [],
    releaseMs: [],
    gaveUp: 0,
    violations: 0,
    selfHandoffs: 0,
  };
  // One controller per worker: a signal shared by 11 waiters would itself trip Node's
  // MaxListenersExceededWarning, which the run reports as a finding about the library.
  const stops = Array.from({ length: waiters + 1 }, () => new AbortController());
  let done = false;
  let holder: number | null = null;
  let lastReleaseAt: number | undefined;
  let lastReleaser = -1;
  let seen = 0;
  // Resolved at the next acquisition (or at the end): when a releaser may queue again.
  let acquired!: () => void;
  let nextAcquisition = new Promise<void>((r) => (acquired = r));

  const worker = async (i: number): Promise<void> => {
    while (!done) {
      let lock: Held;
      try {
        lock = await contender.acquire(resource, stops[i].signal);
      } catch (err) {
        if (done) return;
        if (err instanceof GaveUp) {
          result.gaveUp += 1;
          continue;
        }
        throw err;
      }
      const at = performance.now();
      if (done) {
        await lock.release();
        return;
      }
      if (holder !== null) result.violations += 1;
      holder = i;
      if (lastReleaseAt !== undefined) {
        seen += 1;
        if (seen > 1) result.latencies.push(at - lastReleaseAt); // the first is a warm-up
        if (lastReleaser === i) result.selfHandoffs += 1;
      }
      const wake = acquired;
      nextAcquisition = new Promise<void>((r) => (acquired = r));
      wake();
      if (result.latencies.length >= count) {
        done = true;
        holder = null;
        stops.forEach((s) => s.abort());
        acquired();
        await lock.release();
        return;
      }
      await sleep(holdMs); // the critical section
      const next = nextAcquisition;
      holder = null;
      lastReleaser = i;
      lastReleaseAt = performance.now();
      await lock.release();
      result.releaseMs.push(performance.now() - lastReleaseAt);
      await next; // someone else holds it now (or the session is over)
    }
  };
  await Promise.all(Array.from({ length: waiters + 1 }, (_, i) => worker(i)));
  return result;
}

// ---------------------------------------------------------------------------------------------
// Scenario 3: 20 contending workers
// ---------------------------------------------------------------------------------------------

interface ThroughputSample {
  sections: number[];
  ms: number;
  sectionsPerSec: number;
  gaveUp: number;
  violations: number;
  /** ms after the deadline until every worker stopped (peers drain their retry loops) */
  drainMs: number;
}

async function throughputSession(
  contender: Contender,
  resource: string,
  durationMs: number,
): Promise<ThroughputSample> {
  const sections = new Array<number>(TP_WORKERS).fill(0);
  const stops = sections.map(() => new AbortController());
  let gaveUp = 0;
  let violations = 0;
  let holder: number | null = null;
  const start = performance.now();
  const deadline = start + durationMs;
  const timer = setTimeout(() => stops.forEach((s) => s.abort()), durationMs);
  const worker = async (i: number): Promise<void> => {
    while (performance.now() < deadline) {
      let lock: Held;
      try {
        lock = await contender.acquire(resource, stops[i].signal);
      } catch (err) {
        // The stop timer may fire a fraction of a ms before performance.now() reaches the
        // deadline: an aborted wait is the end of the session, not a failure.
        if (stops[i].signal.aborted || performance.now() >= deadline) return;
        if (err instanceof GaveUp) {
          gaveUp += 1;
          continue;
        }
        throw err;
      }
      if (performance.now() >= deadline) {
        await lock.release();
        return;
      }
      if (holder !== null) violations += 1;
      holder = i;
      await turn(); // the critical section: one event-loop turn
      holder = null;
      sections[i] += 1;
      await lock.release();
    }
  };
  await Promise.all(sections.map((_, i) => worker(i)));
  clearTimeout(timer);
  const end = performance.now();
  const total = sections.reduce((a, b) => a + b, 0);
  return {
    sections,
    ms: durationMs,
    sectionsPerSec: (total * 1000) / durationMs,
    gaveUp,
    violations,
    drainMs: Math.max(0, end - deadline),
  };
}

// ---------------------------------------------------------------------------------------------
// Scenario 4: `procs` processes, one resource, `sections` critical sections
// ---------------------------------------------------------------------------------------------
// Each process runs one contender (ours: a Nest application context; peers: tuned Redlock over
// one ioredis client) in a loop: acquire, one event-loop turn, release; it prints one line per
// section with epoch timestamps (performance.timeOrigin + now(): one clock on one host) and,
// at the end, how many commands its clients sent (Redis.prototype.sendCommand, counted from
// "go"). The parent stops everyone once `sections` sections were reported and computes the
// figures over the first `sections` sections in order of acquisition.

/** How long one process session may take to start its workers, and then to run, in ms. */
const PROC_READY_MS = 180_000;
const PROC_PROGRESS_MS = 5_000;

interface ProcSection {
  proc: number;
  waitStart: number;
  acquiredAt: number;
  releaseAt: number;
}

interface ProcResult {
  lib: Lib;
  /** Processes that started and contended (fewer than asked when some failed to start). */
  processes: number;
  /** Sections measured (fewer than asked when the session ran out of time). */
  sections: number;
  complete: boolean;
  totalMs: number;
  commandsPerSection: number;
  handoffMedianMs: number;
  handoffP99Ms: number;
  rttMedianMs: number;
  fifoShare: number;
  jain: number;
  violations: number;
  /** The largest overlap counted as a violation, in ms (timestamps of two processes). */
  worstOverlapMs: number;
}

/** The contending processes of one session and what they report. */
interface ProcGroup {
  children: ChildProcess[];
  sections: ProcSection[];
  ready: number;
  /** Workers that exited before they were ready (a start-up failure, printed on stderr). */
  failed: number;
  done: Array<{ commands: number; sections: number }>;
  /** Resolves when `n` workers said `ready` / `done` (or exited). */
  whenReady: Promise<void>;
  whenDone: Promise<void>;
  /** Called once `settings.sections` sections were reported. */
  onEnough: () => void;
}

function spawnContenders(settings: Settings, spec: ContenderSpec): ProcGroup {
  const worker = fileURLToPath(new URL('./workers/lock-contender.js', import.meta.url));
  const group: ProcGroup = {
    children: [],
    sections: [],
    ready: 0,
    failed: 0,
    done: [],
    whenReady: Promise.resolve(),
    whenDone: Promise.resolve(),
    onEnough: () => undefined,
  };
  let ready: () => void = () => undefined;
  let done: () => void = () => undefined;
  group.whenReady = new Promise<void>((resolve) => (ready = resolve));
  group.whenDone = new Promise<void>((resolve) => (done = resolve));
  const checkReady = (): void => {
    if (group.ready + group.failed === settings.procs) ready();
  };
  let finished = 0;
  const finish = (): void => {
    finished += 1;
    if (finished === settings.procs) done();
  };
  for (let proc = 0; proc < settings.procs; proc++) {
    const child = spawn(process.execPath, [worker, JSON.stringify(spec)], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    group.children.push(child);
    let exited = false;
    let wasReady = false;
    child.on('exit', () => {
      if (!wasReady) {
        group.failed += 1;
        checkReady();
      }
      if (!exited) finish();
      exited = true;
    });
    child.stdin.on('error', () => undefined); // a worker that exited: nothing to tell it
    let buffer = '';
    child.stdout.on('data', (chunk: Buffer) => {
      buffer += chunk.toString();
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line === 'ready') {
          wasReady = true;
          group.ready += 1;
          checkReady();
        } else if (line.startsWith('s ')) {
          const [, w, a, r] = line.split(' ');
          group.sections.push({
            proc,
            waitStart: Number(w),
            acquiredAt: Number(a),
            releaseAt: Number(r),
          });
          if (group.sections.length === settings.sections) group.onEnough();
        } else if (line.startsWith('done ')) {
          const [, c, n] = line.split(' ');
          group.done.push({ commands: Number(c), sections: Number(n) });
        }
      }
    });
  }
  return group;
}

/** Resolves `true` when `promise` settles first, `false` after `ms`; prints progress meanwhile. */
async function within(
  promise: Promise<void>,
  ms: number,
  progress: () => string,
): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const ticker = setInterval(() => console.log(`  ${progress()}`), PROC_PROGRESS_MS);
  try {
    return await Promise.race([
      promise.then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms))),
    ]);
  } finally {
    clearTimeout(timer);
    clearInterval(ticker);
  }
}

/** Hand-offs, exclusion, FIFO share and fairness over the first sections of a session. */
function analyseSections(
  settings: Settings,
  group: ProcGroup,
): Omit<
  ProcResult,
  'lib' | 'processes' | 'complete' | 'totalMs' | 'commandsPerSection' | 'rttMedianMs'
> {
  const ordered = [...group.sections].sort((a, b) => a.acquiredAt - b.acquiredAt);
  const first = ordered.slice(0, settings.sections);
  const handoffs: number[] = [];
  let violations = 0;
  let worstOverlapMs = 0;
  let fifo = 0;
  let decisions = 0;
  for (let i = 1; i < first.length; i++) {
    const prev = first[i - 1];
    const cur = first[i];
    if (cur.acquiredAt < prev.releaseAt) {
      violations += 1;
      worstOverlapMs = Math.max(worstOverlapMs, prev.releaseAt - cur.acquiredAt);
    }
    handoffs.push(cur.acquiredAt - prev.releaseAt);
    // Who was waiting when the previous holder released: the next owner should be the one
    // that has waited longest.
    const waiting = ordered.filter(
      (s) => s.waitStart <= prev.releaseAt && s.acquiredAt >= cur.acquiredAt,
    );
    if (waiting.length > 1) {
      decisions += 1;
      const oldest = Math.min(...waiting.map((s) => s.waitStart));
      if (cur.waitStart === oldest) fifo += 1;
    }
  }
  const perProc = new Array<number>(settings.procs).fill(0);
  for (const s of first) perProc[s.proc] += 1;
  handoffs.sort((a, b) => a - b);
  return {
    sections: first.length,
    handoffMedianMs: quantile(handoffs, 0.5),
    handoffP99Ms: quantile(handoffs, 0.99),
    fifoShare: decisions ? fifo / decisions : 1,
    jain: jain(perProc),
    violations,
    worstOverlapMs,
  };
}

/**
 * One contender's session: `procs` worker processes, started and warmed (bounded by
 * `PROC_READY_MS`), then released together and stopped after `sections` sections (bounded by
 * `procSessionMs`); progress every few seconds. `null` when the workers did not start in time.
 */
async function procSession(
  settings: Settings,
  lib: Lib,
  url: string,
  base: string,
): Promise<ProcResult | null> {
  const group = spawnContenders(settings, {
    lib,
    url,
    keyPrefix: `${base}procs:${lib}:`,
    resource: 'contended',
    ttl: TTL,
    peerSettings: PEER_DOCUMENTED,
    peerRetry: PEER_TUNED,
    maxMs: PROC_READY_MS + settings.procSessionMs + 30_000,
  });
  const stopAll = (): void => {
    for (const c of group.children) if (c.exitCode === null) c.stdin!.write('stop\n');
  };
  group.onEnough = stopAll;
  try {
    const started = await within(
      group.whenReady,
      PROC_READY_MS,
      () => `${lib}: ${group.ready}/${settings.procs} workers ready, ${group.failed} failed`,
    );
    if (!started || group.ready < 2) {
      console.log(`  ${lib}: only ${group.ready}/${settings.procs} workers ready in time: skipped`);
      return null;
    }
    // Round trips measured during the session, under the same load, for the hand-off target.
    const probe = await openClient(url);
    const rtts: number[] = [];
    const goAt = epochNow();
    for (const c of group.children) c.stdin!.write('go\n');
    let running = true;
    const pinging = (async () => {
      while (running) {
        const t = performance.now();
        await probe.ping();
        rtts.push(performance.now() - t);
        await sleep(5);
      }
    })();
    const complete = await within(
      new Promise<void>((resolve) => {
        const onEnough = group.onEnough;
        group.onEnough = () => {
          onEnough();
          resolve();
        };
      }),
      settings.procSessionMs,
      () => `${lib}: ${group.sections.length}/${settings.sections} sections`,
    );
    if (!complete) stopAll();
    await within(group.whenDone, 30_000, () => `${lib}: ${group.done.length} workers done`);
    running = false;
    await pinging;
    await closeClient(probe);
    const figures = analyseSections(settings, group);
    const last = [...group.sections].sort((a, b) => a.acquiredAt - b.acquiredAt)[
      figures.sections - 1
    ];
    rtts.sort((a, b) => a - b);
    const commands = group.done.reduce((a, d) => a + d.commands, 0);
    const all = group.done.reduce((a, d) => a + d.sections, 0);
    return {
      lib,
      processes: group.ready,
      ...figures,
      complete,
      totalMs: last ? last.releaseAt - goAt : 0,
      commandsPerSection: commands / Math.max(1, all),
      rttMedianMs: quantile(rtts, 0.5),
    };
  } finally {
    for (const c of group.children) if (c.exitCode === null) c.kill();
  }
}

async function runProcesses(
  settings: Settings,
  url: string,
  base: string,
  peerLibs: Lib[],
): Promise<Verdict[]> {
  const libs: Lib[] = ['ours', ...peerLibs];
  const results: ProcResult[] = [];
  for (const lib of shuffle(libs)) {
    const started = performance.now();
    console.log(`session ${lib}: starting ${settings.procs} processes`);
    const result = await procSession(settings, lib, url, base);
    if (result) results.push(result);
    // Printed as it comes: on a loaded machine a later session may not finish in time.
    console.log(
      `session ${lib}: ${JSON.stringify(result)} (${((performance.now() - started) / 1000).toFixed(1)} s with start-up)`,
    );
  }
  results.sort((a, b) => libs.indexOf(a.lib) - libs.indexOf(b.lib));
  console.log(
    `\n4. ${settings.procs} processes, one resource, ${settings.sections} sections (peers tuned: ${JSON.stringify(PEER_TUNED)}); machine load ${fmtLoad(os.loadavg(), cpuPressure())}`,
  );
  console.log(
    table(
      [
        'contender',
        'procs',
        'sections',
        'total ms',
        'cmds/section',
        'hand-off median ms',
        'p99',
        'PING ms',
        'FIFO share',
        'Jain',
        'violations',
      ],
      results.map((r) => [
        r.lib,
        String(r.processes),
        `${r.sections}${r.complete ? '' : ' (timed out)'}`,
        fmtMs(r.totalMs),
        r.commandsPerSection.toFixed(2),
        fmtMs(r.handoffMedianMs),
        fmtMs(r.handoffP99Ms),
        fmtMs(r.rttMedianMs),
        r.fifoShare.toFixed(3),
        r.jain.toFixed(3),
        r.violations ? `${r.violations} (max ${fmtMs(r.worstOverlapMs)} ms)` : '0',
      ]),
    ),
  );
  const ours = results.find((r) => r.lib === 'ours');
  const verdicts: Verdict[] = [];
  if (!ours) {
    console.log('ours: no figures (its workers did not start in time)');
    return ['MISSED'];
  }
  for (const peer of results.filter((r) => r.lib !== 'ours')) {
    const time = ours.totalMs / peer.totalMs;
    const cmds = ours.commandsPerSection / peer.commandsPerSection;
    console.log(
      `ours / ${peer.lib}: total time ${time.toFixed(2)}x (target <= 1.0), commands per section ${cmds.toFixed(2)}x (target <= 1.0)`,
    );
    verdicts.push(time <= 1 && cmds <= 1 ? 'MET' : 'MISSED');
  }
  console.log(
    `ours: hand-off median ${fmtMs(ours.handoffMedianMs)} ms vs PING ${fmtMs(ours.rttMedianMs)} ms (target <= 1 round trip): ${ours.handoffMedianMs <= ours.rttMedianMs ? 'MET' : 'MISSED'}`,
  );
  console.log(
    `BENCH_JSON ${JSON.stringify({ bench: 'lock', processes: true, settings, results })}`,
  );
  return verdicts;
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

const fmtInt = (n: number): string => Math.round(n).toLocaleString('en-US');
const fmtMs = (n: number): string =>
  n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : n.toFixed(0);
const fmtRatio = (n: number): string => (n < 0.1 ? n.toFixed(4) : n.toFixed(3));
const fmtInterval = ([lo, hi]: [number, number]): string => `${lo.toFixed(2)}-${hi.toFixed(2)}`;

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

async function openClient(url: string, keyPrefix?: string): Promise<Redis> {
  const client = new Redis(url, { lazyConnect: true, ...(keyPrefix ? { keyPrefix } : {}) });
  client.on('error', () => undefined); // surfaced by the failing commands instead
  try {
    await client.connect();
  } catch (err) {
    client.disconnect();
    throw err;
  }
  return client;
}

async function closeClient(client: Redis): Promise<void> {
  if (client.status === 'ready') await client.quit().catch(() => client.disconnect());
  else client.disconnect();
}

/** Everything to close and remove, whatever happens. */
interface State {
  app?: INestApplicationContext;
  clients: Redis[];
  setup?: Redis;
  keyPattern?: string;
  server?: StandaloneServer;
  baseDir?: string;
}

async function cleanup(state: State): Promise<void> {
  const steps = cleanupSteps();
  const app = state.app;
  state.app = undefined;
  if (app) await steps.run(() => app.close());
  for (const c of state.clients.splice(0)) await steps.run(() => closeClient(c));
  const setup = state.setup;
  state.setup = undefined;
  if (setup && state.keyPattern && setup.status === 'ready' && !state.server) {
    const pattern = state.keyPattern;
    await steps.run(() => unlinkMatching(setup, pattern));
  }
  if (setup) await steps.run(() => closeClient(setup));
  await stopThrowawayServer(state, steps);
  steps.report();
}

// ---------------------------------------------------------------------------------------------
// Run
// ---------------------------------------------------------------------------------------------

type Verdict = 'MET' | 'MISSED' | 'INCONCLUSIVE';

interface Comparison {
  ours: number;
  peer: number;
  ratio: number;
  paired: number;
  pairedInterval: [number, number];
}

// ---------------------------------------------------------------------------------------------
// The run, in named sections: set-up, the three in-process scenarios (each measured, then
// reported), the summary. `--processes` runs scenario 4 instead (above).
// ---------------------------------------------------------------------------------------------

/** A peer library as the scenarios use it. */
interface Peer {
  lib: Exclude<Lib, 'ours'>;
  redlock: PeerRedlock;
  isErr: (e: unknown) => boolean;
}

/** What every section of one run shares. */
interface RunContext {
  settings: Settings;
  /** `performance.now()` at the start of the run. */
  wall: number;
  loadStart: number[];
  pressureStart: number | undefined;
  /** Process warnings seen during the run. */
  warnings: string[];
  url: string;
  /** Key prefix of the run: `bench:lock:<run>:`. */
  base: string;
  locks: LockService;
  peers: Peer[];
  versions: Record<string, string>;
  redlock5Status: string;
}

const peerLabel = (lib: Lib): string =>
  lib === 'sesame' ? '@sesamecare-oss/redlock' : lib === 'redlock5' ? 'redlock 5 beta' : 'ours';

/** Boots ours (a Nest application context) and the peers, and prints what runs against what. */
async function setUp(settings: Settings, state: State, warnings: string[]): Promise<RunContext> {
  const wall = performance.now();
  const loadStart = os.loadavg();
  const pressureStart = cpuPressure();
  const url = await redisUrlFor(state);
  const where = redactUrl(url);
  const runId = `${process.pid}-${Date.now().toString(36)}`;
  const base = `bench:lock:${runId}:`;
  state.keyPattern = `${base}*`;
  state.setup = await openClient(url);
  const redisVersion =
    /redis_version:(\S+)/.exec(String(await state.setup.info('server')))?.[1] ?? 'unknown';

  // ----- ours: booted the way an application does -----
  class BenchAppModule {}
  Module({ imports: [RedisModule.forRoot({ url, keyPrefix: `${base}ours:` })] })(BenchAppModule);
  state.app = await NestFactory.createApplicationContext(BenchAppModule, {
    logger: false,
    abortOnError: false,
  });
  const locks = state.app.get(LockService);

  // ----- peers: single-instance Redlock over one ioredis client each -----
  const sesameClient = await openClient(url, `${base}sesame:`);
  state.clients.push(sesameClient);
  const sesame = new SesameRedlock([sesameClient], PEER_DOCUMENTED) as unknown as PeerRedlock;
  const isSesameError = (err: unknown): boolean => err instanceof SesameExecutionError;

  let redlock5: PeerRedlock | undefined;
  let isRedlock5Error: (err: unknown) => boolean = () => false;
  let redlock5Status = 'ok';
  try {
    // Imported through a variable: redlock 5 beta's package.json `exports` has no types entry.
    const specifier = 'redlock';
    const mod = (await import(specifier)) as {
      default: new (clients: Redis[], settings: object) => PeerRedlock;
      ExecutionError: new (...args: never[]) => Error;
    };
    const client = await openClient(url, `${base}redlock5:`);
    state.clients.push(client);
    redlock5 = new mod.default([client], PEER_DOCUMENTED);
    isRedlock5Error = (err) => err instanceof mod.ExecutionError;
    // Does it work on ioredis 6? One acquire, a refused second one, a release.
    const probe = await redlock5.acquire(['probe'], TTL);
    const refused = await redlock5.acquire(['probe'], TTL, { retryCount: 0 }).then(
      async (l) => (await l.release(), false),
      (err: unknown) => isRedlock5Error(err),
    );
    await probe.release();
    const left = await client.exists('probe');
    if (!refused || left !== 0) throw new Error('mutual exclusion probe failed on ioredis 6');
  } catch (err) {
    redlock5Status = `does not work on ioredis 6: ${(err as Error).message}`;
    redlock5 = undefined;
  }

  const versions = {
    node: process.version,
    ioredis: await packageVersion('ioredis'),
    sesame: await packageVersion('@sesamecare-oss/redlock'),
    redlock5: await packageVersion('redlock'),
    redis: redisVersion,
  };
  console.log(
    `lock benchmark: node ${versions.node}, ioredis ${versions.ioredis}, @sesamecare-oss/redlock ${versions.sesame}, ` +
      `redlock ${versions.redlock5} (${redlock5Status}), redis ${redisVersion} at ${where}, ` +
      `${os.cpus().length} CPUs, ${fmtLoad(loadStart, pressureStart)}`,
  );
  console.log(
    `peers: README settings ${JSON.stringify(PEER_DOCUMENTED)}; tuned ${JSON.stringify(PEER_TUNED)}. ` +
      `ours: module defaults (wait ${OURS_WAIT} ms, fallback poll 250 ms). ttl ${TTL} ms everywhere.`,
  );

  const peers: Peer[] = [{ lib: 'sesame', redlock: sesame, isErr: isSesameError }];
  if (redlock5) peers.push({ lib: 'redlock5', redlock: redlock5, isErr: isRedlock5Error });
  return {
    settings,
    wall,
    loadStart,
    pressureStart,
    warnings,
    url,
    base,
    locks,
    peers,
    versions,
    redlock5Status,
  };
}

/** Scenario 1's samples, comparisons and verdict. */
interface UncontendedOutcome {
  specs: UncontendedSpec[];
  rates: (c: number, id: string) => number[];
  cpu: (c: number, id: string) => number[];
  comparisons: Record<number, Record<string, Record<string, Comparison>>>;
  verdict: Verdict;
}

/** Scenario 1: uncontended acquire + release, sequential and 16 in flight. */
async function measureUncontended(ctx: RunContext): Promise<UncontendedOutcome> {
  const { settings, locks, peers } = ctx;
  const uncontended: UncontendedSpec[] = [
    {
      id: 'ours-acquire',
      label: 'ours acquire + release',
      lib: 'ours',
      op: async (r) => {
        const lock = await locks.acquire(r, { ttl: TTL, wait: OURS_WAIT });
        await lock.release();
      },
    },
    {
      id: 'ours-try',
      label: 'ours tryAcquire + release',
      lib: 'ours',
      op: async (r) => {
        const lock = await locks.tryAcquire(r, { ttl: TTL });
        if (!lock) throw new Error(`uncontended resource ${r} was taken`);
        await lock.release();
      },
    },
    {
      id: 'ours-withlock',
      label: 'ours withLock(noop)',
      lib: 'ours',
      op: (r) => locks.withLock(r, () => undefined, { ttl: TTL, wait: OURS_WAIT }),
    },
    ...peers.map((p): UncontendedSpec => ({
      id: p.lib,
      label: `${peerLabel(p.lib)} acquire + release`,
      lib: p.lib,
      op: async (r) => {
        const lock = await p.redlock.acquire([r], TTL);
        await lock.release();
      },
    })),
  ];
  const uSamples: Record<string, Record<string, Sample[]>> = {};
  for (const concurrency of IN_FLIGHT) {
    const t0 = performance.now();
    await uncontendedRound(uncontended, concurrency, settings); // warm-up
    const samples: Record<string, Sample[]> = Object.fromEntries(
      uncontended.map((s) => [s.id, []]),
    );
    for (let r = 0; r < settings.rounds; r += 1) {
      for (const [id, s] of await uncontendedRound(uncontended, concurrency, settings)) {
        samples[id].push(s);
      }
    }
    uSamples[concurrency] = samples;
    console.log(
      `  uncontended, ${concurrency === 1 ? 'sequential' : `${concurrency} in flight`}: ` +
        uncontended
          .map((s) => `${s.id} ${fmtInt(median(samples[s.id].map((x) => x.opsPerSec)))}/s`)
          .join(', ') +
        ` (${((performance.now() - t0) / 1000).toFixed(1)} s)`,
    );
  }
  const uRates = (c: number, id: string): number[] => uSamples[c][id].map((s) => s.opsPerSec);
  const uCpu = (c: number, id: string): number[] => uSamples[c][id].map((s) => s.cpuUsPerOp);
  const uCompare = (c: number, a: string, b: string): Comparison => {
    const as = uRates(c, a);
    const bs = uRates(c, b);
    const ratios = as.map((x, i) => x / bs[i]);
    return {
      ours: median(as),
      peer: median(bs),
      ratio: median(as) / median(bs),
      paired: median(ratios),
      pairedInterval: medianInterval(ratios),
    };
  };
  const oursIds = ['ours-acquire', 'ours-try', 'ours-withlock'];
  const uComparisons = Object.fromEntries(
    IN_FLIGHT.map((c) => [
      c,
      Object.fromEntries(
        peers.map((p) => [
          p.lib,
          Object.fromEntries(oursIds.map((id) => [id, uCompare(c, id, p.lib)])),
        ]),
      ),
    ]),
  ) as Record<number, Record<string, Record<string, Comparison>>>;
  const headlineU = IN_FLIGHT.flatMap((c) =>
    peers.map((p) => uComparisons[c][p.lib]['ours-acquire']),
  );
  const uVerdict: Verdict = headlineU.every((h) => h.paired >= UNCONTENDED_TARGET)
    ? 'MET'
    : settings.rounds >= MIN_ROUNDS_FOR_MISS &&
        headlineU.some((h) => h.pairedInterval[1] < UNCONTENDED_TARGET)
      ? 'MISSED'
      : 'INCONCLUSIVE';
  return {
    specs: uncontended,
    rates: uRates,
    cpu: uCpu,
    comparisons: uComparisons,
    verdict: uVerdict,
  };
}

function reportUncontended(ctx: RunContext, u: UncontendedOutcome): void {
  const { peers } = ctx;
  const { specs: uncontended, rates: uRates, cpu: uCpu, comparisons: uComparisons } = u;
  const uVerdict = u.verdict;
  console.log('\n1. Uncontended acquire + release per second (median over rounds)');
  const uRows: string[][] = [];
  for (const c of IN_FLIGHT) {
    for (const s of uncontended) {
      uRows.push([
        `${c === 1 ? 'sequential' : `${c} in flight`}  ${s.label}`,
        fmtInt(median(uRates(c, s.id))),
        median(uCpu(c, s.id)).toFixed(0),
        ...peers.map((p) =>
          s.lib === 'ours'
            ? (() => {
                const cmp = uComparisons[c][p.lib][s.id];
                return `${fmtRatio(cmp.paired)} ${fmtInterval(cmp.pairedInterval)}`;
              })()
            : '',
        ),
      ]);
    }
  }
  console.log(
    table(
      [
        'scenario',
        'ops/s',
        'CPU µs/op',
        ...peers.map((p) => `ours / ${peerLabel(p.lib)} (paired, 90%)`),
      ],
      uRows,
    ),
  );
  console.log(
    `Target: ours (acquire + release) >= ${UNCONTENDED_TARGET.toFixed(1)}x each peer, sequential and 16 in flight: ${uVerdict}`,
  );
}

/** Median ops/s of each uncontended variant, per concurrency. */
function uncontendedMedians(u: UncontendedOutcome): Record<number, Record<string, number>> {
  return Object.fromEntries(
    IN_FLIGHT.map((c) => [
      c,
      Object.fromEntries(u.specs.map((s) => [s.id, Math.round(median(u.rates(c, s.id)))])),
    ]),
  );
}

/** `--uncontended-only`: scenario 1's table, summary and JSON. */
function finishUncontendedOnly(ctx: RunContext, u: UncontendedOutcome): Verdict[] {
  const { settings, versions } = ctx;
  reportUncontended(ctx, u);
  const pressureEnd = cpuPressure();
  console.log(
    `\nSummary (uncontended only): ${u.verdict}. ${((performance.now() - ctx.wall) / 1000).toFixed(1)} s, ${fmtLoad(os.loadavg(), pressureEnd)}`,
  );
  const medians = uncontendedMedians(u);
  const json = { bench: 'lock', uncontendedOnly: true, date: new Date().toISOString(), versions };
  console.log(
    `BENCH_JSON ${JSON.stringify({ ...json, settings, medians, comparisons: u.comparisons, verdict: u.verdict })}`,
  );
  return [u.verdict];
}

/** Scenario 2's latencies per contender and number of waiters. */
type Handoffs = Record<string, Record<number, HandoffResult>>;

/** Scenario 2: hand-off latency, `fast` contenders one after the other, `slow` side by side. */
async function measureHandoffs(
  settings: Settings,
  fast: Contender[],
  slow: Contender[],
): Promise<Handoffs> {
  const handoff: Record<string, Record<number, HandoffResult>> = {};
  const addHandoff = (c: Contender, n: number, r: HandoffResult): void => {
    const byN = (handoff[c.id] ??= {});
    const acc = (byN[n] ??= {
      latencies: [],
      releaseMs: [],
      gaveUp: 0,
      violations: 0,
      selfHandoffs: 0,
    });
    acc.latencies.push(...r.latencies);
    acc.releaseMs.push(...r.releaseMs);
    acc.gaveUp += r.gaveUp;
    acc.violations += r.violations;
    acc.selfHandoffs += r.selfHandoffs;
  };
  const perSession = Math.ceil(settings.handoffs / settings.handoffRounds);
  {
    const t0 = performance.now();
    // Warm-up: one short session of each fast contender.
    for (const c of fast) await handoffSession(c, `h:${c.id}:warm`, 1, 5, settings.holdMs);
    for (let r = 0; r < settings.handoffRounds; r += 1) {
      collectGarbage('major');
      const sessions = shuffle(fast.flatMap((c) => WAITERS.map((n) => ({ c, n }))));
      for (const { c, n } of sessions) {
        collectGarbage('minor');
        addHandoff(
          c,
          n,
          await handoffSession(c, `h:${c.id}:${r}:${n}`, n, perSession, settings.holdMs),
        );
      }
      // The peers' defaults wait out 0-400 ms timers: side by side, they hardly disturb each other.
      const parallel = slow.flatMap((c) => WAITERS.map((n) => ({ c, n })));
      const results = await Promise.all(
        parallel.map(({ c, n }) =>
          handoffSession(c, `h:${c.id}:${r}:${n}`, n, perSession, settings.holdMs),
        ),
      );
      parallel.forEach(({ c, n }, i) => addHandoff(c, n, results[i]));
    }
    console.log(`  hand-off: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }

  return handoff;
}

/** Scenario 3: `TP_WORKERS` workers on one resource, contenders in a fresh order each round. */
async function measureThroughput(
  settings: Settings,
  tpContenders: Contender[],
): Promise<Record<string, ThroughputSample[]>> {
  const tp: Record<string, ThroughputSample[]> = Object.fromEntries(
    tpContenders.map((c) => [c.id, []]),
  );
  {
    const t0 = performance.now();
    for (let r = 0; r < settings.tpRounds; r += 1) {
      collectGarbage('major');
      for (const c of shuffle([...tpContenders])) {
        collectGarbage('minor');
        tp[c.id].push(await throughputSession(c, `t:${c.id}:${r}`, settings.tpMs));
      }
    }
    console.log(`  20 workers: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }

  return tp;
}

/** Scenario 2's tables, ratios and verdict. */
function reportHandoffs(
  settings: Settings,
  fast: Contender[],
  slow: Contender[],
  handoff: Handoffs,
) {
  const perSession = Math.ceil(settings.handoffs / settings.handoffRounds);
  const hStats = (c: string, n: number) => {
    const h = handoff[c][n];
    return {
      count: h.latencies.length,
      median: median(h.latencies),
      p90: quantile(h.latencies, 0.9),
      p99: quantile(h.latencies, 0.99),
      max: Math.max(...h.latencies),
      releaseMedian: median(h.releaseMs),
      gaveUp: h.gaveUp,
      violations: h.violations,
      selfHandoffs: h.selfHandoffs,
    };
  };
  const handoffStats = Object.fromEntries(
    [...fast, ...slow].map((c) => [
      c.id,
      Object.fromEntries(WAITERS.map((n) => [n, hStats(c.id, n)])),
    ]),
  ) as Record<string, Record<number, ReturnType<typeof hStats>>>;
  console.log(
    `\n2. Hand-off latency, ms from release() to the next holder (hold ${settings.holdMs} ms, ${perSession * settings.handoffRounds} hand-offs each)`,
  );
  const hRows: string[][] = [];
  for (const n of WAITERS) {
    for (const c of [...fast, ...slow]) {
      const s = handoffStats[c.id][n];
      hRows.push([
        `N=${n}  ${c.label}`,
        fmtMs(s.median),
        fmtMs(s.p90),
        fmtMs(s.p99),
        fmtMs(s.max),
        fmtMs(s.releaseMedian),
        String(s.gaveUp),
        String(s.violations),
      ]);
    }
  }
  console.log(
    table(
      ['waiters  contender', 'median', 'p90', 'p99', 'max', 'release()', 'gave up', 'overlaps'],
      hRows,
    ),
  );
  const hRatios = Object.fromEntries(
    WAITERS.map((n) => [
      n,
      Object.fromEntries(
        [...fast, ...slow]
          .filter((c) => c.lib !== 'ours')
          .map((c) => {
            const o = handoffStats.ours[n];
            const p = handoffStats[c.id][n];
            return [c.id, { median: o.median / p.median, p99: o.p99 / p.p99 }];
          }),
      ),
    ]),
  ) as Record<number, Record<string, { median: number; p99: number }>>;
  console.log('\nours / peer (lower is better)');
  console.log(
    table(
      ['peer', ...WAITERS.flatMap((n) => [`N=${n} median`, `N=${n} p99`])],
      [...fast, ...slow]
        .filter((c) => c.lib !== 'ours')
        .map((c) => [
          c.label,
          ...WAITERS.flatMap((n) => [
            fmtRatio(hRatios[n][c.id].median),
            fmtRatio(hRatios[n][c.id].p99),
          ]),
        ]),
    ),
  );
  const hVerdict: Verdict = slow.every((c) =>
    WAITERS.every(
      (n) => hRatios[n][c.id].median <= HANDOFF_TARGET && hRatios[n][c.id].p99 <= HANDOFF_TARGET,
    ),
  )
    ? 'MET'
    : 'MISSED';
  console.log(
    `Target: ours <= ${HANDOFF_TARGET}x each peer's defaults (median and p99, N = ${WAITERS.join(' and ')}): ${hVerdict}`,
  );

  return { stats: handoffStats, ratios: hRatios, verdict: hVerdict };
}

/** Scenario 3's table and figures per contender. */
function reportThroughput(
  settings: Settings,
  tpContenders: Contender[],
  tp: Record<string, ThroughputSample[]>,
) {
  const tpStats = Object.fromEntries(
    tpContenders.map((c) => {
      const samples = tp[c.id];
      const perWorker = new Array<number>(TP_WORKERS).fill(0);
      for (const s of samples) s.sections.forEach((n, i) => (perWorker[i] += n));
      return [
        c.id,
        {
          sectionsPerSec: median(samples.map((s) => s.sectionsPerSec)),
          perRound: samples.map((s) => Math.round(s.sectionsPerSec)),
          perWorker,
          min: Math.min(...perWorker),
          max: Math.max(...perWorker),
          jain: jain(perWorker),
          gaveUp: samples.reduce((a, s) => a + s.gaveUp, 0),
          violations: samples.reduce((a, s) => a + s.violations, 0),
          drainMs: median(samples.map((s) => s.drainMs)),
        },
      ];
    }),
  ) as Record<
    string,
    {
      sectionsPerSec: number;
      perRound: number[];
      perWorker: number[];
      min: number;
      max: number;
      jain: number;
      gaveUp: number;
      violations: number;
      drainMs: number;
    }
  >;
  console.log(
    `\n3. ${TP_WORKERS} workers on one resource (${settings.tpRounds} x ${settings.tpMs} ms each): sections/s (median over rounds), sections per worker over all rounds`,
  );
  console.log(
    table(
      [
        'contender',
        'sections/s',
        'ours / this',
        'min/worker',
        'max/worker',
        'min/max',
        'Jain',
        'gave up',
        'overlaps',
      ],
      tpContenders.map((c) => {
        const s = tpStats[c.id];
        return [
          c.label,
          fmtInt(s.sectionsPerSec),
          c.lib === 'ours' ? '' : fmtRatio(tpStats.ours.sectionsPerSec / s.sectionsPerSec),
          String(s.min),
          String(s.max),
          s.max === 0 ? '-' : fmtRatio(s.min / s.max),
          s.jain.toFixed(3),
          String(s.gaveUp),
          String(s.violations),
        ];
      }),
    ),
  );

  return tpStats;
}

/** Exclusion violations, the summary line and the JSON of a full in-process run. */
function finishRun(
  ctx: RunContext,
  u: UncontendedOutcome,
  handoff: Handoffs,
  h: ReturnType<typeof reportHandoffs>,
  tpStats: ReturnType<typeof reportThroughput>,
): Verdict[] {
  const { settings, warnings, versions, wall, redlock5Status, loadStart, pressureStart } = ctx;
  const { specs: uncontended, rates: uRates, cpu: uCpu, comparisons: uComparisons } = u;
  const { stats: handoffStats, ratios: hRatios } = h;
  const uVerdict = u.verdict;
  const hVerdict = h.verdict;
  const violations =
    Object.values(handoff).reduce(
      (a, byN) => a + Object.values(byN).reduce((b, h) => b + h.violations, 0),
      0,
    ) + Object.values(tpStats).reduce((a, s) => a + s.violations, 0);
  const loadEnd = os.loadavg();
  const pressureEnd = cpuPressure();
  const seconds = (performance.now() - wall) / 1000;
  if (violations > 0)
    console.log(`\nEXCLUSION VIOLATED ${violations} time(s): two holders at once`);
  if (warnings.length > 0) {
    console.log(`\nprocess warnings during the run (${warnings.length}):`);
    for (const w of [...new Set(warnings)]) console.log(`  ${w}`);
  }
  console.log(
    `\nSummary: uncontended >= ${UNCONTENDED_TARGET}x: ${uVerdict}; hand-off <= ${HANDOFF_TARGET}x: ${hVerdict}; ` +
      `overlaps ${violations}. ${seconds.toFixed(1)} s, ${fmtLoad(loadEnd, pressureEnd)}`,
  );

  const r3 = (n: number): number => Math.round(n * 1000) / 1000;
  const json = {
    bench: 'lock',
    date: new Date().toISOString(),
    versions,
    redlock5: redlock5Status,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    loadavg: { start: loadStart, end: loadEnd },
    cpuPressureAvg60: { start: pressureStart ?? null, end: pressureEnd ?? null },
    server: process.env.REDIS_URL ? 'REDIS_URL' : 'ephemeral',
    settings: {
      ...settings,
      ttl: TTL,
      oursWait: OURS_WAIT,
      tpWorkers: TP_WORKERS,
      gc: Boolean(exposedGc),
    },
    peerSettings: { defaults: PEER_DOCUMENTED, tuned: PEER_TUNED },
    uncontended: {
      medians: uncontendedMedians(u),
      samples: Object.fromEntries(
        IN_FLIGHT.map((c) => [
          c,
          Object.fromEntries(uncontended.map((s) => [s.id, uRates(c, s.id).map(Math.round)])),
        ]),
      ),
      cpuUsPerOp: Object.fromEntries(
        IN_FLIGHT.map((c) => [
          c,
          Object.fromEntries(uncontended.map((s) => [s.id, Math.round(median(uCpu(c, s.id)))])),
        ]),
      ),
      comparisons: uComparisons,
      target: UNCONTENDED_TARGET,
      verdict: uVerdict,
    },
    handoff: {
      holdMs: settings.holdMs,
      stats: handoffStats,
      ratios: hRatios,
      latencies: Object.fromEntries(
        Object.entries(handoff).map(([id, byN]) => [
          id,
          Object.fromEntries(Object.entries(byN).map(([n, h]) => [n, h.latencies.map(r3)])),
        ]),
      ),
      target: HANDOFF_TARGET,
      verdict: hVerdict,
    },
    throughput: tpStats,
    violations,
    warnings: [...new Set(warnings)],
    seconds: r3(seconds),
  };
  console.log(`BENCH_JSON ${JSON.stringify(json)}`);
  return [uVerdict, hVerdict];
}

async function run(settings: Settings, state: State): Promise<Verdict[]> {
  const warnings: string[] = [];
  const onWarning = (w: Error): void => void warnings.push(`${w.name}: ${w.message}`);
  process.on('warning', onWarning);
  try {
    const ctx = await setUp(settings, state, warnings);
    const { peers } = ctx;
    if (settings.processes) {
      return await runProcesses(
        settings,
        ctx.url,
        ctx.base,
        peers.map((p) => p.lib),
      );
    }
    const u = await measureUncontended(ctx);
    if (settings.uncontendedOnly) return finishUncontendedOnly(ctx, u);
    const fast: Contender[] = [
      oursContender(ctx.locks),
      ...peers.map((p) => peerContender(p.lib, p.redlock, p.isErr, true)),
    ];
    const slow: Contender[] = peers.map((p) => peerContender(p.lib, p.redlock, p.isErr, false));
    const handoff = await measureHandoffs(settings, fast, slow);
    const tp = await measureThroughput(settings, [...fast, ...slow]);
    reportUncontended(ctx, u);
    const h = reportHandoffs(settings, fast, slow, handoff);
    const tpStats = reportThroughput(settings, [...fast, ...slow], tp);
    return finishRun(ctx, u, handoff, h, tpStats);
  } finally {
    process.off('warning', onWarning);
  }
}

await runBenchmark('lock', {
  readSettings,
  state: { clients: [] },
  run: (settings, state) =>
    run(settings, state).then((verdicts) =>
      settings.check && verdicts.includes('MISSED') ? 1 : 0,
    ),
  cleanup,
});
