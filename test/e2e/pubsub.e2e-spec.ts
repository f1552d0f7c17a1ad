import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Injectable, type INestApplication } from '@nestjs/common';

import {
  getRedisToken,
  OnRedisMessage,
  PubSubService,
  RedisModule,
  type PubSubEvent,
  type PubSubGap,
  type PubSubMessageContext,
  type RedisClient,
} from '../../src/index.js';
import { CapturingLogger, startApp } from '../support/app.js';
import {
  killConnection,
  ourConnections,
  topologies,
  uniqueConnectionName,
  uniquePrefix,
  waitFor,
  type TopologyCase,
} from '../support/redis.js';

@Injectable()
class OrderListener {
  readonly orders: unknown[] = [];
  readonly events: Array<[unknown, string]> = [];

  @OnRedisMessage('orders')
  onOrder(order: unknown): void {
    this.orders.push(order);
  }

  @OnRedisMessage({ pattern: 'events.*' })
  async onEvent(event: unknown, context: PubSubMessageContext): Promise<void> {
    this.events.push([event, context.channel]);
  }
}

/** A promise and the function that resolves it, to hold a handler until the test lets go. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open: () => void = () => undefined;
  const wait = new Promise<void>((resolve) => (open = resolve));
  return { wait, open };
}

describe.each(topologies().map((t) => [t.name, t] as const))(
  'PubSubService on %s',
  (_name, topology: TopologyCase) => {
    let app: INestApplication;
    let pubsub: PubSubService;
    let raw: RedisClient;
    const prefix = uniquePrefix(`ps-${topology.name}`);
    const connectionName = uniqueConnectionName('pubsub');
    const logs = new CapturingLogger();
    let n = 0;
    const channel = (label: string): string => `${label}-${++n}`;

    beforeAll(async () => {
      app = await startApp(
        {
          imports: [
            RedisModule.forRoot({
              ...topology.options,
              keyPrefix: prefix,
              connectionName,
              pubsub: { keyspaceEvents: 'configure' },
            }),
          ],
          providers: [OrderListener],
        },
        logs,
      );
      pubsub = app.get(PubSubService);
      raw = app.get<RedisClient>(getRedisToken());
    });

    afterAll(async () => {
      await app?.close();
    });

    it('delivers JSON messages under the key prefix, and strings from other publishers', async () => {
      const ch = channel('json');
      const got: Array<[unknown, PubSubMessageContext]> = [];
      const off = await pubsub.subscribe(ch, (m, ctx) => void got.push([m, ctx]));
      const receivers = await pubsub.publish(ch, { id: 1, tags: ['a'] });
      // A cluster node counts only its own subscribers, and ours may sit on another node.
      expect(receivers).toBeGreaterThanOrEqual(topology.name === 'cluster' ? 0 : 1);
      await pubsub.publish(ch, 'plain string');
      await pubsub.publish(ch, 'raw text', { raw: true });
      // Another publisher, on the prefixed channel name.
      await raw.publish(`${prefix}${ch}`, 'hello from redis-cli');
      await waitFor(() => got.length === 4, { what: 'four messages' });
      // Ours arrive in order; the other publisher's PUBLISH may enter a cluster on another
      // node, and messages from two nodes reach the subscriber in no particular order.
      const messages = got.map(([m]) => m);
      expect(messages.filter((m) => m !== 'hello from redis-cli')).toEqual([
        { id: 1, tags: ['a'] },
        'plain string',
        'raw text',
      ]);
      expect(messages).toContain('hello from redis-cli');
      expect(got[0][1]).toEqual({ channel: ch });
      await off();
      expect(await pubsub.publish(ch, 'after')).toBe(0);
    });

    it('treats glob characters as literal in subscribe and as a pattern in psubscribe', async () => {
      const base = channel('glob');
      const literal: unknown[] = [];
      const matched: Array<[unknown, PubSubMessageContext]> = [];
      const off1 = await pubsub.subscribe(`${base}.*`, (m) => void literal.push(m));
      const off2 = await pubsub.psubscribe(`${base}.*`, (m, ctx) => void matched.push([m, ctx]));
      await pubsub.publish(`${base}.created`, 1);
      await pubsub.publish(`${base}.*`, 2);
      try {
        await waitFor(() => matched.length === 2 && literal.length === 1, {
          what: 'pattern and literal deliveries',
        });
        expect(literal).toEqual([2]);
        // Two channels: on a cluster they may be published through different nodes, so the
        // order between them is not guaranteed.
        expect([...matched].sort((a, b) => Number(a[0]) - Number(b[0]))).toEqual([
          [1, { channel: `${base}.created`, pattern: `${base}.*` }],
          [2, { channel: `${base}.*`, pattern: `${base}.*` }],
        ]);
      } finally {
        await Promise.all([off1(), off2()]);
      }
    });

    it('iterates messages() and unsubscribes when the loop breaks or the signal aborts', async () => {
      const ch = channel('iter');
      const before = pubsub.stats().subscriptions;
      const iterator = pubsub.messages<number>(ch);
      const received: number[] = [];
      const loop = (async () => {
        for await (const event of iterator) {
          if (event.type === 'message') received.push(event.message);
          if (received.length === 3) break;
        }
      })();
      await waitFor(() => pubsub.stats().subscriptions === before + 1, { what: 'subscribed' });
      for (let i = 1; i <= 5; i += 1) await pubsub.publish(ch, i);
      await loop;
      expect(received).toEqual([1, 2, 3]);
      expect(pubsub.stats().subscriptions).toBe(before);

      const controller = new AbortController();
      const events: PubSubEvent[] = [];
      const aborted = (async () => {
        for await (const event of pubsub.messages(
          { pattern: `${ch}.*` },
          { signal: controller.signal },
        ))
          events.push(event);
      })();
      await waitFor(() => pubsub.stats().subscriptions === before + 1, { what: 'subscribed' });
      await pubsub.publish(`${ch}.x`, 'x');
      await waitFor(() => events.length === 1, { what: 'one event' });
      controller.abort();
      await aborted;
      expect(events).toEqual([
        { type: 'message', message: 'x', channel: `${ch}.x`, pattern: `${ch}.*` },
      ]);
      expect(pubsub.stats().subscriptions).toBe(before);
    });

    it('keeps delivering to the others while one handler throws, hangs or falls behind', async () => {
      const ch = channel('slow');
      const fast: number[] = [];
      const slow: number[] = [];
      const gaps: PubSubGap[] = [];
      const held = gate();
      const stats0 = pubsub.stats();
      const offs = await Promise.all([
        pubsub.subscribe<number>(ch, (m) => void fast.push(m)),
        pubsub.subscribe<number>(ch, () => {
          throw new Error('handler bug');
        }),
        pubsub.subscribe<number>(ch, () => new Promise<void>(() => undefined), {
          handlerTimeout: 200,
        }),
        pubsub.subscribe<number>(
          ch,
          async (m) => {
            if (m === 1) await held.wait;
            slow.push(m);
          },
          { bufferSize: 3, onGap: (gap) => void gaps.push(gap) },
        ),
      ]);
      for (let i = 1; i <= 10; i += 1) await pubsub.publish(ch, i);
      await waitFor(() => fast.length === 10, { what: 'the fast handler to get all 10' });
      expect(fast).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      held.open();
      await waitFor(() => slow.length === 4, { what: 'the slow handler to catch up' });
      // Drop oldest: 2..7 were dropped while 1 was held; the gap precedes the survivors.
      expect(slow).toEqual([1, 8, 9, 10]);
      expect(gaps).toEqual([
        expect.objectContaining({ type: 'gap', reason: 'overflow', channel: ch, dropped: 6 }),
      ]);
      await waitFor(() => pubsub.stats().handlerTimeouts - stats0.handlerTimeouts >= 1, {
        what: 'the hanging handler to time out',
      });
      const stats = pubsub.stats();
      expect(stats.dropped - stats0.dropped).toBe(6);
      expect(stats.handlerErrors - stats0.handlerErrors).toBe(10);
      expect(logs.matching('handler bug').length).toBeGreaterThanOrEqual(1);
      await Promise.all(offs.map((off) => off()));
    });

    it('sends a gap notice after the subscriber connection is killed, then delivers again', async () => {
      const ch = channel('gap');
      const events: Array<unknown> = [];
      const off = await pubsub.subscribe(ch, (m) => void events.push(m), {
        onGap: (gap) => void events.push(gap.reason),
      });
      await pubsub.publish(ch, 'before');
      await waitFor(() => events.length === 1, { what: 'the first message' });
      const reconnects = pubsub.stats().reconnects;
      let killed = 0;
      for (const server of topology.servers) {
        killed += await killConnection(server, `${connectionName}:subscriber`);
      }
      expect(killed).toBeGreaterThanOrEqual(1);
      await waitFor(() => events.includes('reconnect'), { what: 'the gap notice' });
      expect(pubsub.stats().reconnects).toBeGreaterThan(reconnects);
      await pubsub.publish(ch, 'after');
      await waitFor(() => events.includes('after'), { what: 'delivery after the reconnect' });
      expect(events).toEqual(['before', 'reconnect', 'after']);
      await off();
    });

    it('calls @OnRedisMessage methods found at startup', async () => {
      const listener = app.get(OrderListener);
      await pubsub.publish('orders', { id: 'o-1' });
      await pubsub.publish('events.shipped', { id: 'o-1' });
      await waitFor(() => listener.orders.length === 1 && listener.events.length === 1, {
        what: 'decorated handlers',
      });
      expect(listener.orders).toEqual([{ id: 'o-1' }]);
      expect(listener.events).toEqual([[{ id: 'o-1' }, 'events.shipped']]);
    });

    it('delivers sharded messages (SSUBSCRIBE / SPUBLISH)', async () => {
      const got: string[] = [];
      const chans = [channel('shard-a'), channel('shard-b'), channel('{tag}shard-c')];
      const offs = await Promise.all(
        chans.map((ch) => pubsub.subscribe<string>(ch, (m) => void got.push(m), { sharded: true })),
      );
      for (const ch of chans) expect(await pubsub.publish(ch, ch, { sharded: true })).toBe(1);
      await waitFor(() => got.length === 3, { what: 'three sharded messages' });
      expect(got.sort()).toEqual([...chans].sort());
      await Promise.all(offs.map((off) => off()));
    });

    it('reports key events under the prefix (set, del, expired) from every master', async () => {
      const events: Array<[string, string]> = [];
      const sub = await pubsub.onKeyEvent(['set', 'del', 'expired'], 'ke:*', ({ event, key }) => {
        events.push([event, key]);
      });
      expect(sub).toMatchObject({ active: true, missingFlags: '' });
      // Keys in different slots, so a cluster spreads them over its masters.
      const keys = ['ke:a', 'ke:b', 'ke:c', 'ke:d', 'ke:e'];
      for (const key of keys) await raw.set(key, '1');
      await raw.set('other:x', '1');
      await raw.del(keys[0]);
      await raw.set('ke:short', '1', 'PX', 20);
      await waitFor(() => events.length >= keys.length + 1, { what: 'set and del events' });
      // Active expiry runs in the background (10 times a second); an access triggers it too.
      await waitFor(
        async () => {
          await raw.get('ke:short');
          return events.some(([e]) => e === 'expired');
        },
        { what: 'the expired event' },
      );
      expect(events).toEqual(
        expect.arrayContaining([
          ...keys.map((k) => ['set', k]),
          ['del', 'ke:a'],
          ['set', 'ke:short'],
          ['expired', 'ke:short'],
        ]),
      );
      expect(events.some(([, k]) => k.startsWith('other'))).toBe(false);
      await sub.unsubscribe();
      for (const key of keys.slice(1)) await raw.del(key);
    });

    it('refuses bad input with errors naming the argument', async () => {
      await expect(pubsub.publish('', 1)).rejects.toThrow(/channel must be a non-empty string/);
      await expect(pubsub.publish('x'.repeat(2_000), 1)).rejects.toThrow(
        /channel ".*" is \d+ bytes .* at most 1024/,
      );
      await expect(pubsub.publish('c', 10n)).rejects.toThrow(
        /message cannot be sent as JSON: the value is a bigint/,
      );
      const circular: Record<string, unknown> = {};
      circular.self = circular;
      await expect(pubsub.publish('c', circular)).rejects.toThrow(/message cannot be sent as JSON/);
      await expect(pubsub.publish('c', { a: 1 }, { raw: true })).rejects.toThrow(
        /with raw: true, message must be a string or a Buffer/,
      );
      await expect(pubsub.subscribe('c', 'nope' as never)).rejects.toThrow(
        /handler must be a function/,
      );
      await expect(pubsub.psubscribe('', () => undefined)).rejects.toThrow(
        /pattern must be a non-empty/,
      );
      await expect(pubsub.subscribe('c', () => undefined, { handlerTimeout: -1 })).rejects.toThrow(
        /handlerTimeout must be a positive number/,
      );
      await expect(pubsub.subscribe('c', () => undefined, { bufferSize: 0 })).rejects.toThrow(
        /bufferSize must be an integer from 1 to 1000000 \(messages\)/,
      );
      expect(() => pubsub.messages({ pattern: '' })).toThrow(/source.pattern must be a non-empty/);
      await expect(pubsub.onKeyEvent('nope' as never, '*', () => undefined)).rejects.toThrow(
        /events must be one or more of/,
      );
      expect(() => OnRedisMessage('')).toThrow(/@OnRedisMessage: the channel must be/);
      expect(pubsub.stats().subscriptions).toBe(2); // the two decorated methods
    });

    it('multiplexes on one subscriber connection per node and closes it at shutdown', async () => {
      const names = (
        await Promise.all(topology.servers.map((s) => ourConnections(s, connectionName)))
      )
        .flat()
        .filter((name) => name.endsWith(':subscriber'));
      // One shared subscriber, plus one per master for key events and shard channels on a cluster.
      if (topology.name === 'cluster') expect(names.length).toBeLessThanOrEqual(4);
      else expect(names).toEqual([`${connectionName}:subscriber`]);
    });
  },
);
