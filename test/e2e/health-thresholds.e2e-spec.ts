import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';

import { RedisHealthIndicator, RedisModule, RedisService } from '../../src/index.js';
import { startApp } from '../support/app.js';
import {
  sendCommand,
  setAclUser,
  specDir,
  startStandalone,
  waitFor,
  type StandaloneServer,
} from '../support/redis.js';

describe('RedisHealthIndicator thresholds', () => {
  let master: StandaloneServer;
  let replica: StandaloneServer;
  let app: INestApplication;
  let health: RedisHealthIndicator;

  beforeAll(async () => {
    const dir = specDir('health-thresholds');
    master = await startStandalone({ baseDir: dir });
    replica = await startStandalone({
      baseDir: dir,
      args: ['--replicaof', '127.0.0.1', String(master.port), '--repl-diskless-sync-delay', '0'],
    });
    await waitFor(
      async () =>
        /slave0:.*state=online/.test(String(await sendCommand(master, ['INFO', 'replication']))),
      {
        what: 'the replica to come online',
      },
    );
    await setAclUser(master, 'noinfo', ['on', '>noinfo-secret', '~*', '+@all', '-info']);
    app = await startApp({
      imports: [
        RedisModule.forRoot({ url: master.url, maxConnections: 4 }),
        RedisModule.forRoot({
          name: 'restricted',
          url: `redis://noinfo:noinfo-secret@127.0.0.1:${master.port}`,
          // ioredis's own ready check runs INFO too, and warns when it is denied.
          redisOptions: { enableReadyCheck: false },
        }),
      ],
    });
    health = app.get(RedisHealthIndicator);
  });

  afterAll(async () => {
    await app?.close();
    await Promise.all([replica?.stop(), master?.stop()]);
  });

  it('reports redis_version and is down below minVersion', async () => {
    const up = await health.isHealthy('redis', { minVersion: '6.0.0' });
    expect(up.redis.status).toBe('up');
    expect(up.redis.redis_version).toMatch(/^\d+\.\d+\.\d+$/);
    const version = String(up.redis.redis_version);
    const down = await health.isHealthy('redis', { minVersion: '99.0.0' });
    expect(down.redis).toMatchObject({
      status: 'down',
      redis_version: version,
      message: `redis_version ${version} is older than minVersion 99.0.0`,
    });
  });

  it('requires an eviction policy: down, or up with a warning, and back when it is set', async () => {
    await sendCommand(master, ['CONFIG', 'SET', 'maxmemory-policy', 'allkeys-lru']);
    try {
      const down = await health.isHealthy('redis', { requireEvictionPolicy: 'noeviction' });
      expect(down.redis).toMatchObject({ status: 'down', evictionPolicy: 'allkeys-lru' });
      expect(down.redis.message).toMatch(
        /^maxmemory-policy is allkeys-lru on .*, expected noeviction$/,
      );
      const warned = await health.isHealthy('redis', {
        requireEvictionPolicy: { policy: 'noeviction', mode: 'warn' },
      });
      expect(warned.redis.status).toBe('up');
      expect(warned.redis.warnings).toEqual([
        expect.stringContaining('maxmemory-policy is allkeys-lru'),
      ]);
      const list = await health.isHealthy('redis', {
        requireEvictionPolicy: ['allkeys-lru', 'allkeys-lfu'],
      });
      expect(list.redis.status).toBe('up');
    } finally {
      await sendCommand(master, ['CONFIG', 'SET', 'maxmemory-policy', 'noeviction']);
    }
    const back = await health.isHealthy('redis', { requireEvictionPolicy: 'noeviction' });
    expect(back.redis).toMatchObject({ status: 'up', evictionPolicy: 'noeviction' });
  });

  it('is down above maxFragmentation and up below it', async () => {
    const info = String(await sendCommand(master, ['INFO', 'memory']));
    const ratio = Number(/mem_fragmentation_ratio:([\d.]+)/.exec(info)?.[1]);
    expect(ratio).toBeGreaterThan(0);
    const down = await health.isHealthy('redis', { maxFragmentation: ratio / 100 });
    expect(down.redis.status).toBe('down');
    expect(down.redis.message).toMatch(/^mem_fragmentation_ratio [\d.]+ exceeds maxFragmentation/);
    const up = await health.isHealthy('redis', { maxFragmentation: ratio * 100 });
    expect(up.redis.status).toBe('up');
    expect(typeof up.redis.fragmentation).toBe('number');
  });

  it('is down above maxPoolUsage while dedicated connections are held', async () => {
    const redis = app.get(RedisService);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let held = 0;
    const holders = [1, 2].map(() =>
      redis.withDedicatedConnection(async (c) => {
        await c.ping();
        held++;
        await gate;
      }),
    );
    try {
      await waitFor(() => held === 2, { what: 'two dedicated connections' });
      const down = await health.isHealthy('redis', { maxPoolUsage: 0.5 });
      expect(down.redis).toMatchObject({
        status: 'down',
        poolUsage: 0.75,
        connections: { open: 3, max: 4 },
      });
      expect(down.redis.message).toBe(
        '3 of maxConnections 4 connections open (75.0%), more than maxPoolUsage 50.0%',
      );
      const up = await health.isHealthy('redis', { maxPoolUsage: 0.8 });
      expect(up.redis).toMatchObject({ status: 'up', poolUsage: 0.75 });
    } finally {
      release();
      await Promise.all(holders);
    }
  });

  it('is down when a replica lags more than maxReplicationLag, and recovers', async () => {
    const up = await health.isHealthy('redis', { maxReplicationLag: 1_000_000 });
    expect(up.redis.status).toBe('up');
    expect(typeof up.redis.replicationLag).toBe('number');
    // A frozen replica acknowledges nothing while the master's offset grows.
    await replica.pause();
    try {
      await sendCommand(master, ['SET', 'lag:key', 'x'.repeat(1000)]);
      const down = await health.isHealthy('redis', { maxReplicationLag: 100 });
      expect(down.redis.status).toBe('down');
      expect(down.redis.replicationLag).toBeGreaterThan(100);
      expect(down.redis.message).toMatch(
        /^a replica is \d+ bytes behind, more than maxReplicationLag 100$/,
      );
    } finally {
      await replica.resume();
    }
    await waitFor(
      async () =>
        (await health.isHealthy('redis', { maxReplicationLag: 100 })).redis.status === 'up',
      { what: 'the replica to catch up' },
    );
  });

  it('reports an ACL user denied INFO by name, never as an exception, and is up without INFO thresholds', async () => {
    const plain = await health.isHealthy('redis', { connection: 'restricted' });
    expect(plain.redis.status).toBe('up');
    expect(plain.redis.redis_version).toBeUndefined();
    const denied = await health.isHealthy('redis', {
      connection: 'restricted',
      minVersion: '6.0.0',
    });
    expect(denied.redis).toMatchObject({ status: 'down', connection: 'restricted' });
    expect(denied.redis.message).toContain('the ACL user may not run INFO (grant +info');
    expect(JSON.stringify(denied)).not.toContain('noinfo-secret');
  });

  it('rejects invalid thresholds naming the option', async () => {
    await expect(health.isHealthy('redis', { maxPoolUsage: 2 })).rejects.toThrow(
      /isHealthy options\.maxPoolUsage = 2; expected a number from 0 to 1/,
    );
    await expect(health.isHealthy('redis', { minVersion: 'seven' })).rejects.toThrow(
      /isHealthy options\.minVersion/,
    );
  });
});
