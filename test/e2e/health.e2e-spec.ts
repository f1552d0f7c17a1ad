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
    const res = await request(app.getHttpServer()).get('/health').expect(200);
    expect(res.body.status).toBe('ok');
    expect(res.body.info.redis.status).toBe('up');
    expect(typeof res.body.info.redis.latency).toBe('number');
    expect(res.body.info.redis.latency).toBeGreaterThan(0);
  });

  it('is down when latency exceeds maxLatency', async () => {
    const res = await request(app.getHttpServer()).get('/health?maxLatency=0.000001').expect(503);
    expect(res.body.error.redis.status).toBe('down');
    expect(res.body.error.redis.message).toMatch(
      /^PING took [\d.]+ ms, more than maxLatency \(0.000001 ms\)$/,
    );
  });

  it('reports memory figures, and is down above maxMemoryRatio', async () => {
    const info = String(await sendCommand(redis, ['INFO', 'memory']));
    const used = Number(/used_memory:(\d+)/.exec(info)?.[1]);
    // A limit of twice the current use: the ratio is about 0.5.
    await sendCommand(redis, ['CONFIG', 'SET', 'maxmemory', String(used * 2)]);
    try {
      const ok = await request(app.getHttpServer()).get('/health?maxMemoryRatio=0.9').expect(200);
      expect(ok.body.info.redis.memoryRatio).toBeGreaterThan(0.3);
      expect(ok.body.info.redis.memoryRatio).toBeLessThan(0.7);
      expect(ok.body.info.redis.maxMemory).toBe(used * 2);
      const down = await request(app.getHttpServer()).get('/health?maxMemoryRatio=0.1').expect(503);
      expect(down.body.error.redis).toMatchObject({ status: 'down', maxMemory: used * 2 });
      expect(down.body.error.redis.message).toMatch(
        /^memory use \d+\.\d% exceeds maxMemoryRatio 10\.0% \(used_memory \d+ of maxmemory \d+ bytes\)$/,
      );
    } finally {
      await sendCommand(redis, ['CONFIG', 'SET', 'maxmemory', '0']);
    }
    // Without a limit the ratio does not apply.
    const unlimited = await request(app.getHttpServer())
      .get('/health?maxMemoryRatio=0.1')
      .expect(200);
    expect(unlimited.body.info.redis.memoryRatio).toBeNull();
  });

  it('answers 503 within the timeout while Redis is frozen (SIGSTOP), then 200 again', async () => {
    await redis.pause();
    try {
      const res = await request(app.getHttpServer()).get('/health').expect(503);
      expect(res.body.error.redis).toEqual({
        status: 'down',
        message: 'Redis did not answer within 500 ms',
      });
    } finally {
      await redis.resume();
    }
    await waitFor(async () => (await request(app.getHttpServer()).get('/health')).status === 200, {
      what: '/health to recover',
    });
  });

  it('answers 503 at once while Redis is stopped, then 200 after it restarts', async () => {
    await redis.stop();
    // Until the first reconnect attempt fails, the connection is down with no error to show yet.
    await waitFor(
      async () => {
        const r = await request(app.getHttpServer()).get('/health');
        return r.status === 503 && /ECONNREFUSED/.test(String(r.body.error?.redis?.lastError));
      },
      { what: '/health to report the outage' },
    );
    const res = await request(app.getHttpServer()).get('/health').expect(503);
    // At once: the connection is known to be down, nothing was sent to wait on.
    expect(res.body.error.redis).toMatchObject({
      status: 'down',
      message: expect.stringContaining('connection is not ready'),
      lastError: expect.stringContaining('ECONNREFUSED'),
    });
    await redis.restart();
    await waitFor(async () => (await request(app.getHttpServer()).get('/health')).status === 200, {
      what: '/health to recover after the restart',
    });
  });

  it('checks a named connection, and reports an unknown name as down', async () => {
    const res = await request(app.getHttpServer()).get('/health/other').expect(200);
    expect(res.body.info.other).toMatchObject({ status: 'up', connection: 'other' });
    await otherRedis.pause();
    try {
      const down = await request(app.getHttpServer()).get('/health/other').expect(503);
      expect(down.body.error.other).toMatchObject({ status: 'down', connection: 'other' });
    } finally {
      await otherRedis.resume();
    }
    const unknown = await request(app.getHttpServer()).get('/health/other?name=nope').expect(503);
    expect(unknown.body.error.other.message).toBe(
      `no Redis connection named "nope" is registered (RedisModule.forRoot({ name: 'nope', ... }))`,
    );
  });
});
