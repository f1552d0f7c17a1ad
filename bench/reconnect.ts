/**
 * Restart → first healthy PING: how soon after a Redis restart a client answers again.
 *
 * One throw-away redis-server on loopback; `--rounds` times it is restarted (SIGTERM, then
 * started again on the same port; the restart is done when the new server answers PING). Three
 * clients watch it side by side, so each round hits them all alike:
 * - `ours`: the module's command connection (our retry defaults),
 * - `ours, old defaults`: the same with the defaults before this benchmark (100 ms, doubling,
 *   5 s cap),
 * - `ioredis`: ioredis's default retry strategy, which the NestJS peer modules
 *   (@liaoliaots/nestjs-redis, @nestjs-modules/ioredis) hand through unchanged,
 * - `node-redis`: node-redis 5's default reconnect strategy.
 * For each client: ms from "server answers again" to the client's first successful PING.
 *
 * `npm run bench -- reconnect [--rounds 10]` (BENCH_ROUNDS). Figures on a loaded machine are
 * indicative; compare the columns of one run.
 */
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { Redis } from 'ioredis';
import { createClient as createNodeRedis } from 'redis';

import type * as ServersLib from '../scripts/redis/servers.mjs';
import { createClient } from '../src/connection/client-factory.js';
import { resolveRedisOptions } from '../src/redis-module.options.js';

import { locateServersLib, median, quantile, readArgs, table } from './harness.js';

interface Watched {
  name: string;
  /** Resolves with the time of the first PING answered after `since`. */
  healthyAfter(since: number, deadline: number): Promise<number>;
  close(): Promise<void>;
}

/** Polls PING every 5 ms (each bounded), as a health probe would, until one succeeds. */
async function firstPing(ping: () => Promise<unknown>, deadline: number): Promise<number> {
  for (;;) {
    const ok = await Promise.race([
      ping().then(
        () => true,
        () => false,
      ),
      new Promise<boolean>((r) => setTimeout(() => r(false), 50)),
    ]);
    if (ok) return performance.now();
    if (performance.now() > deadline) throw new Error('no PING answered before the deadline');
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function main(): Promise<void> {
  const args = readArgs(process.argv.slice(2), ['rounds']);
  const rounds = args.num('rounds', 10, 1, 100);
  const servers = (await import(pathToFileURL(locateServersLib()).href)) as typeof ServersLib;
  const baseDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'redis-bench-reconnect-'));
  const server = await servers.startStandalone({ baseDir });
  const watched: Watched[] = [];
  try {
    const config = resolveRedisOptions({ url: server.url }, {});
    const ours = createClient(config, 'command') as Redis;
    ours.on('error', () => undefined);
    await ours.connect();
    // Commands wait in ioredis's offline queue while it reconnects: fail them at once instead,
    // so the probe sees the first moment the client really answers.
    const peer = new Redis(server.url, { enableOfflineQueue: false });
    peer.on('error', () => undefined);
    await new Promise((r) => peer.once('ready', r));
    const node = createNodeRedis({ url: server.url, disableOfflineQueue: true });
    node.on('error', () => undefined);
    await node.connect();
    ours.options.enableOfflineQueue = false;
    const oldConfig = resolveRedisOptions(
      { url: server.url, retry: { initialDelay: 100, factor: 2, maxDelay: 5_000 } },
      {},
    );
    const old = createClient(oldConfig, 'command') as Redis;
    old.on('error', () => undefined);
    await old.connect();
    old.options.enableOfflineQueue = false;
    watched.push(
      {
        name: 'ours',
        healthyAfter: (_, d) => firstPing(() => ours.ping(), d),
        close: async () => ours.disconnect(),
      },
      {
        name: 'ours, old defaults',
        healthyAfter: (_, d) => firstPing(() => old.ping(), d),
        close: async () => old.disconnect(),
      },
      {
        name: 'ioredis default',
        healthyAfter: (_, d) => firstPing(() => peer.ping(), d),
        close: async () => peer.disconnect(),
      },
      {
        name: 'node-redis default',
        healthyAfter: (_, d) => firstPing(() => node.ping(), d),
        close: async () => {
          node.destroy();
        },
      },
    );

    const gaps = new Map<string, number[]>(watched.map((w) => [w.name, []]));
    const downtimes: number[] = [];
    for (let round = 0; round < rounds; round += 1) {
      const stopped = performance.now();
      await server.restart();
      const up = performance.now();
      downtimes.push(up - stopped);
      const deadline = up + 30_000;
      const healthy = await Promise.all(watched.map((w) => w.healthyAfter(up, deadline)));
      watched.forEach((w, i) => gaps.get(w.name)!.push(healthy[i] - up));
    }

    const fmt = (ms: number): string => ms.toFixed(0);
    const oursMedian = median(gaps.get('ours')!);
    console.log(
      `restart → first healthy PING, ${rounds} restarts (server down for median ${fmt(median(downtimes))} ms)`,
    );
    console.log(
      table(
        ['client', 'median ms', 'p90 ms', 'max ms', 'median vs ours'],
        watched.map((w) => {
          const g = gaps.get(w.name)!;
          return [
            w.name,
            fmt(median(g)),
            fmt(quantile(g, 0.9)),
            fmt(Math.max(...g)),
            `${(median(g) / Math.max(oursMedian, 1)).toFixed(2)}x`,
          ];
        }),
      ),
    );
  } finally {
    for (const w of watched) await w.close().catch(() => undefined);
    await server.stop().catch(() => undefined);
    await fsp.rm(baseDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
