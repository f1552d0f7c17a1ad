/**
 * Cache tracking benchmark: how soon Redis's client-side-caching invalidations reach L1 after
 * another client's write, and what they do to the L1 hit rate, in one process and one run.
 *
 * A minimal L1 (a `Map`) sits in front of the command connection of a `RedisConnection`, as in
 * test/e2e/cache-tracking.e2e-spec.ts; an external plain ioredis client writes.
 *
 * Scenarios:
 *  1. Invalidation delay: `samples` times, L1 holds a key, the external client `SET`s it;
 *     `after ack` = invalidation arrival − the write's reply (negative: it came first), `after
 *     send` = arrival − the `SET` call. Contenders: `CacheTracking` in `bcast` and `default`
 *     mode, and `raw`: a hand-written RESP2 ioredis connection subscribed to
 *     `__redis__:invalidate` plus `CLIENT TRACKING ON REDIRECT … BCAST PREFIX` (no guard, no
 *     re-enable), the floor of what any implementation can do.
 *  2. Mixed load, `seconds` per variant and round: `concurrency` loops over `keys` keys
 *     (uniform), each operation an external acknowledged write with probability `write-ratio`,
 *     otherwise a read served by L1 when it may, else a `GET` (stored when allowed). Half the
 *     keys are never read by us (another service's), so `bcast` gets messages `default` does
 *     not. Variants: `no L1`; `L1 without tracking` (entries kept `ttl-ms`, what a TTL-only
 *     L1 does); `tracking bcast`; `tracking default`. Reported: hit rate, operations/s, stale
 *     serves (an L1 value older than a write acknowledged at least 5 ms (`stale-grace-ms`)
 *     before the serve, i.e. beyond the invalidation delay), invalidation messages.
 * Variants alternate within every round in a random order. With --expose-gc a full GC runs
 * before every slice.
 *
 * Server: `REDIS_URL` if set, else a throwaway redis-server on a free loopback port, stopped at
 * the end (also on error, SIGINT and SIGTERM). Keys: `bench:tracking:<run>:*`, removed at the end.
 *
 * Usage: npm run bench -- tracking [--rounds N] [--samples N] [--seconds N] [--keys N]
 *          [--concurrency N] [--write-ratio PERCENT] [--ttl-ms MS] [--stale-grace-ms MS]
 *          [--timeout-ms MS]
 *   or env BENCH_ROUNDS, BENCH_SAMPLES, … The last line of output is `BENCH_JSON {...}`.
 */
import 'reflect-metadata';
import os from 'node:os';
import { performance } from 'node:perf_hooks';

import { Redis } from 'ioredis';

import { CacheTracking, type CacheTrackingMode } from '../src/cache/tracking.js';
import { RedisConnection } from '../src/connection/redis-connection.js';
import { resolveRedisOptions } from '../src/redis-module.options.js';

import {
  cleanupSteps,
  collectGarbage,
  cpuPressure,
  fmtLoad,
  median,
  packageVersion,
  prng,
  quantile,
  readArgs,
  redisUrlFor,
  runBenchmark,
  stopThrowawayServer,
  table,
  unlinkMatching,
  type ThrowawayServer,
} from './harness.js';

interface Settings {
  rounds: number;
  samples: number;
  seconds: number;
  keys: number;
  concurrency: number;
  writeRatio: number;
  ttlMs: number;
  staleGraceMs: number;
  timeoutMs: number;
}

function readSettings(argv: string[]): Settings {
  const args = readArgs(argv, [
    'rounds',
    'samples',
    'seconds',
    'keys',
    'concurrency',
    'write-ratio',
    'ttl-ms',
    'stale-grace-ms',
    'timeout-ms',
  ]);
  return {
    rounds: args.num('rounds', 2, 1, 100),
    samples: args.num('samples', 400, 10, 100_000),
    seconds: args.num('seconds', 3, 1, 60),
    keys: args.num('keys', 1_000, 10, 1_000_000),
    concurrency: args.num('concurrency', 16, 1, 1_000),
    writeRatio: args.num('write-ratio', 5, 0, 100),
    ttlMs: args.num('ttl-ms', 1_000, 1, 3_600_000),
    staleGraceMs: args.num('stale-grace-ms', 5, 0, 10_000),
    timeoutMs: args.num('timeout-ms', 60_000, 1_000, 3_600_000),
  };
}

interface State extends ThrowawayServer {
  clients: Redis[];
  trackings: CacheTracking[];
  connections: RedisConnection[];
  base?: string;
}

