import { beforeAll, describe, expect, it } from '@jest/globals';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';

import { toBullMqPrefix } from '../../src/bullmq/bullmq-prefix.js';
import { RedisBullMq, RedisModule } from '../../src/index.js';
import { CapturingLogger, startApp } from '../support/app.js';
import { specDir, startStandalone, uniqueConnectionName, waitFor } from '../support/redis.js';

// These tests reconfigure or stop a server: each uses one of its own.
describe('RedisBullMq against a server of its own', () => {
  let dir: string;
  beforeAll(() => {
    dir = specDir('bullmq-faults');
  });

  it('warns once when maxmemory-policy is not noeviction', async () => {
    const redis = await startStandalone({
      baseDir: dir,
      args: ['--maxmemory-policy', 'allkeys-lru'],
    });
    const logs = new CapturingLogger();
    try {
      const app = await startApp(
        {
          imports: [
            RedisModule.forRoot({
              url: redis.url,
              connectionName: uniqueConnectionName('bq-evict'),
            }),
          ],
        },
        logs,
      );
      const bridge = app.get(RedisBullMq);
      const first = new Queue('a', bridge.queueOptions());
      const second = new Queue('b', bridge.queueOptions());
      await first.waitUntilReady();
      await second.waitUntilReady();
      await waitFor(() => bridge.maxmemoryPolicy, { what: 'the policy read' });
      expect(bridge.maxmemoryPolicy).toBe('allkeys-lru');
      await first.close();
      await second.close();
      await app.close();
      expect(logs.matching('maxmemory-policy')).toHaveLength(1);
      expect(logs.matching('maxmemory-policy')[0]).toContain('noeviction');
    } finally {
      await redis.stop();
    }
  });

  it('translates key prefixes', () => {
    expect(toBullMqPrefix('', false)).toBe('bull');
    expect(toBullMqPrefix('', true)).toBe('{bull}');
    expect(toBullMqPrefix('shop::', false)).toBe('shop');
    expect(toBullMqPrefix('shop:', true)).toBe('{shop}');
    expect(toBullMqPrefix('{shop}:', true)).toBe('{shop}');
  });

  it('runs on a copy of a client passed in, without its keyPrefix; the client stays open', async () => {
    const redis = await startStandalone({ baseDir: dir });
    const client = new Redis(redis.url, { keyPrefix: 'mine:' });
    try {
      const app = await startApp({
        imports: [RedisModule.forRoot({ client })],
      });
      const bridge = app.get(RedisBullMq);
      const connection = bridge.connection();
      expect(connection).not.toBe(client);
      expect(connection.options.keyPrefix).toBeFalsy();
      expect(
        (connection.options as { maxRetriesPerRequest?: unknown }).maxRetriesPerRequest,
      ).toBeNull();
      expect(bridge.prefix).toBe('mine');
      const queue = new Queue('copied', bridge.queueOptions());
      const worker = new Worker('copied', async () => 'ok', bridge.workerOptions());
      const job = await queue.add('x', {});
      await waitFor(async () => (await queue.getJobState(job.id!)) === 'completed', {
        what: 'the job completed',
      });
      expect(await client.exists(`copied:${job.id}`)).toBe(1); // 'mine:' + 'copied:<id>'
      await worker.close();
      await queue.close();
      await app.close();
      expect(connection.status).toBe('end');
      expect(await client.ping()).toBe('PONG');
    } finally {
      client.disconnect();
      await redis.stop();
    }
  });

  it('app.close() returns while Redis is down and leaves nothing open', async () => {
    const redis = await startStandalone({ baseDir: dir });
    const logs = new CapturingLogger();
    let stopped = false;
    try {
      const app = await startApp(
        {
          imports: [
            RedisModule.forRoot({
              url: redis.url,
              connectionName: uniqueConnectionName('bq-down'),
              shutdownTimeout: 500,
            }),
          ],
        },
        logs,
      );
      const bridge = app.get(RedisBullMq);
      const connection = bridge.connection();
      await waitFor(() => connection.status === 'ready', { what: 'connection ready' });
      await redis.stop();
      stopped = true;
      await waitFor(() => connection.status !== 'ready', { what: 'connection lost' });
      await app.close();
      expect(connection.status).toBe('end');
    } finally {
      if (!stopped) await redis.stop();
    }
  });
});
