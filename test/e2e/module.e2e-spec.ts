import { beforeAll, describe, expect, it } from '@jest/globals';
import { Injectable, Module, type INestApplication } from '@nestjs/common';
import { ConfigModule, ConfigService } from '@nestjs/config';
import { Test } from '@nestjs/testing';
import { Redis } from 'ioredis';

import { RedisConnection } from '../../src/connection/redis-connection.js';
import { getRedisConnectionToken } from '../../src/connection/tokens.js';
import {
  getRedisToken,
  InjectRedis,
  RedisConfigError,
  RedisConnectionError,
  RedisModule,
  RedisService,
  type RedisModuleOptions,
  type RedisOptionsFactory,
} from '../../src/index.js';
import { CapturingLogger, startApp } from '../support/app.js';
import {
  countSocketWrites,
  freePort,
  ourConnections,
  sendCommand,
  specDir,
  standaloneUrl,
  startStandalone,
  uniqueConnectionName,
  uniquePrefix,
  topologies,
  waitFor,
  type StandaloneServer,
} from '../support/redis.js';

@Injectable()
class UsesRedis {
  constructor(
    @InjectRedis() readonly redis: Redis,
    readonly service: RedisService,
  ) {}
}

@Injectable()
class UsesTwo {
  constructor(
    @InjectRedis() readonly main: Redis,
    @InjectRedis('other') readonly other: Redis,
  ) {}
}

const url = (): string => standaloneUrl();
const server = () => {
  const u = new URL(url());
  return { host: u.hostname, port: Number(u.port) };
};

