import { randomUUID } from 'node:crypto';
import { inspect } from 'node:util';

import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';
import type { Redis } from 'ioredis';

import {
  CacheService,
  getRedisToken,
  LockService,
  RedisConnectionError,
  RedisHealthIndicator,
  RedisModule,
  RedisPermissionError,
  RedisService,
  SessionService,
  type RedisModuleOptions,
} from '../../src/index.js';
import { CapturingLogger, startApp } from '../support/app.js';
import {
  aclLog,
  sendCommand,
  setAclUser,
  specDir,
  startTlsStandalone,
  type TlsStandaloneServer,
} from '../support/redis.js';

/**
 * The ACL of docs/acl.md, for a `keyPrefix` of `prefix`: keep the two in step. Commands by name,
 * no categories: a category grows with every Redis release.
 */
function documentedAcl(prefix: string, password: string): string[] {
  return [
    'on',
    `>${password}`,
    `~${prefix}*`,
    `&${prefix}*`,
    '-@all',
    // connecting (SELECT only with a db other than 0)
    '+hello',
    '+auth',
    '+ping',
    '+client|setname',
    // scripts: EVALSHA, and EVAL once per script and server
    '+evalsha',
    '+eval',
    // cache, sessions, locks: direct calls and the commands their scripts run
    '+get',
    '+set',
    '+del',
    '+unlink',
    '+exists',
    '+pttl',
    '+pexpire',
    '+pexpireat',
    '+renamenx',
    '+append',
    '+hget',
    '+hmget',
    '+hset',
    '+hdel',
    '+hincrby',
    '+hvals',
    '+rpush',
    '+lpop',
    '+lrem',
    '+zadd',
    '+zcard',
    '+zcount',
    '+zrange',
    '+zrangebyscore',
    '+zrem',
    '+zremrangebyscore',
    '+zscore',
    '+time',
    '+scan',
    // cache coherence and lock wake-ups
    '+publish',
    '+subscribe',
    '+unsubscribe',
  ];
}

/** Every capability once, as an application would use it. */
async function workload(app: INestApplication): Promise<void> {
  const cache = app.get(CacheService);
  await cache.set('k1', { n: 1 }, { tags: ['t1'] });
  expect(await cache.get('k1')).toEqual({ n: 1 });
  expect(await cache.getOrSet('k2', () => Promise.resolve(2))).toBe(2);
  await cache.mset([{ key: 'k3', value: 3 }]);
  expect(await cache.mget(['k2', 'k3'])).toEqual([2, 3]);
  await cache.invalidateTags(['t1']);
  await cache.del('k2');
  await cache.clear();

  const sessions = app.get(SessionService);
  const session = await sessions.create('user-1', { cart: [1] });
  expect((await sessions.get(session.id))?.data).toEqual({ cart: [1] });
  await sessions.update(session.id, { cart: [1, 2] });
  await sessions.touch(session.id);
  const rotated = await sessions.rotate(session.id);
  expect(await sessions.listByUser('user-1')).toHaveLength(1);
  await sessions.destroyAllForUser('user-1');
  expect(rotated && (await sessions.get(rotated.id))).toBeNull();

  const locks = app.get(LockService);
  expect(await locks.withLock('res', () => Promise.resolve('done'))).toBe('done');
  const held = await locks.acquire('res2', { ttl: 5_000 });
  expect(await locks.isLocked('res2')).toBe(true);
  // A waiter wakes up through the release channel.
  const next = locks.acquire('res2', { wait: 5_000 });
  await held.release();
  await (await next).release();
  expect(await locks.semaphore('pool', { limit: 2 }).withPermit(() => 'permit')).toBe('permit');
  const rw = locks.readWrite('doc');
  expect(await rw.withRead(() => 'read')).toBe('read');
  expect(await rw.withWrite(() => 'write')).toBe('write');

  const redis = app.get(RedisService);
  expect(await redis.ping()).toBeGreaterThanOrEqual(0);
  const keys: string[] = [];
  for await (const key of redis.scan('*')) keys.push(key);
  await redis.unlinkByPattern('nothing-here:*');
}

/** The TCP sockets this process has open (none of the specs here keeps one between tests). */
function openSockets(): string[] {
  return process.getActiveResourcesInfo().filter((kind) => kind === 'TCPSocketWrap');
}

