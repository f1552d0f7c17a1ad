import { createHash } from 'node:crypto';

import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';

import {
  getRedisToken,
  LockService,
  RedisModule,
  type Permit,
  type RedisClient,
  type RedisModuleOptions,
} from '../../src/index.js';
import { SEMAPHORE_RELEASE } from '../../src/lock/coordination.scripts.js';
import { CapturingLogger, startApp } from '../support/app.js';
import { ensureBuilt, startCoordWorker, type CoordWorker } from '../support/coord-workers.js';
import { FaultProxy } from '../support/fault-proxy.js';
import {
  standaloneUrl,
  topologies,
  uniqueConnectionName,
  uniquePrefix,
  waitFor,
  type TopologyCase,
} from '../support/redis.js';

/**
 * The semaphore queue in Redis: permits go to waiters in arrival order across processes, a
 * release hands a freed permit to the oldest live waiter, a waiter whose process died is
 * skipped (or loses what it was granted after its lease), and a release whose reply was lost
 * neither grants twice nor strands the permit.
 */
const RETRY_INTERVAL = 100;
/** The queue lease of a waiter with that retryInterval: max(1 s, 4 × retryInterval). */
const LEASE = 1_000;

/** The server's clock, in ms. */
async function serverNow(redis: RedisClient): Promise<number> {
  const [s, us] = await redis.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}

