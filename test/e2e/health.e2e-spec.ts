import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Controller, Get, type INestApplication, Query } from '@nestjs/common';
import { HealthCheck, HealthCheckService, TerminusModule } from '@nestjs/terminus';
import request from 'supertest';

import { RedisHealthIndicator, RedisModule } from '../../src/index.js';
import { startApp } from '../support/app.js';
import {
  sendCommand,
  specDir,
  startStandalone,
  waitFor,
  type StandaloneServer,
} from '../support/redis.js';

/** The Terminus report as these tests read it (supertest leaves `res.body` untyped). */
interface HealthReport {
  status: string;
  info: Record<string, Indicator>;
  error: Record<string, Indicator>;
}
interface Indicator {
  status: string;
  message?: string;
  latency?: number;
  memoryRatio?: number | null;
  maxMemory?: number;
  lastError?: string;
  connection?: string;
}
const server = (app: INestApplication): Parameters<typeof request>[0] =>
  app.getHttpServer() as Parameters<typeof request>[0];
const report = (res: request.Response): HealthReport => res.body as HealthReport;

@Controller('health')
class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly redis: RedisHealthIndicator,
  ) {}

  @Get()
  @HealthCheck()
  check(
    @Query('maxMemoryRatio') maxMemoryRatio?: string,
    @Query('maxLatency') maxLatency?: string,
  ) {
    return this.health.check([
      () =>
        this.redis.isHealthy('redis', {
          timeout: 500,
          maxMemoryRatio: maxMemoryRatio === undefined ? undefined : Number(maxMemoryRatio),
          maxLatency: maxLatency === undefined ? undefined : Number(maxLatency),
        }),
    ]);
  }

  @Get('other')
  @HealthCheck()
  checkOther(@Query('name') name = 'other') {
    return this.health.check([
      () => this.redis.isHealthy('other', { connection: name, timeout: 500 }),
    ]);
  }
}

describe('RedisHealthIndicator', () => {
  let redis: StandaloneServer;
  let otherRedis: StandaloneServer;
  let app: INestApplication;

  beforeAll(async () => {
    const dir = specDir('health');
    [redis, otherRedis] = await Promise.all([
      startStandalone({ baseDir: dir }),
      startStandalone({ baseDir: dir }),
    ]);
    app = await startApp({
      imports: [
        RedisModule.forRoot({ url: redis.url, retry: { initialDelay: 20, maxDelay: 100 } }),
        RedisModule.forRoot({ name: 'other', url: otherRedis.url }),
        TerminusModule,
      ],
      controllers: [HealthController],
    });
  });

  afterAll(async () => {
    await app?.close();
    await Promise.all([redis?.stop(), otherRedis?.stop()]);
  });

  it('is up with the PING latency', async () => {
    const res = await request(server(app)).get('/health').expect(200);
    expect(report(res).status).toBe('ok');
    expect(report(res).info.redis.status).toBe('up');
    expect(typeof report(res).info.redis.latency).toBe('number');
    expect(report(res).info.redis.latency).toBeGreaterThan(0);
  });

  it('is down when latency exceeds maxLatency', async () => {
    const res = await request(server(app)).get('/health?maxLatency=0.000001').expect(503);
    expect(report(res).error.redis.status).toBe('down');
    expect(report(res).error.redis.message).toMatch(
      /^PING took [\d.]+ ms, more than maxLatency \(0.000001 ms\)$/,
    );
  });

  it('reports memory figures, and is down above maxMemoryRatio', async () => {
    const info = String(await sendCommand(redis, ['INFO', 'memory']));
    const used = Number(/used_memory:(\d+)/.exec(info)?.[1]);
    // A limit of twice the current use: the ratio is about 0.5.
    await sendCommand(redis, ['CONFIG', 'SET', 'maxmemory', String(used * 2)]);
    try {
      const ok = await request(server(app)).get('/health?maxMemoryRatio=0.9').expect(200);
      expect(report(ok).info.redis.memoryRatio).toBeGreaterThan(0.3);
      expect(report(ok).info.redis.memoryRatio).toBeLessThan(0.7);
      expect(report(ok).info.redis.maxMemory).toBe(used * 2);
      const down = await request(server(app)).get('/health?maxMemoryRatio=0.1').expect(503);
      expect(report(down).error.redis).toMatchObject({ status: 'down', maxMemory: used * 2 });
      expect(report(down).error.redis.message).toMatch(
        /^memory use \d+\.\d% exceeds maxMemoryRatio 10\.0% \(used_memory \d+ of maxmemory \d+ bytes\)$/,
      );
    } finally {
      await sendCommand(redis, ['CONFIG', 'SET', 'maxmemory', '0']);
    }
    // Without a limit the ratio does not apply.
    const unlimited = await request(server(app)).get('/health?maxMemoryRatio=0.1').expect(200);
    expect(report(unlimited).info.redis.memoryRatio).toBeNull();
  });

  it('answers 503 within the timeout while Redis is frozen (SIGSTOP), then 200 again', async () => {
    await redis.pause();
    try {
      const res = await request(server(app)).get('/health').expect(503);
      expect(report(res).error.redis).toEqual({
        status: 'down',
        message: 'Redis did not answer within 500 ms',
      });
    } finally {
      await redis.resume();
    }
    await waitFor(async () => (await request(server(app)).get('/health')).status === 200, {
      what: '/health to recover',
    });
  });

  it('answers 503 at once while Redis is stopped, then 200 after it restarts', async () => {
    await redis.stop();
    // Until the first reconnect attempt fails, the connection is down with no error to show yet.
    await waitFor(
      async () => {
        const r = await request(server(app)).get('/health');
        return r.status === 503 && /ECONNREFUSED/.test(String(report(r).error?.redis?.lastError));
      },
      { what: '/health to report the outage' },
    );
    const res = await request(server(app)).get('/health').expect(503);
    // At once: the connection is known to be down, nothing was sent to wait on.
    expect(report(res).error.redis).toMatchObject({
      status: 'down',
      message: expect.stringContaining('connection is not ready'),
      lastError: expect.stringContaining('ECONNREFUSED'),
    });
    await redis.restart();
    await waitFor(async () => (await request(server(app)).get('/health')).status === 200, {
      what: '/health to recover after the restart',
    });
  });

  it('checks a named connection, and reports an unknown name as down', async () => {
    const res = await request(server(app)).get('/health/other').expect(200);
    expect(report(res).info.other).toMatchObject({ status: 'up', connection: 'other' });
    await otherRedis.pause();
    try {
      const down = await request(server(app)).get('/health/other').expect(503);
      expect(report(down).error.other).toMatchObject({ status: 'down', connection: 'other' });
    } finally {
      await otherRedis.resume();
    }
    const unknown = await request(server(app)).get('/health/other?name=nope').expect(503);
    expect(report(unknown).error.other.message).toBe(
      `no Redis connection named "nope" is registered (RedisModule.forRoot({ name: 'nope', ... }))`,
    );
  });
});
