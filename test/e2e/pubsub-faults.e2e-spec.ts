import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';

import {
  PubSubService,
  RedisConnectionError,
  RedisModule,
  type PubSubEvent,
  type RedisModuleOptions,
} from '../../src/index.js';
import { CapturingLogger, startApp } from '../support/app.js';
import { FaultProxy } from '../support/fault-proxy.js';
import {
  ourConnections,
  sendCommand,
  specDir,
  startStandalone,
  uniqueConnectionName,
  waitFor,
  type StandaloneServer,
} from '../support/redis.js';

/** Servers of our own: these tests kill connections and change the server's configuration. */
describe('PubSubService faults (own standalone servers)', () => {
  let server: StandaloneServer;
  let locked: StandaloneServer;

  beforeAll(async () => {
    const dir = specDir('pubsub-faults');
    [server, locked] = await Promise.all([
      startStandalone({ baseDir: dir }),
      // CONFIG renamed away, as managed Redis services do.
      startStandalone({ baseDir: dir, args: ['--rename-command', 'CONFIG', ''] }),
    ]);
  });

  afterAll(async () => {
    await Promise.all([server?.stop(), locked?.stop()]);
  });

  async function app(
    options: RedisModuleOptions,
    logs = new CapturingLogger(),
  ): Promise<{
    app: INestApplication;
    pubsub: PubSubService;
    logs: CapturingLogger;
    name: string;
  }> {
    const name = uniqueConnectionName('pubsub-faults');
    const started = await startApp(
      { imports: [RedisModule.forRoot({ url: server.url, connectionName: name, ...options })] },
      logs,
    );
    return { app: started, pubsub: started.get(PubSubService), logs, name };
  }

  it('CLIENT KILL TYPE pubsub: gap notice to handlers and iterators, then messages flow again', async () => {
    const { app: a, pubsub, name } = await app({});
    try {
      const seen: string[] = [];
      await pubsub.subscribe<string>('k', (m) => void seen.push(m), {
        onGap: (gap) => void seen.push(`gap:${gap.reason}`),
      });
      const iterated: PubSubEvent<string>[] = [];
      const loop = (async () => {
        for await (const event of pubsub.messages<string>({ pattern: 'k*' })) iterated.push(event);
      })();
      await waitFor(() => pubsub.stats().subscriptions === 2, { what: 'two subscriptions' });
      await pubsub.publish('k', 'one');
      await waitFor(() => seen.length === 1 && iterated.length === 1, { what: 'first message' });

      const killed = await sendCommand(server, ['CLIENT', 'KILL', 'TYPE', 'pubsub']);
      expect(Number(killed)).toBeGreaterThanOrEqual(1);
      await waitFor(() => seen.includes('gap:reconnect') && iterated.length === 2, {
        what: 'gap notices',
      });
      await pubsub.publish('k', 'two');
      await waitFor(() => seen.length === 3 && iterated.length === 3, { what: 'second message' });
      expect(seen).toEqual(['one', 'gap:reconnect', 'two']);
      expect(iterated.map((e) => (e.type === 'gap' ? `gap:${e.reason}` : e.message))).toEqual([
        'one',
        'gap:reconnect',
        'two',
      ]);
      const gap = iterated[1] as Extract<PubSubEvent, { type: 'gap' }>;
      expect(gap.pattern).toBe('k*');
      expect(gap.until.getTime()).toBeGreaterThanOrEqual(gap.since.getTime());
      expect(pubsub.stats()).toMatchObject({ reconnects: 1, gaps: 2 });

      // Shutdown ends the loop and closes every connection of ours.
      await a.close();
      await loop;
      expect(await ourConnections(server, name)).toEqual([]);
    } finally {
      await a.close();
    }
  });

  it('detects a half-open subscriber connection with PING: gap notice, then messages again', async () => {
    const proxy = await FaultProxy.start({ host: server.host, port: server.port });
    const logs = new CapturingLogger();
    const a = await startApp(
      {
        imports: [
          RedisModule.forRoot({
            url: proxy.url,
            connectionName: uniqueConnectionName('pubsub-halfopen'),
            shutdownTimeout: 300,
            retry: { initialDelay: 20, maxDelay: 100 },
            pubsub: { pingInterval: 100 },
          }),
        ],
      },
      logs,
    );
    try {
      const pubsub = a.get(PubSubService);
      const seen: string[] = [];
      await pubsub.subscribe<string>('h', (m) => void seen.push(m), {
        onGap: (gap) => void seen.push(`gap:${gap.reason}`),
      });
      // Published straight to the server: the module's own connections pass the proxy.
      await sendCommand(server, ['PUBLISH', 'h', '"one"']);
      await waitFor(() => seen.length === 1, { what: 'the first message' });
      const accepted = proxy.counts.accepted;
      proxy.blackhole();
      // No error, no close: only the unanswered PING tells, and we reconnect.
      await waitFor(() => proxy.counts.accepted > accepted, { what: 'a reconnect attempt' });
      expect(logs.matching('unresponsive').length).toBeGreaterThanOrEqual(1);
      proxy.resume();
      await waitFor(() => seen.includes('gap:reconnect'), { what: 'the gap notice' });
      await waitFor(
        async () => {
          await sendCommand(server, ['PUBLISH', 'h', '"two"']);
          return seen.includes('two');
        },
        { what: 'delivery after the reconnect' },
      );
      expect(seen.slice(0, 3)).toEqual(['one', 'gap:reconnect', 'two']);
    } finally {
      await a.close();
      await proxy.close();
    }
  });

  it('counts the subscriber connection in maxConnections', async () => {
    const { app: a, pubsub } = await app({ maxConnections: 1 });
    try {
      const err = await pubsub.subscribe('m', () => undefined).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RedisConnectionError);
      expect((err as Error).message).toMatch(/maxConnections/);
      expect(pubsub.stats().subscriptions).toBe(0);
    } finally {
      await a.close();
    }
  });

  it("'check': reports key events inactive and names the flags, once", async () => {
    await sendCommand(server, ['CONFIG', 'SET', 'notify-keyspace-events', '']);
    const { app: a, pubsub, logs } = await app({});
    try {
      const first = await pubsub.onKeyEvent(['expired', 'del'], 'x:*', () => undefined);
      expect(first).toMatchObject({ active: false, missingFlags: 'Kgx' });
      expect(first.reason).toMatch(/notify-keyspace-events must include "Kgx"/);
      expect(first.reason).toMatch(/pubsub\.keyspaceEvents: 'configure'/);
      const second = await pubsub.onKeyEvent(['expired', 'del'], 'y:*', () => undefined);
      expect(second.active).toBe(false);
      expect(logs.matching('keyspace notifications are off')).toHaveLength(1);
      expect(pubsub.stats().subscriptions).toBe(0);
      expect(String(await sendCommand(server, ['CONFIG', 'GET', 'notify-keyspace-events']))).toBe(
        'notify-keyspace-events,',
      );
    } finally {
      await a.close();
    }
  });

  it('after a reconnect the flags are checked again: a server that lost them is noticed', async () => {
    await sendCommand(server, ['CONFIG', 'SET', 'notify-keyspace-events', 'Kx']);
    const { app: a, pubsub } = await app({});
    try {
      const seen: string[] = [];
      const sub = await pubsub.onKeyEvent('expired', 'lost:*', ({ key }) => void seen.push(key), {
        onGap: (gap) => void seen.push(`gap:${gap.reason}`),
      });
      expect(sub.active).toBe(true);
      // What a restart (or a failover to a node configured elsewhere) looks like to us.
      await sendCommand(server, ['CONFIG', 'SET', 'notify-keyspace-events', '']);
      await sendCommand(server, ['CLIENT', 'KILL', 'TYPE', 'pubsub']);
      await waitFor(() => seen.includes('gap:reconnect'), { what: 'the gap notice' });
      expect(sub.active).toBe(false);
      expect(sub.missingFlags).toBe('Kx');
      expect(sub.reason).toMatch(/notify-keyspace-events must include "Kx"/);
      // Fixed by hand; the next reconnect finds the flags and the subscription active again.
      await sendCommand(server, ['CONFIG', 'SET', 'notify-keyspace-events', 'Kx']);
      const gaps = seen.length;
      await sendCommand(server, ['CLIENT', 'KILL', 'TYPE', 'pubsub']);
      await waitFor(() => seen.length > gaps, { what: 'the second gap notice' });
      expect(sub.active).toBe(true);
      let n = 0;
      await waitFor(
        async () => {
          await sendCommand(server, ['SET', `lost:${n++}`, 'v', 'PX', '5']);
          return seen.some((e) => e.startsWith('lost:'));
        },
        { what: 'an expiry after the flags came back', intervalMs: 100 },
      );
      await sub.unsubscribe();
    } finally {
      await a.close();
    }
  });

  it("'configure': sets the flags it needs, keeping those already there", async () => {
    await sendCommand(server, ['CONFIG', 'SET', 'notify-keyspace-events', 'E$']);
    const { app: a, pubsub } = await app({ pubsub: { keyspaceEvents: 'configure' } });
    try {
      const events: string[] = [];
      const sub = await pubsub.onKeyEvent('expired', 'sess:*', ({ key }) => void events.push(key));
      expect(sub.active).toBe(true);
      const flags = String(await sendCommand(server, ['CONFIG', 'GET', 'notify-keyspace-events']));
      for (const f of 'KEx$') expect(flags.split(',')[1]).toContain(f);
      await sendCommand(server, ['SET', 'sess:1', 'v', 'PX', '10']);
      await waitFor(
        async () => {
          await sendCommand(server, ['EXISTS', 'sess:1']);
          return events.length === 1;
        },
        { what: 'the expired event' },
      );
      expect(events).toEqual(['sess:1']);
      await sub.unsubscribe();
    } finally {
      await a.close();
    }
  });

  it('CONFIG renamed: inactive, with one message naming the flags to set', async () => {
    const logs = new CapturingLogger();
    const name = uniqueConnectionName('pubsub-noconfig');
    const a = await startApp(
      {
        imports: [
          RedisModule.forRoot({
            url: locked.url,
            connectionName: name,
            pubsub: { keyspaceEvents: 'configure' },
          }),
        ],
      },
      logs,
    );
    try {
      const sub = await a.get(PubSubService).onKeyEvent('evicted', '*', () => undefined);
      expect(sub).toMatchObject({ active: false, missingFlags: 'Ke' });
      expect(sub.reason).toMatch(/CONFIG GET failed .*unknown command/i);
      expect(logs.matching('notify-keyspace-events must include "Ke"')).toHaveLength(1);
    } finally {
      await a.close();
    }
  });

  it('survives an outage: publish rejects, subscriptions come back with a gap', async () => {
    const own = await startStandalone({ baseDir: specDir('pubsub-outage') });
    const logs = new CapturingLogger();
    const a = await startApp(
      {
        imports: [
          RedisModule.forRoot({
            url: own.url,
            connectionName: uniqueConnectionName('pubsub-outage'),
            commandTimeout: 500,
            retry: { initialDelay: 50, maxDelay: 200 },
          }),
        ],
      },
      logs,
    );
    try {
      const pubsub = a.get(PubSubService);
      const seen: string[] = [];
      await pubsub.subscribe<string>('o', (m) => void seen.push(m), {
        onGap: () => void seen.push('gap'),
      });
      await own.stop();
      await expect(pubsub.publish('o', 'lost')).rejects.toThrow();
      await own.restart();
      await waitFor(() => seen.includes('gap'), { what: 'the gap after the outage' });
      await waitFor(async () => (await pubsub.publish('o', 'back')) === 1, { what: 'publish' });
      await waitFor(() => seen.includes('back'), { what: 'delivery after the outage' });
      expect(seen[0]).toBe('gap');
    } finally {
      await a.close();
      await own.stop();
    }
  });
});
