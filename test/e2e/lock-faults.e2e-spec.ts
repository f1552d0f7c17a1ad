import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';

import {
  getRedisToken,
  LockLostError,
  LockNotAcquiredError,
  LockService,
  RedisModule,
  type Lock,
  type RedisClient,
} from '../../src/index.js';
import { lockKeys, META_IDLE_MS, RELEASE, RELEASED_MS } from '../../src/lock/lock.scripts.js';
import { CapturingLogger, startApp } from '../support/app.js';
import { FaultProxy } from '../support/fault-proxy.js';
import {
  recordCommands,
  sendCommand,
  specDir,
  standaloneUrl,
  startStandalone,
  uniqueConnectionName,
  uniquePrefix,
  waitFor,
  type StandaloneServer,
} from '../support/redis.js';

/** Lock faults injected with the shared fault proxy, on the standalone server. */
describe('LockService under injected faults (fault proxy)', () => {
  let proxy: FaultProxy;
  let app: INestApplication;
  let locks: LockService;
  let direct: INestApplication;
  let redis: RedisClient;
  const logger = new CapturingLogger();
  const prefix = uniquePrefix('lock-faults');

  beforeAll(async () => {
    const server = new URL(standaloneUrl());
    proxy = await FaultProxy.start({ host: server.hostname, port: Number(server.port) });
    app = await startApp(
      {
        imports: [
          RedisModule.forRoot({
            url: proxy.url,
            keyPrefix: prefix,
            connectionName: uniqueConnectionName('lock-faults'),
            lock: { retryInterval: 100 },
          }),
        ],
      },
      logger,
    );
    locks = app.get(LockService);
    // Warm up: the scripts are loaded, so the next EVALSHA is the one we mean.
    await locks.withLock('warm-up', () => undefined);
    await locks.inspect('warm-up');
    // Nest's Logger is process-wide: the last app's logger gets every line, so share it.
    direct = await startApp(
      { imports: [RedisModule.forRoot({ url: standaloneUrl(), keyPrefix: prefix })] },
      logger,
    );
    redis = direct.get<RedisClient>(getRedisToken());
  });

  afterAll(async () => {
    await app?.close();
    await direct?.close();
    await proxy?.close();
  });

  it('a lost acquire reply (re-sent after the reset) still gives the lock, and no ownerless key', async () => {
    const r = 'lost-acquire-reply';
    const dropped = proxy.dropReply({ match: 'EVALSHA', then: 'reset' });
    const lock = await locks.tryAcquire(r, { ttl: 10_000 });
    await dropped;
    expect(lock).not.toBeNull();
    expect(await redis.get(lockKeys(r)[0])).toBe(lock!.token);
    expect(await lock!.release()).toBe(true);
    expect(await redis.exists(lockKeys(r)[0])).toBe(0);
    // The next one gets a higher token: the re-run minted nothing twice.
    const next = (await locks.tryAcquire(r))!;
    expect(next.fencingToken).toBeGreaterThan(lock!.fencingToken);
    await next.release();
  });

  it('a lost release reply (re-sent after the reset) is a success: withLock resolves', async () => {
    const r = 'lost-release-reply';
    let dropped: Promise<void> | undefined;
    const result = await locks.withLock(r, () => {
      dropped = proxy.dropReply({ match: 'EVALSHA', then: 'reset' });
      return 'done';
    });
    await dropped;
    expect(result).toBe('done');
    expect(await redis.exists(lockKeys(r)[0])).toBe(0);
    expect((await locks.inspect(r)).locked).toBe(false);
  });

  it('a re-sent release is still a success after up to three later releases; the record is bounded and expires', async () => {
    const r = 'resent-after-others';
    const [, , , , released] = lockKeys(r);
    // What ioredis does after a reconnect: the same release script, run again.
    const rerun = async (token: string) =>
      ((await redis.eval(RELEASE.lua, 5, ...lockKeys(r), token, 'lock:grant:', '')) as number[])[0];
    const tokens: string[] = [];
    for (let i = 0; i < 4; i++) {
      const lock = (await locks.tryAcquire(r))!;
      tokens.push(lock.token);
      expect(await lock.release()).toBe(true);
    }
    // The first release's re-run, after three others: recognised, and it took nothing.
    expect(await rerun(tokens[0])).toBe(1);
    expect(await redis.exists(lockKeys(r)[0])).toBe(0);
    const ttl = await redis.pttl(released);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(RELEASED_MS);
    // A fifth release starts the record over with itself: it never holds more than four.
    const fifth = (await locks.tryAcquire(r))!;
    expect(await fifth.release()).toBe(true);
    expect(await redis.get(released)).toBe(`${fifth.token},`);
    expect(await rerun(fifth.token)).toBe(1);
    expect(await rerun(tokens[0])).toBe(0);
    // A token that never held the lock is never taken for a released one.
    expect(await rerun(fifth.token.slice(0, -1))).toBe(0);
  });

  it('a released resource leaves two keys, both expiring (docs/locks.md: keys and memory per resource)', async () => {
    const r = 'ten-chars!';
    const [lock, meta, queue, entries, released] = lockKeys(r);
    // Locked and released four times: the record of released tokens is at its largest.
    for (let i = 0; i < 4; i++) {
      const held = (await locks.tryAcquire(r, { ttl: 30_000 }))!;
      expect(await held.release()).toBe(true);
    }
    expect(await redis.exists(lock, queue, entries)).toBe(0);
    const metaTtl = await redis.pttl(meta);
    expect(metaTtl).toBeGreaterThan(META_IDLE_MS);
    expect(metaTtl).toBeLessThanOrEqual(30_000 + META_IDLE_MS);
    const releasedTtl = await redis.pttl(released);
    expect(releasedTtl).toBeGreaterThan(0);
    expect(releasedTtl).toBeLessThanOrEqual(RELEASED_MS);
    // The bytes the docs give, with this spec's key prefix (about 20 bytes on each key) on top
    // (ioredis prefixes the key of MEMORY USAGE too).
    const bytes = async (key: string) => Number(await redis.call('MEMORY', 'USAGE', key));
    for (const [key, docs] of [
      [meta, 104],
      [released, 232],
    ] as const) {
      const used = await bytes(key);
      expect(used).toBeGreaterThan(docs / 2); // the key is there: MEMORY USAGE of none is nil
      expect(used).toBeLessThanOrEqual(docs + 24);
    }
  });

  it('a token minted while the server clock is behind the last one still goes up by one', async () => {
    // As after a failover to a server whose clock is behind the old master's.
    const r = 'clock-behind';
    const [, meta] = lockKeys(r);
    const ahead = 5_000_000_000_000_000; // server µs in the year 2128
    await redis.set(meta, `${ahead}|someone before`, 'PX', 60_000);
    const first = (await locks.tryAcquire(r))!;
    expect(first.fencingToken).toBe(ahead + 1);
    expect(await first.release()).toBe(true);
    const second = (await locks.tryAcquire(r))!;
    expect(second.fencingToken).toBe(ahead + 2);
    expect((await locks.inspect(r)).fencingToken).toBe(ahead + 2);
    await second.release();
    await redis.del(meta);
  });

  it('a lost reply to a queued acquire queues the waiter once; it is granted in turn', async () => {
    const r = 'lost-queue-reply';
    const holder = (await locks.tryAcquire(r, { ttl: 10_000 }))!;
    const dropped = proxy.dropReply({ match: 'EVALSHA', then: 'reset' });
    const waiting = locks.acquire(r, { ttl: 10_000, wait: 10_000 });
    await dropped;
    await waitFor(async () => (await redis.llen(lockKeys(r)[2])) === 1, {
      what: 'the waiter in the queue',
    });
    // Re-run, it did not queue twice.
    expect(await redis.llen(lockKeys(r)[2])).toBe(1);
    await holder.release();
    const lock = await waiting;
    expect(await redis.get(lockKeys(r)[0])).toBe(lock.token);
    await lock.release();
    expect(await redis.exists(lockKeys(r)[2])).toBe(0);
  });

  it('a first acquire whose SUBSCRIBE is never answered (half-open server) ends with its wait; closing does not wait out connectTimeout', async () => {
    // Its own proxy and app: this LockService has not subscribed to its grant channel yet.
    const server = new URL(standaloneUrl());
    const silent = await FaultProxy.start({ host: server.hostname, port: Number(server.port) });
    const other = await startApp(
      {
        imports: [
          RedisModule.forRoot({
            url: silent.url,
            keyPrefix: prefix,
            connectionName: uniqueConnectionName('lock-silent'),
            // Nothing but the wait may end it: ioredis would give up connecting only after this.
            connectTimeout: 120_000,
          }),
        ],
      },
      logger, // Nest's logger is process-wide: keep the spec's
    );
    try {
      const silentLocks = other.get(LockService);
      silent.blackhole();
      await expect(silentLocks.acquire('never-answered', { wait: 1_000 })).rejects.toThrow(
        LockNotAcquiredError,
      );
      expect(silentLocks.stats().timeouts).toBe(1);
    } finally {
      await other.close();
      await silent.close();
    }
    // The SUBSCRIBE's connection, still opening, was given up by the close, and said so.
    await waitFor(
      () => logger.matching('the application shut down while it was connecting').length > 0,
      {
        what: 'the warning of the given-up subscriber connection',
      },
    );
  }, 30_000);

  it('a release answered after the TTL, following an exclusive section, is not a LockLostError', async () => {
    const r = 'late-release';
    const before = logger.matching('expired before its release reached Redis').length;
    const result = await locks
      .withLock(
        r,
        () => {
          // Redis stalls after fn returned: the release arrives after the 300 ms TTL.
          proxy.setLatency(400);
          return 'exclusive';
        },
        { ttl: 300, autoExtend: false },
      )
      .finally(() => proxy.setLatency(0));
    expect(result).toBe('exclusive');
    expect(logger.matching('expired before its release reached Redis').length).toBe(before + 1);
    expect(await redis.exists(lockKeys(r)[0])).toBe(0);
    // The key vanishing while fn still runs stays a loss.
    await expect(
      locks.withLock(r, async () => {
        await redis.del(lockKeys(r)[0]);
      }),
    ).rejects.toThrow(LockLostError);
  });
});

