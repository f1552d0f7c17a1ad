/**
 * BullMQ: jobs per second for a trivial job (add + process + complete) through the module's
 * bridge (`RedisBullMq`: a module-owned connection, the translated prefix) against BullMQ with a
 * hand-made ioredis connection (`maxRetriesPerRequest: null`), on the same throwaway
 * redis-server in one run.
 *
 * Each round adds --jobs (1000) jobs with addBulk in batches of 100, and one Worker with
 * --concurrency (16) processes them all; the time runs from the first add to the last
 * `completed`. Rounds alternate the order; figures are medians. Settings: --rounds (5),
 * --jobs (1000), --concurrency (16), --timeout-ms (120000).
 *
 *   npm run bench -- bullmq
 */
import 'reflect-metadata';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { Module, type INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Queue, Worker, type ConnectionOptions } from 'bullmq';
import { Redis } from 'ioredis';
import { RedisBullMq, RedisModule } from '../src/index.js';
import {
  cleanupSteps,
  cpuPressure,
  fmtLoad,
  median,
  readArgs,
  redisUrlFor,
  runBenchmark,
  stopThrowawayServer,
  table,
  type ThrowawayServer,
} from './harness.js';

interface Settings {
  rounds: number;
  jobs: number;
  concurrency: number;
  timeoutMs: number;
}

interface State extends ThrowawayServer {
  app?: INestApplicationContext;
  raw: Redis[];
}

/** One round on `connection` / `prefix`: jobs per second. */
async function round(
  name: string,
  connection: ConnectionOptions,
  prefix: string,
  s: Settings,
): Promise<number> {
  const queue = new Queue(name, { connection, prefix });
  let completed = 0;
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  const worker = new Worker(name, async () => 1, {
    connection,
    prefix,
    concurrency: s.concurrency,
    autorun: false,
  });
  worker.on('completed', () => {
    if (++completed === s.jobs) done();
  });
  await queue.waitUntilReady();
  await worker.waitUntilReady();
  const start = performance.now();
  void worker.run();
  for (let n = 0; n < s.jobs; n += 100) {
    const batch = Array.from({ length: Math.min(100, s.jobs - n) }, (_, i) => ({
      name: 'j',
      data: { n: n + i },
      opts: { removeOnComplete: true },
    }));
    await queue.addBulk(batch);
  }
  await finished;
  const elapsed = performance.now() - start;
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
  return s.jobs / (elapsed / 1000);
}

async function run(s: Settings, state: State): Promise<void> {
  const url = await redisUrlFor(state);
  class BenchBullModule {}
  Module({ imports: [RedisModule.forRoot({ url, keyPrefix: 'bench-bull:' })] })(BenchBullModule);
  state.app = await NestFactory.createApplicationContext(BenchBullModule, { logger: false });
  const bridge = state.app.get(RedisBullMq);
  const hand = new Redis(url, { maxRetriesPerRequest: null });
  state.raw.push(hand);
  const a: number[] = [];
  const b: number[] = [];
  for (let r = 0; r < s.rounds; r++) {
    const name = `r${r}-${Date.now()}`;
    const ours = (): Promise<number> => round(name, bridge.connection(), bridge.prefix, s);
    const theirs = (): Promise<number> => round(name, hand, 'bench-bull-raw', s);
    if (r % 2 === 0) {
      a.push(await ours());
      b.push(await theirs());
    } else {
      b.push(await theirs());
      a.push(await ours());
    }
  }
  const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
  console.log(
    `bullmq benchmark: ${s.jobs} jobs a round, ${s.rounds} rounds, concurrency ` +
      `${s.concurrency} (${fmtLoad(os.loadavg(), cpuPressure())})\n`,
  );
  console.log(
    table(
      ['contender', 'jobs/s (median)', 'ratio'],
      [
        ['BullMQ through RedisBullMq', fmt(median(a)), (median(a) / median(b)).toFixed(2)],
        ['BullMQ, hand-made connection', fmt(median(b)), '1.00'],
      ],
    ),
  );
}

async function cleanup(state: State): Promise<void> {
  const steps = cleanupSteps();
  for (const c of state.raw.splice(0)) c.disconnect();
  if (state.app) await steps.run(() => state.app!.close());
  await stopThrowawayServer(state, steps);
  steps.report();
}

await runBenchmark<Settings, State>('bullmq', {
  readSettings(argv) {
    const args = readArgs(argv, ['rounds', 'jobs', 'concurrency', 'timeout-ms']);
    return {
      rounds: args.num('rounds', 5, 1, 100),
      jobs: args.num('jobs', 1000, 10, 1_000_000),
      concurrency: args.num('concurrency', 16, 1, 1000),
      timeoutMs: args.num('timeout-ms', 120_000, 1000, 600_000),
    };
  },
  state: { raw: [] },
  run,
  cleanup,
});
