/**
 * What every benchmark in bench/ shares: its command-line settings, the paired-rounds
 * measuring engine, finding the repository's Redis scripts, package versions and CPU pressure
 * for the report, a seeded PRNG, shuffles, medians with bootstrap intervals, quantiles and
 * tables, timed garbage collection, and a main() that cleans up on errors, signals, a closed
 * stdout or a watchdog, so no Redis or socket outlives a run.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

import type { Redis } from 'ioredis';

import type * as ServersLib from '../scripts/redis/servers.mjs';
import type { StandaloneServer } from '../scripts/redis/servers.mjs';

/**
 * A benchmark's settings: `--name value` or `--name=value` for each of `values`, a bare
 * `--name` for each of `switches` (parsed by `node:util` `parseArgs`, strict). Each falls back
 * to the environment variable `BENCH_<NAME>` (`--slice-ms`: `BENCH_SLICE_MS`; a switch is on
 * with `BENCH_<NAME>=1`). An unknown argument throws, listing the known ones.
 */
export function readArgs(argv: string[], values: string[], switches: string[] = []) {
  const options: Record<string, { type: 'string' | 'boolean' }> = {};
  for (const name of values) options[name] = { type: 'string' };
  for (const name of switches) options[name] = { type: 'boolean' };
  let parsed: Record<string, string | boolean | undefined>;
  try {
    parsed = parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    const known = [...values, ...switches].map((n) => `--${n}`).join(' ');
    throw new Error(`${(err as Error).message} (known: ${known})`, { cause: err });
  }
  const envName = (name: string): string => `BENCH_${name.toUpperCase().replace(/-/g, '_')}`;
  const text = (name: string): string | undefined => {
    const given = parsed[name];
    return typeof given === 'string' ? given : process.env[envName(name)];
  };
  return {
    text,
    /** A number in [min, max] (rounded), `def` when not given. */
    num(name: string, def: number, min: number, max: number): number {
      const raw = text(name);
      if (raw === undefined || raw === '') return def;
      const n = Number(raw);
      if (!Number.isFinite(n) || n < min || n > max) {
        throw new Error(
          `--${name} / ${envName(name)} must be a number in [${min}, ${max}], got ${raw}`,
        );
      }
      return Math.round(n);
    },
    on: (name: string): boolean => parsed[name] === true || process.env[envName(name)] === '1',
  };
}

/** One contender of `pairedRounds`: measures one round and returns its figure (e.g. ops/s). */
export interface RoundContender<N extends string = string> {
  name: N;
  measure: (round: number) => Promise<number>;
}

/** What `pairedRounds` measured: every contender's figures, round by round. */
export interface PairedRounds<N extends string = string> {
  /** Figures per contender, in round order. */
  samples: Record<N, number[]>;
  /** Per round, `a`'s figure over `b`'s (drift within a round hits both alike). */
  ratios(a: N, b: N): number[];
  /** The median figure of a contender. */
  median(name: N): number;
}

/**
 * The paired-rounds engine every benchmark shares: `warmup` rounds whose figures are dropped,
 * then `rounds` rounds in which each contender measures once, in an order that changes from
 * round to round (rotated, or shuffled with `random`) so that drift and warm-up hit every
 * contender alike; `between` runs before each measurement (a timed GC, say). Ratios are taken
 * within a round, then summarised by median.
 */
export async function pairedRounds<N extends string>(spec: {
  rounds: number;
  contenders: ReadonlyArray<RoundContender<N>>;
  /** Rounds measured first and left out of the figures. @defaultValue 0 */
  warmup?: number;
  /** Shuffle the order every round with this PRNG (default: rotate it by one each round). */
  random?: () => number;
  between?: () => void;
}): Promise<PairedRounds<N>> {
  const samples = Object.fromEntries(
    spec.contenders.map((c) => [c.name, [] as number[]]),
  ) as Record<N, number[]>;
  const warmup = spec.warmup ?? 0;
  for (let round = 0; round < warmup + spec.rounds; round += 1) {
    const order = [...spec.contenders];
    if (spec.random) {
      const random = spec.random;
      for (let i = order.length - 1; i > 0; i -= 1) {
        const j = Math.floor(random() * (i + 1));
        [order[i], order[j]] = [order[j], order[i]];
      }
    } else {
      for (let r = 0; r < round % order.length; r += 1) order.push(order.shift()!);
    }
    for (const contender of order) {
      spec.between?.();
      const figure = await contender.measure(round);
      if (round >= warmup) samples[contender.name].push(figure);
    }
  }
  return {
    samples,
    ratios: (a, b) => samples[a].map((value, i) => value / samples[b][i]),
    median: (name) => median(samples[name]),
  };
}

