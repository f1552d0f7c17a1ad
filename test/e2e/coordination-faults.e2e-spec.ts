import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';

import {
  getRedisToken,
  LockLostError,
  LockService,
  RedisModule,
  type RedisClient,
  type RedisModuleOptions,
} from '../../src/index.js';
import { startApp } from '../support/app.js';
import { FaultProxy } from '../support/fault-proxy.js';
import {
  standaloneUrl,
  uniqueConnectionName,
  uniquePrefix,
  untilAborted,
  waitFor,
} from '../support/redis.js';

/**
 * Faults between the application and Redis, injected by the shared loopback proxy: a lost
 * reply (ioredis re-sends the command after reconnecting, so the script runs twice) and a
 * black-holed connection. One app talks through the proxy; another, direct, is the rest of the
 * world.
 */
describe('Coordination primitives under faults (fault proxy, standalone)', () => {
  let proxy: FaultProxy;
  let faulty: INestApplication;
  let direct: INestApplication;
  let locks: LockService;
  let others: LockService;
  let redis: RedisClient;
  const prefix = uniquePrefix('coordf');
  const base: RedisModuleOptions = { keyPrefix: prefix, lock: { retryInterval: 100 } };
  let n = 0;
  const name = (label: string): string => `${label}-${++n}`;

  beforeAll(async () => {
    direct = await startApp({
      imports: [
        RedisModule.forRoot({
          ...base,
          url: standaloneUrl(),
          connectionName: uniqueConnectionName('coordf-direct'),
        }),
      ],
    });
    others = direct.get(LockService);
    redis = direct.get<RedisClient>(getRedisToken());
  });

  afterAll(async () => {
    await direct?.close();
  });

  beforeEach(async () => {
    const url = new URL(standaloneUrl());
    proxy = await FaultProxy.start({ host: url.hostname, port: Number(url.port) });
    faulty = await startApp({
      imports: [
        RedisModule.forRoot({
          ...base,
          url: proxy.url,
          connectionName: uniqueConnectionName('coordf-proxied'),
          // A black-holed socket never answers the FIN of disconnect(); do not wait for it.
          redisOptions: { disconnectTimeout: 10 },
        }),
      ],
    });
    locks = faulty.get(LockService);
    // Load every script once, so that the armed drop hits the command under test.
    const sem = locks.semaphore(name('warm'), { limit: 1, ttl: 5_000 });
    await (await sem.acquire({ autoExtend: false })).release();
    const rw = locks.readWrite(name('warm'), { ttl: 5_000 });
    await (await rw.write({ autoExtend: false })).release();
    await (await rw.read({ autoExtend: false })).release();
    const election = locks.leader(name('warm'), { ttl: 5_000 });
    await waitFor(() => election.isLeader, { what: 'a first leadership' });
    await election.stop();
  });

  afterEach(async () => {
    proxy.resume();
    proxy.resetAll();
    await faulty?.close();
    await proxy.close();
  });

  it('a permit whose acquire reply was lost is held once: no ownerless permit, never over the limit', async () => {
    const id = name('sem-acquire');
    const sem = locks.semaphore(id, { limit: 1, ttl: 5_000 });
    const dropped = proxy.dropReply({ match: 'EVALSHA' });
    const acquiring = sem.tryAcquire({ autoExtend: false });
    await dropped;
    const permit = await acquiring;
    expect(permit).not.toBeNull();
    expect(proxy.counts.dropped).toBe(1);
    expect(await sem.holders()).toBe(1);
    expect(await others.semaphore(id, { limit: 1 }).tryAcquire()).toBeNull();
    expect(await permit!.release()).toBe(true);
    expect(await sem.holders()).toBe(0);
  });

  it('a release whose reply was lost still reports success; withPermit does not report a loss', async () => {
    const id = name('sem-release');
    const sem = locks.semaphore(id, { limit: 1, ttl: 5_000 });
    const permit = (await sem.tryAcquire({ autoExtend: false }))!;
    const dropped = proxy.dropReply({ match: 'EVALSHA' });
    const releasing = permit.release();
    await dropped;
    expect(await releasing).toBe(true);
    expect(permit.signal.aborted).toBe(false);
    expect(await sem.holders()).toBe(0);

    let drop: Promise<void> | undefined;
    const result = await sem.withPermit(
      () => {
        drop = proxy.dropReply({ match: 'EVALSHA' }); // the release's
        return 'done';
      },
      { autoExtend: false },
    );
    await drop;
    expect(result).toBe('done');
    expect(
      await others.semaphore(id, { limit: 1 }).tryAcquire({ autoExtend: false }),
    ).not.toBeNull();
  });

  it('a write lock whose acquire reply was lost is held once, with one fencing token minted', async () => {
    const id = name('rw-write');
    const rw = locks.readWrite(id, { ttl: 5_000 });
    const dropped = proxy.dropReply({ match: 'EVALSHA' });
    const acquiring = rw.tryWrite({ autoExtend: false });
    await dropped;
    const write = (await acquiring)!;
    expect(write).not.toBeNull();
    expect(String(write.fencingToken)).toBe(await redis.get(`rw:{${id}}:f`));
    expect(await others.readWrite(id).tryRead()).toBeNull();
    const releaseDropped = proxy.dropReply({ match: 'EVALSHA' });
    const releasing = write.release();
    await releaseDropped;
    expect(await releasing).toBe(true);
    const reader = (await others.readWrite(id).tryRead({ autoExtend: false }))!;
    expect(reader).not.toBeNull();
    await reader.release();
  });

  it('a read lock whose acquire and release replies were lost is held once, then released', async () => {
    const id = name('rw-read');
    const rw = locks.readWrite(id, { ttl: 5_000 });
    const dropped = proxy.dropReply({ match: 'EVALSHA' });
    const acquiring = rw.tryRead({ autoExtend: false });
    await dropped;
    const read = (await acquiring)!;
    expect(read).not.toBeNull();
    expect(await redis.zcard(`rw:{${id}}:r`)).toBe(1);
    const releaseDropped = proxy.dropReply({ match: 'EVALSHA' });
    const releasing = read.release();
    await releaseDropped;
    expect(await releasing).toBe(true);
    const write = (await others.readWrite(id).tryWrite({ autoExtend: false }))!;
    expect(write).not.toBeNull();
    await write.release();
  });

  it('a leader whose claim reply was lost leads with the one term minted', async () => {
    const id = name('leader-claim');
    const dropped = proxy.dropReply({ match: 'EVALSHA' });
    const election = locks.leader(id, { ttl: 2_000 });
    await dropped;
    await waitFor(() => election.isLeader, { what: 'the leadership' });
    expect(String(election.term)).toBe(await redis.get(`leader:{${id}}:f`));
    const rival = others.leader(id, { ttl: 2_000 });
    await election.stop();
    await waitFor(() => rival.isLeader, { what: 'the rival to take over' });
    await rival.stop();
  });

  it('black-holed, a permit holder and a leader lose at their TTL (signal aborts); the others take over', async () => {
    const id = name('partition');
    const sem = locks.semaphore(id, { limit: 1, ttl: 600 });
    const permit = await sem.acquire();
    const election = locks.leader(id, { ttl: 600 });
    await waitFor(() => election.isLeader, { what: 'the leadership' });
    const term = election.term!;
    const leadership = election.signal;
    const rival = others.leader(id, { ttl: 600 });
    proxy.blackhole();
    const lost = untilAborted(permit.signal);
    const theirs = await others.semaphore(id, { limit: 1, ttl: 5_000 }).acquire({ wait: 5_000 });
    await lost;
    expect(permit.signal.reason).toBeInstanceOf(LockLostError);
    await waitFor(() => rival.isLeader, { what: 'the rival to lead' });
    expect(rival.term!).toBeGreaterThan(term);
    expect(leadership.aborted).toBe(true);
    expect(election.isLeader).toBe(false);
    await theirs.release();
    await rival.stop();
  }, 20_000);
});
