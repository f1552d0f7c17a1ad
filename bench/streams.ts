/**
 * Streams: produce + consume + acknowledge, messages per second, against a hand-written
 * XREADGROUP/XACK loop on raw ioredis, on the same throwaway redis-server in one run.
 *
 * Each round adds --messages (2000) messages with 16 adds in flight, then consumes them all in
 * a fresh group, acknowledging each (ours: a StreamsService consumer with --concurrency 16; the
 * raw loop: XREADGROUP COUNT 16 BLOCK 100 on its own connection, each message acknowledged by
 * its own XACK, 16 in flight). Rounds alternate the order; figures are medians. Settings:
 * --rounds (5), --messages (2000), --concurrency (16), --timeout-ms (120000).
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
  readArgs,
  redisUrlFor,
  runBenchmark,
  stopThrowawayServer,
  table,
  type ThrowawayServer,
} from './harness.js';

interface Settings {
  rounds: number;
  messages: number;
  concurrency: number;
  timeoutMs: number;
}

interface State extends ThrowawayServer {
  app?: INestApplicationContext;
  raw: Redis[];
}

async function ours(streams: StreamsService, stream: string, s: Settings): Promise<number> {
  const start = performance.now();
  const producer = streams.producer<{ n: number }>(stream);
  await produce((n) => producer.add({ n }), s);
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
  await produce((n) => client.xadd(stream, '*', 'd', JSON.stringify({ n })), s);
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
        JSON.parse(fields[1]!);
        await client.xack(stream, 'g', id);
        acked += 1;
      }),
    );
  }
  return s.messages / ((performance.now() - start) / 1000);
}

async function produce(add: (n: number) => Promise<unknown>, s: Settings): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < s.messages) await add(next++);
    }),
  );
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
  const a: number[] = [];
  const b: number[] = [];
  for (let round = 0; round < s.rounds; round++) {
    const name = `r${round}-${Date.now()}`;
    if (round % 2 === 0) {
      a.push(await ours(streams, name, s));
      b.push(await raw(client, reader, name, s));
    } else {
      b.push(await raw(client, reader, name, s));
      a.push(await ours(streams, name, s));
    }
  }
  const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
  console.log(
    `streams benchmark: ${s.messages} messages a round, ${s.rounds} rounds, concurrency ` +
      `${s.concurrency} (${fmtLoad(os.loadavg(), cpuPressure())})\n`,
  );
  console.log(
    table(
      ['contender', 'produce+consume+ack msg/s (median)', 'ratio'],
      [
        ['StreamsService consumer', fmt(median(a)), (median(a) / median(b)).toFixed(2)],
        ['raw XREADGROUP/XACK loop', fmt(median(b)), '1.00'],
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

await runBenchmark<Settings, State>('streams', {
  readSettings(argv) {
    const args = readArgs(argv, ['rounds', 'messages', 'concurrency', 'timeout-ms']);
    return {
      rounds: args.num('rounds', 5, 1, 100),
      messages: args.num('messages', 2000, 10, 1_000_000),
      concurrency: args.num('concurrency', 16, 1, 1000),
      timeoutMs: args.num('timeout-ms', 120_000, 1000, 600_000),
    };
  },
  state: { raw: [] },
  run,
  cleanup,
});
