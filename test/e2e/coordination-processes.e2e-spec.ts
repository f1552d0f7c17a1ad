import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';

import {
  getRedisToken,
  LockService,
  RedisModule,
  type RedisClient,
  type RedisModuleOptions,
} from '../../src/index.js';
import { startApp } from '../support/app.js';
import {
  ensureBuilt,
  killWorkersLeftRunning,
  startCoordWorker,
  type CoordWorker,
} from '../support/coord-workers.js';
import {
  topologies,
  uniqueConnectionName,
  uniquePrefix,
  waitFor,
  type TopologyCase,
} from '../support/redis.js';

afterEach(killWorkersLeftRunning);

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
      workers.push(worker);
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
        spawnWorker<{ permits: number; sections: number }>({ ...spec, rounds: 10 }),
      );
      await Promise.all(procs.map((p) => p.started));
      for (const p of procs) p.send();
      const results = await Promise.all(procs.map((p) => p.finished));
      expect(results).toEqual(procs.map(() => ({ permits: 40, sections: 40 })));
      const t = `{${tag}}`;
      const most = Number(await redis.get(`${t}:max`));
      expect(most).toBeLessThanOrEqual(3);
      expect(most).toBeGreaterThanOrEqual(2); // the permits really were shared
      expect(Number(await redis.get(`${t}:active`))).toBe(0);
      expect(Number((await redis.get(`${t}:bad`)) ?? 0)).toBe(0);
      // Writes were exclusive, so they were appended in the order they held the lock.
      const fences = (await redis.lrange(`${t}:fences`, 0, -1)).map(Number);
      expect(fences).toHaveLength(30);
      for (let i = 1; i < fences.length; i++) expect(fences[i]).toBeGreaterThan(fences[i - 1]);
      expect(await locks.semaphore(tag, { limit: 3 }).holders()).toBe(0);
    }, 60_000);

    it('holders frozen (SIGSTOP) past their TTL lose to others; resumed, they learn of the loss through their signal', async () => {
      const id = `frozen-${++n}`;
      const worker = spawnWorker<Record<string, { outcome: string; error?: string }>>({
        mode: 'hold',
        kinds: ['permit', 'write'],
        name: id,
        ttl: 400,
      });
      await worker.started;
      worker.send();
      const held = await waitFor(() => /held write (\d+)/.exec(worker.output()), {
        what: 'the worker to hold the write lock',
        timeoutMs: 20_000,
      });
      await waitFor(() => worker.output().includes('held permit'), {
        what: 'the worker to hold the permit',
      });
      worker.child.kill('SIGSTOP');
      try {
        // Frozen, it cannot renew: both expire and others get them.
        const sem = locks.semaphore(`${id}-permit`, { limit: 1, ttl: 5_000 });
        const rw = locks.readWrite(`${id}-write`, { ttl: 5_000 });
        const [permit, write] = await Promise.all([
          sem.acquire({ wait: 10_000 }),
          rw.write({ wait: 10_000 }),
        ]);
        expect(write.fencingToken).toBeGreaterThan(Number(held[1]));
        worker.child.kill('SIGCONT');
        expect(await worker.finished).toEqual({
          permit: { outcome: 'rejected', error: 'LockLostError' },
          write: { outcome: 'rejected', error: 'LockLostError' },
        });
        // Resumed, it neither kept nor took back anything: only ours are held.
        expect(await sem.holders()).toBe(1);
        expect(await rw.tryRead()).toBeNull();
        expect(permit.signal.aborted).toBe(false);
        expect(write.signal.aborted).toBe(false);
        await Promise.all([permit.release(), write.release()]);
      } finally {
        worker.child.kill('SIGCONT');
      }
    }, 60_000);

    // Elections across processes on the first topology only: 3 more processes per topology
    // cost more than they add (the in-process spec covers elections on every topology).
    const electionsHere = topology.name === topologies()[0].name ? it : it.skip;
    electionsHere(
      'one leader at a time among 3 processes: a killed leader and a frozen one are replaced; resumed, the frozen one steps down',
      async () => {
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
        await waitFor(
          () =>
            second.output().includes(`aborted ${secondTerm} LockLostError`) &&
            new RegExp(`^follower ${secondTerm} `, 'm').test(second.output()),
          // Generous: on a machine loaded far beyond its cores a resumed process runs late.
          {
            what: 'the frozen leader to see its signal abort and report its demotion',
            timeoutMs: 30_000,
          },
        ).catch((err: Error) => {
          throw new Error(`${err.message}; its output: ${JSON.stringify(second.output())}`);
        });

        for (const p of [second, third]) p.send('stop');
        const results = await Promise.all([second.finished, third.finished]);
        // Every term was won by one process only.
        const all = results.flatMap((r) => r.terms).concat(Number(firstTerm));
        expect(new Set(all).size).toBe(all.length);
        expect(await redis.exists(`leader:{${id}}`)).toBe(0);
      },
      90_000,
    );
  },
);
