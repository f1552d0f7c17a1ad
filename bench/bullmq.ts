/**
 * BullMQ: jobs per second for a trivial job (add + process + complete) through the module's
 * bridge (`RedisBullMq`: a module-owned connection, the translated prefix) against BullMQ with a
 * hand-made ioredis connection (`maxRetriesPerRequest: null`), on the same throwaway
 * redis-server in one run. (BullMQ beside the module's streams consumer: bench/streams.ts.)
 *
 * Each round adds --jobs (1000) jobs with addBulk in batches of 100, and one Worker with
 * --concurrency (16) processes them all; the time runs from the first add to the last
 * `completed`. Rounds alternate the order (harness `pairedRounds`); figures are medians, the
 * ratio the median of the per-round ratios. Settings: --rounds (5), --jobs (1000),
 * --concurrency (16), --timeout-ms (120000).
 *
 *   npm run bench -- bullmq
 */
import 'reflect-metadata';
import os from 'node:os';

import { Module, type INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Redis } from 'ioredis';

import { RedisBullMq, RedisModule } from '../src/index.js';

import {
  cleanupSteps,
  cpuPressure,
  fmtLoad,
  median,
  pairedRounds,
  readArgs,
  redisUrlFor,
  runBenchmark,
  stopThrowawayServer,
  table,
  type ThrowawayServer,
} from './harness.js';
import { bullmqRound } from './support/queue-rounds.js';

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

async function run(s: Settings, state: State): Promise<void> {
  const url = await redisUrlFor(state);
  class BenchBullModule {}
  Module({ imports: [RedisModule.forRoot({ url, keyPrefix: 'bench-bull:' })] })(BenchBullModule);
  state.app = await NestFactory.createApplicationContext(BenchBullModule, { logger: false });
  const bridge = state.app.get(RedisBullMq);
  const hand = new Redis(url, { maxRetriesPerRequest: null });
  state.raw.push(hand);
  const stamp = Date.now();
  const result = await pairedRounds({
    rounds: s.rounds,
    contenders: [
      {
        name: 'bridge',
        measure: (r) => bullmqRound(`r${r}-${stamp}`, bridge.connection(), bridge.prefix, s),
      },
      { name: 'hand', measure: (r) => bullmqRound(`r${r}-${stamp}`, hand, 'bench-bull-raw', s) },
    ],
  });
  const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
  console.log(
    `bullmq benchmark: ${s.jobs} jobs a round, ${s.rounds} rounds, concurrency ` +
      `${s.concurrency} (${fmtLoad(os.loadavg(), cpuPressure())})\n`,
  );
  console.log(
    table(
      ['contender', 'jobs/s (median)', 'ratio (paired)'],
      [
        [
          'BullMQ through RedisBullMq',
          fmt(result.median('bridge')),
          median(result.ratios('bridge', 'hand')).toFixed(2),
        ],
        ['BullMQ, hand-made connection', fmt(result.median('hand')), '1.00'],
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