describe('RedisModule (standalone)', () => {
  it('forRoot: injects the ioredis client by token and by decorator, and RedisService', async () => {
    const prefix = uniquePrefix('forroot');
    const connectionName = uniqueConnectionName('forroot');
    const app = await startApp({
      imports: [RedisModule.forRoot({ url: url(), keyPrefix: prefix, connectionName })],
      providers: [UsesRedis],
    });
    try {
      const byToken = app.get<Redis>(getRedisToken());
      const { redis, service } = app.get(UsesRedis);
      expect(redis).toBe(byToken);
      expect(redis).toBeInstanceOf(Redis);
      expect(service).toBeInstanceOf(RedisService);
      await redis.set('greeting', 'hello', 'PX', 10_000);
      // The key prefix is applied by the client: the raw key carries it.
      expect(await sendCommand(server(), ['GET', `${prefix}greeting`])).toBe('hello');
      expect(await redis.get('greeting')).toBe('hello');
      expect(await ourConnections(server(), connectionName)).toEqual([`${connectionName}:command`]);
    } finally {
      await app.close();
    }
  });

  it('forRootAsync with ConfigService (useFactory + inject)', async () => {
    const prefix = uniquePrefix('async');
    const app = await startApp({
      imports: [
        ConfigModule.forRoot({
          ignoreEnvFile: true,
          load: [() => ({ REDIS_URL_FOR_TEST: url(), PREFIX_FOR_TEST: prefix })],
        }),
        RedisModule.forRootAsync({
          imports: [ConfigModule],
          inject: [ConfigService],
          useFactory: (config: ConfigService): RedisModuleOptions => ({
            url: config.get<string>('REDIS_URL_FOR_TEST'),
            keyPrefix: config.get<string>('PREFIX_FOR_TEST'),
          }),
        }),
      ],
      providers: [UsesRedis],
    });
    try {
      const { redis } = app.get(UsesRedis);
      await redis.set('k', 'v', 'PX', 10_000);
      expect(await sendCommand(server(), ['GET', `${prefix}k`])).toBe('v');
    } finally {
      await app.close();
    }
  });

  it('forRootAsync with useClass', async () => {
    @Injectable()
    class RedisConfig implements RedisOptionsFactory {
      createRedisOptions(): RedisModuleOptions {
        return { url: url(), keyPrefix: 'useclass:' };
      }
    }
    const app = await startApp({ imports: [RedisModule.forRootAsync({ useClass: RedisConfig })] });
    try {
      expect(await app.get(RedisService).ping()).toBeGreaterThan(0);
    } finally {
      await app.close();
    }
  });

  it('forRoot() with no options reads the REDIS_* environment', async () => {
    const saved = { ...process.env };
    process.env.REDIS_URL = url();
    process.env.REDIS_KEY_PREFIX = 'fromenv:';
    process.env.REDIS_CONNECT_TIMEOUT_MS = '2000';
    let app: INestApplication | undefined;
    try {
      app = await startApp({ imports: [RedisModule.forRoot()] });
      const connection = app.get<RedisConnection>(getRedisConnectionToken());
      expect(connection.keyPrefix).toBe('fromenv:');
      expect(connection.config.connectTimeout).toBe(2000);
      await app.get<Redis>(getRedisToken()).set('x', '1', 'PX', 10_000);
      expect(await sendCommand(server(), ['GET', 'fromenv:x'])).toBe('1');
    } finally {
      process.env = saved;
      await app?.close();
    }
  });

  it('a bad environment variable fails startup with a RedisConfigError naming it', async () => {
    const saved = { ...process.env };
    process.env.REDIS_PORT = 'abc';
    delete process.env.REDIS_URL;
    try {
      await expect(startApp({ imports: [RedisModule.forRoot()] })).rejects.toThrow(
        new RedisConfigError('REDIS_PORT', 'abc', 'an integer from 1 to 65535'),
      );
    } finally {
      process.env = saved;
    }
  });

  it('bad options fail startup with a RedisConfigError naming the option and value', async () => {
    await expect(
      startApp({ imports: [RedisModule.forRoot({ url: 'redis://:hunter2@bad host:1' })] }),
    ).rejects.toThrow('Invalid Redis configuration: url = "redis://:***@bad host:1"');
    await expect(
      startApp({ imports: [RedisModule.forRoot({ connectTimeout: -1 })] }),
    ).rejects.toThrow('connectTimeout = -1; expected a positive number of milliseconds');
  });

  it('named connections live beside the default one', async () => {
    const otherName = uniqueConnectionName('other');
    const app = await startApp({
      imports: [
        RedisModule.forRoot({ url: `${url()}/0`, keyPrefix: 'named-a:' }),
        RedisModule.forRoot({
          name: 'other',
          url: `${url()}/1`,
          keyPrefix: 'named-b:',
          connectionName: otherName,
        }),
      ],
      providers: [UsesTwo],
    });
    try {
      const { main, other } = app.get(UsesTwo);
      expect(main).not.toBe(other);
      expect(app.get(getRedisToken('other'))).toBe(other);
      await main.set('who', 'main', 'PX', 10_000);
      await other.set('who', 'other', 'PX', 10_000);
      expect(await sendCommand(server(), ['GET', 'named-a:who'])).toBe('main');
      // Database 0 holds only the default connection's key.
      expect(await sendCommand(server(), ['GET', 'named-b:who'])).toBeNull();
      expect(await other.get('who')).toBe('other');
      expect(await main.get('who')).toBe('main');
      expect(await ourConnections(server(), otherName)).toEqual([`${otherName}:command`]);
    } finally {
      await app.close();
    }
  });

  it('a missing named connection is a DI error that names it', async () => {
    await expect(
      Test.createTestingModule({
        imports: [RedisModule.forRoot({ url: url() })],
        providers: [UsesTwo],
      })
        .setLogger(new CapturingLogger())
        .compile(),
    ).rejects.toThrow(/nestjs-redis-infra:client:other/);
  });

  it('isGlobal: false keeps the providers inside the importing module', async () => {
    @Module({ providers: [UsesRedis] })
    class FeatureWithoutImport {}
    await expect(
      Test.createTestingModule({
        imports: [RedisModule.forRoot({ url: url(), isGlobal: false }), FeatureWithoutImport],
      })
        .setLogger(new CapturingLogger())
        .compile(),
    ).rejects.toThrow(/nestjs-redis-infra:client:default/);
  });

  it('a client the application passes in is used and left open', async () => {
    const own = new Redis(url(), { lazyConnect: true });
    await own.connect();
    const app = await startApp({ imports: [RedisModule.forRoot({ client: own })] });
    try {
      expect(app.get(getRedisToken())).toBe(own);
      expect(await app.get(RedisService).ping()).toBeGreaterThan(0);
    } finally {
      await app.close();
    }
    expect(own.status).toBe('ready');
    expect(await own.ping()).toBe('PONG');
    own.disconnect();
  });

  it('write coalescing stays off with coalesceWrites: false and on a client the application passes', async () => {
    const keys = Array.from({ length: 20 }, (_, i) => `uncoalesced:${i}`);
    const own = new Redis(url(), { lazyConnect: true });
    await own.connect();
    try {
      for (const options of [{ url: url(), coalesceWrites: false }, { client: own }]) {
        const app = await startApp({ imports: [RedisModule.forRoot(options)] });
        try {
          const client = app.get<Redis>(getRedisToken());
          // One system call per command, as ioredis does it (coalesced it would be 2).
          const writes = await countSocketWrites(client, () =>
            Promise.all(keys.map((key) => client.get(key))),
          );
          expect(writes).toBe(keys.length);
        } finally {
          await app.close();
        }
      }
    } finally {
      own.disconnect();
    }
  });
});

