import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';
import type { Cluster } from 'ioredis';

import { getRedisToken, PubSubService, RedisModule, type PubSubGap } from '../../src/index.js';
import { keySlot } from '../../src/toolkit/slots.js';
import { CapturingLogger, startApp } from '../support/app.js';
import {
  sendCommand,
  specDir,
  startCluster,
  startSentinel,
  uniqueConnectionName,
  waitFor,
  type ClusterTopology,
  type RespTarget,
  type SentinelTopology,
} from '../support/redis.js';

/**
 * Keyspace notifications are published by the master that runs the command or expires the
 * key, so a key-event subscription must move with the masters. Each case fails its own
 * topology over, with the flags unset on every node (`'configure'` mode sets them where it
 * listens), and then expires keys directly on the promoted node, bypassing the module's
 * command client: what has to notice the new master is the subscription itself.
 */

const PREFIX = 'kf:';

interface Heard {
  events: string[];
  onGap: (gap: PubSubGap) => void;
}

function recorder(): Heard {
  const events: string[] = [];
  return { events, onGap: (gap) => void events.push(`gap:${gap.reason}`) };
}

/** Sets keys that expire at once on `node` until `heard` has one of them; returns its name. */
async function expireUntilHeard(node: RespTarget, base: string, heard: Heard): Promise<string> {
  let n = 0;
  return waitFor(
    async () => {
      const key = `${base}:${n++}`;
      await sendCommand(node, ['SET', PREFIX + key, '1', 'PX', '5']).catch(() => undefined);
      return heard.events.find((e) => e.startsWith(`${base}:`));
    },
    { what: `an expiry on ${node.port} to be heard`, timeoutMs: 30_000, intervalMs: 100 },
  );
}

async function flags(node: RespTarget): Promise<string> {
  const reply = (await sendCommand(node, ['CONFIG', 'GET', 'notify-keyspace-events'])) as string[];
  return reply[1] ?? '';
}

describe('PubSubService.onKeyEvent follows a CLUSTER FAILOVER (own cluster)', () => {
  let cluster: ClusterTopology;
  let app: INestApplication;
  const logs = new CapturingLogger();

  beforeAll(async () => {
    cluster = await startCluster({ baseDir: specDir('keyspace-cluster') });
    app = await startApp(
      {
        imports: [
          RedisModule.forRoot({
            cluster: { nodes: cluster.masters.map(({ host, port }) => ({ host, port })) },
            keyPrefix: PREFIX,
            connectionName: uniqueConnectionName('keyspace-cluster'),
            retry: { initialDelay: 50, maxDelay: 200 },
            // The topology is checked every pingInterval: a short one keeps the spec short.
            pubsub: { keyspaceEvents: 'configure', pingInterval: 300 },
            shutdownTimeout: 500,
          }),
        ],
      },
      logs,
    );
  }, 60_000);

  afterAll(async () => {
    await app?.close();
    await cluster?.stop();
  });

  it('hears an expiry on the promoted master, after a gap notice, and leaves the demoted one', async () => {
    const pubsub = app.get(PubSubService);
    const heard = recorder();
    const sub = await pubsub.onKeyEvent(
      'expired',
      'ks:*',
      ({ key }) => void heard.events.push(key),
      { onGap: heard.onGap },
    );
    expect(sub.active).toBe(true);

    const client = app.get<Cluster>(getRedisToken());
    const base = 'ks:{kf}';
    const owner = client.slots[keySlot(PREFIX + base)][0];
    const master = cluster.masters.find((m) => `${m.host}:${m.port}` === owner)!;
    const replica = cluster.replicas.find((r) => r.masterId === master.id)!;
    expect(await flags(replica)).toBe('');

    await expireUntilHeard(master, `${base}:before`, heard);
    await sendCommand(replica, ['CLUSTER', 'FAILOVER']);
    await waitFor(async () => String(await sendCommand(replica, ['ROLE'])).startsWith('master'), {
      what: 'the replica to take over',
      timeoutMs: 20_000,
    });

    const after = await expireUntilHeard(replica, `${base}:after`, heard);
    const at = heard.events.indexOf(after);
    expect(heard.events.slice(0, at)).toContain('gap:reconnect');
    expect(heard.events.indexOf('gap:reconnect')).toBeGreaterThan(
      heard.events.findIndex((e) => e.startsWith(`${base}:before:`)),
    );
    expect(await flags(replica)).toMatch(/K/);
    expect(await flags(replica)).toMatch(/x/);
    expect(sub.active).toBe(true);
    // The demoted master, now a replica, would repeat the new master's deletions: left.
    await waitFor(async () => Number(await sendCommand(master, ['PUBSUB', 'NUMPAT'])) === 0, {
      what: 'the pattern subscription to leave the demoted master',
    });

    await sub.unsubscribe();
  }, 60_000);
});

describe('PubSubService.onKeyEvent follows a SENTINEL FAILOVER (own topology)', () => {
  let topology: SentinelTopology;
  let app: INestApplication;

  beforeAll(async () => {
    topology = await startSentinel({
      baseDir: specDir('keyspace-sentinel'),
      downAfterMilliseconds: 1_000,
    });
    app = await startApp(
      {
        imports: [
          RedisModule.forRoot({
            sentinel: {
              sentinels: topology.sentinels.map(({ host, port }) => ({ host, port })),
              name: topology.name,
            },
            keyPrefix: PREFIX,
            connectionName: uniqueConnectionName('keyspace-sentinel'),
            retry: { initialDelay: 50, maxDelay: 200 },
            pubsub: { keyspaceEvents: 'configure' },
            shutdownTimeout: 500,
          }),
        ],
      },
      new CapturingLogger(),
    );
  }, 60_000);

  afterAll(async () => {
    await app?.close();
    await topology?.stop();
  });

  it('hears an expiry on the promoted replica, after a gap notice', async () => {
    const pubsub = app.get(PubSubService);
    const heard = recorder();
    const sub = await pubsub.onKeyEvent(
      'expired',
      'ks:*',
      ({ key }) => void heard.events.push(key),
      { onGap: heard.onGap },
    );
    expect(sub.active).toBe(true);
    expect(await flags(topology.replica)).toBe('');

    await expireUntilHeard(topology.master, 'ks:before', heard);
    await sendCommand(topology.sentinels[0], ['SENTINEL', 'FAILOVER', topology.name]);
    await waitFor(
      async () => String(await sendCommand(topology.replica, ['ROLE'])).startsWith('master'),
      { what: 'the replica to take over', timeoutMs: 30_000 },
    );

    const after = await expireUntilHeard(topology.replica, 'ks:after', heard);
    const at = heard.events.indexOf(after);
    expect(heard.events.slice(0, at)).toContain('gap:reconnect');
    expect(await flags(topology.replica)).toMatch(/x/);
    expect(sub.active).toBe(true);

    await sub.unsubscribe();
  }, 60_000);
});
