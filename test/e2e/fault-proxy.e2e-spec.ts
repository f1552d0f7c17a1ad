import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { Redis, type RedisOptions } from 'ioredis';

import { FaultProxy } from '../support/fault-proxy.js';
import { standaloneUrl, uniquePrefix, waitFor } from '../support/redis.js';

/**
 * The fault proxy is the tool every fault spec relies on: each fault it claims to inject is
 * shown here against the real server, with a plain ioredis client.
 */
describe('FaultProxy (test tooling) against a real redis-server', () => {
  let proxy: FaultProxy;
  let direct: Redis;
  const clients: Redis[] = [];
  const prefix = uniquePrefix('proxy');

  function client(options: RedisOptions = {}): Redis {
    // A black-holed socket never answers the FIN of disconnect(): ioredis then waits
    // `disconnectTimeout` before destroying it; keep that short so jest exits at once.
    const c = new Redis({ host: proxy.host, port: proxy.port, disconnectTimeout: 10, ...options });
    c.on('error', () => {});
    clients.push(c);
    return c;
  }

  beforeEach(async () => {
    const url = new URL(standaloneUrl());
    proxy = await FaultProxy.start({ host: url.hostname, port: Number(url.port) });
    direct = new Redis(standaloneUrl());
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.disconnect();
    direct.disconnect();
    await proxy.close();
  });

  it('passes commands through and counts what it forwarded', async () => {
    const c = client();
    await c.set(`${prefix}a`, '1');
    expect(await c.get(`${prefix}a`)).toBe('1');
    expect(proxy.connections).toBe(1);
    expect(proxy.counts.accepted).toBe(1);
    expect(proxy.counts.chunksToServer).toBeGreaterThanOrEqual(2);
    expect(proxy.counts.chunksToClient).toBeGreaterThanOrEqual(2);
    expect(proxy.counts.dropped).toBe(0);
  });

  it('adds latency without reordering a pipeline', async () => {
    const c = client();
    await c.ping();
    proxy.setLatency(30);
    const key = `${prefix}order`;
    const replies = Promise.all(Array.from({ length: 20 }, () => c.incr(key)));
    await waitFor(() => proxy.queued > 0, { what: 'a delayed chunk' });
    expect(await replies).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    await direct.unlink(key);
  });

  it('drops one reply and resets: ioredis re-sends the command, so it runs twice', async () => {
    const c = client();
    await c.ping();
    const key = `${prefix}twice`;
    const dropped = proxy.dropReply({ match: 'INCR' });
    const reply = c.incr(key);
    await dropped;
    // The first INCR ran on the server; its reply never reached the client, which reconnected
    // and sent it again: the hazard every non-idempotent script must survive.
    expect(await reply).toBe(2);
    expect(await direct.get(key)).toBe('2');
    expect(proxy.counts.dropped).toBe(1);
    expect(proxy.counts.accepted).toBe(2);
    await direct.unlink(key);
  });

  it('black-holes: the socket stays open and nothing comes back', async () => {
    const c = client({ commandTimeout: 200, maxRetriesPerRequest: 0 });
    await c.ping();
    proxy.blackhole();
    await expect(c.ping()).rejects.toThrow(/timed out/i);
    expect(c.status).toBe('ready');
    expect(proxy.connections).toBe(1);
    expect(proxy.counts.dropped).toBeGreaterThanOrEqual(1);
    // A new connection is swallowed too, until resume().
    const fresh = client({ commandTimeout: 200, enableReadyCheck: false, maxRetriesPerRequest: 0 });
    await expect(fresh.ping()).rejects.toThrow(/timed out/i);
    expect(proxy.counts.accepted).toBe(2);
    proxy.resume();
    const after = client();
    expect(await after.ping()).toBe('PONG');
  });

  it('resets every connection, and the client reconnects', async () => {
    const c = client();
    await c.ping();
    const closed = new Promise((resolve) => c.once('close', resolve));
    proxy.resetAll();
    await closed;
    expect(await c.ping()).toBe('PONG');
    expect(proxy.counts.accepted).toBeGreaterThanOrEqual(2);
  });

  it('refuses new connections while asked to', async () => {
    proxy.refuse(true);
    const c = client({ lazyConnect: true, retryStrategy: () => null });
    await expect(c.connect()).rejects.toThrow();
    proxy.refuse(false);
    const d = client();
    expect(await d.ping()).toBe('PONG');
  });
});
