import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Injectable, type INestApplication } from '@nestjs/common';
import { EventEmitterModule, OnEvent } from '@nestjs/event-emitter';

import type { RedisHealthMonitor } from '../../src/health/health-monitor.js';
import {
  REDIS_ALERT_RAISED,
  REDIS_ALERT_RESOLVED,
  RedisModule,
  type RedisAlert,
} from '../../src/index.js';
import { startApp } from '../support/app.js';
import {
  sendCommand,
  specDir,
  startStandalone,
  waitFor,
  type StandaloneServer,
} from '../support/redis.js';

/** What an application's pager route looks like: plain `@OnEvent` handlers. */
@Injectable()
class Pager {
  readonly received: RedisAlert[] = [];

  @OnEvent(REDIS_ALERT_RAISED)
  raised(alert: RedisAlert): void {
    this.received.push(alert);
  }

  @OnEvent(REDIS_ALERT_RESOLVED)
  resolved(alert: RedisAlert): void {
    this.received.push(alert);
  }
}

describe('alerts through @nestjs/event-emitter', () => {
  let redis: StandaloneServer;
  let app: INestApplication;
  let monitor: RedisHealthMonitor;
  let pager: Pager;
  const latency = (): string[] =>
    pager.received.filter((a) => a.check === 'latency').map((a) => a.type);

  beforeAll(async () => {
    // CLIENT PAUSE stops a whole server: this spec has its own.
    redis = await startStandalone({ baseDir: specDir('alerts-events') });
    app = await startApp({
      imports: [
        EventEmitterModule.forRoot(),
        RedisModule.forRoot({
          url: redis.url,
          healthCheckInterval: 100,
          alerts: { timeout: 3000, maxLatency: 250 },
        }),
      ],
      providers: [Pager],
    });
    pager = app.get(Pager);
    monitor = app.get('RedisHealthMonitor:default');
    await waitFor(() => monitor.counts.rounds >= 1, { what: 'a first probe round' });
  });

  afterAll(async () => {
    await app?.close();
    await redis?.stop();
  });

  it('raises a latency alert once while the server is paused and resolves it once', async () => {
    expect(latency()).toEqual([]);
    // Longer than maxLatency, shorter than the probe's timeout: slow, not unreachable.
    await sendCommand(redis, ['CLIENT', 'PAUSE', '1000', 'ALL']);
    await waitFor(() => latency().length === 2, {
      what: 'the latency alert raised and resolved',
      timeoutMs: 10_000,
    });
    // Several more rounds with a fast server: no repeat of either event.
    const after = monitor.counts.rounds + 3;
    await waitFor(() => monitor.counts.rounds >= after, { what: 'three more probe rounds' });
    expect(latency()).toEqual(['raised', 'resolved']);
    const [raised, resolved] = pager.received.filter((a) => a.check === 'latency');
    expect(raised).toMatchObject({
      type: 'raised',
      connection: 'default',
      threshold: 250,
      message: expect.stringMatching(/latency/i),
    });
    expect(raised.value as number).toBeGreaterThan(250);
    expect(resolved).toMatchObject({ type: 'resolved', connection: 'default' });
    expect(resolved.value as number).toBeLessThanOrEqual(250);
    // Only the latency check changed.
    expect(pager.received.map((a) => a.check)).toEqual(['latency', 'latency']);
  });
});
