import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Injectable, type INestApplication } from '@nestjs/common';

import {
  getRedisToken,
  Leader,
  LockLostError,
  LockNotAcquiredError,
  LockService,
  RedisModule,
  type LeadershipChange,
  type RedisClient,
  type RedisModuleOptions,
} from '../../src/index.js';
import { startApp } from '../support/app.js';
import {
  topologies,
  uniqueConnectionName,
  uniquePrefix,
  untilAborted,
  waitFor,
  type TopologyCase,
} from '../support/redis.js';

@Injectable()
class ReportJob {
  runs = 0;

  @Leader('nightly-report', { ttl: 2_000 })
  run(label: string): string {
    this.runs += 1;
    return `ran ${label}`;
  }
}

/** Names that would break hash tags if used raw: empty tag, nested and unbalanced braces. */
const HOSTILE = ['}x', '{a}b', '{}', 'a{b', '%7B{', 'plain'];

describe.each(topologies().map((t) => [t.name, t] as const))(
  'Coordination primitives on %s',
  (_name, topology: TopologyCase) => {
    let app: INestApplication;
    let locks: LockService;
    let redis: RedisClient;
    const prefix = uniquePrefix(`coord-${topology.name}`);
    const options: RedisModuleOptions = {
      ...topology.options,
      keyPrefix: prefix,
      lock: { retryInterval: 200 },
    };
    let n = 0;
    const name = (label: string): string => `${label}-${++n}`;

    beforeAll(async () => {
      app = await startApp({
        imports: [
          RedisModule.forRoot({ ...options, connectionName: uniqueConnectionName('coord') }),
        ],
        providers: [ReportJob],
      });
      locks = app.get(LockService);
      redis = app.get<RedisClient>(getRedisToken());
    });

    afterAll(async () => {
      await app?.close();
    });

    it('a semaphore admits at most `limit` holders; release frees a permit; a second release is false', async () => {
      const sem = locks.semaphore(name('sem'), { limit: 2, ttl: 5_000 });
      const a = (await sem.tryAcquire())!;
      const b = (await sem.tryAcquire())!;
      expect(a).not.toBeNull();
      expect(b).not.toBeNull();
      expect(a.token).toMatch(/^[0-9a-f]{32}$/);
      expect(await sem.tryAcquire()).toBeNull();
      expect(await sem.holders()).toBe(2);
      expect(await a.release()).toBe(true);
      expect(await a.release()).toBe(false);
      expect(a.signal.aborted).toBe(false);
      const c = (await sem.tryAcquire())!;
      expect(c).not.toBeNull();
      expect(await sem.tryAcquire()).toBeNull();
      await Promise.all([b.release(), c.release()]);
      expect(await sem.holders()).toBe(0);
    });

    it('acquire waits for a release and is woken by it; a wait that runs out or is aborted rejects', async () => {
      const sem = locks.semaphore(name('sem-wait'), { limit: 1, ttl: 5_000 });
      const held = await sem.acquire();
      const waiting = sem.acquire({ wait: 5_000 });
      await expect(sem.acquire({ wait: 100 })).rejects.toThrow(LockNotAcquiredError);
      const controller = new AbortController();
      const aborted = sem.acquire({ wait: 5_000, signal: controller.signal });
      controller.abort();
      await expect(aborted).rejects.toThrow(/aborted/);
      await held.release();
      const next = await waiting;
      expect(await sem.holders()).toBe(1);
      await next.release();
    });

    it('a permit not renewed expires with its holder: its signal aborts, the permit is free again', async () => {
      const sem = locks.semaphore(name('sem-expiry'), { limit: 1, ttl: 300 });
      const crashed = (await sem.tryAcquire({ autoExtend: false }))!;
      const lost = untilAborted(crashed.signal);
      const next = await sem.acquire({ wait: 3_000 });
      await lost;
      expect(crashed.signal.reason).toBeInstanceOf(LockLostError);
      expect(await crashed.release()).toBe(false);
      expect(await crashed.extend()).toBe(false);
      expect(await sem.holders()).toBe(1);
      await next.release();
    });

    it('withPermit renews the permit past its TTL and never runs more than `limit` at once', async () => {
      const sem = locks.semaphore(name('sem-with'), { limit: 3, ttl: 400 });
      let active = 0;
      let most = 0;
      const results = await Promise.all(
        Array.from({ length: 9 }, (_, i) =>
          sem.withPermit(async (permit) => {
            active += 1;
            most = Math.max(most, active);
            if (i === 0) {
              const first = permit.expiresAt;
              await waitFor(() => permit.expiresAt > first, { what: 'a renewal' });
            } else {
              await redis.ping();
            }
            active -= 1;
            return i;
          }),
        ),
      );
      expect(results).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
      expect(most).toBe(3);
      expect(await sem.holders()).toBe(0);
    });

    it('withPermit rejects with LockLostError when the permit was lost during the work', async () => {
      const sem = locks.semaphore(name('sem-lost'), { limit: 1, ttl: 5_000 });
      const running = sem.withPermit(async (permit) => {
        await redis.del(`sem:{${sem.name}}`); // an operator removes the holders
        await permit.extend();
        return permit.signal.aborted;
      });
      await expect(running).rejects.toThrow(LockLostError);
      const tolerant = await sem.withPermit(
        async (permit) => {
          await redis.del(`sem:{${sem.name}}`);
          await permit.extend();
          return 'kept';
        },
        { throwOnLost: false },
      );
      expect(tolerant).toBe('kept');
    });

    it('read-write: readers share, a writer is alone, a waiting writer blocks new readers', async () => {
      const rw = locks.readWrite(name('rw'), { ttl: 5_000 });
      const r1 = (await rw.tryRead())!;
      const r2 = (await rw.tryRead())!;
      expect(r1).not.toBeNull();
      expect(r2).not.toBeNull();
      expect(await rw.tryWrite()).toBeNull();
      const writing = rw.write({ wait: 5_000 });
      // The writer's intent is recorded: new readers wait behind it.
      await waitFor(async () => (await redis.zcard(`rw:{${rw.name}}:ww`)) === 1, {
        what: 'the writer to record its intent',
      });
      expect(await rw.tryRead()).toBeNull();
      const reading = rw.read({ wait: 5_000 });
      await r1.release();
      expect(await rw.tryWrite()).toBeNull();
      await r2.release();
      const w = await writing;
      expect(w.fencingToken).toBeGreaterThan(0);
      expect(await rw.tryRead()).toBeNull();
      expect(await rw.tryWrite()).toBeNull();
      await w.release();
      const r3 = await reading;
      await r3.release();
      const w2 = (await rw.tryWrite())!;
      expect(w2.fencingToken).toBeGreaterThan(w.fencingToken);
      await w2.release();
      expect(await w2.release()).toBe(false);
    });

    it('a writer that gives up withdraws its intent at once; withRead / withWrite release', async () => {
      const rw = locks.readWrite(name('rw-giveup'), { ttl: 5_000 });
      const reader = (await rw.tryRead())!;
      await expect(rw.write({ wait: 150 })).rejects.toThrow(LockNotAcquiredError);
      // Without the withdrawal, readers would wait for the intent to lapse (seconds).
      const another = (await rw.tryRead())!;
      expect(another).not.toBeNull();
      await Promise.all([reader.release(), another.release()]);
      const order: string[] = [];
      await Promise.all([
        rw.withRead(async () => order.push('read')),
        rw.withWrite(async (lock) => order.push(`write ${lock.fencingToken > 0}`)),
        rw.withRead(async () => order.push('read')),
      ]);
      expect(order.sort()).toEqual(['read', 'read', 'write true']);
    });

    it('hostile names keep every key of a name in one slot (no CROSSSLOT) and never collide', async () => {
      const got: number[] = [];
      for (const raw of HOSTILE) {
        const sem = locks.semaphore(`${raw}-${++n}`, { limit: 1, ttl: 5_000 });
        const permit = await sem.acquire();
        expect(await sem.acquire({ wait: 50 }).catch((e: Error) => e.name)).toBe(
          'LockNotAcquiredError',
        );
        await permit.release();
        const rw = locks.readWrite(`${raw}-${n}`, { ttl: 5_000 });
        const w = await rw.write();
        got.push(w.fencingToken);
        await w.release();
        const r = await rw.read();
        await r.release();
        const election = locks.leader(`${raw}-${n}`, { ttl: 2_000 });
        await waitFor(() => election.isLeader, { what: `leadership of "${raw}"` });
        await election.stop();
      }
      expect(got).toHaveLength(HOSTILE.length);
      // `a` and `{a}` are different names with different keys.
      const plain = locks.semaphore('same', { limit: 1, ttl: 5_000 });
      const braced = locks.semaphore('{same}', { limit: 1, ttl: 5_000 });
      const p1 = (await plain.tryAcquire())!;
      const p2 = (await braced.tryAcquire())!;
      expect(p1).not.toBeNull();
      expect(p2).not.toBeNull();
      await Promise.all([p1.release(), p2.release()]);
    });

    it('invalid names and options throw errors naming the parameter and the value', () => {
      expect(() => locks.semaphore('', { limit: 1 })).toThrow(
        /name must be a non-empty string, got ""/,
      );
      expect(() => locks.semaphore('x', { limit: 0 })).toThrow(
        /limit must be an integer of at least 1, got 0/,
      );
      expect(() => locks.semaphore('x', { limit: 1.5 })).toThrow(/limit .* got 1.5/);
      expect(() => locks.semaphore('x', { limit: 1, ttl: -1 })).toThrow(/ttl must be .* got -1/);
      expect(() => locks.readWrite('x'.repeat(600))).toThrow(/at most 512 characters, got 600/);
      expect(() => locks.leader('x', { ttl: Number.NaN })).toThrow(/ttl .* got NaN/);
    });

    it('one leader among candidates; a stopped leader resigns and another takes over at once', async () => {
      const id = name('election');
      const a = locks.leader(id, { ttl: 3_000 });
      const b = locks.leader(id, { ttl: 3_000 });
      const changes: LeadershipChange[] = [];
      const iterated: LeadershipChange[] = [];
      b.on('change', (change) => changes.push(change));
      await waitFor(() => a.isLeader || b.isLeader, { what: 'a leader' });
      const [leader, follower] = a.isLeader ? [a, b] : [b, a];
      expect(follower.isLeader).toBe(false);
      expect(follower.term).toBeUndefined();
      expect(follower.signal.aborted).toBe(true);
      const signal = leader.signal;
      expect(signal.aborted).toBe(false);
      const term = leader.term!;
      const iterating = (async () => {
        for await (const change of follower) {
          iterated.push(change);
          if (change.isLeader) break;
        }
      })();
      await leader.stop();
      expect(signal.aborted).toBe(true);
      expect(signal.reason).toBeInstanceOf(LockLostError);
      expect(leader.isLeader).toBe(false);
      // Woken by the resignation, not by the TTL (3 s): the wait below is far shorter.
      await waitFor(() => follower.isLeader, {
        what: 'the follower to take over',
        timeoutMs: 1_500,
      });
      expect(follower.term!).toBeGreaterThan(term);
      await iterating;
      expect(iterated.map((c) => c.isLeader)).toEqual([false, true]);
      if (follower === b) expect(changes).toEqual([{ isLeader: true, term: follower.term }]);
      await follower.stop();
      expect(await redis.exists(`leader:{${id}}`)).toBe(0);
    });

    it('@Leader runs the method only while this process leads, and skips it otherwise', async () => {
      const job = app.get(ReportJob);
      await waitFor(() => job.run('first') !== undefined, {
        what: '@Leader to elect this process',
      });
      expect(job.run('again')).toBe('ran again');
      // Someone else takes the leadership (another instance): calls are skipped.
      await redis.set(`leader:{nightly-report}`, 'someone-else:1', 'PX', 1_500);
      await waitFor(() => job.run('skipped') === undefined, {
        what: 'the renewal to notice the lost leadership',
      });
      const runs = job.runs;
      expect(job.run('skipped')).toBeUndefined();
      expect(job.runs).toBe(runs);
      // The other one's leadership lapses: this process takes over again.
      await waitFor(() => job.run('back') !== undefined, { what: 'this process to lead again' });
    });
  },
);
