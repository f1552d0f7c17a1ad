// A second process for the lock contract suite: boots the built module (dist/) in a Nest
// application context and runs `workers` concurrent loops of `sections` critical sections on one
// resource, each a non-atomic GET/SET increment that only mutual exclusion keeps correct.
// Usage: node lock-worker.mjs '<json: { options, resource, counter, entries, workers, sections }>'
// Prints "ready" once connected, waits for a line on stdin to start, then prints one JSON line
// { done } and exits by itself.
// With { mode: 'hold', ttl }: holds the lock in withLock until its signal aborts, printing
// "held <fencingToken>" once it has it, then one JSON line { outcome, error, fencingToken, stats }
// (stats: its LockService.stats() before closing).
// With { mode: 'wait', rounds }: per round (the first starts with the start line, each next one
// with another line on stdin) waits in acquire, prints "held <round>", releases, prints
// "released <round>"; then one JSON line { done }. (After "held <round>" it also prints
// "fence <round> <fencingToken>".)
import 'reflect-metadata';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';

import { untilAborted } from './until-aborted.mjs';

const { RedisModule, LockService, getRedisToken } = await import(
  new URL('../../dist/index.js', import.meta.url).href
);
const spec = JSON.parse(process.argv[2]);

// A worker never outlives its spec: when the spec's process goes away (its end of stdin closes)
// or after four minutes, whatever state it is in, it exits by itself.
process.stdin.once('end', () => process.exit(4));
setTimeout(() => process.exit(3), 240_000).unref();

class WorkerModule {}
Module({ imports: [RedisModule.forRoot(spec.options)] })(WorkerModule);

const app = await NestFactory.createApplicationContext(WorkerModule, {
  logger: false,
  abortOnError: false,
});
const locks = app.get(LockService);
const redis = app.get(getRedisToken());

process.stdout.write('ready\n');
await new Promise((resolve) => process.stdin.once('data', resolve));

if (spec.mode === 'hold') {
  let fencingToken = 0;
  const outcome = await locks
    .withLock(
      spec.resource,
      async (lock) => {
        fencingToken = lock.fencingToken;
        // Watched before "held" is printed: the spec stops this process as soon as it reads
        // that line, and a signal first read after the TTL passed is already aborted, so an
        // 'abort' listener added then never ran (the resumed worker waited forever).
        const { signal } = lock;
        process.stdout.write(`held ${lock.fencingToken}\n`);
        await untilAborted(signal);
        return 'finished';
      },
      { ttl: spec.ttl },
    )
    .then(
      (value) => ({ outcome: value }),
      (err) => ({ outcome: 'rejected', error: err.name, message: err.message }),
    );
  const stats = locks.stats();
  await app.close();
  process.stdout.write(JSON.stringify({ ...outcome, fencingToken, stats }) + '\n');
  process.stdin.destroy();
  process.exit(0);
}

if (spec.mode === 'wait') {
  const lines = [];
  let next;
  process.stdin.on('data', () => (next ? (next(), (next = undefined)) : lines.push(1)));
  const line = () =>
    lines.length ? (lines.pop(), Promise.resolve()) : new Promise((r) => (next = r));
  for (let round = 0; round < spec.rounds; round++) {
    if (round > 0) await line();
    const lock = await locks.acquire(spec.resource, { ttl: 5000, wait: spec.wait ?? 5000 });
    process.stdout.write(`held ${round}\nfence ${round} ${lock.fencingToken}\n`);
    await lock.release();
    process.stdout.write(`released ${round}\n`);
  }
  await app.close();
  process.stdout.write(JSON.stringify({ done: spec.rounds }) + '\n');
  process.stdin.destroy();
  process.exit(0);
}

let done = 0;
await Promise.all(
  Array.from({ length: spec.workers }, async () => {
    for (let i = 0; i < spec.sections; i++) {
      await locks.withLock(
        spec.resource,
        async (lock) => {
          await redis.rpush(spec.entries, String(lock.fencingToken));
          const value = Number((await redis.get(spec.counter)) ?? 0);
          await redis.set(spec.counter, String(value + 1));
        },
        { ttl: 5000, wait: 60_000 },
      );
      done += 1;
    }
  }),
);
await app.close();
process.stdout.write(JSON.stringify({ done }) + '\n');
process.stdin.destroy();
