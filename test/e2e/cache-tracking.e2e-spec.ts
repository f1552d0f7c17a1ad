import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { Cluster, Redis } from 'ioredis';

import {
  CacheTracking,
  validateTrackingOption,
  type CacheTrackingMode,
} from '../../src/cache/tracking.js';
import { RedisConnection } from '../../src/connection/redis-connection.js';
import { RedisConfigError } from '../../src/errors.js';
import type { RedisModuleOptions } from '../../src/index.js';
import { resolveRedisOptions } from '../../src/redis-module.options.js';
import { FaultProxy } from '../support/fault-proxy.js';
import {
  killConnection,
  ourConnections,
  sendCommand,
  specDir,
  startStandalone,
  topologies,
  uniqueConnectionName,
  uniquePrefix,
  waitFor,
  type StandaloneServer,
  type TopologyCase,
} from '../support/redis.js';

/**
 * A minimal L1 (a Map) wired to `CacheTracking` the way the cache service is: reads go through
 * the tracked command connection, take a ticket first and store only what the guard allows.
 */
interface Harness {
  connection: RedisConnection;
  tracking: CacheTracking;
  l1: Map<string, string>;
  invalidated: string[];
  flushes: string[];
  /** Keys read from Redis (not served by L1). */
  reads: string[];
  name: string;
  prefix: string;
  /** L1 when tracking is active and it holds the key, else a read. */
  get(key: string): Promise<string | null>;
  /** One read through the tracked connection, stored in L1 if the guard allows. */
  read(key: string): Promise<string | null>;
  close(): Promise<void>;
}

async function harness(
  options: RedisModuleOptions,
  mode: CacheTrackingMode,
  label: string,
): Promise<Harness> {
  const name = uniqueConnectionName(`tracking-${label}`);
  const prefix = uniquePrefix('trk');
  const connection = new RedisConnection(resolveRedisOptions({ ...options, connectionName: name }));
  await connection.onModuleInit();
  const l1 = new Map<string, string>();
  const invalidated: string[] = [];
  const flushes: string[] = [];
  const reads: string[] = [];
  const tracking = new CacheTracking({
    connection,
    prefix,
    mode,
    invalidate: (key) => {
      invalidated.push(key);
      l1.delete(key);
    },
    flushAll: (reason) => {
      flushes.push(reason);
      l1.clear();
    },
  });
  const read = async (key: string): Promise<string | null> => {
    const ticket = tracking.beginRead();
    const value = await connection.client.get(key);
    reads.push(key);
    if (value !== null && tracking.mayStore(key, ticket)) l1.set(key, value);
    return value;
  };
  const h: Harness = {
    connection,
    tracking,
    l1,
    invalidated,
    flushes,
    reads,
    name,
    prefix,
    read,
    get: async (key) => (tracking.active && l1.has(key) ? l1.get(key)! : read(key)),
    close: async () => {
      await tracking.close();
      await connection.close();
    },
  };
  expect(await tracking.start()).toBe(true);
  return h;
}

/** A client that is not ours: it writes as another service or `redis-cli` would. */
function externalClient(topology: TopologyCase): Redis | Cluster {
  if (topology.name === 'cluster') {
    return new Cluster(topology.masters.map((n) => ({ host: n.host!, port: n.port })));
  }
  if (topology.name === 'sentinel') {
    const s = topology.options.sentinel!;
    return new Redis({ sentinels: s.sentinels, name: s.name });
  }
  return new Redis(topology.options.url!);
}

/** `CLIENT TRACKINGINFO` of a connection, as a record (ioredis flattens RESP3 maps). */
async function trackingInfo(client: Redis): Promise<Record<string, unknown>> {
  const raw = (await client.call('CLIENT', 'TRACKINGINFO')) as unknown[];
  const info: Record<string, unknown> = {};
  for (let i = 0; i + 1 < raw.length; i += 2) info[String(raw[i])] = raw[i + 1];
  return info;
}

/** The server a connection of ours reaches (through Sentinel too: the socket's peer). */
function addressOf(client: Redis): { host: string; port: number } {
  const socket = client.stream as { remoteAddress?: string; remotePort?: number };
  return { host: socket.remoteAddress!, port: socket.remotePort! };
}

/** Every tracked connection has tracking on, redirected to its live `:tracking` connection. */
async function trackingIsOn(h: Harness): Promise<boolean> {
  if (!h.tracking.active) return false;
  for (const { tracked, redirect } of h.tracking.connections()) {
    if (!redirect || redirect.status !== 'ready') return false;
    const info = await trackingInfo(tracked);
    const flags = (info.flags as string[]).map(String);
    if (!flags.includes('on')) return false;
    const list = String(await sendCommand(addressOf(redirect), ['CLIENT', 'LIST']));
    const line = list.split('\n').find((l) => l.includes(` name=${h.name}:tracking `));
    const id = /(?:^|\s)id=(\d+)/.exec(line ?? '')?.[1];
    if (String(info.redirect) !== id) return false;
  }
  return true;
}

