import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';
import { Redis } from 'ioredis';

import {
  getRedisToken,
  RedisCrossSlotError,
  RedisModule,
  RedisScriptError,
  RedisService,
  RedisTransactionConflictError,
  withRetry,
  type RedisClient,
} from '../../src/index.js';
import { keySlot } from '../../src/toolkit/slots.js';
import { startApp } from '../support/app.js';
import { FaultProxy } from '../support/fault-proxy.js';
import {
  sendCommand,
  standaloneUrl,
  topologies,
  uniqueConnectionName,
  uniquePrefix,
  waitFor,
  type TopologyCase,
} from '../support/redis.js';

describe.each(topologies().map((t) => [t.name, t] as const))(
  'RedisService toolkit on %s',
  (_name, topology: TopologyCase) => {
    let app: INestApplication;
    let redis: RedisService;
    let client: RedisClient;
    let other: RedisClient;
    const prefix = uniquePrefix(`kit-${topology.name}`);
    const cluster = topology.name === 'cluster';

    beforeAll(async () => {
      app = await startApp({
        imports: [
          RedisModule.forRoot({
            ...topology.options,
            keyPrefix: prefix,
            connectionName: uniqueConnectionName('kit'),
          }),
        ],
      });
      redis = app.get(RedisService);
      client = app.get<RedisClient>(getRedisToken());
      other = (client as Redis).duplicate();
    });

    afterAll(async () => {
      await redis.unlinkByPattern('*');
      other.disconnect();
      await app.close();
    });

    describe('defineScript', () => {
      const lua = `redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1]); return ARGV[1]`;

      it('runs by EVALSHA, keys prefixed, and runs again after SCRIPT FLUSH', async () => {
        const script = redis.defineScript<string>('pair', lua, { keys: 2 });
        expect(await script.run(['{p}:a', '{p}:b'], ['x'])).toBe('x');
        expect(await client.get('{p}:b')).toBe('x');
        for (const node of topology.masters) await sendCommand(node, ['SCRIPT', 'FLUSH']);
        expect(await script.run(['{p}:a', '{p}:b'], ['y'])).toBe('y');
        expect(await client.get('{p}:a')).toBe('y');
      });

      it('preloads on every master', async () => {
        const script = redis.defineScript('preloaded', `return 7`, { keys: 0 });
        await script.load();
        const masters = cluster
          ? (client as unknown as { nodes(r: string): Redis[] }).nodes('master')
          : [client as Redis];
        for (const node of masters) {
          expect(await node.script('EXISTS', script.sha)).toEqual([1]);
        }
      });

      it('checks the key count and, on a cluster, the slots before sending', async () => {
        const script = redis.defineScript('pair2', lua, { keys: 2 });
        await expect(script.run(['only-one'])).rejects.toThrow(/takes 2 key/);
        const crossing = script.run(['a-1', 'b-2'], ['v']);
        if (cluster) {
          await expect(crossing).rejects.toBeInstanceOf(RedisCrossSlotError);
          await expect(script.run(['a-1', 'b-2'], ['v'])).rejects.toThrow(/braces/);
          expect(await client.exists('a-1')).toBe(0);
        } else {
          expect(await crossing).toBe('v');
        }
        expect(() => redis.defineScript('bad', lua, { keys: 1.5 })).toThrow(/options.keys/);
      });

      it('reports a failing script by name', async () => {
        const script = redis.defineScript('boom', `return redis.error_reply('nope')`, { keys: 0 });
        const err = await script.run([]).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(RedisScriptError);
        expect(String((err as Error).message)).toMatch(/script "boom" failed: (ERR )?nope/);
      });
    });

    describe('transaction', () => {
      it('retries when another client changes a watched key, and applies once', async () => {
        const key = '{acct}:balance';
        await client.set(key, '100');
        let runs = 0;
        const replies = await redis.transaction([key], async (c, multi) => {
          runs += 1;
          const balance = Number(await c.get(key));
          // The first run is disturbed by another client, between WATCH and EXEC.
          if (runs === 1) await other.incrby(key, 5);
          multi.set(key, balance + 10);
        });
        expect(runs).toBe(2);
        expect(replies).toEqual([[null, 'OK']]);
        expect(await client.get(key)).toBe('115');
      });

      it('gives up after `attempts` with a typed error', async () => {
        const key = '{acct}:busy';
        const err = await redis
          .transaction(
            [key],
            async (_c, multi) => {
              await other.incr(key);
              multi.set(key, 'never');
            },
            { attempts: 3 },
          )
          .catch((e: unknown) => e);
        expect(err).toBeInstanceOf(RedisTransactionConflictError);
        expect(await client.get(key)).toBe('3');
      });

      it('rethrows what fn throws and leaves the keys as they were', async () => {
        const key = '{acct}:thrown';
        await expect(
          redis.transaction([key], (_c, multi) => {
            multi.set(key, 'x');
            throw new Error('changed my mind');
          }),
        ).rejects.toThrow('changed my mind');
        expect(await client.exists(key)).toBe(0);
        expect(await redis.transaction([key], () => undefined)).toEqual([]);
      });

      it('refuses keys in different slots on a cluster, before anything is sent', async () => {
        const run = redis.transaction(['x-1', 'y-2'], (_c, multi) => void multi.set('x-1', 'v'));
        if (cluster) await expect(run).rejects.toBeInstanceOf(RedisCrossSlotError);
        else await expect(run).resolves.toEqual([[null, 'OK']]);
      });
    });

    describe('batch', () => {
      it('answers in input order across nodes, with per-command errors', async () => {
        const keys = Array.from({ length: 40 }, (_, i) => `batch-${i}`);
        const set = await redis.batch(keys.map((k, i) => ['set', k, String(i)]));
        expect(set.every(([err, v]) => err === null && v === 'OK')).toBe(true);
        const replies = await redis.batch([
          ...keys.map((k): [string, string] => ['get', k]),
          ['incr', 'batch-0'],
          ['hget', 'batch-1', 'f'], // WRONGTYPE: fails alone
          ['ping'],
        ]);
        expect(replies.slice(0, 40).map(([, v]) => v)).toEqual(keys.map((_, i) => String(i)));
        expect(replies[40]).toEqual([null, 1]);
        expect(String(replies[41][0])).toMatch(/WRONGTYPE/);
        expect(replies[42]).toEqual([null, 'PONG']);
        if (cluster) {
          const slots = new Set(keys.map((k) => keySlot(prefix + k)));
          expect(slots.size).toBeGreaterThan(3);
        }
      });

      it('fails a multi-key command across slots alone, on a cluster', async () => {
        const [cross, ok] = await redis.batch([
          ['mget', 'm-1', 'm-2', 'm-3'],
          ['get', 'm-1'],
        ]);
        if (cluster) expect(cross[0]).toBeInstanceOf(RedisCrossSlotError);
        else expect(cross).toEqual([null, [null, null, null]]);
        expect(ok).toEqual([null, null]);
      });

      it('rejects malformed commands naming the index', async () => {
        await expect(redis.batch([['get', 'k'], [] as unknown as ['get']])).rejects.toThrow(
          /commands\[1\]/,
        );
        await expect(redis.batch([['set', 'k', {} as unknown as string]])).rejects.toThrow(
          /commands\[0\]\[2\]/,
        );
      });
    });

    describe('records', () => {
      interface Task {
        [field: string]: string | number | boolean | null | string[];
        state: string;
        attempts: number;
      }

      it('keeps typed fields and a TTL that every write refreshes', async () => {
        const tasks = redis.records<Task>('task', { ttl: 60_000 });
        expect(await tasks.get('1')).toBeNull();
        await tasks.set('1', { state: 'queued', attempts: 0 });
        await client.pexpire('task:1', 1000);
        expect(await tasks.incr('1', 'attempts', 2)).toBe(2);
        expect(await client.pttl('task:1')).toBeGreaterThan(1000);
        expect(await tasks.patch('1', { state: 'running' })).toBe(true);
        expect(await tasks.get('1')).toEqual({ state: 'running', attempts: 2 });
        expect(await tasks.patch('absent', { state: 'x' })).toBe(false);
        expect(await client.exists('task:absent')).toBe(0);
        expect(await tasks.touch('1')).toBe(true);
        expect(await tasks.delete('1')).toBe(true);
        expect(await tasks.get('1')).toBeNull();
        expect(await tasks.touch('1')).toBe(false);
      });

      it('reads a field another writer left as plain text', async () => {
        const tasks = redis.records('ext', { ttl: 60_000 });
        await client.hset('ext:1', 'state', 'done', 'n', '3');
        expect(await tasks.get('1')).toEqual({ state: 'done', n: 3 });
      });

      it('rejects what cannot be stored, naming the field, before anything is sent', async () => {
        const tasks = redis.records('bad', { ttl: 60_000 });
        await expect(tasks.set('1', { big: 10n as unknown as number })).rejects.toThrow(/"big"/);
        const circular: Record<string, unknown> = {};
        circular.self = circular;
        await expect(tasks.set('1', { c: circular as never })).rejects.toThrow(/"c"/);
        await expect(tasks.set('1', {})).rejects.toThrow(/no fields/);
        await expect(tasks.incr('1', 'n', 1.5)).rejects.toThrow(/integer/);
        expect(await client.exists('bad:1')).toBe(0);
        expect(() => redis.records('bad', { ttl: 1e20 })).toThrow(RangeError);
        expect(() => redis.records('', { ttl: 1 })).toThrow(/namespace/);
      });
    });

    describe('counter', () => {
      it('sums increments spread over shards in different slots', async () => {
        const views = redis.counter('views:{home}', { shards: 8 });
        await Promise.all(Array.from({ length: 200 }, () => views.incr()));
        await views.incr(-50);
        expect(await views.get()).toBe(150);
        const keys: string[] = [];
        for await (const key of redis.scan('*views:{home}')) keys.push(key);
        expect(keys.length).toBeGreaterThan(1);
        expect(keys.length).toBeLessThanOrEqual(8);
        expect(new Set(keys.map((k) => keySlot(prefix + k))).size).toBe(keys.length);
        await views.reset();
        expect(await views.get()).toBe(0);
      });

      it('gives shards a TTL when asked, and checks its options', async () => {
        const c = redis.counter('ttl-counter', { shards: 2, ttl: 30_000 });
        await c.incr(3);
        const keys: string[] = [];
        for await (const key of redis.scan('*ttl-counter')) keys.push(key);
        expect(keys).toHaveLength(1);
        expect(await client.pttl(keys[0])).toBeGreaterThan(0);
        expect(() => redis.counter('x', { shards: 2.5 })).toThrow(/shards/);
        expect(() => redis.counter('x', { shards: 0 })).toThrow(RangeError);
        expect(() => redis.counter('x', { shards: 5000 })).toThrow(RangeError);
      });
    });

    it('isAlive answers true while Redis answers', async () => {
      expect(await redis.isAlive()).toBe(true);
    });
  },
);

