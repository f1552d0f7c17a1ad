import { describe, expect, it } from '@jest/globals';

import { LockService, RedisInfraError, RedisModule } from '../../src/index.js';
import { startApp } from '../support/app.js';
import { sendCommand, specDir, startSentinel, waitFor } from '../support/redis.js';

/**
 * A Sentinel failover under a stream of critical sections, on a topology this spec starts and
 * stops itself: fencing tokens never go backwards (they are floored by the server clock), and
 * every failure in the failover window is one of ours (typed), never a raw ioredis error.
 */
describe('LockService across a Sentinel failover', () => {
  it('fencing tokens keep increasing through SENTINEL FAILOVER; failures in the window are typed', async () => {
    const topology = await startSentinel({ baseDir: specDir('lock-failover') });
    const sentinel = topology.sentinels[0];
    const app = await startApp({
      imports: [
        RedisModule.forRoot({
          sentinel: {
            sentinels: topology.sentinels.map((s) => ({ host: s.host, port: s.port })),
            name: topology.name,
          },
          lock: { retryInterval: 50 },
        }),
      ],
    });
    try {
      const locks = app.get(LockService);
      const tokens: number[] = [];
      const errors: unknown[] = [];
      let failedOver = false;
      let afterFailover = 0;
      let stop = false;
      // Two callers on one resource: the queue and the hand-off go through the failover too.
      const loops = [0, 1].map(async () => {
        while (!stop) {
          try {
            tokens.push(
              await locks.withLock('failover', (lock) => lock.fencingToken, {
                ttl: 2_000,
                wait: 15_000,
              }),
            );
            if (failedOver) afterFailover += 1;
          } catch (err) {
            errors.push(err);
          }
        }
      });
      await waitFor(() => tokens.length >= 20, { what: '20 sections before the failover' });
      await sendCommand(sentinel, ['SENTINEL', 'FAILOVER', topology.name]);
      await waitFor(
        async () => {
          const addr = await sendCommand(sentinel, [
            'SENTINEL',
            'GET-MASTER-ADDR-BY-NAME',
            topology.name,
          ]);
          return Array.isArray(addr) && Number(addr[1]) === topology.replica.port;
        },
        { timeoutMs: 20_000, what: 'the replica to be promoted' },
      );
      failedOver = true;
      await waitFor(() => afterFailover >= 20, {
        timeoutMs: 20_000,
        what: '20 sections on the new master',
      });
      stop = true;
      await Promise.all(loops);
      for (let i = 1; i < tokens.length; i++) expect(tokens[i]).toBeGreaterThan(tokens[i - 1]);
      for (const err of errors) expect(err).toBeInstanceOf(RedisInfraError);
      // Most sections went through: the window costs a few at most.
      expect(errors.length).toBeLessThan(10);
    } finally {
      await app.close();
      await topology.stop();
    }
  }, 60_000);
});
