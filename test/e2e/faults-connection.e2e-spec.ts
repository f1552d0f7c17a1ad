import { randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { inspect } from 'node:util';

import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import {
  Controller,
  Get,
  type INestApplication,
  type LoggerService,
  type ModuleMetadata,
} from '@nestjs/common';
import { Test } from '@nestjs/testing';
import type { Redis } from 'ioredis';

import type { RedisConnection } from '../../src/connection/redis-connection.js';
import { getRedisConnectionToken } from '../../src/connection/tokens.js';
import {
  CacheService,
  getRedisToken,
  InjectRedis,
  RedisHealthIndicator,
  RedisModule,
  type RedisModuleOptions,
} from '../../src/index.js';
import { FaultProxy } from '../support/fault-proxy.js';
import {
  ourConnections,
  sendCommand,
  specDir,
  standaloneUrl,
  uniqueConnectionName,
  startStandalone,
  waitFor,
  type StandaloneServer,
} from '../support/redis.js';

/** Keeps every argument of every log call, inspected as a console would print it. */
class InspectingLogger implements LoggerService {
  readonly lines: string[] = [];
  private add(level: string, args: unknown[]): void {
    this.lines.push(
      `${level} ${args.map((a) => (typeof a === 'string' ? a : inspect(a))).join(' ')}`,
    );
  }
  log(...args: unknown[]): void {
    this.add('log', args);
  }
  error(...args: unknown[]): void {
    this.add('error', args);
  }
  warn(...args: unknown[]): void {
    this.add('warn', args);
  }
  debug(...args: unknown[]): void {
    this.add('debug', args);
  }
  verbose(...args: unknown[]): void {
    this.add('verbose', args);
  }
  get text(): string {
    return this.lines.join('\n');
  }
}

/** One route that waits on a Redis command, so an HTTP request can be in flight during a fault. */
@Controller('kv')
class KvController {
  static onRequest: () => void = () => undefined;
  constructor(@InjectRedis() private readonly redis: Redis) {}

  @Get()
  async read(): Promise<string> {
    KvController.onRequest();
    return (await this.redis.get('faults:kv')) ?? 'none';
  }
}

interface Reply {
  status: number;
  body: string;
}

/** One GET over a plain socket (no agent keeping it alive, so close() need not wait on it). */
function get(app: INestApplication, path: string): Promise<Reply> {
  const { port } = (app.getHttpServer() as { address(): AddressInfo }).address();
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function listen(
  options: RedisModuleOptions,
  logger: LoggerService,
  metadata: ModuleMetadata = {},
): Promise<INestApplication> {
  const moduleRef = await Test.createTestingModule({
    imports: [RedisModule.forRoot(options), ...(metadata.imports ?? [])],
    controllers: [KvController, ...(metadata.controllers ?? [])],
  })
    .setLogger(logger)
    .compile();
  const app = moduleRef.createNestApplication({ logger });
  await app.listen(0, '127.0.0.1');
  return app;
}

/** Settles with the outcome instead of hanging a test that should fail. */
function bounded<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Counts of the kinds of handles (sockets, timers) that keep the process alive. */
function handleCounts(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) counts[kind] = (counts[kind] ?? 0) + 1;
  return counts;
}

/** `true` when no kind of handle is more numerous now than before. */
function noMoreThan(now: Record<string, number>, before: Record<string, number>): boolean {
  return Object.entries(now).every(([kind, n]) => n <= (before[kind] ?? 0));
}

describe('connection faults', () => {
  let dir: string;
  beforeAll(() => {
    dir = specDir('faults-connection');
  });

  describe('app.close() while Redis is down and a request waits on a command', () => {
    let redis: StandaloneServer;
    beforeAll(async () => {
      redis = await startStandalone({ baseDir: dir });
    });
    afterAll(async () => {
      await redis.stop();
    });

    it('answers the request with an error, resolves, and leaves nothing open', async () => {
      const before = handleCounts();
      const logger = new InspectingLogger();
      const app = await listen({ url: redis.url, shutdownTimeout: 300 }, logger);
      const client = app.get<Redis>(getRedisToken());
      expect((await get(app, '/kv')).status).toBe(200);

      await redis.kill();
      await waitFor(() => client.status !== 'ready', { what: 'the client to notice' });
      const inHandler = new Promise<void>((resolve) => (KvController.onRequest = resolve));
      const reply = get(app, '/kv');
      await inHandler;

      // Without the fix the queued GET holds close() until ioredis's 20 retries are spent.
      await bounded(app.close(), 15_000, 'app.close()');
      expect(await bounded(reply, 1_000, 'the HTTP reply')).toMatchObject({ status: 500 });
      expect(client.status).toBe('end');
      // A command sent after close fails at once instead of waiting for a reconnect.
      await expect(bounded(client.get('faults:late'), 1_000, 'a late command')).rejects.toThrow(
        'Connection is closed',
      );
      expect(logger.text).not.toContain('Check that Redis is running');
      await waitFor(() => noMoreThan(handleCounts(), before), {
        timeoutMs: 2_000,
        what: `no socket or timer left (before: ${inspect(before)})`,
      });
      await redis.restart();
    });
  });

  it('app.close() while Redis is black-holed (half-open) and a request waits: same outcome', async () => {
    const target = new URL(standaloneUrl());
    const server = { host: target.hostname, port: Number(target.port) };
    const proxy = await FaultProxy.start(server);
    const connectionName = uniqueConnectionName('blackhole');
    const logger = new InspectingLogger();
    try {
      const app = await listen({ url: proxy.url, shutdownTimeout: 300, connectionName }, logger);
      const client = app.get<Redis>(getRedisToken());
      expect((await get(app, '/kv')).status).toBe(200);

      proxy.blackhole();
      const inHandler = new Promise<void>((resolve) => (KvController.onRequest = resolve));
      const reply = get(app, '/kv');
      await inHandler;
      // The socket looks alive: the command waits for a reply that never comes.
      expect(client.status).toBe('ready');

      await bounded(app.close(), 15_000, 'app.close()');
      expect(await bounded(reply, 1_000, 'the HTTP reply')).toMatchObject({ status: 500 });
      expect(client.status).toBe('end');
      await waitFor(() => proxy.connections === 0, {
        timeoutMs: 2_000,
        what: 'our sockets closed',
      });
      expect(await ourConnections(server, connectionName)).toEqual([]);
    } finally {
      await proxy.close();
    }
  });

  describe('credentials never reach errors, logs or responses', () => {
    let redis: StandaloneServer;
    let password: string;
    beforeAll(async () => {
      password = `pw-${randomUUID()}`;
      redis = await startStandalone({ baseDir: dir, password });
    });
    afterAll(async () => {
      await redis.stop();
    });

    /** Every text the application could print or return: must hold no secret. */
    function leaks(texts: string[], secrets: string[]): string[] {
      return texts.filter(
        (t) => secrets.some((s) => t.includes(s)) || /AUTH['", ]+default['", ]+pw-/.test(t),
      );
    }

    async function spyConsole<T>(fn: (out: string[]) => Promise<T>): Promise<T> {
      const out: string[] = [];
      const spies = (['log', 'warn', 'error', 'info', 'debug'] as const).map((level) =>
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

    it('a password rotated on the server while the app runs', async () => {
      const rotated = `rotated-${randomUUID()}`;
      await spyConsole(async (consoleOut) => {
        const logger = new InspectingLogger();
        const app = await listen(
          { url: redis.url, retry: { initialDelay: 20, maxDelay: 100 } },
          logger,
        );
        const client = app.get<Redis>(getRedisToken());
        const errors: unknown[] = [];
        client.on('error', (err) => errors.push(err));
        const replies: Reply[] = [];
        try {
          await sendCommand({ port: redis.port, password }, [
            'CONFIG',
            'SET',
            'requirepass',
            rotated,
          ]);
          await sendCommand({ port: redis.port, password: rotated }, [
            'CLIENT',
            'KILL',
            'TYPE',
            'normal',
          ]);
          replies.push(await get(app, '/kv'));
          const direct = await client.get('faults:direct').catch((err: unknown) => err);
          expect(direct).toBeInstanceOf(Error);
          errors.push(direct);
          expect(inspect(direct)).toContain('WRONGPASS');
          expect(inspect(direct)).toContain("'***'");
        } finally {
          await app.close();
          await sendCommand({ port: redis.port, password: rotated }, [
            'CONFIG',
            'SET',
            'requirepass',
            password,
          ]);
        }
        expect(replies[0].status).toBe(500);
        const texts = [
          ...logger.lines,
          ...consoleOut,
          ...errors.map((e) => inspect(e, { depth: 5 })),
          ...replies.map((r) => r.body),
        ];
        expect(leaks(texts, [password, rotated])).toEqual([]);
      });
    });

    it.each([3, 2] as const)(
      'a wrong password with lazyConnect (RESP%s): errors redacted, health gives the last error',
      async (protocol) => {
        const wrong = `pw-wrong-${randomUUID()}`;
        await spyConsole(async (consoleOut) => {
          const logger = new InspectingLogger();
          const app = await listen(
            {
              host: '127.0.0.1',
              port: redis.port,
              password: wrong,
              lazyConnect: true,
              protocol,
              retry: { initialDelay: 20, maxDelay: 100 },
            },
            logger,
          );
          const client = app.get<Redis>(getRedisToken());
          const errors: unknown[] = [];
          const replies: Reply[] = [];
          let health: unknown;
          try {
            errors.push(await client.get('faults:lazy').catch((err: unknown) => err));
            expect(inspect(errors[0])).toContain('WRONGPASS');
            replies.push(await get(app, '/kv'));
            health = await app.get(RedisHealthIndicator).isHealthy('redis');
          } finally {
            await app.close();
          }
          expect(replies[0].status).toBe(500);
          expect(health).toMatchObject({
            redis: { status: 'down', lastError: expect.stringContaining('WRONGPASS') },
          });
          const texts = [
            ...logger.lines,
            ...consoleOut,
            ...errors.map((e) => inspect(e, { depth: 5 })),
            ...replies.map((r) => r.body),
            inspect(health, { depth: 5 }),
          ];
          expect(leaks(texts, [wrong, password])).toEqual([]);
        });
      },
    );
  });

  it('a shutdown right after the first cache call logs no outage hint', async () => {
    const redis = await startStandalone({ baseDir: dir });
    try {
      const logger = new InspectingLogger();
      const app = await listen({ url: redis.url }, logger);
      await app.get(CacheService).get('faults:first');
      await app.close();
      expect(logger.text).not.toContain('Check that Redis is running');
    } finally {
      await redis.stop();
    }
  });

  it('a dedicated connection its user already closed leaves no timer after app.close()', async () => {
    // A stream consumer closes its blocked reader itself when it stops; the pool then drops the
    // connection. Closing it a second time armed ioredis's socket-destroy timer, which never
    // cleared because the socket's close event had already passed.
    const redis = await startStandalone({ baseDir: dir });
    try {
      const before = handleCounts();
      const app = await listen({ url: redis.url }, new InspectingLogger());
      const connection = app.get<RedisConnection>(getRedisConnectionToken());
      const outcome = connection.withDedicated(async (client) => {
        const blocked = client.blpop('faults:never', 30);
        await waitFor(
          async () =>
            String(await sendCommand({ port: redis.port }, ['CLIENT', 'LIST'])).includes(
              'cmd=blpop',
            ),
          {
            what: 'BLPOP to block',
          },
        );
        client.disconnect();
        return blocked;
      });
      await expect(outcome).rejects.toThrow('Connection is closed');
      await app.close();
      expect(noMoreThan(handleCounts(), before)).toBe(true);
    } finally {
      await redis.stop();
    }
  });
});
