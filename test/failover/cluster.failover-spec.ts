import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';

import type { RedisClient } from '../../src/index.js';
import type { CapturingLogger } from '../support/app.js';
import {
  sendCommand,
  specDir,
  startCluster,
  waitFor,
  type ClusterNode,
  type ClusterTopology,
  type RespTarget,
} from '../support/redis.js';

import {
  classify,
  clusterNodes,
  describeError,
  figuresLine,
  leaksPassword,
  ownerOf,
  PASSWORD,
  requirePassword,
  ServiceLoop,
  servicesWorkAgain,
  sigkill,
  startFailoverApp,
  WriteProbe,
} from './harness.js';

const auth = (node: RespTarget): RespTarget => ({ ...node, password: PASSWORD });

/** The slot of a key's hash tag, as the cluster computes it. */
async function slotOf(node: RespTarget, key: string): Promise<number> {
  return Number(await sendCommand(auth(node), ['CLUSTER', 'KEYSLOT', key]));
}

/** A hash tag whose slot `master` serves now. */
async function tagOn(master: ClusterNode): Promise<string> {
  const view = await clusterNodes(auth(master));
  for (let i = 0; i < 1_000; i += 1) {
    const tag = `{fo${i}}`;
    if (ownerOf(view, await slotOf(master, tag))?.id === master.id) return tag;
  }
  throw new Error(`no tag found on master ${master.port}`);
}

/** Whether every live node agrees that `owner` (a node id) serves `slot` and is a master. */
async function everyNodeSees(
  nodes: ClusterNode[],
  slot: number,
  ownerId: string,
): Promise<boolean> {
  for (const node of nodes) {
    const view = await clusterNodes(auth(node));
    if (ownerOf(view, slot)?.id !== ownerId) return false;
    const info = String(await sendCommand(auth(node), ['CLUSTER', 'INFO']));
    if (!info.includes('cluster_state:ok')) return false;
  }
  return true;
}

/**
 * Moves `slot` from one master to another as `redis-cli --cluster reshard` does: IMPORTING on
 * the target, MIGRATING on the source, MIGRATE of its keys in batches, then the new owner told
 * to every node. Clients meanwhile get ASK (a key already moved) and then MOVED.
 */
async function migrateSlot(
  nodes: ClusterNode[],
  slot: number,
  from: ClusterNode,
  to: ClusterNode,
): Promise<number> {
  await sendCommand(auth(to), ['CLUSTER', 'SETSLOT', slot, 'IMPORTING', from.id]);
  await sendCommand(auth(from), ['CLUSTER', 'SETSLOT', slot, 'MIGRATING', to.id]);
  let moved = 0;
  for (;;) {
    const keys = (await sendCommand(auth(from), [
      'CLUSTER',
      'GETKEYSINSLOT',
      slot,
      100,
    ])) as string[];
    if (keys.length === 0) break;
    await sendCommand(auth(from), [
      'MIGRATE',
      to.host,
      to.port,
      '',
      0,
      5_000,
      'AUTH',
      PASSWORD,
      'KEYS',
      ...keys,
    ]);
    moved += keys.length;
  }
  // Target first, then the source, then every other master (replicas refuse SETSLOT; a node's
  // own ROLE is current, where gossip about a recent failover may not be yet).
  const others: ClusterNode[] = [];
  for (const n of nodes) {
    if (n === to || n === from) continue;
    const [role] = (await sendCommand(auth(n), ['ROLE'])) as [string];
    if (role === 'master') others.push(n);
  }
  for (const node of [to, from, ...others]) {
    await sendCommand(auth(node), ['CLUSTER', 'SETSLOT', slot, 'NODE', to.id]);
  }
  return moved;
}

interface ClusterCase {
  label: string;
  /** Which shard the probe writes to (a master of the cluster as started). */
  shard: number;
  /** Does the fault; resolves with the node serving the probe's slot afterwards, and the dead. */
  fault: (
    topology: ClusterTopology,
    slot: number,
    live: ClusterNode[],
  ) => Promise<{ owner: ClusterNode; killed?: ClusterNode }>;
  /** Writes a coordinated change must not lose (a SIGKILL may: replication is asynchronous). */
  losesNothing: boolean;
}

