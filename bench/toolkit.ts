/**
 * The toolkit against what a user would write on the raw ioredis client, in one run, on the
 * same servers (a throwaway standalone redis-server and a throwaway 3-master cluster):
 *
 *   batch       500 GETs on the cluster: `RedisService.batch` (one pipeline per node) against
 *               sequential awaits and against ioredis `pipeline()` (which refuses keys of
 *               different nodes: reported as such)
 *   counter     INCRBY at 64 in flight: `counter(name, { shards: 16 })` against one key, on the
 *               cluster (where the shards spread over the masters) and on standalone
 *   records     `records.get` (one HGETALL) against `EXISTS` + `HGETALL`, standalone
 *
 * Rounds alternate the contenders (harness `pairedRounds`: the order rotates each round) so drift
 * hits both alike; each figure is the median of the rounds' rates. Settings: --rounds (5),
 * --slice-ms (500), --timeout-ms (120000).
 *
 *   npm run bench -- toolkit
 */
import 'reflect-metadata';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';

import { Module, type INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Cluster, Redis } from 'ioredis';

import type * as ServersLib from '../scripts/redis/servers.mjs';
import type { ClusterTopology, StandaloneServer } from '../scripts/redis/servers.mjs';
import { RedisModule, RedisService, type RedisModuleOptions } from '../src/index.js';

import {
  cleanupSteps,
  fmtLoad,
  cpuPressure,
  locateServersLib,
  median,
  pairedRounds,
  readArgs,
  runBenchmark,
  table,
} from './harness.js';

interface Settings {
  rounds: number;
  sliceMs: number;
  timeoutMs: number;
}

interface State {
  baseDir?: string;
  standalone?: StandaloneServer;
  cluster?: ClusterTopology;
  apps: INestApplicationContext[];
  raw: Array<Redis | Cluster>;
}

async function app(options: RedisModuleOptions): Promise<INestApplicationContext> {
  class BenchToolkitModule {}
  Module({ imports: [RedisModule.forRoot({ ...options, keyPrefix: 'bench-kit:' })] })(
    BenchToolkitModule,
  );
  return NestFactory.createApplicationContext(BenchToolkitModule, { logger: false });
}

/** Operations per second of `op` run by `inFlight` loops for `ms`. */
async function rate(op: () => Promise<unknown>, ms: number, inFlight: number): Promise<number> {
  let done = 0;
  const end = performance.now() + ms;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (performance.now() < end) {
        await op();
        done += 1;
      }
    }),
  );
  return done / (ms / 1000);
}