describe('validateTrackingOption', () => {
  it('accepts false, true and { mode }; names the option and the value otherwise', () => {
    expect(validateTrackingOption(undefined)).toBe(false);
    expect(validateTrackingOption(false)).toBe(false);
    expect(validateTrackingOption(true)).toEqual({ mode: 'bcast' });
    expect(validateTrackingOption({})).toEqual({ mode: 'bcast' });
    expect(validateTrackingOption({ mode: 'default' })).toEqual({ mode: 'default' });
    expect(() => validateTrackingOption('yes')).toThrow(RedisConfigError);
    expect(() => validateTrackingOption('yes')).toThrow(/cache\.l1\.tracking = "yes"/);
    expect(() => validateTrackingOption({ mode: 'optin' })).toThrow(
      /cache\.l1\.tracking\.mode = "optin"/,
    );
    expect(() => validateTrackingOption({ prefix: 'x' })).toThrow(/cache\.l1\.tracking\.prefix/);
    expect(() => validateTrackingOption(null)).toThrow(/cache\.l1\.tracking = null/);
  });
});

describe.each(topologies().map((t) => [t.name, t] as const))(
  'cache tracking on %s',
  (_name, topology: TopologyCase) => {
    let external: Redis | Cluster;
    const open: Harness[] = [];

    beforeAll(() => {
      external = externalClient(topology);
    });

    afterEach(async () => {
      await Promise.all(open.splice(0).map((h) => h.close()));
    });

    afterAll(() => {
      external?.disconnect();
    });

    async function start(mode: CacheTrackingMode): Promise<Harness> {
      const h = await harness(topology.options, mode, topology.name);
      open.push(h);
      return h;
    }

    it.each(['bcast', 'default'] as const)(
      '%s: an external write invalidates L1 once acknowledged (within a bounded delay)',
      async (mode) => {
        const h = await start(mode);
        const keys = [0, 1, 2].map((i) => `${h.prefix}{k${i}}`);
        const other = `${uniquePrefix('other')}k`;
        for (const key of [...keys, other]) await external.set(key, 'v1');
        for (const key of [...keys, other]) expect(await h.get(key)).toBe('v1');
        expect(h.l1.size).toBe(4);
        const before = h.reads.length;
        for (const key of keys) expect(await h.get(key)).toBe('v1');
        expect(h.reads.length).toBe(before); // served by L1

        for (const key of keys) {
          await external.set(key, 'v2');
          await waitFor(() => !h.l1.has(key), { timeoutMs: 2_000, what: `invalidation of ${key}` });
          expect(await h.get(key)).toBe('v2');
        }
        expect(h.invalidated).toEqual(expect.arrayContaining(keys));
        // Keys outside the prefix are not ours to report.
        await external.set(other, 'v2');
        await external.set(keys[0], 'v3');
        await waitFor(() => !h.l1.has(keys[0]), { timeoutMs: 2_000 });
        expect(h.invalidated).not.toContain(other);
        expect(h.flushes).toEqual([]);
        await Promise.all([...keys, other].map((k) => external.del(k)));
      },
    );

    it('the tracked connection killed: flushAll, then tracking re-enabled (CLIENT TRACKINGINFO)', async () => {
      const h = await start('bcast');
      const key = `${h.prefix}{killed}`;
      await external.set(key, 'v1');
      expect(await h.get(key)).toBe('v1');
      expect(h.l1.has(key)).toBe(true);

      const target = addressOf(h.tracking.connections()[0].tracked);
      expect(await killConnection(target, `${h.name}:command`)).toBeGreaterThan(0);
      await waitFor(() => h.flushes.length > 0, { timeoutMs: 5_000, what: 'flushAll' });
      expect(h.l1.size).toBe(0);
      // A cluster drops the node connection and makes a new one when a command needs it.
      await waitFor(
        async () => {
          await h.read(key).catch(() => undefined);
          return trackingIsOn(h);
        },
        { timeoutMs: 15_000, intervalMs: 100, what: 'tracking re-enabled' },
      );
      expect(h.tracking.active).toBe(true);
      await external.set(key, 'v2');
      await waitFor(() => !h.l1.has(key), {
        timeoutMs: 2_000,
        what: 'invalidation after re-enable',
      });
      expect(await h.get(key)).toBe('v2');
      await external.del(key);
    });

    it('the invalidation connection killed: flushAll, then tracking redirected to the new one', async () => {
      const h = await start('default');
      const key = `${h.prefix}{redirect}`;
      await external.set(key, 'v1');
      expect(await h.get(key)).toBe('v1');
      const redirect = h.tracking.connections()[0].redirect!;
      expect(await killConnection(addressOf(redirect), `${h.name}:tracking`)).toBe(1);
      await waitFor(() => h.flushes.length > 0, { timeoutMs: 5_000, what: 'flushAll' });
      expect(h.l1.size).toBe(0);
      expect(h.tracking.active).toBe(false);
      await waitFor(() => trackingIsOn(h), { timeoutMs: 10_000, what: 'tracking re-enabled' });
      expect(await h.get(key)).toBe('v1');
      expect(h.l1.has(key)).toBe(true);
      await external.set(key, 'v2');
      await waitFor(() => !h.l1.has(key), {
        timeoutMs: 2_000,
        what: 'invalidation after re-enable',
      });
      await external.del(key);
    });

    it('closes everything it opened and turns tracking off', async () => {
      const h = await harness(topology.options, 'bcast', topology.name);
      const servers = h.tracking.connections().map((c) => addressOf(c.tracked));
      await h.close();
      for (const server of servers) expect(await ourConnections(server, h.name)).toEqual([]);
    });
  },
);

