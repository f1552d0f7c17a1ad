import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';
import type { Cluster } from 'ioredis';

import { getRedisToken, PubSubService, RedisModule } from '../../src/index.js';
import { keySlot as hashSlot } from '../../src/toolkit/slots.js';
import { CapturingLogger, startApp } from '../support/app.js';
import {
  sendCommand,
  specDir,
  startCluster,
  uniqueConnectionName,
  waitFor,
  type ClusterTopology,
} from '../support/redis.js';

/**
 * A cluster of our own: this spec fails masters over, so it runs in the serial failover pass.
 * Two races it caught, both fixed: the slot map read right after the old owner's unsolicited
 * `SUNSUBSCRIBE` could still name the old owner (the channel was then never subscribed again),
 * and a message right behind the new subscription's acknowledgement could overtake the gap
 * notice.
 */
describe('PubSubService sharded channels follow a failover (own cluster)', () => {
  let cluster: ClusterTopology;
  let app: INestApplication;
  let pubsub: PubSubService;
  const logs = new CapturingLogger();

  beforeAll(async () => {
    cluster = await startCluster({ baseDir: specDir('pubsub-cluster') });
    app = await startApp(
      {
        imports: [
          RedisModule.forRoot({
            cluster: { nodes: cluster.masters.map(({ host, port }) => ({ host, port })) },
            connectionName: uniqueConnectionName('pubsub-cluster'),
            retry: { initialDelay: 50, maxDelay: 200 },
          }),
        ],
      },
      logs,
    );
    pubsub = app.get(PubSubService);
  }, 60_000);

  afterAll(async () => {
    await app?.close();
    await cluster?.stop();
  });

  it('re-subscribes on the new master after CLUSTER FAILOVER, with a gap notice', async () => {
    const channel = 'room:{failover}';
    const seen: string[] = [];
    await pubsub.subscribe<string>(channel, (m) => void seen.push(m), {
      sharded: true,
      onGap: (gap) => void seen.push(`gap:${gap.reason}`),
    });
    await pubsub.publish(channel, 'before', { sharded: true });
    await waitFor(() => seen.includes('before'), { what: 'the first message' });

    const client = app.get<Cluster>(getRedisToken());
    const owner = client.slots[hashSlot(channel)][0];
    const master = cluster.masters.find((m) => `${m.host}:${m.port}` === owner)!;
    const replica = cluster.replicas.find((r) => r.masterId === master.id)!;
    await sendCommand(replica, ['CLUSTER', 'FAILOVER']);
    await waitFor(async () => String(await sendCommand(replica, ['ROLE'])).startsWith('master'), {
      what: 'the replica to take over',
      timeoutMs: 20_000,
    });
    // Whichever comes first tells the subscriber its shard moved: the old owner's unsolicited
    // SUNSUBSCRIBE, or a MOVED answer to a publish. Either way a gap notice precedes delivery.
    await waitFor(
      async () => {
        await pubsub.publish(channel, 'after', { sharded: true }).catch(() => 0);
        return seen.includes('after');
      },
      { what: 'delivery from the new master', timeoutMs: 30_000, intervalMs: 100 },
    );
    expect(seen.slice(0, 3)).toEqual(['before', 'gap:reconnect', 'after']);
  }, 60_000);
});