describe('toolkit under faults (standalone, through the fault proxy)', () => {
  let proxy: FaultProxy;
  let app: INestApplication;
  let redis: RedisService;
  let direct: Redis;
  const prefix = uniquePrefix('kit-fault');

  beforeAll(async () => {
    const url = new URL(standaloneUrl());
    proxy = await FaultProxy.start({ host: url.hostname, port: Number(url.port) });
    direct = new Redis(standaloneUrl());
    app = await startApp({
      imports: [
        RedisModule.forRoot({
          url: proxy.url,
          keyPrefix: prefix,
          commandTimeout: 300,
          connectionName: uniqueConnectionName('kit-fault'),
        }),
      ],
    });
    redis = app.get(RedisService);
  });

  afterAll(async () => {
    proxy.resume();
    await app.close();
    await proxy.close();
    const keys = await direct.keys(`${prefix}*`);
    if (keys.length) await direct.unlink(...keys);
    direct.disconnect();
  });

  it('isAlive is false, never an exception, while Redis is black-holed', async () => {
    proxy.blackhole();
    expect(await redis.isAlive({ timeout: 200 })).toBe(false);
    proxy.resume();
    proxy.resetAll();
    await waitFor(() => redis.isAlive(), { what: 'the connection back after the black hole' });
  });

  it('withRetry retries an idempotent read through a dropped reply, and a wrong type not at all', async () => {
    await direct.set(`${prefix}r`, 'v');
    let calls = 0;
    const value = await withRetry(
      async () => {
        calls += 1;
        if (calls === 1) {
          const dropped = proxy.dropReply({ match: 'GET', then: 'blackhole' });
          const read = redis.client.get('r');
          await dropped;
          return read;
        }
        // The network comes back: the half-open socket is reset and the client reconnects.
        proxy.resetAll();
        return redis.client.get('r');
      },
      { attempts: 5, initialDelay: 10 },
    );
    expect(value).toBe('v');
    expect(calls).toBeGreaterThanOrEqual(2);

    await direct.set(`${prefix}s`, 'text');
    let wrongTypeCalls = 0;
    await expect(
      withRetry(async () => {
        wrongTypeCalls += 1;
        return redis.client.hget('s', 'f');
      }),
    ).rejects.toThrow(/WRONGTYPE/);
    expect(wrongTypeCalls).toBe(1);
  });

  it('withRetry stops at the signal', async () => {
    const controller = new AbortController();
    let calls = 0;
    const run = withRetry(
      async () => {
        calls += 1;
        if (calls === 2) controller.abort(new Error('stop'));
        throw Object.assign(new Error('reset'), { code: 'ECONNRESET' });
      },
      { attempts: 10, initialDelay: 1, signal: controller.signal },
    );
    await expect(run).rejects.toThrow('stop');
    expect(calls).toBe(2);
  });
});