describe.each(
  topologies()
    .filter((t) => t.name !== 'sentinel')
    .map((t) => [t.name, t] as const),
)('Semaphore queue across processes on %s', (_name, topology: TopologyCase) => {
  let app: INestApplication;
  let locks: LockService;
  let redis: RedisClient;
  const prefix = uniquePrefix(`coordq-${topology.name}`);
  const options: RedisModuleOptions = {
    ...topology.options,
    keyPrefix: prefix,
    lock: { retryInterval: RETRY_INTERVAL },
  };
  const workers: Array<CoordWorker<unknown>> = [];
  const spawnQueueWorker = async (spec: object): Promise<CoordWorker<{ done: number }>> => {
    const worker = startCoordWorker<{ done: number }>({
      options: { ...options, connectionName: uniqueConnectionName('coordq-worker') },
      mode: 'queue',
      ...spec,
    });
    workers.push(worker);
    await worker.started;
    worker.send();
    return worker;
  };
  let n = 0;
  const queued = (name: string): Promise<number> => redis.zcard(`sem:{${name}}:q`);
  const queueOf = async (name: string, count: number): Promise<void> => {
    await waitFor(async () => (await queued(name)) === count, {
      what: `${count} waiter(s) queued for "${name}"`,
      timeoutMs: 20_000,
    });
  };

  beforeAll(async () => {
    ensureBuilt();
    app = await startApp({
      imports: [
        RedisModule.forRoot({ ...options, connectionName: uniqueConnectionName('coordq') }),
      ],
    });
    locks = app.get(LockService);
    redis = app.get<RedisClient>(getRedisToken());
  });

  afterAll(async () => {
    for (const worker of workers) worker.child.kill('SIGKILL');
    await app?.close();
  });

  it('permits go in arrival order across two processes and this one; every waiter gets exactly one', async () => {
    const name = `fifo-${++n}`;
    const spec = { name, tag: name, limit: 1, ttl: 10_000 };
    const [a, b] = await Promise.all([spawnQueueWorker(spec), spawnQueueWorker(spec)]);
    const sem = locks.semaphore(name, { limit: 1, ttl: 10_000 });
    const held = (await sem.tryAcquire())!;
    expect(held).not.toBeNull();
    const order = `{${name}}:order`;
    const local: Array<Promise<unknown>> = [];
    const arrivals: Array<[string, () => void]> = [
      ['a1', () => a.send('acquire a1')],
      ['b1', () => b.send('acquire b1')],
      ['t1', () => local.push(sem.withPermit(() => redis.rpush(order, 't1')))],
      ['a2', () => a.send('acquire a2')],
      ['b2', () => b.send('acquire b2')],
      ['t2', () => local.push(sem.withPermit(() => redis.rpush(order, 't2')))],
      ['b3', () => b.send('acquire b3')],
    ];
    for (const [i, [, arrive]] of arrivals.entries()) {
      arrive();
      await queueOf(name, i + 1);
    }
    expect(await held.release()).toBe(true);
    await Promise.all(local);
    a.send('stop');
    b.send('stop');
    expect(await a.finished).toEqual({ done: 2 });
    expect(await b.finished).toEqual({ done: 3 });
    expect(await redis.lrange(order, 0, -1)).toEqual(arrivals.map(([label]) => label));
    expect(await sem.holders()).toBe(0);
    expect(await queued(name)).toBe(0);
    expect(await redis.hlen(`sem:{${name}}:qe`)).toBe(0);
  }, 60_000);

  it('with 2 permits, queued waiters of both processes are granted oldest first, never more than 2 at once', async () => {
    const name = `fifo2-${++n}`;
    const spec = { name, tag: name, limit: 2, ttl: 10_000 };
    const [a, b] = await Promise.all([spawnQueueWorker(spec), spawnQueueWorker(spec)]);
    const sem = locks.semaphore(name, { limit: 2, ttl: 10_000 });
    const held = [(await sem.tryAcquire())!, (await sem.tryAcquire())!];
    expect(await sem.tryAcquire()).toBeNull();
    const labels = ['a1', 'b1', 'a2', 'b2', 'a3', 'b3'];
    for (const [i, label] of labels.entries()) {
      (label.startsWith('a') ? a : b).send(`acquire ${label}`);
      await queueOf(name, i + 1);
    }
    // The first release admits a1 alone; the second, b1: the grants follow the queue.
    await held[0].release();
    await waitFor(() => a.output().includes('done a1'), { what: 'a1 to finish' });
    await held[1].release();
    a.send('stop');
    b.send('stop');
    expect(await a.finished).toEqual({ done: 3 });
    expect(await b.finished).toEqual({ done: 3 });
    const order = await redis.lrange(`{${name}}:order`, 0, -1);
    expect([...order].sort()).toEqual([...labels].sort());
    expect(order[0]).toBe('a1');
    expect(await sem.holders()).toBe(0);
    expect(await queued(name)).toBe(0);
  }, 60_000);

  const standaloneOnly = topology.name === 'standalone' ? it : it.skip;

  standaloneOnly(
    'a waiter killed (SIGKILL) while queued is skipped once its lease passed: the release grants the next one',
    async () => {
      const name = `killed-${++n}`;
      const worker = await spawnQueueWorker({ name, tag: name, limit: 1, ttl: 10_000 });
      const sem = locks.semaphore(name, { limit: 1, ttl: 10_000 });
      const held = (await sem.tryAcquire())!;
      worker.send('acquire w1');
      await queueOf(name, 1);
      const [dead] = await redis.zrange(`sem:{${name}}:q`, '0', '0');
      const mine = sem.acquire({ wait: 20_000 });
      await queueOf(name, 2);
      worker.child.kill('SIGKILL');
      await new Promise((resolve) => worker.child.once('exit', resolve));
      // Its entry's deadline passes (our own waiter keeps renewing its entry meanwhile).
      const entry = (await redis.hget(`sem:{${name}}:qe`, dead))!;
      const deadline = Number(entry.split('|')[0]);
      await waitFor(async () => (await serverNow(redis)) > deadline, {
        what: "the dead waiter's deadline to pass",
      });
      await held.release();
      const permit = await mine;
      expect(await sem.holders()).toBe(1);
      expect(await redis.zscore(`sem:{${name}}`, dead)).toBeNull();
      expect(await redis.zscore(`sem:{${name}}`, permit.token)).not.toBeNull();
      expect(await queued(name)).toBe(0);
      await permit.release();
      expect(await sem.holders()).toBe(0);
    },
    60_000,
  );

  standaloneOnly(
    'a waiter killed just before its grant holds the permit for its lease, not its TTL; then the next waiter gets it',
    async () => {
      const name = `killed-granted-${++n}`;
      const worker = await spawnQueueWorker({ name, tag: name, limit: 1, ttl: 30_000 });
      const sem = locks.semaphore(name, { limit: 1, ttl: 30_000 });
      const held = (await sem.tryAcquire())!;
      worker.send('acquire w1');
      await queueOf(name, 1);
      const [dead] = await redis.zrange(`sem:{${name}}:q`, '0', '0');
      const mine = sem.acquire({ wait: 20_000 });
      await queueOf(name, 2);
      worker.child.kill('SIGKILL');
      await new Promise((resolve) => worker.child.once('exit', resolve));
      const released = await held.release();
      expect(released).toBe(true);
      // Granted (its entry was still live), but only for its lease: it never confirmed.
      const until = await redis.zscore(`sem:{${name}}`, dead);
      expect(until).not.toBeNull();
      expect(Number(until) - (await serverNow(redis))).toBeLessThanOrEqual(LEASE);
      const permit = await mine;
      expect(permit.token).not.toBe(dead);
      expect(await redis.zscore(`sem:{${name}}`, dead)).toBeNull();
      expect(await sem.holders()).toBe(1);
      await permit.release();
      expect(await sem.holders()).toBe(0);
      expect(await queued(name)).toBe(0);
    },
    60_000,
  );
});

