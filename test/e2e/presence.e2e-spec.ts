import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';

import {
  getRedisToken,
  PresenceService,
  RedisModule,
  RedisService,
  type PresenceChange,
  type RedisClient,
  type RedisModuleOptions,
} from '../../src/index.js';
import { hashTag, keySlot } from '../../src/toolkit/slots.js';
import { startApp } from '../support/app.js';
import {
  topologies,
  uniqueConnectionName,
  uniquePrefix,
  waitFor,
  type TopologyCase,
} from '../support/redis.js';

describe.each(topologies().map((t) => [t.name, t] as const))(
  'PresenceService on %s',
  (_name, topology: TopologyCase) => {
    let a: INestApplication;
    let b: INestApplication;
    let presenceA: PresenceService;
    let presenceB: PresenceService;
    let client: RedisClient;
    const prefix = uniquePrefix(`presence-${topology.name}`);
    const options: RedisModuleOptions = {
      ...topology.options,
      keyPrefix: prefix,
      connectionName: uniqueConnectionName('presence'),
    };
    let n = 0;
    const space = (label: string): string => `${label}-${++n}`;

    beforeAll(async () => {
      a = await startApp({ imports: [RedisModule.forRoot(options)] });
      b = await startApp({ imports: [RedisModule.forRoot(options)] });
      presenceA = a.get(PresenceService);
      presenceB = b.get(PresenceService);
      client = a.get<RedisClient>(getRedisToken());
    });

    afterAll(async () => {
      await a.get(RedisService).unlinkByPattern('*');
      await a.close();
      await b.close();
    });

    it('tells another process of a join, updates and a leave, and keeps fields exact', async () => {
      const name = space('agents');
      const changes: PresenceChange[] = [];
      const stop = await presenceB.space(name).watch((c) => void changes.push(c));
      const agents = presenceA.space(name);
      expect(
        await agents.heartbeat('agent-1', { status: 'idle', load: 0.1, tags: [] }, { ttl: 60_000 }),
      ).toBe('join');
      expect(await agents.heartbeat('agent-1', { status: 'busy' }, { ttl: 60_000 })).toBe('update');
      expect(await agents.leave('agent-1')).toBe(true);
      expect(await agents.leave('agent-1')).toBe(false);
      await waitFor(() => changes.length === 3, { what: 'three changes' });
      expect(changes.map((c) => [c.type, c.id, c.fields, c.reason])).toEqual([
        ['join', 'agent-1', { status: 'idle', load: 0.1, tags: [] }, undefined],
        ['update', 'agent-1', { status: 'busy' }, undefined],
        ['leave', 'agent-1', undefined, 'left'],
      ]);
      expect(changes.every((c) => c.at instanceof Date)).toBe(true);
      await stop();
    });

    it('gets a member with merged fields and its last heartbeat, null once gone', async () => {
      const agents = presenceA.space(space('get'));
      await agents.heartbeat('w', { status: 'idle', version: '1.2.0' }, { ttl: 60_000 });
      await agents.heartbeat('w', { status: 'busy' }, { ttl: 60_000 });
      const entry = await presenceB.space(agents.name).get('w');
      expect(entry?.fields).toEqual({ status: 'busy', version: '1.2.0' });
      expect(entry?.lastSeen).toBeInstanceOf(Date);
      expect(await agents.get('nobody')).toBeNull();
    });

    it('announces the departure of a member whose heartbeats stopped, once', async () => {
      const name = space('expiry');
      const changes: PresenceChange[] = [];
      const stopA = await presenceA
        .space(name)
        .watch((c) => void changes.push(c), { pruneInterval: 50 });
      const stopB = await presenceB.space(name).watch(() => undefined, { pruneInterval: 50 });
      await presenceA.space(name).heartbeat('short-lived', {}, { ttl: 100 });
      await waitFor(() => changes.some((c) => c.type === 'leave'), { what: 'the departure' });
      expect(changes.map((c) => [c.type, c.reason ?? null])).toEqual([
        ['join', null],
        ['leave', 'expired'],
      ]);
      // Both watchers prune; still only one departure is announced.
      await presenceA.space(name).prune();
      expect(changes.filter((c) => c.type === 'leave')).toHaveLength(1);
      await stopA();
      await stopB();
    });

    it('lists members page by page, leaving out stale ones when asked', async () => {
      const agents = presenceA.space(space('list'));
      for (let i = 0; i < 25; i++) await agents.heartbeat(`m${i}`, { i }, { ttl: 60_000 });
      const seen: string[] = [];
      let cursor: string | undefined;
      let pages = 0;
      do {
        const page = await agents.list({ count: 10, cursor });
        seen.push(...page.entries.map((e) => e.id));
        cursor = page.cursor ?? undefined;
        pages += 1;
      } while (cursor && pages < 50);
      expect(new Set(seen).size).toBe(25);
      await client.hset(`presence:{${agents.name}}:m:m0`, '_seen', String(Date.now() - 120_000));
      const fresh = await agents.list({ count: 1000, staleAfter: 60_000 });
      expect(fresh.entries.map((e) => e.id)).not.toContain('m0');
      expect(fresh.entries).toHaveLength(24);
    });

    it('keeps a space in one slot for any name, and rejects bad input before sending', async () => {
      for (const hostile of ['}x', '{', 'a}b', '{}']) {
        const keys = [`presence:{${hashTag(hostile)}}:m:x`, `presence:{${hashTag(hostile)}}:index`];
        expect(new Set(keys.map((k) => keySlot(prefix + k))).size).toBe(1);
        const s = presenceA.space(hostile);
        expect(await s.heartbeat('x', { ok: true }, { ttl: 60_000 })).toBe('join');
        expect((await s.list()).entries.map((e) => e.id)).toEqual(['x']);
      }
      const s = presenceA.space(space('bad'));
      await expect(s.heartbeat('', {}, { ttl: 1000 })).rejects.toThrow(/presence id/);
      await expect(s.heartbeat('x', {}, { ttl: 1e20 })).rejects.toThrow(RangeError);
      await expect(
        s.heartbeat('x', { big: 1n as unknown as number }, { ttl: 1000 }),
      ).rejects.toThrow(/"big"/);
      await expect(s.heartbeat('x', { _seen: 1 }, { ttl: 1000 })).rejects.toThrow(/reserved/);
      await expect(s.list({ count: 0 })).rejects.toThrow(/count/);
      expect(() => presenceA.space('')).toThrow(/space name/);
      expect(await s.get('x')).toBeNull();
    });
  },
);