const replicaOf = (t: ClusterTopology, master: ClusterNode) =>
  t.replicas.find((r) => r.masterId === master.id)!;

/**
 * One 3 master + 3 replica cluster behind a password for all three cases, each on a different
 * shard, in this order: the SIGKILL comes last because it leaves a node dead.
 */
const CASES: ClusterCase[] = [
  {
    label: 'CLUSTER FAILOVER on a replica',
    shard: 0,
    losesNothing: true,
    fault: async (t) => {
      const replica = replicaOf(t, t.masters[0]);
      await sendCommand(auth(replica), ['CLUSTER', 'FAILOVER']);
      return { owner: replica };
    },
  },
  {
    label: 'reshard of 3 slots',
    shard: 1,
    losesNothing: true,
    fault: async (t, slot, live) => {
      const [from, to] = [t.masters[1], t.masters[2]];
      const view = await clusterNodes(auth(from));
      let moved = 0;
      for (const s of [slot, slot + 1, slot + 2]) {
        if (ownerOf(view, s)?.id === from.id) moved += await migrateSlot(live, s, from, to);
      }
      // The probe's own key at least.
      expect(moved).toBeGreaterThan(0);
      return { owner: to };
    },
  },
  {
    label: 'SIGKILL of a master',
    shard: 1,
    losesNothing: false,
    fault: async (t) => {
      await sigkill(t.masters[1]);
      return { owner: replicaOf(t, t.masters[1]), killed: t.masters[1] };
    },
  },
];

describe('Cluster', () => {
  let topology: ClusterTopology;
  let app: INestApplication | undefined;
  let client: RedisClient;
  let logger: CapturingLogger;
  let live: ClusterNode[];

  beforeAll(async () => {
    // A dead master is failed over after about twice the node timeout.
    topology = await startCluster({ baseDir: specDir('failover-cluster'), nodeTimeout: 2_000 });
    live = [...topology.nodes];
    await requirePassword(topology.nodes, PASSWORD);
    ({ app, client, logger } = await startFailoverApp({
      cluster: { nodes: topology.masters.map((n) => ({ host: n.host, port: n.port })) },
      password: PASSWORD,
    }));
  });

  afterAll(async () => {
    await app?.close();
    await topology?.stop();
  });

  it.each(CASES)(
    '$label: writes keep growing; the services work again; every error is known and redacted',
    async ({ label, shard, fault, losesNothing }) => {
      const tag = await tagOn(topology.masters[shard]);
      const slot = await slotOf(topology.masters[shard], tag);
      const probe = new WriteProbe(client, `${tag}:probe`);
      const loop = new ServiceLoop(app!, tag);
      await waitFor(() => probe.successesSince(0) >= 50 && loop.ok >= 6, { what: 'warm-up' });

      const faultAt = performance.now();
      const { owner, killed } = await fault(topology, slot, live);
      live = live.filter((n) => n !== killed);
      await waitFor(() => everyNodeSees(live, slot, owner.id), {
        timeoutMs: 30_000,
        what: `every node to see ${owner.port} serving slot ${slot}`,
      });
      const settledMs = Math.round(performance.now() - faultAt);
      const settled = performance.now();
      await waitFor(
        () => probe.successesSince(settled) >= 20 && loop.successesSince(settled) >= 3,
        { timeoutMs: 20_000, what: 'writes and service calls after the change' },
      );
      await loop.stop();
      const figures = await probe.stop();
      console.log(
        figuresLine(`cluster ${label}`, figures, loop, probe.errors) +
          `; every node agreed ${settledMs} ms after the fault`,
      );

      expect(await servicesWorkAgain(app!, tag)).toEqual({
        loaded: 'loaded',
        cached: 'loaded',
        session: { after: true },
        underLock: 'locked',
      });
      if (losesNothing) expect(figures.lost).toBe(0);
      const seen = [...probe.errors, ...loop.failures.map((f) => f.error)];
      expect(seen.filter((e) => classify(e) === 'unknown').map(describeError)).toEqual([]);
      expect(seen.filter((e) => leaksPassword(e, PASSWORD)).map(describeError)).toEqual([]);
      expect(logger.text).not.toContain(PASSWORD);
    },
  );
});