/** Faults that need a server of our own: a proxy in front of it, FLUSHALL. */
describe('cache tracking faults (own standalone server)', () => {
  let server: StandaloneServer;
  let proxy: FaultProxy;
  let external: Redis;
  const open: Harness[] = [];

  beforeAll(async () => {
    server = await startStandalone({ baseDir: specDir('cache-tracking') });
    proxy = await FaultProxy.start({ host: '127.0.0.1', port: server.port });
    external = new Redis({ host: '127.0.0.1', port: server.port });
  });

  afterEach(async () => {
    proxy.setLatency(0);
    await Promise.all(open.splice(0).map((h) => h.close()));
  });

  afterAll(async () => {
    external?.disconnect();
    await proxy?.close();
    await server?.stop();
  });

  async function start(mode: CacheTrackingMode): Promise<Harness> {
    // No keepalive PING: its reply could queue an invalidation behind the proxy's latency.
    const h = await harness({ url: proxy.url, pubsub: { pingInterval: 0 } }, mode, 'faults');
    open.push(h);
    return h;
  }

  it.each(['bcast', 'default'] as const)(
    '%s: an invalidation that overtakes the reply of a read in flight keeps that reply out of L1',
    async (mode) => {
      const h = await start(mode);
      const key = `${h.prefix}race`;
      await external.set(key, 'old');
      // Delay the read both ways; once the server has answered (its reply is held by the
      // proxy), take the latency off and write: the invalidation arrives before the reply.
      proxy.setLatency(400);
      const answered = proxy.counts.chunksToClient;
      let settled = false;
      const reading = h.read(key).finally(() => (settled = true));
      await waitFor(() => proxy.counts.chunksToClient > answered, { what: 'the server reply' });
      proxy.setLatency(0);
      await external.set(key, 'new');
      await waitFor(() => h.invalidated.includes(key), { timeoutMs: 2_000, what: 'invalidation' });
      expect(settled).toBe(false);
      expect(await reading).toBe('old');
      expect(h.l1.has(key)).toBe(false);
      expect(h.tracking.stats().refusedStores).toBeGreaterThanOrEqual(1);
      expect(await h.get(key)).toBe('new');
      expect(h.l1.get(key)).toBe('new');
    },
  );

  it('a silent invalidation connection is found by its PING: flushAll, then a new one', async () => {
    const h = await harness({ url: server.url, pubsub: { pingInterval: 100 } }, 'bcast', 'faults');
    open.push(h);
    const key = `${h.prefix}silent`;
    await external.set(key, 'v1');
    expect(await h.get(key)).toBe('v1');
    const before = h.tracking.connections()[0].redirect!;
    // Nothing reaches the client any more, and nothing tells it so (a half-open connection).
    before.stream.pause();
    await waitFor(() => h.flushes.length > 0, { timeoutMs: 5_000, what: 'flushAll' });
    expect(h.l1.size).toBe(0);
    await waitFor(() => trackingIsOn(h), { timeoutMs: 5_000, what: 'tracking re-enabled' });
    await external.set(key, 'v2');
    expect(await h.get(key)).toBe('v2');
    expect(h.l1.get(key)).toBe('v2');
  });

  it('a server flush (null invalidation) calls flushAll; L1 keeps serving afterwards', async () => {
    const h = await start('default');
    const key = `${h.prefix}flush`;
    await external.set(key, 'v1');
    expect(await h.get(key)).toBe('v1');
    await external.flushall();
    await waitFor(() => h.flushes.length > 0, { timeoutMs: 2_000, what: 'flushAll' });
    expect(h.flushes[0]).toMatch(/flushed/);
    expect(h.l1.size).toBe(0);
    expect(h.tracking.active).toBe(true);
    await external.set(key, 'v2');
    expect(await h.get(key)).toBe('v2');
    expect(h.l1.has(key)).toBe(true);
  });
});