/** Bounds and hostile names: rejected before anything is sent; braces keep one slot. */
describe('LockService input bounds', () => {
  let app: INestApplication;
  let locks: LockService;
  let redis: RedisClient;

  beforeAll(async () => {
    app = await startApp({
      imports: [
        RedisModule.forRoot({
          url: standaloneUrl(),
          keyPrefix: uniquePrefix('lock-bounds'),
          lock: { holderId: 'bounds-test' },
        }),
      ],
    });
    locks = app.get(LockService);
    redis = app.get<RedisClient>(getRedisToken());
  });

  afterAll(async () => {
    await app?.close();
  });

  it('rounds fractional TTLs up, and refuses huge ones and long names before sending anything', async () => {
    const lock = (await locks.tryAcquire('fractional', { ttl: 1_500.2 }))!;
    const pttl = await redis.pttl(lockKeys('fractional')[0]);
    expect(pttl).toBeGreaterThan(1_000);
    expect(pttl).toBeLessThanOrEqual(1_501);
    await lock.release();
    const sent = await recordCommands(redis, async () => {
      await expect(locks.tryAcquire('huge', { ttl: 1e20 })).rejects.toThrow(
        'LockService.tryAcquire: ttl must be at most 86400000 ms (24 h), got 100000000000000000000',
      );
      await expect(locks.acquire('huge', { wait: 1e20 })).rejects.toThrow(RangeError);
      await expect(locks.withLock('x'.repeat(2_000), () => 1)).rejects.toThrow(
        /^LockService\.withLock: resource must be at most 1024 bytes \(UTF-8\), got 2000 bytes/,
      );
    });
    expect(sent).toEqual([]);
    const held = (await locks.tryAcquire('extend-bounds'))!;
    await expect(held.extend(1e20)).rejects.toThrow('Lock.extend: ttl must be at most');
    await held.release();
  });

  it('inspect reports holder label, fencing token, remaining TTL and waiters', async () => {
    const r = 'inspected';
    expect(await locks.inspect(r)).toEqual({
      resource: r,
      locked: false,
      holder: null,
      fencingToken: null,
      ttl: 0,
      waiting: 0,
    });
    const lock = (await locks.tryAcquire(r, { ttl: 10_000 }))!;
    const waiters = [locks.acquire(r, { wait: 10_000 }), locks.acquire(r, { wait: 10_000 })];
    await waitFor(async () => (await locks.inspect(r)).waiting === 2, { what: 'two waiters' });
    const info = await locks.inspect(r);
    expect(info).toMatchObject({ locked: true, holder: 'bounds-test', waiting: 2 });
    expect(info.fencingToken).toBe(lock.fencingToken);
    expect(info.ttl).toBeGreaterThan(8_000);
    expect(info.ttl).toBeLessThanOrEqual(10_000);
    await lock.release();
    const first = await waiters[0];
    expect((await locks.inspect(r)).fencingToken).toBe(first.fencingToken);
    await first.release();
    await (await waiters[1]).release();
    // Metadata lives on (monotonic tokens) but with a TTL; the queue keys are gone.
    const [, meta, queue, entries] = lockKeys(r);
    expect(await redis.pttl(meta)).toBeGreaterThan(0);
    expect(await redis.exists(queue, entries)).toBe(0);
  });
});