/** An L1 in front of one tracked connection (or none), as the cache service would wire it. */
interface Tier {
  tracking?: CacheTracking;
  connection: RedisConnection;
  l1: Map<string, { value: string; until: number }>;
  /** Calls waiting for the invalidation of a key. */
  waiting: Map<string, () => void>;
}

async function tier(url: string, mode: CacheTrackingMode | undefined, state: State, base: string) {
  const connection = new RedisConnection(
    resolveRedisOptions({ url, connectionName: `bench-tracking-${mode ?? 'off'}` }),
  );
  state.connections.push(connection);
  await connection.onModuleInit();
  const t: Tier = { connection, l1: new Map(), waiting: new Map() };
  if (mode) {
    t.tracking = new CacheTracking({
      connection,
      prefix: base,
      mode,
      invalidate: (key) => {
        t.l1.delete(key);
        const wake = t.waiting.get(key);
        if (wake) {
          t.waiting.delete(key);
          wake();
        }
      },
      flushAll: () => t.l1.clear(),
    });
    state.trackings.push(t.tracking);
    if (!(await t.tracking.start())) throw new Error(`tracking (${mode}) did not become active`);
  }
  return t;
}

/** A read through the tier: L1 when it may serve, else a GET stored when allowed. */
async function read(t: Tier, key: string, ttlMs: number, now: number) {
  const tracking = t.tracking;
  const cached = t.l1.get(key);
  if (cached && (tracking ? tracking.active : cached.until > now)) {
    return { value: cached.value, hit: true };
  }
  const ticket = tracking?.beginRead();
  const value = await t.connection.client.get(key);
  if (value !== null && (!tracking || tracking.mayStore(key, ticket!))) {
    t.l1.set(key, { value, until: tracking ? Infinity : now + ttlMs });
  }
  return { value, hit: false };
}

/** Invalidation delay of one contender: `samples` writes of one key L1 holds. */
async function delays(
  writer: Redis,
  key: string,
  samples: number,
  prepare: () => Promise<void>,
  invalidated: () => Promise<number>,
) {
  const afterAck: number[] = [];
  const afterSend: number[] = [];
  for (let i = 0; i < samples; i += 1) {
    await prepare();
    const arrived = invalidated();
    const sent = performance.now();
    await writer.set(key, `v${i}`);
    const acked = performance.now();
    const at = await arrived;
    afterAck.push(at - acked);
    afterSend.push(at - sent);
  }
  return { afterAck, afterSend };
}

function waitInvalidation(t: Tier, key: string): Promise<number> {
  return new Promise((resolve) => t.waiting.set(key, () => resolve(performance.now())));
}

interface MixResult {
  ops: number;
  reads: number;
  hits: number;
  stale: number;
  invalidations: number;
}

async function mixed(
  t: Tier | undefined,
  writer: Redis,
  keys: string[],
  settings: Settings,
  random: () => number,
  seconds: number,
): Promise<MixResult> {
  // The latest version of each key and when its write was acknowledged.
  const acked = new Map<string, { version: number; at: number }>();
  let version = 0;
  const result: MixResult = { ops: 0, reads: 0, hits: 0, stale: 0, invalidations: 0 };
  const before = t?.tracking?.stats().invalidations ?? 0;
  const end = performance.now() + seconds * 1000;
  // Only the first half is read by us; the writer writes everywhere.
  const readable = Math.ceil(keys.length / 2);
  const loop = async (): Promise<void> => {
    while (performance.now() < end) {
      result.ops += 1;
      if (random() * 100 < settings.writeRatio) {
        const key = keys[Math.floor(random() * keys.length)];
        version += 1;
        const v = version;
        await writer.set(key, String(v));
        const prev = acked.get(key);
        if (!prev || prev.version < v) acked.set(key, { version: v, at: performance.now() });
        continue;
      }
      const key = keys[Math.floor(random() * readable)];
      result.reads += 1;
      const now = performance.now();
      if (!t) {
        await writer.get(key);
        continue;
      }
      const { value, hit } = await read(t, key, settings.ttlMs, Date.now());
      if (!hit) continue;
      result.hits += 1;
      const latest = acked.get(key);
      if (latest && Number(value) < latest.version && now - latest.at > settings.staleGraceMs) {
        result.stale += 1;
      }
    }
  };
  await Promise.all(Array.from({ length: settings.concurrency }, loop));
  result.invalidations = (t?.tracking?.stats().invalidations ?? 0) - before;
  return result;
}

/**
 * The floor: a hand-written RESP2 redirect and BCAST tracking, nothing else. Resolves, for each
 * call of the returned function, when the next invalidation message arrives.
 */
