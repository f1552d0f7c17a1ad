import type { Cluster, Redis } from 'ioredis';

import { withTimeout } from '../common/async.js';
import { isCluster } from '../connection/client-factory.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import type { RedisSubscriber } from '../connection/subscriber.js';
import { keySlot as hashSlot } from '../toolkit/slots.js';

/*
 * Which cluster node a channel belongs to: the owner of its hash slot, read from the cluster
 * client's slot map. Outside a cluster, the one server.
 */

/**
 * Where to send a plain `PUBLISH`. A cluster sends keyless commands to any node, and
 * messages published on different nodes reach a subscriber in no particular order: always
 * publishing a channel on its slot's owner keeps one publisher's messages in order.
 */
export function publisherFor(connection: RedisConnection, full: string): Redis | Cluster {
  const client = connection.client;
  if (!isCluster(client)) return client;
  const owner = client.slots[hashSlot(full)]?.[0];
  const node =
    owner === undefined ? undefined : client.nodes('master').find((n) => addressOf(n) === owner);
  return node ?? client;
}

/** The subscriber that hears shard channel `full`: on a cluster, its slot owner's own. */
export function shardHub(connection: RedisConnection, full: string): RedisSubscriber {
  const client = connection.client;
  if (!isCluster(client)) return connection.subscriberFor();
  const owner = client.slots[hashSlot(full)]?.[0];
  if (!owner) {
    throw new Error(
      `PubSubService: no cluster node owns the slot of "${full}" yet (is the cluster ready?)`,
    );
  }
  return connection.subscriberFor(parseAddress(owner));
}

/** Reads the cluster's slot map again, bounded by `connectTimeout`; a failure is ignored. */
export async function refreshSlots(connection: RedisConnection): Promise<void> {
  const cluster = connection.client as Cluster;
  await withTimeout(
    new Promise<void>((resolve) => cluster.refreshSlotsCache(() => resolve())),
    connection.config.connectTimeout,
    () => new Error('slot refresh timeout'),
  ).catch(() => undefined);
}

/** A node's `host:port`, as the slot map names it. */
export function addressOf(node: Redis): string {
  const host = node.options.host ?? '127.0.0.1';
  const port = node.options.port ?? 6379;
  return `${host}:${port}`;
}

export function parseAddress(address: string): { host: string; port: number } {
  const at = address.lastIndexOf(':');
  return { host: address.slice(0, at), port: Number(address.slice(at + 1)) };
}