/** A user without channel rights: releases succeed, hand-offs fall back to polling. */
describe('LockService with an ACL user without channel rights', () => {
  let server: StandaloneServer;

  beforeAll(async () => {
    server = await startStandalone({ baseDir: specDir('lock-acl') });
    await sendCommand(server, [
      'ACL',
      'SETUSER',
      'nochannels',
      'on',
      '>secret-pw',
      '~*',
      '+@all',
      'resetchannels',
    ]);
  });

  afterAll(async () => {
    await server?.stop();
  });

  it('a refused notification never fails a release; waiters poll; one warning', async () => {
    const prefix = uniquePrefix('acl');
    const restrictedLog = new CapturingLogger();
    const restricted = await startApp(
      {
        imports: [
          RedisModule.forRoot({
            url: `redis://nochannels:secret-pw@127.0.0.1:${server.port}`,
            keyPrefix: prefix,
            lock: { retryInterval: 50 },
          }),
        ],
      },
      restrictedLog,
    );
    // The other process may subscribe: its grants are the ones the restricted user cannot send.
    // Nest's Logger is process-wide: the last app's logger gets every line, so share it.
    const other = await startApp(
      {
        imports: [
          RedisModule.forRoot({ url: server.url, keyPrefix: prefix, lock: { retryInterval: 50 } }),
        ],
      },
      restrictedLog,
    );
    try {
      const mine = restricted.get(LockService);
      const theirs = other.get(LockService);
      for (let i = 0; i < 3; i++) {
        let waiting: Promise<Lock> | undefined;
        const result = await mine.withLock('acl', async () => {
          waiting = theirs.acquire('acl', { wait: 5_000 });
          await waitFor(async () => (await mine.inspect('acl')).waiting === 1, {
            what: 'the other process in the queue',
          });
          return i;
        });
        expect(result).toBe(i);
        const lock = await waiting!; // granted by our release, noticed by polling
        // And the restricted user waits by polling too (it cannot subscribe).
        const back = mine.acquire('acl', { wait: 5_000 });
        await waitFor(async () => (await mine.inspect('acl')).waiting === 1, {
          what: 'the restricted process in the queue',
        });
        await lock.release();
        await (await back).release();
      }
      expect(restrictedLog.matching('refused PUBLISH')).toHaveLength(1);
      expect(restrictedLog.text).not.toContain('secret-pw');
    } finally {
      await restricted.close();
      await other.close();
    }
  }, 30_000);
});
