import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';
import {
  getRedisToken,
  LockService,
  RedisModule,
  type RedisClient,
  type RedisModuleOptions,
} from '../../src/index.js';
import { startApp } from '../support/app.js';
import { ensureBuilt, startCoordWorker, type CoordWorker } from '../support/coord-workers.js';
import {
  topologies,
  uniqueConnectionName,
  uniquePrefix,
  waitFor,
  type TopologyCase,
} from '../support/redis.js';

/**
 * The invariants of semaphores, read-write locks and elections, checked by several processes
 * over many rounds against the real topologies, also with a holder frozen (SIGSTOP) past its
 * TTL and with a leader killed.
 */
describe.each(topologies().map((t) => [t.name, t] as const))(
  'Coordination across processes on %s',
  (_name, topology: TopologyCase) => {
    let app: INestApplication;
    let locks: LockService;
    let redis: RedisClient;
    const prefix = uniquePrefix(`coordp-${topology.name}`);
    const options: RedisModuleOptions = {
      ...topology.options,
      keyPrefix: prefix,
      lock: { retryInterval: 100 },
    };
    const workerOptions = (): RedisModuleOptions => ({
      ...options,
      connectionName: uniqueConnectionName('coord-worker'),
    });
    const workers: Array<CoordWorker<unknown>> = [];
    const spawnWorker = <R>(spec: object): CoordWorker<R> => {
      const worker = startCoordWorker<R>({ options: workerOptions(), ...spec });
      workers.push(worker as CoordWorker<unknown>);
      return worker;
    };
    let n = 0;

    beforeAll(async () => {
      ensureBuilt();
      app = await startApp({
        imports: [
          RedisModule.forRoot({ ...options, connectionName: uniqueConnectionName('coordp') }),
        ],
      });
      locks = app.get(LockService);
      redis = app.get<RedisClient>(getRedisToken());
    });

    afterAll(async () => {
      for (const worker of workers) {
        worker.child.kill('SIGCONT');
        worker.child.kill('SIGKILL');
      }
      await app?.close();
    });

    it('never more than `limit` permit holders, never a writer with anyone: 3 processes x 4 loops', async () => {
      const tag = `inv-${++n}`;
      const spec = { mode: 'invariants', name: tag, tag, limit: 3, ttl: 5_000, workers: 4 };
      const procs = [0, 1, 2].map(() =>
        spawnWorker<{ permits: number; sections: number }>({ ...spec, rounds: 15 }),
      );
      await Promise.all(procs.map((p) => p.started));
      for (const p of procs) p.send();
      const results = await Promise.all(procs.map((p) => p.finished));
      expect(results).toEqual(procs.map(() => ({ permits: 60, sections: 60 })));
      const t = `{${tag}}`;
      const most = Number(await redis.get(`${t}:max`));
      expect(most).toBeLessThanOrEqual(3);
      expect(most).toBeGreaterThanOrEqual(2); // the permits really were shared
      expect(Number(await redis.get(`${t}:active`))).toBe(0);
      expect(Number((await redis.get(`${t}:bad`)) ?? 0)).toBe(0);
      // Writes were exclusive, so they were appended in the order they held the lock.
      const fences = (await redis.lrange(`${t}:fences`, 0, -1)).map(Number);
      expect(fences).toHaveLength(45);
      for (let i = 1; i < fences.length; i++) expect(fences[i]).toBeGreaterThan(fences[i - 1]);
      expect(await locks.semaphore(tag, { limit: 3 }).holders()).toBe(0);
    }, 60_000);

    it.each(['permit', 'write'] as const)(
      'a %s holder frozen (SIGSTOP) past its TTL loses it to another; resumed, it learns of the loss through its signal',
      async (kind) => {
        const id = `frozen-${kind}-${++n}`;
        const worker = spawnWorker<{ outcome: string; error?: string }>({
          mode: 'hold',
          kind,
          name: id,
          limit: 1,
          ttl: 400,
        });
        await worker.started;
        worker.send();
        await waitFor(() => /held (\d+)/.exec(worker.output()), { what: 'the worker to hold' });
        worker.child.kill('SIGSTOP');
        try {
          if (kind === 'permit') {
            const sem = locks.semaphore(id, { limit: 1, ttl: 5_000 });
            const permit = await sem.acquire({ wait: 5_000 });
            worker.child.kill('SIGCONT');
            expect(await worker.finished).toMatchObject({
              outcome: 'rejected',
              error: 'LockLostError',
            });
            // Resumed, it neither kept nor re-took a permit: still only ours.
            expect(await sem.holders()).toBe(1);
            expect(permit.signal.aborted).toBe(false);
            await permit.release();
          } else {
            const held = Number(/held (\d+)/.exec(worker.output())![1]);
            const rw = locks.readWrite(id, { ttl: 5_000 });
            const write = await rw.write({ wait: 5_000 });
            expect(write.fencingToken).toBeGreaterThan(held);
            worker.child.kill('SIGCONT');
            expect(await worker.finished).toMatchObject({
              outcome: 'rejected',
              error: 'LockLostError',
            });
            expect(await rw.tryRead()).toBeNull();
            await write.release();
          }
        } finally {
          worker.child.kill('SIGCONT');
        }
      },
      30_000,
    );

    it('one leader at a time among 3 processes: a killed leader and a frozen one are replaced; resumed, the frozen one steps down', async () => {
      const id = `election-${++n}`;
      const ttl = 600;
      const procs = [0, 1, 2].map(() =>
        spawnWorker<{ terms: number[] }>({ mode: 'leader', name: id, ttl }),
      );
      await Promise.all(procs.map((p) => p.started));
      for (const p of procs) p.send();
      const leaderOf = (terms: Set<string>): CoordWorker<{ terms: number[] }> | undefined =>
        procs.find((p) => {
          const won = [...p.output().matchAll(/^leader (\d+)$/gm)].map((m) => m[1]);
          return won.some((t) => !terms.has(t));
        });
      const seen = new Set<string>();
      const lastTerm = (p: CoordWorker<unknown>): string =>
        [...p.output().matchAll(/^leader (\d+)$/gm)].pop()![1];

      const first = await waitFor(() => leaderOf(seen), { what: 'a first leader' });
      const firstTerm = lastTerm(first);
      seen.add(firstTerm);
      first.child.kill('SIGKILL');

      const second = await waitFor(() => leaderOf(seen), { what: 'a leader after the kill' });
      expect(second).not.toBe(first);
      const secondTerm = lastTerm(second);
      expect(Number(secondTerm)).toBeGreaterThan(Number(firstTerm));
      seen.add(secondTerm);
      second.child.kill('SIGSTOP');
      let third: CoordWorker<{ terms: number[] }>;
      try {
        third = await waitFor(() => leaderOf(seen), { what: 'a leader after the freeze' });
      } finally {
        second.child.kill('SIGCONT');
      }
      expect(third).not.toBe(second);
      const thirdTerm = lastTerm(third);
      expect(Number(thirdTerm)).toBeGreaterThan(Number(secondTerm));
      // Resumed, the frozen leader learns of its demotion through the signal and the events.
      await waitFor(() => second.output().includes(`aborted ${secondTerm} LockLostError`), {
        what: 'the frozen leader to see its signal abort',
      });
      expect(second.output()).toMatch(new RegExp(`^follower ${secondTerm} `, 'm'));

      for (const p of [second, third]) p.send('stop');
      const results = await Promise.all([second.finished, third.finished]);
      // Every term was won by one process only.
      const all = results.flatMap((r) => r.terms).concat(Number(firstTerm));
      expect(new Set(all).size).toBe(all.length);
      expect(await redis.exists(`leader:{${id}}`)).toBe(0);
    }, 60_000);
  },
);
