import { createRequire } from 'node:module';

import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';
import { metrics } from '@opentelemetry/api';
import { MeterProvider, type MetricData } from '@opentelemetry/sdk-metrics';
import { Command, type Cluster } from 'ioredis';

import { RedisModule, getRedisToken, type RedisClient } from '../../src/index.js';
import { PENDING_DURATIONS } from '../../src/telemetry/command-duration.js';
import { instrumentConnection } from '../../src/telemetry/otel.js';
import { RedisTelemetry } from '../../src/telemetry/redis-telemetry.js';
import { startApp } from '../support/app.js';
import { TestMetricReader, pointsOf } from '../support/metrics.js';
import { standaloneUrl, topologies, uniqueConnectionName, uniquePrefix } from '../support/redis.js';

/**
 * The command histogram's hand-over: the hook stores each duration and the SDK gets them off the
 * reply path. These specs call the collection (or the unhook) in the very continuation of the
 * awaited command, before the process could run the `setImmediate` drain: what they count was
 * handed over by the collection or the unhook itself.
 */

/** Recorded commands named `operation` (and failed with `errorType`, when given). */
function count(metric: MetricData | undefined, operation: string, errorType?: string): number {
  return pointsOf(metric, { 'db.operation.name': operation })
    .filter((p) => p.attributes['error.type'] === errorType)
    .reduce((n, p) => n + (p.value as { count: number }).count, 0);
}

/** Instruments `client` on a fresh MeterProvider; its reader collects on demand. */
function instrument(client: RedisClient): { reader: TestMetricReader; stop: () => void } {
  const reader = new TestMetricReader();
  const provider = new MeterProvider({ readers: [reader] });
  const undo = instrumentConnection(provider.getMeter('nestjs-redis-infra'), {
    name: 'default',
    database: 0,
    client,
    connections: () => ({ byRole: { command: 1 }, max: 10 }),
    reconnects: () => 0,
  });
  return { reader, stop: undo };
}

/** The minor version of the ioredis 6 the suite runs on (the compat pass runs the newest). */
function ioredisMinor(): number {
  const { version } = createRequire(import.meta.url)('ioredis/package.json') as { version: string };
  return Number(version.split('.')[1]);
}

const duration = async (reader: TestMetricReader): Promise<MetricData | undefined> =>
  (await reader.metrics()).get('db.client.operation.duration');

describe('command durations on standalone', () => {
  let app: INestApplication;
  let client: RedisClient;
  const prefix = uniquePrefix('otel-pending');

  beforeAll(async () => {
    app = await startApp({
      imports: [
        RedisModule.forRoot({
          url: standaloneUrl(),
          keyPrefix: prefix,
          connectionName: uniqueConnectionName('otel-pending'),
        }),
      ],
    });
    client = app.get<RedisClient>(getRedisToken());
  });

  afterAll(async () => {
    await client?.unlink(`${prefix}str`).catch(() => undefined);
    await app?.close();
  });

  it('are all in the next collection, the last ones handed over by the collection itself', async () => {
    const { reader, stop } = instrument(client);
    try {
      await client.set('str', 'v');
      await client.get('str');
      const metric = await duration(reader);
      expect(count(metric, 'SET')).toBe(1);
      expect(count(metric, 'GET')).toBe(1);
      // Nothing is counted twice: a later collection sees the same totals (cumulative).
      expect(count(await duration(reader), 'GET')).toBe(1);
    } finally {
      stop();
    }
  });

  it('loses none when more commands settle at once than the buffer holds', async () => {
    const { reader, stop } = instrument(client);
    try {
      // One pipeline: the replies arrive together, past the buffer's size, before any idle turn.
      const n = PENDING_DURATIONS * 3 + 7;
      const pipeline = client.pipeline();
      for (let i = 0; i < n; i++) pipeline.echo(String(i));
      const replies = await pipeline.exec();
      expect(replies?.every(([err]) => err === null)).toBe(true);
      const many = await Promise.all(Array.from({ length: n }, () => client.ping()));
      expect(many).toHaveLength(n);
      const metric = await duration(reader);
      expect(count(metric, 'ECHO')).toBe(n);
      expect(count(metric, 'PING')).toBe(n);
    } finally {
      stop();
    }
  });

  it('keeps error.type on failed commands', async () => {
    const { reader, stop } = instrument(client);
    try {
      await client.set('str', 'v');
      await expect(client.hset('str', 'f', 'v')).rejects.toThrow(/WRONGTYPE/);
      await expect(client.evalsha('0'.repeat(40), 0)).rejects.toThrow(/NOSCRIPT/);
      await expect(client.call('NOSUCHCOMMAND')).rejects.toThrow(/unknown command/i);
      const metric = await duration(reader);
      expect(count(metric, 'HSET', 'WRONGTYPE')).toBe(1);
      expect(count(metric, 'HSET')).toBe(0);
      expect(count(metric, 'EVALSHA', 'NOSCRIPT')).toBe(1);
      expect(count(metric, 'NOSUCHCOMMAND', 'ERR')).toBe(1);
      expect(count(metric, 'SET')).toBe(1);
    } finally {
      stop();
    }
  });

  it('hands the held durations over when the connection is unhooked', async () => {
    const { reader, stop } = instrument(client);
    await client.echo('a');
    await client.echo('b');
    stop();
    expect(count(await duration(reader), 'ECHO')).toBe(2);
    expect(Object.prototype.hasOwnProperty.call(client, 'sendCommand')).toBe(false);
    await client.echo('after');
    expect(count(await duration(reader), 'ECHO')).toBe(2);
  });
});