/**
 * Rounds that each measure every contender at once (`round` returns a figure per contender):
 * `warmup` rounds first, left out, then `rounds` rounds whose figures are collected per id.
 */
export async function collectRounds<K extends string>(spec: {
  ids: readonly K[];
  rounds: number;
  warmup?: number;
  round: (round: number) => Promise<Map<K, Sample>>;
}): Promise<Record<K, Sample[]>> {
  const samples = Object.fromEntries(spec.ids.map((id) => [id, [] as Sample[]])) as Record<
    K,
    Sample[]
  >;
  const warmup = spec.warmup ?? 0;
  for (let round = 0; round < warmup; round += 1) await spec.round(round);
  for (let round = 0; round < spec.rounds; round += 1) {
    for (const [id, sample] of await spec.round(round)) samples[id].push(sample);
  }
  return samples;
}

/** What one timed measurement did: operations, milliseconds, and their rate. */
export interface Sample {
  ops: number;
  ms: number;
  opsPerSec: number;
}

export const sampleOf = (ops: number, ms: number): Sample => ({
  ops,
  ms,
  opsPerSec: (ops * 1000) / ms,
});

/** Two measurements of the same thing (the halves of a slice) as one. */
export const combineSamples = (a: Sample, b: Sample): Sample =>
  sampleOf(a.ops + b.ops, a.ms + b.ms);

/**
 * Runs `op(loop, n)` in `concurrency` concurrent loops (`n`: the loop's own call count) until
 * `durationMs` has passed or `maxOps` calls were made. The clock is read every `burst` calls
 * (a very cheap call costs little more than reading it); every call, so that all loops stop
 * together, when more than one is in flight. Each call counts `weight` operations.
 */
export async function measureLoops(
  op: (loop: number, n: number) => Promise<unknown>,
  spec: {
    concurrency: number;
    durationMs: number;
    burst?: number;
    maxOps?: number;
    weight?: number;
  },
): Promise<Sample> {
  const burst = spec.burst ?? 1;
  const maxOps = spec.maxOps ?? Infinity;
  let ops = 0;
  const start = performance.now();
  const deadline = start + spec.durationMs;
  const loop = async (l: number): Promise<void> => {
    let n = 0;
    while (ops < maxOps && performance.now() < deadline) {
      for (let k = 0; k < burst; k += 1) await op(l, n++);
      ops += burst;
    }
  };
  await Promise.all(Array.from({ length: spec.concurrency }, (_, l) => loop(l)));
  return sampleOf(ops * (spec.weight ?? 1), performance.now() - start);
}

/**
 * Strictly sequential calls of several contenders, interleaved in bursts: per cycle a burst of
 * `burst` awaited calls of each in turn, in an order `shuffle` changes every cycle (so that no
 * contender always follows the same one), each burst timed, until `durationMs` has passed.
 * Returns, per contender, its calls over the summed time of its bursts: sequential throughput
 * measured in the same time window as every other contender's. Bursts rather than single
 * calls, because work a client leaves behind after its promise resolves (auto-pipelining
 * settles through setImmediate and process.nextTick) would otherwise be charged to the one
 * that runs next; at a burst boundary that is 1/burst of it.
 */
export async function interleavedBursts(
  ops: ReadonlyArray<(n: number) => Promise<unknown>>,
  spec: {
    durationMs: number;
    burst: number;
    shuffle: (order: number[]) => unknown;
    maxOps?: number;
  },
): Promise<Sample[]> {
  const count = new Array<number>(ops.length).fill(0);
  const time = new Array<number>(ops.length).fill(0);
  const order = ops.map((_, i) => i);
  const maxOps = spec.maxOps ?? Infinity;
  const deadline = performance.now() + spec.durationMs;
  let cycles = 0;
  while (cycles * spec.burst < maxOps && performance.now() < deadline) {
    spec.shuffle(order);
    for (const i of order) {
      const op = ops[i];
      let n = count[i];
      const t0 = performance.now();
      for (let k = 0; k < spec.burst; k += 1) await op(n++);
      time[i] += performance.now() - t0;
      count[i] = n;
    }
    cycles += 1;
  }
  return count.map((c, i) => sampleOf(c, time[i]));
}