describe('TLS and ACL', () => {
  let server: TlsStandaloneServer;
  let admin: { port: number };
  const username = 'app';
  const password = `acl-${randomUUID()}`;
  const prefix = 'shop:';

  beforeAll(async () => {
    server = await startTlsStandalone({ baseDir: specDir('tls-acl') });
    admin = { port: server.port };
    await setAclUser(admin, username, documentedAcl(prefix, password));
  });
  afterAll(async () => {
    await server.stop();
  });

  const options = (extra: RedisModuleOptions = {}): RedisModuleOptions => ({
    url: server.tlsUrl,
    username,
    password,
    tls: { ca: server.certificates.ca },
    keyPrefix: prefix,
    connectTimeout: 3_000,
    ...extra,
  });

  /** Runs `fn` with console output captured (ioredis warns there about a skipped ready check). */
  async function quietly<T>(fn: (out: string[]) => Promise<T>): Promise<T> {
    const out: string[] = [];
    const spies = (['log', 'warn', 'error'] as const).map((level) =>
      jest.spyOn(console, level).mockImplementation((...args: unknown[]) => {
        out.push(args.map((a) => (typeof a === 'string' ? a : inspect(a))).join(' '));
      }),
    );
    try {
      return await fn(out);
    } finally {
      for (const spy of spies) spy.mockRestore();
    }
  }

  it('the documented ACL is enough for every capability, over TLS, and nothing leaves keyPrefix', async () => {
    await sendCommand(admin, ['ACL', 'LOG', 'RESET']);
    const logger = new CapturingLogger();
    await quietly(async () => {
      const app = await startApp({ imports: [RedisModule.forRoot(options())] }, logger);
      try {
        await workload(app);
      } finally {
        await app.close();
      }
    });
    // The server enforced ~shop:* and &shop:*: a key or channel outside keyPrefix, or a command
    // the ACL does not list, would be refused and logged. INFO is refused on purpose (ready check).
    const refused = (await aclLog(admin)).filter((e) => e.object !== 'info');
    expect(refused).toEqual([]);
    expect(logger.lines.filter((l) => l.level === 'error' || l.level === 'warn')).toEqual([]);
    const keys = (await sendCommand(admin, ['KEYS', '*'])) as string[];
    expect(keys.filter((k) => !k.startsWith(prefix))).toEqual([]);
  });

  it('info(), stats() and the memory check name the missing INFO permission', async () => {
    await quietly(async () => {
      const app = await startApp({ imports: [RedisModule.forRoot(options())] });
      try {
        const redis = app.get(RedisService);
        for (const call of [
          () => redis.info('memory'),
          () => redis.stats(),
          () => redis.infoAll(),
        ]) {
          const err = await call().catch((e: unknown) => e);
          expect(err).toBeInstanceOf(RedisPermissionError);
          expect(err).toMatchObject({
            code: 'REDIS_PERMISSION_DENIED',
            command: 'INFO',
            permission: '+info',
          });
        }
        const health = await app
          .get(RedisHealthIndicator)
          .isHealthy('redis', { maxMemoryRatio: 0.9 });
        expect(health.redis.status).toBe('down');
        expect(health.redis.message).toContain('+info');
        expect(health.redis.message).not.toContain('NOPERM');
        // Without the memory check, PING is all it needs.
        expect((await app.get(RedisHealthIndicator).isHealthy('redis')).redis.status).toBe('up');
      } finally {
        await app.close();
      }
    });
  });

  it('a server certificate the configured CA did not sign fails startup at once, clearly', async () => {
    const logger = new CapturingLogger();
    const err = await startApp(
      {
        imports: [
          RedisModule.forRoot(
            options({ tls: { ca: server.certificates.otherCa }, connectTimeout: 20_000 }),
          ),
        ],
      },
      logger,
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RedisConnectionError);
    expect(openSockets()).toEqual([]); // closed before startup failed, not in the background
    const message = (err as Error).message;
    expect(message).toContain('certificate');
    expect(message).toContain('tls.ca');
    // Not retried until connectTimeout: a certificate does not get better by retrying.
    expect(message).not.toContain('gave up after connectTimeout');
    expect(logger.matching('reconnecting')).toEqual([]);
    expect(message).not.toContain(password);
  });

  it('the wrong password over TLS fails at once without printing it', async () => {
    const logger = new CapturingLogger();
    const err = await startApp(
      { imports: [RedisModule.forRoot(options({ password: 'not-it', connectTimeout: 20_000 }))] },
      logger,
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RedisConnectionError);
    expect(openSockets()).toEqual([]); // closed before startup failed, not in the background
    expect((err as Error).message).toContain('WRONGPASS');
    expect(inspect(err, { depth: 5 }) + logger.text).not.toContain('not-it');
  });

  it('keeps the injected client on TLS', async () => {
    await quietly(async () => {
      const app = await startApp({ imports: [RedisModule.forRoot(options())] });
      try {
        const client = app.get<Redis>(getRedisToken());
        expect(client.options.tls).toBeDefined();
        await client.set('plain', '1');
        expect(await client.get('plain')).toBe('1');
      } finally {
        await app.close();
      }
    });
  });
});