describe('RedisModule lifecycle', () => {
  let dir: string;
  beforeAll(() => {
    dir = specDir('lifecycle');
  });

  it('fails startup within connectTimeout when Redis is unreachable, without leaking the password', async () => {
    const port = await freePort();
    const logger = new CapturingLogger();
    let error: unknown;
    try {
      await startApp(
        {
          imports: [
            RedisModule.forRoot({
              host: '127.0.0.1',
              port,
              password: 'hunter2',
              connectTimeout: 600,
            }),
          ],
        },
        logger,
      );
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(RedisConnectionError);
    const message = (error as Error).message;
    expect(message).toContain(
      `Redis connection "default" to redis://:***@127.0.0.1:${port} failed`,
    );
    expect(message).toContain('ECONNREFUSED');
    expect(message).not.toContain('hunter2');
    expect(logger.text).not.toContain('hunter2');
    // Outcomes, not durations: retried until connectTimeout, then given up.
    expect(message).toContain('gave up after connectTimeout, 600 ms');
  });

  it('authenticates with a password, and a wrong one fails startup without printing it', async () => {
    const secured = await startStandalone({ baseDir: dir, password: 'correct-horse' });
    try {
      const ok = await startApp({
        imports: [
          RedisModule.forRoot({ host: '127.0.0.1', port: secured.port, password: 'correct-horse' }),
        ],
      });
      expect(await ok.get<Redis>(getRedisToken()).ping()).toBe('PONG');
      await ok.close();

      const logger = new CapturingLogger();
      const failure = startApp(
        {
          imports: [
            RedisModule.forRoot({
              url: `redis://:battery-staple@127.0.0.1:${secured.port}`,
              connectTimeout: 5_000,
            }),
          ],
        },
        logger,
      );
      await expect(failure).rejects.toThrow(RedisConnectionError);
      const message = await failure.catch(
        (err: Error) => `${err.message} ${String((err.cause as Error)?.message)}`,
      );
      expect(message).toContain(`redis://:***@127.0.0.1:${secured.port}`);
      expect(message).toMatch(/WRONGPASS|invalid password/i);
      expect(message).not.toContain('battery-staple');
      expect(logger.text).not.toContain('battery-staple');
      // Retrying cannot fix a wrong password: it fails at once, not after connectTimeout.
      expect(message).not.toContain('gave up after connectTimeout');
      expect(logger.matching('reconnecting')).toEqual([]);
    } finally {
      await secured.stop();
    }
  });

  it('after app.close() no connection of ours is left, and closing twice is harmless', async () => {
    const connectionName = uniqueConnectionName('close');
    const app = await startApp({
      imports: [
        RedisModule.forRoot({ url: url(), keyPrefix: uniquePrefix('close'), connectionName }),
      ],
    });
    const connection = app.get<RedisConnection>(getRedisConnectionToken());
    // Open the lazily created connections too, so that every kind is covered.
    const unsubscribe = await connection.subscribe('close-test', () => undefined);
    await app.get(RedisService).withDedicatedConnection((c) => c.ping());
    const names = await ourConnections(server(), connectionName);
    expect(names.sort()).toEqual([
      `${connectionName}:command`,
      `${connectionName}:dedicated`,
      `${connectionName}:subscriber`,
    ]);
    await app.close();
    await unsubscribe();
    await connection.close();
    await waitFor(async () => (await ourConnections(server(), connectionName)).length === 0, {
      what: 'CLIENT LIST to show none of our connections',
    });
    expect(connection.client.status).toBe('end');
  });

  it('boots with lazyConnect while Redis is down and connects when it comes up', async () => {
    const port = await freePort();
    const logger = new CapturingLogger();
    const app = await startApp(
      {
        imports: [
          RedisModule.forRoot({
            port,
            lazyConnect: true,
            retry: { initialDelay: 50, maxDelay: 200 },
          }),
        ],
      },
      logger,
    );
    let redis: StandaloneServer | undefined;
    try {
      const client = app.get<Redis>(getRedisToken());
      expect(client.status).not.toBe('ready');
      redis = await startStandalone({ baseDir: dir, port });
      await waitFor(() => client.status === 'ready', { what: 'the lazy client to connect' });
      expect(await client.ping()).toBe('PONG');
      // One line per state change, however many retries happened meanwhile.
      expect(logger.matching('reconnecting')).toHaveLength(1);
      expect(logger.matching('ready after')).toHaveLength(1);
    } finally {
      await app.close();
      await redis?.stop();
    }
  });

  it('survives Redis being killed and restarted: no crash, no unhandled rejection, logged once', async () => {
    const redis = await startStandalone({ baseDir: dir });
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown): void => {
      rejections.push(reason);
    };
    process.on('unhandledRejection', onRejection);
    const logger = new CapturingLogger();
    const app = await startApp(
      {
        imports: [
          RedisModule.forRoot({
            url: redis.url,
            retry: { initialDelay: 20, maxDelay: 100 },
            commandTimeout: 300,
          }),
        ],
      },
      logger,
    );
    try {
      const client = app.get<Redis>(getRedisToken());
      let retries = 0;
      client.on('reconnecting', () => (retries += 1));
      await client.set('survive', '1');
      await redis.kill();
      await waitFor(() => client.status !== 'ready', { what: 'the client to notice' });
      // Commands issued during the outage fail (commandTimeout) instead of crashing anything.
      await expect(client.get('survive')).rejects.toThrow();
      // Let it fail several retries before the server comes back.
      await waitFor(() => retries >= 4, { what: 'several reconnection attempts' });
      await redis.restart();
      await waitFor(() => client.status === 'ready', { what: 'reconnection' });
      await client.set('survive', '2');
      expect(await client.get('survive')).toBe('2');
      expect(logger.matching('command connection to')).toEqual(
        expect.arrayContaining([expect.stringContaining('lost')]),
      );
      expect(logger.matching(' lost;')).toHaveLength(1);
      expect(logger.matching('reconnecting (first retry')).toHaveLength(1);
      expect(logger.matching('ECONNREFUSED').length).toBeLessThanOrEqual(1);
      expect(logger.matching('restored after')).toHaveLength(1);
    } finally {
      process.off('unhandledRejection', onRejection);
      await app.close();
      await redis.stop();
    }
    expect(rejections).toEqual([]);
  });

  it('closes promptly while Redis is unreachable', async () => {
    const redis = await startStandalone({ baseDir: dir });
    const app = await startApp({
      imports: [RedisModule.forRoot({ url: redis.url, shutdownTimeout: 500 })],
    });
    const client = app.get<Redis>(getRedisToken());
    await redis.pause();
    try {
      const pending = client.get('frozen').catch(() => 'rejected');
      // Drain bounded by shutdownTimeout; then the queued GET fails and the socket is destroyed
      // (the frozen server will never answer the FIN).
      await app.close();
      expect(client.status).toBe('end');
      expect(await pending).toBe('rejected');
    } finally {
      await redis.resume();
      await redis.stop();
    }
  });

  it('bounds dedicated connections by maxConnections', async () => {
    const connectionName = uniqueConnectionName('bounded');
    const app = await startApp({
      imports: [
        RedisModule.forRoot({
          url: url(),
          maxConnections: 2,
          connectTimeout: 2_000,
          connectionName,
        }),
      ],
    });
    try {
      const service = app.get(RedisService);
      const list = uniquePrefix('blpop');
      // The command connection takes one slot; one dedicated connection fits.
      const blocked = service.withDedicatedConnection((c) => c.blpop(list, 5));
      await waitFor(async () =>
        (await ourConnections(server(), connectionName)).includes(`${connectionName}:dedicated`),
      );
      // The command connection is not blocked by the BLPOP.
      expect(await service.ping()).toBeGreaterThan(0);
      await expect(service.withDedicatedConnection((c) => c.ping())).rejects.toThrow(
        'no dedicated connection became free within 2000 ms (all 2 allowed by maxConnections are in use)',
      );
      await app.get<Redis>(getRedisToken()).rpush(list, 'job');
      expect(await blocked).toEqual([list, 'job']);
      // Released: the next caller reuses it.
      expect(await service.withDedicatedConnection((c) => c.ping())).toBe('PONG');
    } finally {
      await app.close();
    }
  });
});

