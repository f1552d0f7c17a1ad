/**
 * Durable queues, one run on one throwaway redis-server: the module's streams consumer against
 * a hand-written XREADGROUP/XACK loop on raw ioredis, with BullMQ's jobs/s for the same trivial
 * work beside them.
 *
 * Each round moves --messages (2000) messages through each contender:
 *  - `StreamsService`: a producer adds them (16 adds in flight), then a consumer with
 *    --concurrency (16) reads, handles (a counter) and acknowledges each;
 *  - raw loop: XADD the same way, then XREADGROUP COUNT <concurrency> BLOCK 100 on its own
 *    connection, each message JSON-parsed and acknowledged by its own XACK;
 *  - BullMQ (hand-made connection, `maxRetriesPerRequest: null`): addBulk in batches of 100,
 *    one Worker with the same concurrency, a job that returns 1, removeOnComplete.
 * Time runs from the first add to the last acknowledgement (BullMQ: the last `completed`).
 * The order rotates from round to round (harness `pairedRounds`); figures are medians, ratios
 * the median of the per-round ratios against the raw loop. Settings: --rounds (5),
 * --messages (2000), --concurrency (16), --timeout-ms (120000), --no-bullmq to leave it out.
 *
 *   npm run bench -- streams
 */
import 'reflect-metadata';
import os from 'node:os';
import { performance } from 'node:perf_hooks';

import { Module, type INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Redis } from 'ioredis';

import { RedisModule, StreamsService } from '../src/index.js';

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
import { bullmqRound, produce } from './support/queue-rounds.js';

interface Settings {
  rounds: number;
  messages: number;
  concurrency: number;
  timeoutMs: number;
  bullmq: boolean;
}

interface State extends ThrowawayServer {
  app?: INestApplicationContext;
  raw: Redis[];
}

async function ours(streams: StreamsService, stream: string, s: Settings): Promise<number> {
  const start = performance.now();
  const producer = streams.producer<{ n: number }>(stream);
  await produce((n) => producer.add({ n }), s.messages);
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  let seen = 0;
  const consumer = await streams.consumer(
    stream,
    'g',
    () => {
      if (++seen === s.messages) setImmediate(done);
    },
    { concurrency: s.concurrency, block: 100 },
  );
  await finished;
  await waitUntil(() => consumer.counts.processed === s.messages);
  const elapsed = performance.now() - start;
  await consumer.stop(1000);
  return s.messages / (elapsed / 1000);
}

async function raw(client: Redis, reader: Redis, stream: string, s: Settings): Promise<number> {
  const start = performance.now();
  await produce((n) => client.xadd(stream, '*', 'd', JSON.stringify({ n })), s.messages);
  await client.xgroup('CREATE', stream, 'g', '0', 'MKSTREAM');
  let acked = 0;
  while (acked < s.messages) {
    const reply = (await reader.xreadgroup(
      'GROUP',
      'g',
      'c',
      'COUNT',
      s.concurrency,
      'BLOCK',
      100,
      'STREAMS',
      stream,
      '>',
    )) as Array<[string, Array<[string, string[]]>]> | null;
    const entries = reply?.[0]?.[1] ?? [];
    await Promise.all(
      entries.map(async ([id, fields]) => {
        JSON.parse(fields[1]);
        await client.xack(stream, 'g', id);
        acked += 1;
      }),
    );
  }
  return s.messages / ((performance.now() - start) / 1000);
}

async function waitUntil(check: () => boolean): Promise<void> {
  while (!check()) await new Promise((resolve) => setImmediate(resolve));
}

async function run(s: Settings, state: State): Promise<void> {
  const url = await redisUrlFor(state);
  class BenchStreamsModule {}
  Module({ imports: [RedisModule.forRoot({ url, keyPrefix: 'bench-streams:' })] })(
    BenchStreamsModule,
  );
  state.app = await NestFactory.createApplicationContext(BenchStreamsModule, { logger: false });
  const streams = state.app.get(StreamsService);
  const client = new Redis(url, { keyPrefix: 'bench-streams-raw:' });
  const reader = new Redis(url, { keyPrefix: 'bench-streams-raw:' });
  state.raw.push(client, reader);
  const hand = new Redis(url, { maxRetriesPerRequest: null });
  state.raw.push(hand);
  const stamp = Date.now();
  type Name = 'ours' | 'raw' | 'bullmq';
  const contenders: Array<{ name: Name; measure: (round: number) => Promise<number> }> = [
    { name: 'ours', measure: (r) => ours(streams, `ours-r${r}-${stamp}`, s) },
    { name: 'raw', measure: (r) => raw(client, reader, `raw-r${r}-${stamp}`, s) },
  ];
  if (s.bullmq) {
    contenders.push({
      name: 'bullmq',
      measure: (r) =>
        bullmqRound(`r${r}-${stamp}`, hand, 'bench-streams-bull', {
          jobs: s.messages,
          concurrency: s.concurrency,
        }),
    });
  }
  const result = await pairedRounds({ rounds: s.rounds, contenders });
  const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
  const ratio = (name: Name): string => median(result.ratios(name, 'raw')).toFixed(2);
  console.log(
    `streams benchmark: ${s.messages} messages a round, ${s.rounds} rounds, concurrency ` +
      `${s.concurrency} (${fmtLoad(os.loadavg(), cpuPressure())})\n`,
  );
  const rows = [
    ['StreamsService consumer', fmt(result.median('ours')), ratio('ours')],
    ['raw XREADGROUP/XACK loop', fmt(result.median('raw')), '1.00'],
  ];
  if (s.bullmq)
    rows.push(['BullMQ Worker (jobs/s)', fmt(result.median('bullmq')), ratio('bullmq')]);
  console.log(table(['contender', 'produce+consume+ack msg/s (median)', 'ratio to raw'], rows));
}

async function cleanup(state: State): Promise<void> {
  const steps = cleanupSteps();
  for (const c of state.raw.splice(0)) c.disconnect();
  if (state.app) await steps.run(() => state.app!.close());
  await stopThrowawayServer(state, steps);
  steps.report();
}

await runBenchmark<Settings, State>('streams', {
  readSettings(argv) {
    const args = readArgs(argv, ['rounds', 'messages', 'concurrency', 'timeout-ms'], ['no-bullmq']);
    return {
      rounds: args.num('rounds', 5, 1, 100),
      messages: args.num('messages', 2000, 10, 1_000_000),
      concurrency: args.num('concurrency', 16, 1, 1000),
      timeoutMs: args.num('timeout-ms', 120_000, 1000, 600_000),
      bullmq: !args.on('no-bullmq'),
    };
  },
  state: { raw: [] },
  run,
  cleanup,
});