describe('command durations at app.close()', () => {
  const reader = new TestMetricReader();
  const provider = new MeterProvider({ readers: [reader] });

  beforeAll(() => {
    expect(metrics.setGlobalMeterProvider(provider)).toBe(true);
  });

  afterAll(async () => {
    metrics.disable();
    await provider.shutdown();
  });

  it('are handed over when the application closes', async () => {
    const app = await startApp({
      imports: [
        RedisModule.forRoot({
          url: standaloneUrl(),
          connectionName: uniqueConnectionName('otel-close'),
        }),
      ],
      providers: [RedisTelemetry],
    });
    const client = app.get<RedisClient>(getRedisToken());
    try {
      await Promise.all([client.echo('a'), client.echo('b'), client.echo('c')]);
    } finally {
      await app.close();
    }
    expect(Object.prototype.hasOwnProperty.call(client, 'sendCommand')).toBe(false);
    expect(count(await duration(reader), 'ECHO')).toBe(3);
  });
});

const cluster = topologies().find((t) => t.name === 'cluster');
(cluster ? describe : describe.skip)('command durations on a cluster', () => {
  let app: INestApplication;
  let client: Cluster;
  const prefix = uniquePrefix('otel-moved');

  beforeAll(async () => {
    app = await startApp({
      imports: [
        RedisModule.forRoot({
          ...cluster!.options,
          keyPrefix: prefix,
          connectionName: uniqueConnectionName('otel-moved'),
        }),
      ],
    });
    client = app.get<Cluster>(getRedisToken());
  });

  afterAll(async () => {
    await client?.unlink('{m}k').catch(() => undefined);
    await app?.close();
  });

  /** Points the key's slot at a master that does not own it: its next command gets MOVED. */
  function staleSlot(): { slot: number; owner: string } {
    const slot = new Command('get', ['{m}k']).getSlot();
    const owner = client.slots[slot][0];
    const other = client
      .nodes('master')
      .map((n) => `${n.options.host}:${n.options.port}`)
      .find((key) => key !== owner);
    expect(other).toBeDefined();
    client.slots[slot] = [other!];
    return { slot, owner };
  }

  it('counts a redirected command once, as the success its caller got', async () => {
    await client.set('{m}k', 'v');
    const { reader, stop } = instrument(client);
    try {
      const { slot, owner } = staleSlot();
      await expect(client.get('{m}k')).resolves.toBe('v');
      expect(client.slots[slot][0]).toBe(owner); // the MOVED reply put the owner back
      const metric = await duration(reader);
      expect(count(metric, 'GET')).toBe(1);
      expect(pointsOf(metric).filter((p) => p.attributes['error.type'] !== undefined)).toEqual([]);
    } finally {
      stop();
    }
  });

  it('counts each attempt of a redirected pipeline as the attempt went', async () => {
    await client.set('{m}k', 'v');
    const { reader, stop } = instrument(client);
    try {
      const { slot, owner } = staleSlot();
      // Read-only commands, so that ioredis may redirect them.
      const replies = await client.pipeline().get('{m}k').strlen('{m}k').exec();
      expect(replies).toEqual([
        [null, 'v'],
        [null, 1],
      ]);
      expect(client.slots[slot][0]).toBe(owner);
      const metric = await duration(reader);
      // Both keys are in the stale slot: both commands get MOVED.
      expect(count(metric, 'GET')).toBe(1);
      expect(count(metric, 'STRLEN')).toBe(1);
      // 6.1 resends each redirected command alone, the same command: counted once, a success.
      // 6.0 retries the whole pipeline with new promises: each attempt counts, and the first
      // one's promises were rejected with MOVED.
      const moved = ioredisMinor() >= 1 ? 0 : 1;
      expect(count(metric, 'GET', 'MOVED')).toBe(moved);
      expect(count(metric, 'STRLEN', 'MOVED')).toBe(moved);
    } finally {
      stop();
    }
  });
});