async function rawFloor(url: string, base: string, state: State): Promise<() => Promise<number>> {
  const rawTracked = new Redis(url);
  const rawRedirect = new Redis(url, { protocol: 2 });
  state.clients.push(rawTracked, rawRedirect);
  const rawId = String(await rawRedirect.call('CLIENT', 'ID'));
  let rawWake: (() => void) | undefined;
  rawRedirect.on('messageBuffer', () => {
    const wake = rawWake;
    rawWake = undefined;
    wake?.();
  });
  await rawRedirect.subscribe('__redis__:invalidate');
  await rawTracked.call('CLIENT', 'TRACKING', 'ON', 'REDIRECT', rawId, 'BCAST', 'PREFIX', base);
  return () => new Promise<number>((resolve) => (rawWake = () => resolve(performance.now())));
}

type DelayName = 'bcast' | 'default' | 'raw';
type DelayRuns = Record<DelayName, { afterAck: number[]; afterSend: number[] }>;

/** Scenario 1: the invalidation delay of each contender, in a random order every round. */
async function measureDelays(
  tiers: { bcast: Tier; dflt: Tier },
  writer: Redis,
  raw: () => Promise<number>,
  base: string,
  settings: Settings,
  random: () => number,
): Promise<DelayRuns> {
  const delayKey = `${base}delay`;
  await writer.set(delayKey, 'v');
  const holdIn = (t: Tier) => async () => {
    await read(t, delayKey, settings.ttlMs, Date.now());
    if (!t.l1.has(delayKey)) throw new Error('the key did not enter L1');
  };
  const of = (t: Tier) => () =>
    delays(writer, delayKey, settings.samples, holdIn(t), () => waitInvalidation(t, delayKey));
  const delayRuns: DelayRuns = {
    bcast: { afterAck: [], afterSend: [] },
    default: { afterAck: [], afterSend: [] },
    raw: { afterAck: [], afterSend: [] },
  };
  for (let round = 0; round < settings.rounds; round += 1) {
    const contenders = [
      ['bcast', of(tiers.bcast)],
      ['default', of(tiers.dflt)],
      ['raw', () => delays(writer, delayKey, settings.samples, () => Promise.resolve(), raw)],
    ] as const;
    const order = [...contenders].sort(() => random() - 0.5);
    for (const [name, measure] of order) {
      collectGarbage('minor');
      const r = await measure();
      delayRuns[name].afterAck.push(...r.afterAck);
      delayRuns[name].afterSend.push(...r.afterSend);
    }
  }
  return delayRuns;
}

/** Scenario 2: every variant under the mixed load, in a random order every round. */
async function measureMixes(
  variants: Array<[string, Tier | undefined]>,
  writer: Redis,
  base: string,
  settings: Settings,
  random: () => number,
): Promise<Map<string, MixResult[]>> {
  const keys = Array.from({ length: settings.keys }, (_, i) => `${base}k:${i}`);
  for (let i = 0; i < keys.length; i += 500) {
    const pipeline = writer.pipeline();
    for (const key of keys.slice(i, i + 500)) pipeline.set(key, '0');
    await pipeline.exec();
  }
  const mixes = new Map<string, MixResult[]>(variants.map(([n]) => [n, []]));
  for (let round = 0; round < settings.rounds; round += 1) {
    const order = [...variants].sort(() => random() - 0.5);
    for (const [name, t] of order) {
      t?.l1.clear();
      collectGarbage('major');
      mixes.get(name)!.push(await mixed(t, writer, keys, settings, random, settings.seconds));
    }
  }
  return mixes;
}

function summariseDelays(delayRuns: DelayRuns) {
  const q = (values: number[]) => ({
    p50: quantile(values, 0.5),
    p99: quantile(values, 0.99),
    max: Math.max(...values),
  });
  const of = (name: DelayName) => ({
    afterAck: q(delayRuns[name].afterAck),
    afterSend: q(delayRuns[name].afterSend),
  });
  return { bcast: of('bcast'), default: of('default'), raw: of('raw') };
}

function summariseMix(runs: MixResult[], settings: Settings) {
  const sum = (f: (r: MixResult) => number) => runs.reduce((s, r) => s + f(r), 0);
  return {
    hits: sum((r) => r.hits),
    hitRate:
      sum((r) => r.hits) /
      Math.max(
        1,
        sum((r) => r.reads),
      ),
    opsPerSecond: median(runs.map((r) => r.ops / settings.seconds)),
    stale: sum((r) => r.stale),
    staleRate:
      sum((r) => r.stale) /
      Math.max(
        1,
        sum((r) => r.hits),
      ),
    invalidations: sum((r) => r.invalidations),
    writes: sum((r) => r.ops - r.reads),
  };
}

