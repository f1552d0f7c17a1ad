import { createHash } from 'node:crypto';

import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';
import { Redis } from 'ioredis';

import { LockService, RedisModule, type RedisModuleOptions } from '../../src/index.js';
import { RELEASE } from '../../src/lock/lock.scripts.js';
import { startApp } from '../support/app.js';
import { FaultProxy } from '../support/fault-proxy.js';
import { standaloneUrl, uniqueConnectionName, uniquePrefix, waitFor } from '../support/redis.js';

/**
 * A release that hands the lock to a caller of its own process tells it in the reply: no grant
 * message is published. One of another process (here: another application, with its own
 * process id) is told by one message. Counted on a raw subscriber of every grant channel.
 */
describe('Lock hand-off in the release reply (standalone)', () => {
  const prefix = uniquePrefix('lockho');
  const options: RedisModuleOptions = {
    url: standaloneUrl(),
    keyPrefix: prefix,
    lock: { retryInterval: 100 },
  };
  let one: INestApplication;
  let two: INestApplication;
  let a: LockService;
  let b: LockService;
  let watcher: Redis;
  const grants: string[] = [];

  beforeAll(async () => {
    [one, two] = await Promise.all(
      ['lockho-1', 'lockho-2'].map((label) =>
        startApp({
          imports: [
            RedisModule.forRoot({ ...options, connectionName: uniqueConnectionName(label) }),
          ],
        }),
      ),
    );
    a = one.get(LockService);
    b = two.get(LockService);
    watcher = new Redis(standaloneUrl());
    watcher.on('pmessage', (_pattern: string, channel: string) => grants.push(channel));
    await watcher.psubscribe(`${prefix}lock:grant:*`);
  });

  afterAll(async () => {
    watcher?.disconnect();
    await Promise.all([one?.close(), two?.close()]);
  });

  const queued = async (locks: LockService, r: string, n: number): Promise<void> => {
    await waitFor(async () => (await locks.inspect(r)).waiting === n, { what: `${n} queued` });
  };

  it('same process: the waiter gets the lock from the reply, with the next fencing token; nothing is published', async () => {
    const r = 'local';
    const held = await a.acquire(r, { ttl: 5_000 });
    const waiting = a.acquire(r, { ttl: 5_000, wait: 10_000 });
    await queued(a, r, 1);
    const before = a.stats();
    expect(await held.release()).toBe(true);
    const next = await waiting;
    expect(next.fencingToken).toBeGreaterThan(held.fencingToken);
    expect(a.stats().handoffs).toBe(before.handoffs + 1);
    expect(await a.inspect(r)).toMatchObject({ locked: true, fencingToken: next.fencingToken });
    expect(await next.release()).toBe(true);
    // A cross-process hand-off afterwards is published: the watcher would have seen ours.
    const theirs = await a.acquire(r, { ttl: 5_000 });
    const remote = b.acquire(r, { ttl: 5_000, wait: 10_000 });
    await queued(a, r, 1);
    await theirs.release();
    await (await remote).release();
    await waitFor(() => grants.length === 1, { what: 'the one grant message' });
    expect(grants).toHaveLength(1);
  });

  it('several waiters of this process and one of another: each hand-off once, in queue order', async () => {
    const r = 'mixed';
    grants.length = 0;
    const order: string[] = [];
    const held = await a.acquire(r, { ttl: 5_000 });
    const section = (locks: LockService, label: string) => async (): Promise<void> => {
      await locks.withLock(r, () => order.push(label), { wait: 10_000 });
    };
    const runs: Array<Promise<void>> = [];
    for (const [i, [locks, label]] of (
      [
        [a, 'a1'],
        [b, 'b1'],
        [a, 'a2'],
        [a, 'a3'],
      ] as const
    ).entries()) {
      runs.push(section(locks, label)());
      await queued(a, r, i + 1);
    }
    await held.release();
    await Promise.all(runs);
    expect(order).toEqual(['a1', 'b1', 'a2', 'a3']);
    // Only the hand-off to b1 crossed processes (a1 -> b1); b1 -> a2 went the other way.
    await waitFor(() => grants.length === 2, { what: 'two grant messages' });
    expect(grants).toHaveLength(2);
  });

  it('a release whose reply was lost: the local waiter finds the lock at its next poll, held once', async () => {
    const url = new URL(standaloneUrl());
    const proxy = await FaultProxy.start({ host: url.hostname, port: Number(url.port) });
    const faulty = await startApp({
      imports: [
        RedisModule.forRoot({
          ...options,
          url: proxy.url,
          connectionName: uniqueConnectionName('lockho-proxied'),
          redisOptions: { disconnectTimeout: 10 },
        }),
      ],
    });
    try {
      const locks = faulty.get(LockService);
      const r = 'lost-reply';
      const held = await locks.acquire(r, { ttl: 5_000 });
      const waiting = locks.acquire(r, { ttl: 5_000, wait: 10_000 });
      await queued(a, r, 1);
      const sha = createHash('sha1').update(RELEASE.lua).digest('hex');
      const dropped = proxy.dropReply({ match: sha });
      const releasing = held.release();
      await dropped;
      expect(await releasing).toBe(true);
      const next = await waiting;
      expect(proxy.counts.dropped).toBe(1);
      expect(next.fencingToken).toBeGreaterThan(held.fencingToken);
      expect(await a.inspect(r)).toMatchObject({ locked: true, fencingToken: next.fencingToken });
      expect(await next.release()).toBe(true);
      expect(await a.inspect(r)).toMatchObject({ locked: false, waiting: 0 });
    } finally {
      proxy.resume();
      await faulty.close();
      await proxy.close();
    }
  });
});
