import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';
import { Cluster, Redis } from 'ioredis';

import { type RedisConnection } from '../../src/connection/redis-connection.js';
import { getRedisConnectionToken } from '../../src/connection/tokens.js';
import {
  getRedisToken,
  RedisHealthIndicator,
  RedisModule,
  RedisService,
  type RedisClient,
} from '../../src/index.js';
import { startApp } from '../support/app.js';
import {
  countSocketWrites,
  killConnection,
  ourConnections,
  topologies,
  uniqueConnectionName,
  uniquePrefix,
  waitFor,
  type TopologyCase,
} from '../support/redis.js';

/**
 * One contract, every topology: what the module promises on a standalone server must hold
 * through Sentinel and on a cluster too.
 */
describe.each(topologies().map((t) => [t.name, t] as const))(
  'on %s',
  (_name, topology: TopologyCase) => {
    let app: INestApplication;
    let client: RedisClient;
    let service: RedisService;
    let connection: RedisConnection;
    const prefix = uniquePrefix(topology.name);
    const connectionName = uniqueConnectionName(topology.name);

    beforeAll(async () => {
      app = await startApp({
        imports: [RedisModule.forRoot({ ...topology.options, keyPrefix: prefix, connectionName })],
      });
      client = app.get<RedisClient>(getRedisToken());
      service = app.get(RedisService);
      connection = app.get<RedisConnection>(getRedisConnectionToken());
    });

    afterAll(async () => {
      await app?.close();
    });

    it('injects the right client and reaches the master', async () => {
      if (topology.name === 'cluster') {
        expect(client).toBeInstanceOf(Cluster);
      } else {
        expect(client).toBeInstanceOf(Redis);
      }
      const { replication, server } = await service.info('replication').then(async (r) => ({
        replication: r.replication,
        server: (await service.info('server')).server,
      }));
      expect(replication?.role).toBe('master');
      if (topology.name === 'sentinel') {
        // Found through the sentinels: the master the topology started with.
        expect(server?.tcp_port).toBe(topology.masters[0].port);
      }
    });

    it('sets and gets keys spread over every hash slot range', async () => {
      const keys = Array.from({ length: 200 }, (_, i) => `spread:${i}`);
      await Promise.all(keys.map((k, i) => client.set(k, String(i), 'PX', 60_000)));
      const values = await Promise.all(keys.map((k) => client.get(k)));
      expect(values).toEqual(keys.map((_, i) => String(i)));
    });

    it('ping() measures latency and info() parses numbers', async () => {
      const latency = await service.ping();
      expect(latency).toBeGreaterThan(0);
      expect(Number.isFinite(latency)).toBe(true);
      const info = await service.info();
      expect(typeof info.server?.uptime_in_seconds).toBe('number');
      expect(typeof info.memory?.used_memory).toBe('number');
      expect(typeof info.server?.redis_version).toBe('string');
      if (topology.name === 'cluster') {
        expect(Object.keys(await service.infoAll('server'))).toHaveLength(3);
      }
    });

    it('scan() yields matching keys without the prefix, from every master', async () => {
      const keys = Array.from({ length: 120 }, (_, i) => `scan:${i}`);
      await Promise.all(keys.map((k) => client.set(k, 'x', 'PX', 60_000)));
      const seen = new Set<string>();
      for await (const key of service.scan('scan:*', { count: 50 })) seen.add(key);
      expect([...seen].sort()).toEqual([...keys].sort());
      if (topology.name === 'cluster') {
        // The keys really live on several masters, and each was scanned.
        const masters = connection.masters();
        expect(masters).toHaveLength(3);
        const perMaster = await Promise.all(
          masters.map(
            async (m) => (await m.scan('0', 'MATCH', `${prefix}scan:*`, 'COUNT', 1000))[1].length,
          ),
        );
        expect(perMaster.filter((n) => n > 0)).toHaveLength(3);
      }
    });

    it('unlinkByPattern() removes only matching keys, on every master', async () => {
      const doomed = Array.from({ length: 150 }, (_, i) => `doomed:${i}`);
      await Promise.all(doomed.map((k) => client.set(k, 'x', 'PX', 60_000)));
      await client.set('kept:1', 'x', 'PX', 60_000);
      expect(await service.unlinkByPattern('doomed:*', { count: 40 })).toBe(150);
      expect(await Promise.all(doomed.slice(0, 20).map((k) => client.exists(k)))).toEqual(
        Array(20).fill(0),
      );
      expect(await client.get('kept:1')).toBe('x');
      expect(await service.unlinkByPattern('doomed:*')).toBe(0);
    });

    it('stats() reports the monitoring figures', async () => {
      await client.get('stats:miss');
      const stats = await service.stats();
      expect(stats.nodes).toBe(topology.name === 'cluster' ? 3 : 1);
      expect(stats.connectedClients).toBeGreaterThanOrEqual(1);
      expect(stats.usedMemory).toBeGreaterThan(0);
      expect(stats.maxMemory).toBe(0);
      expect(stats.memoryRatio).toBeNull();
      expect(stats.keyspaceMisses).toBeGreaterThan(0);
      expect(stats.hitRate === null || (stats.hitRate >= 0 && stats.hitRate <= 1)).toBe(true);
      expect(stats.keys).toBeGreaterThan(0);
      expect(stats.uptimeSeconds).toBeGreaterThanOrEqual(0);
      for (const field of ['opsPerSec', 'evictedKeys', 'expiredKeys', 'blockedClients'] as const) {
        expect(typeof stats[field]).toBe('number');
      }
    });

    it('health is up with latency (and cluster_state on a cluster)', async () => {
      const result = await app
        .get(RedisHealthIndicator)
        .isHealthy('redis', { maxMemoryRatio: 0.99 });
      expect(result.redis.status).toBe('up');
      expect(result.redis.latency).toBeGreaterThan(0);
      expect(result.redis.memoryRatio).toBeNull();
      if (topology.name === 'cluster') expect(result.redis.clusterState).toBe('ok');
      else expect(result.redis.clusterState).toBeUndefined();
    });

    it('opens the subscriber connection only on first subscribe, and delivers messages', async () => {
      expect(connection.hasSubscriber).toBe(false);
      const received: string[] = [];
      const channel = `${prefix}events`;
      let arrived: () => void = () => undefined;
      const twoArrived = new Promise<void>((resolve) => (arrived = resolve));
      const unsubscribe = await connection.subscribe(channel, (message) => {
        received.push(message);
        if (received.length === 2) arrived();
      });
      expect(connection.hasSubscriber).toBe(true);
      await client.publish(channel, 'one');
      await client.publish(channel, 'two');
      await twoArrived;
      // On a cluster each PUBLISH may go to another node, which relays it over the cluster bus:
      // Redis orders messages per node, not across nodes.
      expect([...received].sort()).toEqual(['one', 'two']);
      await unsubscribe();
    });

    it('tells listeners when the subscriber connection comes back after a drop', async () => {
      const channel = `${prefix}resub`;
      const messages: string[] = [];
      const unsubscribe = await connection.subscribe(channel, (m) => messages.push(m));
      let resubscribed = 0;
      const off = connection.onResubscribe(() => (resubscribed += 1));
      // Kill our subscriber connection wherever it lives.
      let killed = 0;
      for (const server of topology.servers)
        killed += await killConnection(server, `${connectionName}:subscriber`);
      expect(killed).toBe(1);
      await waitFor(() => resubscribed === 1, { what: 'the resubscribe notification' });
      // Subscribed again: a new message arrives.
      await waitFor(
        async () => {
          await client.publish(channel, 'after');
          return messages.includes('after');
        },
        { what: 'a message after the reconnect' },
      );
      off();
      await unsubscribe();
    });

    it('shutting down just as the subscriber reconnects leaves no unhandled rejection', async () => {
      const rejections: unknown[] = [];
      const onRejection = (reason: unknown): void => {
        rejections.push(reason);
      };
      process.on('unhandledRejection', onRejection);
      const name = uniqueConnectionName('resubscribe-close');
      const other = await startApp({
        imports: [RedisModule.forRoot({ ...topology.options, connectionName: name })],
      });
      try {
        const conn = other.get<RedisConnection>(getRedisConnectionToken());
        await conn.subscribe(`${prefix}close-race`, () => undefined);
        const subscriber = (conn as unknown as { subscriberHub: { client: Redis } }).subscriberHub
          .client;
        // Close the connections inside the reconnect's 'ready', and drop the socket before
        // Redis answers the re-subscribe: closing fails whatever is still queued, and nothing
        // may go unhandled. (It happened at shutdown right after an outage.)
        const closed = new Promise<void>((resolve, reject) =>
          subscriber.once('ready', () => {
            const closing = conn.close();
            subscriber.stream.destroy();
            closing.then(resolve, reject);
          }),
        );
        let killed = 0;
        for (const server of topology.servers)
          killed += await killConnection(server, `${name}:subscriber`);
        expect(killed).toBe(1);
        await closed;
        await new Promise((resolve) => setTimeout(resolve, 100));
      } finally {
        process.off('unhandledRejection', onRejection);
        await other.close();
      }
      expect(rejections).toEqual([]);
    });

    it('app.close() returns once every socket it opened is closed (every node of a cluster)', async () => {
      const other = await startApp({
        imports: [
          RedisModule.forRoot({
            ...topology.options,
            keyPrefix: prefix,
            connectionName: uniqueConnectionName('close-sockets'),
          }),
        ],
      });
      const otherClient = other.get<RedisClient>(getRedisToken());
      const otherService = other.get(RedisService);
      await Promise.all(Array.from({ length: 30 }, (_, i) => otherClient.set(`close:${i}`, i)));
      await otherService.unlinkByPattern('close:*');
      await otherService.withDedicatedConnection((c) => c.ping());
      const clients: Redis[] =
        otherClient instanceof Cluster ? otherClient.nodes('all') : [otherClient];
      const open = (): string[] =>
        clients.filter((c) => c.stream && !c.stream.destroyed).map((c) => `${c.options.port}`);
      expect(open().length).toBeGreaterThan(0);
      await other.close();
      // Not one socket left closing in the background: a cluster reports `end` before its
      // nodes' sockets have closed.
      expect(open()).toEqual([]);
    });

    it('sends the commands written in one tick together, in two system calls per socket, also after a reconnect', async () => {
      const keys = Array.from({ length: 200 }, (_, i) => `coalesce:${i}`);
      await Promise.all(keys.map((key) => client.set(key, key)));
      const burst = () =>
        countSocketWrites(client, async () => {
          const values = await Promise.all(keys.map((key) => client.get(key)));
          expect(values).toEqual(keys); // every reply to its own command
        });
      // Per socket, the tick's first command goes out alone, the other 199 together. The keys
      // live on the masters: one socket, three on the cluster.
      const writes = 2 * (topology.name === 'cluster' ? 3 : 1);
      expect(await burst()).toBeLessThanOrEqual(writes);
      let killed = 0;
      for (const server of topology.servers)
        killed += await killConnection(server, `${connectionName}:command`);
      expect(killed).toBeGreaterThanOrEqual(1);
      await waitFor(
        async () =>
          (await Promise.all(keys.map((key) => client.get(key).catch(() => null)))).every(
            (value, i) => value === keys[i],
          ),
        { what: 'the command connection to come back' },
      );
      expect(await burst()).toBeLessThanOrEqual(writes);
    });

    it('runs blocking commands on a dedicated connection, never the command connection', async () => {
      const list = `blocking:${topology.name}`;
      const blocked = service.withDedicatedConnection((c) => c.blpop(list, 5));
      // The command connection keeps answering while BLPOP blocks.
      expect(await service.ping()).toBeGreaterThan(0);
      await client.rpush(list, 'job');
      expect(await blocked).toEqual([`${prefix}${list}`, 'job']);
    });

    it('leaves no connection of ours on any server after close', async () => {
      const before = (
        await Promise.all(topology.servers.map((s) => ourConnections(s, connectionName)))
      ).flat();
      expect(before.length).toBeGreaterThan(0);
      await app.close();
      await connection.close(); // twice is harmless
      await waitFor(
        async () =>
          (await Promise.all(topology.servers.map((s) => ourConnections(s, connectionName)))).flat()
            .length === 0,
        { what: 'CLIENT LIST on every server to show none of our connections' },
      );
    });
  },
);