type Delay = ReturnType<typeof summariseDelays>;
type Mix = ReturnType<typeof summariseMix>;

const f3 = (n: number): string => n.toFixed(3);
const pct = (n: number): string => `${(n * 100).toFixed(1)}%`;

function printDelays(delay: Delay, settings: Settings): void {
  console.log(
    `\ninvalidation delay after an external SET (${settings.samples} samples × ${settings.rounds} rounds), ms`,
  );
  console.log(
    table(
      ['contender', 'after ack p50', 'after ack p99', 'after send p50', 'after send p99', 'max'],
      (['bcast', 'default', 'raw'] as const).map((name) => [
        name,
        f3(delay[name].afterAck.p50),
        f3(delay[name].afterAck.p99),
        f3(delay[name].afterSend.p50),
        f3(delay[name].afterSend.p99),
        f3(delay[name].afterSend.max),
      ]),
    ),
  );
}

function printMixes(mix: Record<string, Mix>, variants: string[], settings: Settings): void {
  console.log(
    `\nmixed load: ${settings.keys} keys (we read half), ${settings.writeRatio}% external writes, ` +
      `${settings.concurrency} loops, ${settings.seconds} s × ${settings.rounds} rounds per variant; ` +
      `TTL-only L1 keeps entries ${settings.ttlMs} ms; stale = older than a write acknowledged > ${settings.staleGraceMs} ms before`,
  );
  console.log(
    table(
      [
        'variant',
        'hits',
        'hit rate',
        'ops/s (median)',
        'stale serves',
        'stale/hits',
        'invalidations',
        'writes',
      ],
      variants.map((name) => {
        const m = mix[name];
        return [
          name,
          String(m.hits),
          pct(m.hitRate),
          Math.round(m.opsPerSecond).toLocaleString('en-US'),
          String(m.stale),
          pct(m.staleRate),
          String(m.invalidations),
          String(m.writes),
        ];
      }),
    ),
  );
}

async function run(settings: Settings, state: State): Promise<void> {
  const url = await redisUrlFor(state);
  const base = `bench:tracking:${process.pid}-${Date.now()}:`;
  state.base = base;
  const writer = new Redis(url);
  state.clients.push(writer);

  const bcast = await tier(url, 'bcast', state, base);
  const dflt = await tier(url, 'default', state, base);
  const ttlOnly = await tier(url, undefined, state, base);
  const raw = await rawFloor(url, base, state);

  const random = prng(20261204);
  const delayRuns = await measureDelays({ bcast, dflt }, writer, raw, base, settings, random);
  const variants: Array<[string, Tier | undefined]> = [
    ['no L1', undefined],
    ['L1 without tracking', ttlOnly],
    ['tracking bcast', bcast],
    ['tracking default', dflt],
  ];
  const mixes = await measureMixes(variants, writer, base, settings, random);

  const load = os.loadavg();
  const versions = { ioredis: await packageVersion('ioredis'), node: process.versions.node };
  const delay = summariseDelays(delayRuns);
  const mix = Object.fromEntries(
    variants.map(([name]) => [name, summariseMix(mixes.get(name)!, settings)]),
  );
  const figures = {
    settings,
    versions,
    load,
    cpuPressure: cpuPressure(),
    delayMs: delay,
    mix,
    trackingStats: { bcast: bcast.tracking!.stats(), default: dflt.tracking!.stats() },
  };
  console.log(
    `cache tracking — ioredis ${versions.ioredis}, node ${versions.node}, ${settings.rounds} rounds; ` +
      `${fmtLoad(load, figures.cpuPressure)}`,
  );
  printDelays(delay, settings);
  printMixes(
    mix,
    variants.map(([name]) => name),
    settings,
  );
  console.log(`BENCH_JSON ${JSON.stringify(figures)}`);
}

async function cleanup(state: State): Promise<void> {
  const steps = cleanupSteps();
  for (const tracking of state.trackings.splice(0)) await steps.run(() => tracking.close());
  const writer = state.clients[0];
  if (writer && state.base && writer.status === 'ready') {
    await steps.run(() => unlinkMatching(writer, `${state.base}*`));
  }
  for (const connection of state.connections.splice(0)) await steps.run(() => connection.close());
  for (const client of state.clients.splice(0))
    await steps.run(() => Promise.resolve(client.disconnect()));
  await stopThrowawayServer(state, steps);
  steps.report();
}

await runBenchmark('tracking', {
  readSettings,
  state: { clients: [], trackings: [], connections: [] },
  run,
  cleanup,
});