async function compare(
  settings: Settings,
  ours: () => Promise<unknown>,
  theirs: () => Promise<unknown>,
  inFlight: number,
): Promise<{ ours: number; theirs: number; ratio: number }> {
  const result = await pairedRounds({
    rounds: settings.rounds,
    contenders: [
      { name: 'ours', measure: () => rate(ours, settings.sliceMs, inFlight) },
      { name: 'theirs', measure: () => rate(theirs, settings.sliceMs, inFlight) },
    ],
  });
  const a = result.samples.ours;
  const b = result.samples.theirs;
  return { ours: median(a), theirs: median(b), ratio: median(a) / median(b) };
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');

async function run(settings: Settings, state: State): Promise<void> {
  const servers = (await import(pathToFileURL(locateServersLib()).href)) as typeof ServersLib;
  state.baseDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'redis-bench-toolkit-'));
  state.standalone = await servers.startStandalone({ baseDir: path.join(state.baseDir, 's') });
  state.cluster = await servers.startCluster({
    baseDir: path.join(state.baseDir, 'c'),
    replicasPerMaster: 0,
  });
  const nodes = state.cluster.nodes.map((n) => ({ host: n.host, port: n.port }));

  const clusterApp = await app({ cluster: { nodes } });
  const standaloneApp = await app({ url: state.standalone.url });
  state.apps.push(clusterApp, standaloneApp);
  const onCluster = clusterApp.get(RedisService);
  const onStandalone = standaloneApp.get(RedisService);
  const rawCluster = new Cluster(nodes, { keyPrefix: 'bench-kit:' });
  const rawStandalone = new Redis(state.standalone.url, { keyPrefix: 'bench-kit:' });
  state.raw.push(rawCluster, rawStandalone);
  await Promise.all([rawCluster.ping(), rawStandalone.ping()]);

  const rows: string[][] = [];
  // batch: 500 GETs over the cluster's slots.
  const keys = Array.from({ length: 500 }, (_, i) => `b:${i}`);
  await onCluster.batch(keys.map((k) => ['set', k, 'v']));
  const batch = await compare(
    settings,
    () => onCluster.batch(keys.map((k) => ['get', k])),
    async () => {
      for (const k of keys) await rawCluster.get(k);
    },
    1,
  );
  rows.push([
    'batch 500 GETs, cluster',
    'vs sequential awaits',
    fmt(batch.ours),
    fmt(batch.theirs),
    batch.ratio.toFixed(2),
  ]);
  const pipelined = await rawCluster
    .pipeline(keys.map((k) => ['get', k]))
    .exec()
    .then(
      () => 'worked',
      (err: Error) => `fails: ${err.message.slice(0, 60)}`,
    );
  rows.push(['ioredis pipeline(), same 500 GETs', pipelined, '', '', '']);

  for (const [label, service, raw] of [
    ['cluster', onCluster, rawCluster],
    ['standalone', onStandalone, rawStandalone],
  ] as const) {
    const counter = service.counter('hot', { shards: 16 });
    const c = await compare(
      settings,
      () => counter.incr(),
      () => raw.incrby('hot-one', 1),
      64,
    );
    rows.push([
      `counter.incr, 16 shards, 64 in flight, ${label}`,
      'vs INCRBY one key',
      fmt(c.ours),
      fmt(c.theirs),
      c.ratio.toFixed(2),
    ]);
    await counter.reset();
  }

  const records = onStandalone.records('rec', { ttl: 60_000 });
  await records.set('1', { state: 'running', attempts: 3, owner: 'worker-7' });
  const r = await compare(
    settings,
    () => records.get('1'),
    async () => ((await rawStandalone.exists('rec:1')) ? rawStandalone.hgetall('rec:1') : null),
    16,
  );
  rows.push([
    'records.get, 16 in flight, standalone',
    'vs EXISTS + HGETALL',
    fmt(r.ours),
    fmt(r.theirs),
    r.ratio.toFixed(2),
  ]);

  console.log(
    `toolkit benchmark (${settings.rounds} rounds of ${settings.sliceMs} ms slices; ` +
      `${fmtLoad(os.loadavg(), cpuPressure())})\n`,
  );
  console.log(table(['case', 'against', 'ours ops/s', 'theirs ops/s', 'ratio'], rows));
}

async function cleanup(state: State): Promise<void> {
  const steps = cleanupSteps();
  for (const client of state.raw.splice(0)) client.disconnect();
  for (const a of state.apps.splice(0)) await steps.run(() => a.close());
  if (state.cluster) await steps.run(() => state.cluster!.stop());
  if (state.standalone) await steps.run(() => state.standalone!.stop());
  if (state.baseDir)
    await steps.run(() => fsp.rm(state.baseDir!, { recursive: true, force: true }));
  steps.report();
}

await runBenchmark<Settings, State>('toolkit', {
  readSettings(argv) {
    const args = readArgs(argv, ['rounds', 'slice-ms', 'timeout-ms']);
    return {
      rounds: args.num('rounds', 5, 1, 100),
      sliceMs: args.num('slice-ms', 500, 50, 10_000),
      timeoutMs: args.num('timeout-ms', 120_000, 1000, 600_000),
    };
  },
  state: { apps: [], raw: [] },
  run,
  cleanup,
});
