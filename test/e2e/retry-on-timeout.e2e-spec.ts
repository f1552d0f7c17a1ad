import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { Redis } from 'ioredis';

import { RedisConnection } from '../../src/connection/redis-connection.js';
import type { RedisModuleOptions } from '../../src/index.js';
import { resolveRedisOptions } from '../../src/redis-module.options.js';
import { FaultProxy } from '../support/fault-proxy.js';
import {
  specDir,
  standaloneUrl,
  startStandalone,
  topologies,
  uniquePrefix,
  waitFor,
  type StandaloneServer,
} from '../support/redis.js';

/** A connection of ours as the module makes it, without a Nest application around it. */
async function open(options: RedisModuleOptions): Promise<RedisConnection> {
  const connection = new RedisConnection(resolveRedisOptions(options, {}));
  await connection.onModuleInit();
  return connection;
}

const RETRYING: RedisModuleOptions = {
  commandTimeout: 200,
  retryOnTimeout: { attempts: 6, initialDelay: 20, maxDelay: 100 },
  retry: { initialDelay: 20, maxDelay: 100 },
};

/**
 * `retryOnTimeout` through the fault proxy: reads come back after a lost or late reply, and a
 * non-idempotent write runs once, never twice.
 */
describe('retryOnTimeout through the fault proxy', () => {
  let proxy: FaultProxy;
  let direct: Redis;
  const opened: RedisConnection[] = [];
  const prefix = uniquePrefix('rot');

  beforeAll(() => {
    direct = new Redis(standaloneUrl());
  });
  afterAll(() => {
    direct.disconnect();
  });

  async function connect(options: RedisModuleOptions = RETRYING): Promise<RedisConnection> {
    proxy ??= await FaultProxy.start(targetOf(standaloneUrl()));
    const connection = await open({ url: proxy.url, ...options });
    opened.push(connection);
    return connection;
  }

  afterEach(async () => {
    for (const c of opened.splice(0)) await c.close();
    await proxy?.close();
    proxy = undefined as unknown as FaultProxy;
  });

  it('retries a read whose replies come later than commandTimeout', async () => {
    const c = await connect();
    const key = `${prefix}late-read`;
    await direct.set(key, 'v');
    proxy.setLatency(500);
    const read = c.client.get(key);
    await waitFor(() => c.commandRetries.retries >= 1, { what: 'a retry' });
    proxy.setLatency(0);
    expect(await read).toBe('v');
  });

  it('never sends an INCR again when its reply is late', async () => {
    const c = await connect();
    const key = `${prefix}late-incr`;
    proxy.setLatency(500);
    await expect(c.client.incr(key)).rejects.toThrow('Command timed out');
    proxy.setLatency(0);
    // The server got the INCR once; it runs once, whatever happens to the reply.
    await waitFor(async () => (await direct.get(key)) === '1', { what: 'the INCR to land' });
    // Everything the connection sent before this PING has reached the server by its reply.
    await c.client.ping();
    expect(await direct.get(key)).toBe('1');
    expect(c.commandRetries.retries).toBe(0);
  });

  it('retries a read whose reply was dropped with the connection', async () => {
    const c = await connect();
    const key = `${prefix}dropped-read`;
    await direct.set(key, 'v');
    const dropped = proxy.dropReply({ match: key, then: 'reset' });
    const read = c.client.get(key);
    await dropped;
    expect(await read).toBe('v');
    expect(c.commandRetries.retries).toBeGreaterThanOrEqual(1);
  });

  it('fails an INCR whose reply was dropped instead of running it twice', async () => {
    const c = await connect();
    const key = `${prefix}dropped-incr`;
    const dropped = proxy.dropReply({ match: key, then: 'reset' });
    const incr = c.client.incr(key);
    await dropped;
    // ioredis 6.0 keeps the INCR until commandTimeout; 6.1 aborts it when the socket closes.
    await expect(incr).rejects.toThrow(/Command timed out|aborted due to connection close/);
    await waitFor(() => c.client.status === 'ready', { what: 'reconnected' });
    await c.client.ping();
    expect(await direct.get(key)).toBe('1');
    // The same key is counted normally afterwards: the connection is healthy.
    expect(await c.client.incr(key)).toBe(2);
  });

  it('leaves ioredis resending unanswered commands when it is off (why the option exists)', async () => {
    const c = await connect({ commandTimeout: 2_000, retry: { initialDelay: 20, maxDelay: 100 } });
    const key = `${prefix}resent-incr`;
    const dropped = proxy.dropReply({ match: key, then: 'reset' });
    const incr = c.client.incr(key);
    await dropped;
    // ioredis sent the INCR again after reconnecting: it ran twice.
    expect(await incr).toBe(2);
  });

  it('retries a plain SET but not a SET NX', async () => {
    const c = await connect();
    const plain = `${prefix}set-plain`;
    const nx = `${prefix}set-nx`;
    proxy.setLatency(500);
    await expect(c.client.set(nx, 'v', 'PX', 60_000, 'NX')).rejects.toThrow('Command timed out');
    expect(c.commandRetries.retries).toBe(0);
    const set = c.client.set(plain, 'v', 'PX', 60_000);
    await waitFor(() => c.commandRetries.retries >= 1, { what: 'a retry' });
    proxy.setLatency(0);
    expect(await set).toBe('OK');
    expect(await direct.get(plain)).toBe('v');
    expect(await direct.get(nx)).toBe('v');
  });
});

