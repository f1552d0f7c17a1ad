// A second process for the coordination specs: boots the built module (dist/) in a Nest
// application context. Prints "ready" once connected and waits for a line on stdin to start.
// Usage: node coord-worker.mjs '<json spec>'
//   { mode: 'invariants', name, limit, ttl, workers, rounds, tag }
//       First the semaphore `name`: `workers` loops of `rounds` sections under withPermit;
//       each counts itself in `{tag}:active` (the highest count seen goes to `{tag}:max`),
//       makes one more round trip, and counts itself out. Then the read-write lock `name`,
//       the same with withRead / withWrite (one section in four writes): a write section that
//       sees a reader or another writer, or a read section that sees a writer, counts a
//       violation in `{tag}:bad`; writes append their fencing tokens to `{tag}:fences`.
//       Then one JSON line { permits, sections }.
//   { mode: 'hold', kinds: Array<'permit' | 'read' | 'write'>, name, ttl }
//       holds one of each kind at once (auto-extended; the permit of semaphore `<name>-permit`
//       with limit 1, the locks of read-write lock `<name>-<kind>`) until its signal aborts:
//       prints "held <kind> <fencingToken>" for each, then one JSON line
//       { <kind>: { outcome, error } } once all withPermit / withRead / withWrite settled.
//   { mode: 'queue', name, limit, ttl, tag }
//       on each line "acquire <label>" starts a withPermit on semaphore `name` (waiting up to a
//       minute) whose section appends <label> to the list `{tag}:order`, then prints
//       "done <label>" (or "failed <label> <error name>"); on "stop" waits for them all, closes
//       and prints one JSON line { done }.
//   { mode: 'leader', name, ttl }
//       campaigns; prints "leader <term>" / "follower <term> <reason>" on every change; on a
//       line "stop" on stdin resigns, closes and prints one JSON line { terms }.
import 'reflect-metadata';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';

import { untilAborted } from './until-aborted.mjs';

// A worker never outlives its spec: when the spec's process goes away (its end of stdin closes)
// or after four minutes, whatever state it is in, it exits by itself.
process.stdin.once('end', () => process.exit(4));
setTimeout(() => process.exit(3), 240_000).unref();

const { RedisModule, LockService, getRedisToken } = await import(
  new URL('../../dist/index.js', import.meta.url).href
);
const spec = JSON.parse(process.argv[2]);

class WorkerModule {}
Module({ imports: [RedisModule.forRoot(spec.options)] })(WorkerModule);

const app = await NestFactory.createApplicationContext(WorkerModule, {
  logger: false,
  abortOnError: false,
});
const locks = app.get(LockService);
const redis = app.get(getRedisToken());
const print = (line) => process.stdout.write(`${line}\n`);

print('ready');
const lines = [];
let next;
process.stdin.on('data', (chunk) => {
  for (const line of chunk.toString().split('\n').filter(Boolean)) {
    if (next) {
      const n = next;
      next = undefined;
      n(line);
    } else lines.push(line);
  }
});
const line = () => (lines.length ? Promise.resolve(lines.shift()) : new Promise((r) => (next = r)));
await line();

const finish = async (result) => {
  await app.close();
  print(JSON.stringify(result));
  process.stdin.destroy();
  process.exit(0);
};

// Counts a section in; returns the count; keeps the highest in `max`.
const ENTER = `local n = redis.call('INCR', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
return n`;
// A writer must be alone; a reader must see no writer. KEYS: readers, writers, bad.
const ENTER_RW = `local r = tonumber(redis.call('GET', KEYS[1]) or '0')
local w = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[1] == 'w' then
  if r > 0 or w > 0 then redis.call('INCR', KEYS[3]) end
  redis.call('INCR', KEYS[2])
else
  if w > 0 then redis.call('INCR', KEYS[3]) end
  redis.call('INCR', KEYS[1])
end
return 1`;

const t = `{${spec.tag}}`;