/**
 * A palindromic round: each of `order` measures one half of its time, then each again in
 * reverse order (A B C C B A), which cancels drift linear over the round; with --expose-gc a
 * young-generation GC runs before every half, so none pays for the garbage of the one before.
 * Returns each contender's two halves combined.
 */
export async function palindromicRound<T>(
  order: readonly T[],
  measureHalf: (item: T) => Promise<Sample>,
): Promise<Map<T, Sample>> {
  const halves = new Map<T, Sample>();
  for (const item of [...order, ...[...order].reverse()]) {
    collectGarbage('minor');
    const sample = await measureHalf(item);
    const first = halves.get(item);
    halves.set(item, first ? combineSamples(first, sample) : sample);
  }
  return halves;
}

/** `scripts/redis/servers.mjs`, found by walking up from the compiled benchmark. */
export function locateServersLib(): string {
  const here = fileURLToPath(import.meta.url);
  let dir = path.dirname(here);
  for (;;) {
    const candidate = path.join(dir, 'scripts', 'redis', 'servers.mjs');
    if (fs.existsSync(candidate)) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`scripts/redis/servers.mjs not found above ${here}`);
    dir = parent;
  }
}

/** The installed version of a package, read from its own package.json. */
export async function packageVersion(name: string): Promise<string> {
  let dir = path.dirname(fileURLToPath(import.meta.resolve(name)));
  for (;;) {
    const file = path.join(dir, 'package.json');
    if (fs.existsSync(file)) {
      const pkg = JSON.parse(await fsp.readFile(file, 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === name) return (pkg.version ?? 'unknown').replace(/^v/, '');
    }
    const parent = path.dirname(dir);
    if (parent === dir) return 'unknown';
    dir = parent;
  }
}

/** Linux PSI: share of the last 60 s some task waited for a CPU (undefined elsewhere). */
export function cpuPressure(): number | undefined {
  try {
    const text = fs.readFileSync('/proc/pressure/cpu', 'utf8');
    const avg60 = /^some .*avg60=([\d.]+)/m.exec(text)?.[1];
    return avg60 === undefined ? undefined : Number(avg60);
  } catch {
    return undefined;
  }
}

/** The machine's load for a report: load averages and (on Linux) CPU pressure. */
export const fmtLoad = (load: number[], pressure: number | undefined): string =>
  `load ${load.map((l) => l.toFixed(2)).join(' ')}` +
  (pressure === undefined ? '' : `, cpu pressure ${pressure.toFixed(0)}%`);

/** Linear-interpolated quantile (`q` in 0..1); NaN for no values. */
export function quantile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

export const median = (values: number[]): number => quantile(values, 0.5);

/** mulberry32: a seeded PRNG, so that runs shuffle and resample alike. */
export function prng(seed: number): () => number {
  let s = seed | 0;
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const BOOTSTRAP_RESAMPLES = 1_000;

/** Shuffles and bootstrap intervals drawing on one seeded PRNG. */
export function sampler(seed: number) {
  const random = prng(seed);
  return {
    random,
    /** Fisher-Yates, in place; returns `items`. */
    shuffle<T>(items: T[]): T[] {
      for (let i = items.length - 1; i > 0; i -= 1) {
        const j = Math.floor(random() * (i + 1));
        [items[i], items[j]] = [items[j], items[i]];
      }
      return items;
    },
    /** 90% bootstrap interval of the median. */
    medianInterval(values: number[]): [number, number] {
      const medians: number[] = [];
      for (let b = 0; b < BOOTSTRAP_RESAMPLES; b += 1) {
        medians.push(median(values.map(() => values[Math.floor(random() * values.length)])));
      }
      return [quantile(medians, 0.05), quantile(medians, 0.95)];
    },
  };
}

/** Node's `gc`, when it runs with --expose-gc. */
export const exposedGc = (globalThis as { gc?: (options?: { type: 'major' | 'minor' }) => void })
  .gc;
let gcTotalMs = 0;

/** With --expose-gc: a full collection, or a young-generation one (about 1 ms); timed. */
export function collectGarbage(type: 'major' | 'minor'): void {
  if (!exposedGc) return;
  const t0 = performance.now();
  exposedGc({ type });
  gcTotalMs += performance.now() - t0;
}

/** Time spent in `collectGarbage` so far, in ms. */
export function gcMs(): number {
  return gcTotalMs;
}

/** The redis-server a run started (and its directory), recorded as soon as each exists. */
export interface ThrowawayServer {
  server?: StandaloneServer;
  baseDir?: string;
}

/**
 * `REDIS_URL`, or else the URL of a throwaway redis-server started on a free loopback port in
 * a temporary directory. Both are recorded in `holder` as they come into being, so a clean-up
 * triggered meanwhile (an error, a signal) still finds them: see `stopThrowawayServer`.
 */
export async function redisUrlFor(holder: ThrowawayServer): Promise<string> {
  const url = process.env.REDIS_URL;
  if (url) return url;
  const servers = (await import(pathToFileURL(locateServersLib()).href)) as typeof ServersLib;
  holder.baseDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'redis-bench-'));
  holder.server = await servers.startStandalone({ baseDir: holder.baseDir });
  return holder.server.url;
}