/**
 * A server that is loading its data answers `LOADING` to every data command. `DEBUG RELOAD` makes
 * a running server save and load again while our connection stays open (a restart would not do:
 * ioredis's ready check holds commands on a new connection until loading ends). A delay per key
 * (`key-load-delay`, microseconds) makes the load last about a second, and a small
 * `loading-process-events-interval-bytes` makes the server answer clients while it loads.
 */
describe('retryOnTimeout while the server loads its data (LOADING)', () => {
  const KEYS = 5_000;
  let server: StandaloneServer;
  let admin: Redis;
  const opened: RedisConnection[] = [];

  beforeAll(async () => {
    server = await startStandalone({
      baseDir: specDir('rot-loading'),
      args: ['--enable-debug-command', 'local', '--loading-process-events-interval-bytes', '1024'],
    });
    admin = new Redis(server.url);
    await admin.call('DEBUG', 'POPULATE', String(KEYS), 'k', '64');
    await admin.config('SET', 'key-load-delay', '200');
  });
  afterEach(async () => {
    for (const c of opened.splice(0)) await c.close();
  });
  afterAll(async () => {
    admin?.disconnect();
    await server?.stop();
  });

  /** Starts a reload and resolves once the server says it is loading; `done` ends with it. */
  async function reloading(): Promise<{ done: Promise<unknown> }> {
    const done = admin.call('DEBUG', 'RELOAD');
    // No ready check: ioredis's own would hold the probe's INFO until the load ends.
    const probe = new Redis(server.url, { enableReadyCheck: false });
    try {
      await waitFor(async () => /^loading:1/m.test(await probe.info('persistence')), {
        what: 'the server to be loading',
      });
    } finally {
      probe.disconnect();
    }
    return { done };
  }

  async function loadingErrors(): Promise<number> {
    const stats = await admin.info('errorstats');
    return Number(/errorstat_LOADING:count=(\d+)/.exec(stats)?.[1] ?? 0);
  }

  it('retries a read that met LOADING until the data is back', async () => {
    const c = await open({
      url: server.url,
      commandTimeout: 2_000,
      retryOnTimeout: { attempts: 10, initialDelay: 100, maxDelay: 1_000 },
    });
    opened.push(c);
    const before = await loadingErrors();
    const { done } = await reloading();
    const value = await c.client.get('k:1');
    await done;
    expect(value).toBe('value:1'.padEnd(64, '\0'));
    expect(c.commandRetries.retries).toBeGreaterThanOrEqual(1);
    expect(await loadingErrors()).toBeGreaterThan(before);
  });

  it('fails the read with LOADING without the option (the fault is real)', async () => {
    const c = await open({ url: server.url, commandTimeout: 2_000 });
    opened.push(c);
    const { done } = await reloading();
    await expect(c.client.get('k:1')).rejects.toThrow(/^LOADING/);
    await done;
  });

  it('never retries an INCR that met LOADING: it fails once and ran zero times', async () => {
    const c = await open({
      url: server.url,
      commandTimeout: 2_000,
      retryOnTimeout: { attempts: 10, initialDelay: 100, maxDelay: 1_000 },
    });
    opened.push(c);
    const { done } = await reloading();
    await expect(c.client.incr('loading-counter')).rejects.toThrow(/^LOADING/);
    await done;
    expect(await admin.get('loading-counter')).toBeNull();
    expect(c.commandRetries.retries).toBe(0);
  });
});

describe.each(topologies().map((t) => [t.name, t] as const))(
  'retryOnTimeout on %s',
  (_name, topology) => {
    it('leaves normal traffic as it is', async () => {
      const prefix = uniquePrefix(`rot-${topology.name}`);
      const c = await open({ ...topology.options, keyPrefix: prefix, ...RETRYING });
      try {
        await c.client.set('a', '1');
        expect(await c.client.get('a')).toBe('1');
        expect(await c.client.incr('n')).toBe(1);
        expect(await c.client.getBuffer('a')).toEqual(Buffer.from('1'));
        expect(await c.client.hgetall('missing')).toEqual({});
        expect(c.commandRetries.retries).toBe(0);
        await c.client.unlink('a');
        await c.client.unlink('n');
      } finally {
        await c.close();
      }
    });
  },
);

function targetOf(url: string): { host: string; port: number } {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port) };
}