describe('Semaphore queue under faults (standalone)', () => {
  const prefix = uniquePrefix('coordqf');
  const base: RedisModuleOptions = {
    keyPrefix: prefix,
    lock: { retryInterval: RETRY_INTERVAL },
  };
  let direct: INestApplication;
  let others: LockService;
  let redis: RedisClient;
  let proxy: FaultProxy | undefined;
  const apps: INestApplication[] = [];
  let n = 0;

  beforeAll(async () => {
    direct = await startApp({
      imports: [
        RedisModule.forRoot({
          ...base,
          url: standaloneUrl(),
          connectionName: uniqueConnectionName('coordqf-direct'),
        }),
      ],
    });
    others = direct.get(LockService);
    redis = direct.get<RedisClient>(getRedisToken());
  });

  afterEach(async () => {
    proxy?.resume();
    for (const app of apps.splice(0)) await app.close();
    await proxy?.close();
    proxy = undefined;
  });

  afterAll(async () => {
    await direct?.close();
  });

  it('a release whose reply was lost runs twice: one grant, the local waiter finds it by polling, counts exact', async () => {
    const url = new URL(standaloneUrl());
    proxy = await FaultProxy.start({ host: url.hostname, port: Number(url.port) });
    const faulty = await startApp({
      imports: [
        RedisModule.forRoot({
          ...base,
          url: proxy.url,
          connectionName: uniqueConnectionName('coordqf-proxied'),
          redisOptions: { disconnectTimeout: 10 },
        }),
      ],
    });
    apps.push(faulty);
    const locks = faulty.get(LockService);
    const name = `lost-release-${++n}`;
    const sem = locks.semaphore(name, { limit: 1, ttl: 5_000 });
    const theirs = others.semaphore(name, { limit: 1, ttl: 5_000 });
    const held = (await sem.tryAcquire({ autoExtend: false }))!;
    const local = sem.acquire({ wait: 10_000 });
    await waitFor(async () => (await redis.zcard(`sem:{${name}}:q`)) === 1, { what: 'queued' });
    const remote = theirs.acquire({ wait: 10_000 });
    await waitFor(async () => (await redis.zcard(`sem:{${name}}:q`)) === 2, { what: 'queued' });
    const sha = createHash('sha1').update(SEMAPHORE_RELEASE.lua).digest('hex');
    const dropped = proxy.dropReply({ match: sha });
    const releasing = held.release();
    await dropped;
    expect(await releasing).toBe(true);
    expect(proxy.counts.dropped).toBe(1);
    const first = await local;
    // The re-run granted nothing more: one holder (the local waiter), the other still queued.
    expect(await sem.holders()).toBe(1);
    expect(await redis.zcard(`sem:{${name}}:q`)).toBe(1);
    expect(await first.release()).toBe(true);
    const second = await remote;
    expect(await theirs.holders()).toBe(1);
    await second.release();
    expect(await theirs.holders()).toBe(0);
    expect(await redis.zcard(`sem:{${name}}:q`)).toBe(0);
  }, 30_000);

  it('without channel rights (ACL), releases still succeed and hand over in order; waiters poll; one warning', async () => {
    const user = `coordq-${Date.now()}`;
    const password = 'coordq-secret';
    const admin = redis;
    // Every command and key, but only the released channel: grant messages are refused.
    await admin.call(
      'ACL',
      'SETUSER',
      user,
      'on',
      `>${password}`,
      '~*',
      '+@all',
      'resetchannels',
      `&${prefix}coord:released`,
    );
    try {
      const url = new URL(standaloneUrl());
      const logger = new CapturingLogger();
      const start = (label: string): Promise<INestApplication> =>
        startApp(
          {
            imports: [
              RedisModule.forRoot({
                ...base,
                host: url.hostname,
                port: Number(url.port),
                username: user,
                password,
                connectionName: uniqueConnectionName(label),
              }),
            ],
          },
          logger,
        );
      const [one, two] = await Promise.all([start('coordq-acl-1'), start('coordq-acl-2')]);
      apps.push(one, two);
      const name = `acl-${++n}`;
      const a = one.get(LockService).semaphore(name, { limit: 1, ttl: 5_000 });
      const b = two.get(LockService).semaphore(name, { limit: 1, ttl: 5_000 });
      const held = (await a.tryAcquire())!;
      const permits: Permit[] = [];
      const waits = [b.acquire({ wait: 10_000 }), b.acquire({ wait: 10_000 })];
      await waitFor(async () => (await redis.zcard(`sem:{${name}}:q`)) === 2, {
        what: 'queued',
      });
      expect(await held.release()).toBe(true);
      permits.push(await waits[0]);
      expect(await b.holders()).toBe(1);
      expect(await permits[0].release()).toBe(true);
      permits.push(await waits[1]);
      expect(await permits[1].release()).toBe(true);
      expect(await a.holders()).toBe(0);
      expect(logger.matching('refused PUBLISH of a semaphore grant')).toHaveLength(1);
    } finally {
      await admin.call('ACL', 'DELUSER', user);
    }
  }, 30_000);
});