/** Clean-up steps: each runs even if an earlier one failed; `report` prints the failures. */
export function cleanupSteps() {
  const errors: unknown[] = [];
  return {
    async run(fn: () => Promise<unknown>): Promise<void> {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
      }
    },
    report(): void {
      for (const err of errors) console.error('cleanup:', err instanceof Error ? err.message : err);
    },
  };
}

/** Stops the server `redisUrlFor` started and removes its directory (nothing for REDIS_URL). */
export async function stopThrowawayServer(
  holder: ThrowawayServer,
  steps: ReturnType<typeof cleanupSteps>,
): Promise<void> {
  const { server, baseDir } = holder;
  holder.server = undefined;
  holder.baseDir = undefined;
  if (server) await steps.run(() => server.stop());
  if (baseDir) await steps.run(() => fsp.rm(baseDir, { recursive: true, force: true }));
}

/** Deletes every key matching `pattern` (SCAN + UNLINK): what a run wrote on a shared server. */
export async function unlinkMatching(client: Redis, pattern: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    if (keys.length > 0) await client.unlink(...keys);
    cursor = next;
  } while (cursor !== '0');
}

/** A plain-text table: first column left-aligned, the others right-aligned. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/**
 * Runs a benchmark: settings from argv (exit code 2 on bad ones), `run`, then `cleanup`, also
 * after SIGINT/SIGTERM, a closed stdout (`| head`) or `timeoutMs`. `run` may return an exit
 * code (e.g. 1 for a missed target under `--check`).
 */
export async function runBenchmark<S extends object, State>(
  name: string,
  spec: {
    readSettings: (argv: string[]) => S;
    state: State;
    run: (settings: S, state: State) => Promise<number | void>;
    cleanup: (state: State) => Promise<void>;
  },
): Promise<void> {
  let settings: S;
  try {
    settings = spec.readSettings(process.argv.slice(2));
  } catch (err) {
    console.error(`${name} benchmark: ${(err as Error).message}`);
    process.exitCode = 2;
    return;
  }
  let stopping = false;
  const stop = async (reason: string, code: number): Promise<void> => {
    if (stopping) return;
    stopping = true;
    console.error(`${name} benchmark: ${reason}; cleaning up`);
    await spec.cleanup(spec.state);
    process.exit(code);
  };
  const onSigint = (): void => void stop('interrupted', 130);
  const onSigterm = (): void => void stop('terminated', 143);
  // `| head` closing the pipe must not skip the clean-up.
  const onStdoutError = (err: NodeJS.ErrnoException): void =>
    void stop(`stdout: ${err.code ?? err.message}`, 1);
  process.once('SIGINT', onSigint);
  process.once('SIGTERM', onSigterm);
  process.stdout.on('error', onStdoutError);
  const { timeoutMs } = settings as { timeoutMs?: number };
  const watchdog =
    timeoutMs === undefined
      ? undefined
      : setTimeout(() => void stop(`did not finish within ${timeoutMs} ms`, 1), timeoutMs).unref();
  try {
    const code = await spec.run(settings, spec.state);
    if (typeof code === 'number' && code !== 0) process.exitCode = code;
  } catch (err) {
    // After a signal, the clean-up closing the connections is what made the run fail.
    if (!stopping) {
      console.error(
        `${name} benchmark failed:`,
        err instanceof Error ? (err.stack ?? err.message) : err,
      );
      process.exitCode = 1;
    }
  } finally {
    if (!stopping) {
      await spec.cleanup(spec.state);
      clearTimeout(watchdog);
      process.off('SIGINT', onSigint);
      process.off('SIGTERM', onSigterm);
      process.stdout.off('error', onStdoutError);
    }
  }
}