const runSemaphore = async () => {
  const semaphore = locks.semaphore(spec.name, { limit: spec.limit, ttl: spec.ttl });
  let done = 0;
  await Promise.all(
    Array.from({ length: spec.workers }, async () => {
      for (let i = 0; i < spec.rounds; i++) {
        await semaphore.withPermit(
          async () => {
            await redis.eval(ENTER, 2, `${t}:active`, `${t}:max`);
            await redis.get(`${t}:active`);
            await redis.decr(`${t}:active`);
          },
          { wait: 60_000 },
        );
        done += 1;
      }
    }),
  );
  return done;
};

const runReadWrite = async () => {
  const rw = locks.readWrite(spec.name, { ttl: spec.ttl });
  let done = 0;
  await Promise.all(
    Array.from({ length: spec.workers }, async (_, w) => {
      for (let i = 0; i < spec.rounds; i++) {
        const write = (i + w) % 4 === 0;
        const section = async (lock) => {
          await redis.eval(ENTER_RW, 3, `${t}:r`, `${t}:w`, `${t}:bad`, write ? 'w' : 'r');
          if (write) await redis.rpush(`${t}:fences`, String(lock.fencingToken));
          else await redis.get(`${t}:w`);
          await redis.decr(write ? `${t}:w` : `${t}:r`);
        };
        if (write) await rw.withWrite(section, { wait: 60_000 });
        else await rw.withRead(section, { wait: 60_000 });
        done += 1;
      }
    }),
  );
  return done;
};

if (spec.mode === 'invariants') {
  const permits = await runSemaphore();
  const sections = await runReadWrite();
  await finish({ permits, sections });
}

if (spec.mode === 'hold') {
  const outcomes = {};
  await Promise.all(
    spec.kinds.map(async (kind) => {
      const until = async (held) => {
        // Watched before "held" is printed: the spec stops this process as soon as it reads
        // that line, and a signal first read after the TTL passed is already aborted, so an
        // 'abort' listener added then never ran (the resumed worker waited forever).
        const { signal } = held;
        print(`held ${kind} ${held.fencingToken ?? 0}`);
        await untilAborted(signal);
        return 'finished';
      };
      const name = `${spec.name}-${kind}`;
      let run;
      if (kind === 'permit') {
        run = locks.semaphore(name, { limit: 1, ttl: spec.ttl }).withPermit(until);
      } else {
        const rw = locks.readWrite(name, { ttl: spec.ttl });
        run = kind === 'read' ? rw.withRead(until) : rw.withWrite(until);
      }
      outcomes[kind] = await run.then(
        (value) => ({ outcome: value }),
        (err) => ({ outcome: 'rejected', error: err.name }),
      );
    }),
  );
  await finish(outcomes);
}

if (spec.mode === 'queue') {
  const semaphore = locks.semaphore(spec.name, { limit: spec.limit, ttl: spec.ttl });
  const runs = [];
  for (let next = await line(); next !== 'stop'; next = await line()) {
    const [command, label] = next.split(' ');
    if (command !== 'acquire') continue;
    runs.push(
      semaphore
        .withPermit(() => redis.rpush(`${t}:order`, label), { wait: 60_000 })
        .then(
          () => print(`done ${label}`),
          (err) => print(`failed ${label} ${err.name}`),
        ),
    );
  }
  await Promise.all(runs);
  await finish({ done: runs.length });
}

if (spec.mode === 'leader') {
  const election = locks.leader(spec.name, { ttl: spec.ttl });
  const terms = [];
  election.on('change', (change) => {
    if (change.isLeader) {
      terms.push(change.term);
      // The signal of this leadership: it must abort on demotion (checked by the spec). Read
      // before "leader" is printed, for the reason given in `until` of mode 'hold'.
      const { signal } = election;
      print(`leader ${change.term}`);
      void untilAborted(signal).then(() => print(`aborted ${change.term} ${signal.reason?.name}`));
    } else print(`follower ${change.term} ${change.reason}`);
  });
  while ((await line()) !== 'stop');
  await election.stop();
  await finish({ terms });
}