describe('maxConnections on a cluster', () => {
  const cluster = topologies().find((t) => t.name === 'cluster');
  (cluster ? it : it.skip)(
    'bounds the sockets to each node: a Cluster client is one socket per node it talks to',
    async () => {
      const connectionName = uniqueConnectionName('maxconn');
      const app = await startApp({
        imports: [
          RedisModule.forRoot({
            ...cluster!.options,
            maxConnections: 3,
            connectTimeout: 2_000,
            connectionName,
          }),
        ],
      });
      try {
        const service = app.get(RedisService);
        const tag = `{${uniquePrefix('maxconn')}}`;
        // The command connection and two dedicated ones: all three allowed.
        const blocked = [1, 2].map((i) =>
          service.withDedicatedConnection((c) => c.blpop(`${tag}${i}`, 5)),
        );
        await waitFor(
          async () => {
            let dedicated = 0;
            for (const node of cluster!.servers) {
              const names = await ourConnections(node, connectionName);
              dedicated += names.filter((n) => n.endsWith(':dedicated')).length;
            }
            return dedicated >= 2;
          },
          { what: 'two dedicated connections' },
        );
        await expect(service.withDedicatedConnection((c) => c.ping())).rejects.toThrow(
          'all 3 allowed by maxConnections are in use',
        );
        for (const node of cluster!.servers) {
          expect((await ourConnections(node, connectionName)).length).toBeLessThanOrEqual(3);
        }
        const client = app.get<Redis>(getRedisToken());
        await client.rpush(`${tag}1`, 'a');
        await client.rpush(`${tag}2`, 'b');
        expect((await Promise.all(blocked)).map((r) => r?.[1])).toEqual(['a', 'b']);
      } finally {
        await app.close();
      }
      for (const node of cluster!.servers) {
        expect(await ourConnections(node, connectionName)).toEqual([]);
      }
    },
  );
});
