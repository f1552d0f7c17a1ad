import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';

import {
  getRedisToken,
  RedisModule,
  RedisService,
  SessionService,
  type RedisClient,
  type RedisModuleOptions,
  type Session,
} from '../../src/index.js';
import { addressOfId } from '../../src/session/session-id.js';
import { sessionKeys } from '../../src/session/session.scripts.js';
import { startApp } from '../support/app.js';
import {
  topologies,
  uniqueConnectionName,
  uniquePrefix,
  waitFor,
  type TopologyCase,
} from '../support/redis.js';

/** The SessionService contract, run against standalone, Sentinel and cluster servers. */
describe.each(topologies().map((t) => [t.name, t] as const))(
  'SessionService on %s',
  (_name, topology: TopologyCase) => {
    let app: INestApplication;
    /** A second instance on the same keys (another process, as far as Redis can tell). */
    let other: INestApplication;
    let sessions: SessionService;
    let otherSessions: SessionService;
    let redis: RedisClient;
    const prefix = uniquePrefix(`session-${topology.name}`);
    let n = 0;
    const user = (label: string): string => `${label}-${++n}`;
    const recordKey = (id: string): string => sessionKeys.record(addressOfId(id));

    beforeAll(async () => {
      const options: RedisModuleOptions = { ...topology.options, keyPrefix: prefix };
      [app, other] = await Promise.all([
        startApp({
          imports: [
            RedisModule.forRoot({ ...options, connectionName: uniqueConnectionName('session') }),
          ],
        }),
        startApp({
          imports: [
            RedisModule.forRoot({
              ...options,
              connectionName: uniqueConnectionName('session-max'),
              session: { maxSessionsPerUser: 3 },
            }),
          ],
        }),
      ]);
      sessions = app.get(SessionService);
      otherSessions = other.get(SessionService);
      redis = app.get<RedisClient>(getRedisToken());
    });

    afterAll(async () => {
      await app?.get(RedisService).unlinkByPattern('*');
      await Promise.all([app?.close(), other?.close()]);
    });

    it('create, get, touch, update, listByUser and destroy: the full lifecycle', async () => {
      const u = user('life');
      const s = await sessions.create(
        u,
        { role: 'admin', cart: [1, 2] },
        { ttl: 60_000, absoluteTtl: 120_000, meta: { device: 'laptop' } },
      );
      expect(s.id).toMatch(/^[A-Za-z0-9_-]{46}$/);
      expect(s.handle).toMatch(/^[A-Za-z0-9_-]{3}\.[A-Za-z0-9_-]{43}$/);
      expect(s).toMatchObject({ userId: u, data: { role: 'admin', cart: [1, 2] } });
      expect(s.meta).toEqual({ device: 'laptop' });
      expect(s.lastSeenAt).toBe(s.createdAt);
      expect(s.expiresAt).toBe(s.createdAt + 60_000);
      expect(s.absoluteExpiresAt).toBe(s.createdAt + 120_000);
      expect(Math.abs(s.createdAt - Date.now())).toBeLessThan(1_000);

      // One hash under the digest, with a TTL; the user's index lists the digest.
      const pttl = await redis.pttl(recordKey(s.id));
      expect(pttl).toBeGreaterThan(55_000);
      expect(pttl).toBeLessThanOrEqual(60_000);
      expect(await redis.zrange(sessionKeys.index(u), '0', '-1')).toEqual([
        addressOfId(s.id).digest,
      ]);

      expect(await sessions.get(s.id)).toEqual(s);

      const touched = (await sessions.touch(s.id))!;
      expect(touched.lastSeenAt).toBeGreaterThanOrEqual(s.lastSeenAt);
      expect(touched.expiresAt).toBe(touched.lastSeenAt + 60_000);
      expect(touched.data).toEqual(s.data);

      const patched = (await sessions.update(s.id, { theme: 'dark', cart: undefined }))!;
      expect(patched.data).toEqual({ role: 'admin', theme: 'dark' });
      const replaced = (await sessions.update<{ role: string; theme?: string }>(s.id, (d) => ({
        role: `${d.role}!`,
      })))!;
      expect(replaced.data).toEqual({ role: 'admin!' });
      expect((await sessions.get(s.id))!.data).toEqual({ role: 'admin!' });

      const listed = await sessions.listByUser(u);
      expect(listed).toEqual([
        {
          handle: s.handle,
          userId: u,
          meta: { device: 'laptop' },
          createdAt: s.createdAt,
          lastSeenAt: replaced.lastSeenAt,
          expiresAt: replaced.expiresAt,
          absoluteExpiresAt: s.absoluteExpiresAt,
        },
      ]);

      expect(await sessions.destroy(s.id)).toBe(true);
      expect(await sessions.get(s.id)).toBeNull();
      expect(await sessions.touch(s.id)).toBeNull();
      expect(await sessions.update(s.id, { x: 1 })).toBeNull();
      expect(await sessions.destroy(s.id)).toBe(false);
      expect(await sessions.listByUser(u)).toEqual([]);
      expect(await redis.exists(recordKey(s.id), sessionKeys.index(u))).toBe(0);
    });

    it('patches merge at the top level and leave every value exactly as it was', async () => {
      const tricky = {
        text: 'quotes " and \\ backslashes, braces {}[], commas, colons: ok',
        unicode: 'Zoë 🎉 \u2028',
        empty: [],
        emptyObject: {},
        nested: { a: [1, { b: '}' }], 'c"d': null },
        big: Number.MAX_SAFE_INTEGER,
        float: 0.1 + 0.2,
        negative: -1.5e-7,
        flag: false,
        nothing: null,
        'key "with" quotes': 'v',
        '': 'empty key',
      };
      const s = await sessions.create(user('tricky'), tricky);
      expect((await sessions.get(s.id))!.data).toEqual(tricky);
      const patched = (await sessions.update(s.id, {
        flag: true,
        nested: undefined,
        'key "with" quotes': { now: 'an object' },
        added: ['x', { y: '"' }],
      }))!;
      const expected: Record<string, unknown> = {
        ...tricky,
        flag: true,
        'key "with" quotes': { now: 'an object' },
        added: ['x', { y: '"' }],
      };
      delete expected.nested;
      expect(patched.data).toEqual(expected);
      expect((await sessions.get(s.id))!.data).toEqual(expected);
      // Property order: kept in place, new ones last, as JSON.stringify of a merge would be.
      expect(await redis.hget(recordKey(s.id), 'd')).toBe(JSON.stringify(expected));
    });

    it('idle expiry: an untouched session disappears after its ttl, and from its index', async () => {
      const u = user('idle');
      const s = await sessions.create(u, { a: 1 }, { ttl: 150 });
      const kept = await sessions.create(u, { b: 2 });
      await waitFor(async () => (await sessions.get(s.id)) === null, {
        what: 'the idle session to expire',
      });
      // Redis's clock decided, and it is the one that set expiresAt.
      expect(Date.now()).toBeGreaterThanOrEqual(s.expiresAt - 5);
      expect(await redis.exists(recordKey(s.id))).toBe(0);
      // A new session prunes the ended one from the index (the record is gone) ...
      const later = await sessions.create(u, { c: 3 });
      const digests = [kept, later].map((x) => addressOfId(x.id).digest);
      expect((await redis.zrange(sessionKeys.index(u), '0', '-1')).sort()).toEqual(
        [...digests].sort(),
      );
      // ... and listing never shows it.
      expect((await sessions.listByUser(u)).map((x) => x.handle).sort()).toEqual(
        [kept.handle, later.handle].sort(),
      );
    });

    it('absolute expiry wins over touches', async () => {
      const u = user('absolute');
      const s = await sessions.create(u, {}, { ttl: 300, absoluteTtl: 700 });
      let last: Session | null = s;
      let lastAliveAt = Date.now();
      // Keep using the session every ~50 ms until it ends.
      await waitFor(
        async () => {
          const touched = await sessions.touch(s.id);
          if (touched) {
            last = touched;
            lastAliveAt = Date.now();
            expect(touched.expiresAt).toBeLessThanOrEqual(s.absoluteExpiresAt);
          }
          return touched === null;
        },
        { intervalMs: 50, timeoutMs: 5_000, what: 'the absolute lifetime to end the session' },
      );
      // Touches kept it alive well past its idle ttl, but not past its absolute lifetime.
      expect(lastAliveAt).toBeGreaterThan(s.createdAt + 300 + 100);
      expect(Date.now()).toBeGreaterThanOrEqual(s.absoluteExpiresAt - 5);
      expect(last.expiresAt).toBe(s.absoluteExpiresAt);
      expect(await redis.exists(recordKey(s.id))).toBe(0);
      expect(await sessions.listByUser(u)).toEqual([]);
    });

    it('rotate keeps data, user, meta and absolute expiry under a new id and kills the old one', async () => {
      const u = user('rotate');
      const s = await sessions.create(u, { cart: ['a'] }, { meta: { ip: '10.0.0.1' } });
      const r = (await sessions.rotate(s.id))!;
      expect(r.id).not.toBe(s.id);
      expect(r.id.slice(0, 3)).toBe(s.id.slice(0, 3));
      expect(r).toMatchObject({
        userId: u,
        data: { cart: ['a'] },
        meta: { ip: '10.0.0.1' },
        createdAt: s.createdAt,
        absoluteExpiresAt: s.absoluteExpiresAt,
      });
      expect(r.handle).not.toBe(s.handle);
      expect(await sessions.get(s.id)).toBeNull();
      expect(await sessions.touch(s.id)).toBeNull();
      expect(await sessions.update(s.id, { x: 1 })).toBeNull();
      expect(await sessions.rotate(s.id)).toBeNull();
      expect(await sessions.destroy(s.handle)).toBe(false);
      expect((await sessions.get(r.id))!.data).toEqual({ cart: ['a'] });
      expect((await sessions.listByUser(u)).map((x) => x.handle)).toEqual([r.handle]);
      expect(await redis.exists(recordKey(s.id))).toBe(0);
    });

    it('destroyAllForUser ends all 10 sessions of a user, and no one else’s', async () => {
      const u = user('all');
      const bystander = user('bystander');
      const mine = await Promise.all(
        Array.from({ length: 10 }, (_, i) => sessions.create(u, { i })),
      );
      const theirs = await sessions.create(bystander, { i: 0 });
      expect(await sessions.listByUser(u)).toHaveLength(10);
      expect(await sessions.destroyAllForUser(u)).toBe(10);
      for (const s of mine) expect(await sessions.get(s.id)).toBeNull();
      expect(await sessions.listByUser(u)).toEqual([]);
      expect(await redis.exists(sessionKeys.index(u), ...mine.map((s) => recordKey(s.id)))).toBe(0);
      expect(await sessions.get(theirs.id)).not.toBeNull();
      expect(await sessions.destroyAllForUser(u)).toBe(0);

      // "Log out everywhere else": keep the current one, by id or by handle.
      const [a, b, c] = await Promise.all([1, 2, 3].map(() => sessions.create(u, {})));
      expect(await sessions.destroyAllForUser(u, { except: b.id })).toBe(2);
      expect(await sessions.get(a.id)).toBeNull();
      expect(await sessions.get(c.id)).toBeNull();
      expect(await sessions.get(b.id)).not.toBeNull();
      expect(await sessions.destroyAllForUser(u, { except: b.handle })).toBe(0);
      expect(await sessions.destroyAllForUser(u)).toBe(1);
    });

    it('listByUser returns handles that destroy accepts ("log out that device"), optionally only for the owner', async () => {
      const u = user('devices');
      const phone = await sessions.create(u, {}, { meta: { device: 'phone' } });
      const laptop = await sessions.create(u, {}, { meta: { device: 'laptop' } });
      await sessions.touch(phone.id);
      const listed = await sessions.listByUser(u);
      expect(listed.map((s) => s.meta?.device).sort()).toEqual(['laptop', 'phone']);
      // Most recently used first.
      expect(listed[0].lastSeenAt).toBeGreaterThanOrEqual(listed[1].lastSeenAt);
      const laptopEntry = listed.find((s) => s.meta?.device === 'laptop')!;
      expect(laptopEntry.handle).toBe(laptop.handle);
      for (const entry of listed) {
        expect(entry).not.toHaveProperty('id');
        expect(JSON.stringify(entry)).not.toContain(phone.id);
        expect(JSON.stringify(entry)).not.toContain(laptop.id);
      }
      // A handle cannot read a session, and another user cannot revoke with it.
      expect(await sessions.get(laptopEntry.handle)).toBeNull();
      expect(await sessions.destroy(laptopEntry.handle, { userId: user('intruder') })).toBe(false);
      expect(await sessions.destroy(laptopEntry.handle, { userId: u })).toBe(true);
      expect(await sessions.get(laptop.id)).toBeNull();
      expect(await sessions.get(phone.id)).not.toBeNull();
    });

    it('maxSessionsPerUser ends the earliest created sessions beyond the limit', async () => {
      const u = user('max');
      const created: Session[] = [];
      for (let i = 0; i < 3; i += 1) created.push(await otherSessions.create(u, { i }));
      // Using the oldest does not save it: eviction goes by creation, not by use.
      await otherSessions.touch(created[0].id);
      created.push(await otherSessions.create(u, { i: 3 }));
      created.push(await otherSessions.create(u, { i: 4 }));
      expect(await otherSessions.get(created[0].id)).toBeNull();
      expect(await otherSessions.get(created[1].id)).toBeNull();
      for (const s of created.slice(2)) expect(await otherSessions.get(s.id)).not.toBeNull();
      expect((await otherSessions.listByUser(u)).map((s) => s.handle).sort()).toEqual(
        created
          .slice(2)
          .map((s) => s.handle)
          .sort(),
      );
      expect(await redis.exists(recordKey(created[0].id), recordKey(created[1].id))).toBe(0);
    });

    describe('concurrency (100 parallel operations)', () => {
      it('concurrent patches of different properties all survive', async () => {
        const s = await sessions.create(user('patches'), { keep: true });
        const results = await Promise.all(
          Array.from({ length: 100 }, (_, i) => sessions.update(s.id, { [`p${i}`]: i })),
        );
        expect(results.every((r) => r !== null)).toBe(true);
        const data = (await sessions.get(s.id))!.data;
        expect(Object.keys(data)).toHaveLength(101);
        for (let i = 0; i < 100; i += 1) expect(data[`p${i}`]).toBe(i);
        expect(data.keep).toBe(true);
      });

      it('concurrent function updates from two instances lose no increment', async () => {
        const s = await sessions.create(user('counter'), { count: 0 });
        const increment = (d: { count: number }) => ({ ...d, count: d.count + 1 });
        await Promise.all(
          Array.from({ length: 100 }, (_, i) =>
            (i % 2 ? sessions : otherSessions).update(s.id, increment),
          ),
        );
        expect((await sessions.get(s.id))!.data).toEqual({ count: 100 });
      });

      it('an update racing a destroy never resurrects the session', async () => {
        for (const kind of ['patch', 'function'] as const) {
          const u = user(`race-${kind}`);
          const s = await sessions.create(u, { n: 0 });
          const updates: Array<Promise<unknown>> = [];
          let destroyed: Promise<boolean> | undefined;
          for (let i = 0; i < 100; i += 1) {
            if (i === 50) destroyed = sessions.destroy(s.id);
            updates.push(
              kind === 'patch'
                ? sessions.update(s.id, { [`p${i}`]: i })
                : sessions.update<{ n: number }>(s.id, (d) => ({ n: d.n + 1 })),
            );
          }
          // Each update ran before the destroy (and returned the session) or after it (and
          // found nothing): none failed, and none wrote the session back.
          await Promise.all(updates);
          expect(await destroyed).toBe(true);
          expect(await sessions.get(s.id)).toBeNull();
          expect(await redis.exists(recordKey(s.id))).toBe(0);
          expect(await sessions.listByUser(u)).toEqual([]);
        }
      });

      it('touching an expired or destroyed session does not bring it back', async () => {
        const u = user('touch-expired');
        const expired = await sessions.create(u, {}, { ttl: 100 });
        await waitFor(async () => (await redis.exists(recordKey(expired.id))) === 0, {
          what: 'the session to expire',
        });
        const destroyed = await sessions.create(u, {});
        const touches = Array.from({ length: 100 }, (_, i) =>
          sessions.touch(i % 2 ? expired.id : destroyed.id),
        );
        await sessions.destroy(destroyed.id);
        await Promise.all(touches);
        expect(await Promise.all(touches.map(() => sessions.touch(expired.id)))).toEqual(
          touches.map(() => null),
        );
        expect(await redis.exists(recordKey(expired.id), recordKey(destroyed.id))).toBe(0);
        // The index is scored by absolute expiry: it keeps the idle-expired digest until it is
        // listed, never lists it, and drops it (and the empty index) while listing.
        expect(await sessions.listByUser(u)).toEqual([]);
        expect(await redis.exists(sessionKeys.index(u))).toBe(0);
      });
    });

    it('a Redis dump (SCAN + read of every key) contains no session id in clear', async () => {
      const u = user('dump');
      const issued: string[] = [];
      for (let i = 0; i < 3; i += 1) {
        const s = await sessions.create(u, { note: `session ${i}` }, { meta: { i } });
        issued.push(s.id);
      }
      const rotated = (await sessions.rotate(issued[0]))!;
      issued.push(rotated.id);
      await sessions.update(rotated.id, { more: 'data' });

      const dump: string[] = [];
      for await (const key of app.get(RedisService).scan('*')) {
        dump.push(key);
        const type = await redis.type(key);
        if (type === 'hash') dump.push(...Object.entries(await redis.hgetall(key)).flat());
        else if (type === 'zset') dump.push(...(await redis.zrange(key, '0', '-1', 'WITHSCORES')));
        else if (type === 'string') dump.push(String(await redis.get(key)));
      }
      const text = dump.join('\n');
      expect(text).toContain(addressOfId(rotated.id).digest); // we did read the sessions
      expect(text).toContain('session 1');
      for (const id of issued) {
        expect(text).not.toContain(id);
        expect(text).not.toContain(id.slice(3)); // nor the random part alone
      }
    });

    describe('bad input: a clear error naming the field, nothing written', () => {
      it('create', async () => {
        const u = user('bad');
        const circular: Record<string, unknown> = {};
        circular.me = circular;
        const cases: Array<[() => Promise<unknown>, string]> = [
          [
            () => sessions.create('', {}),
            'SessionService.create: userId must be a non-empty string, got ""',
          ],
          [
            () => sessions.create(42 as unknown as string, {}),
            'SessionService.create: userId must be a non-empty string, got 42',
          ],
          [
            () => sessions.create(u, { id: 10n }),
            'SessionService.create: data.id is a bigint, which JSON cannot represent; store a JSON value (e.g. a string) instead',
          ],
          [
            () => sessions.create(u, { profile: { onLogin: () => 1 } }),
            'SessionService.create: data.profile.onLogin is a function, which JSON cannot represent; store a JSON value (e.g. a string) instead',
          ],
          [
            () => sessions.create(u, { circular }),
            'SessionService.create: data.circular.me refers back to itself (a circular structure); store a JSON value (e.g. a string) instead',
          ],
          [
            () => sessions.create(u, []),
            'SessionService.create: data must be a plain object such as { cartId: 42 }, got an array',
          ],
          [
            () => sessions.create(u, {}, { ttl: 0 }),
            'SessionService.create: ttl must be more than 0 and at most 31536000000 milliseconds (1 year), got 0',
          ],
          [
            () => sessions.create(u, {}, { absoluteTtl: -1 }),
            'SessionService.create: absoluteTtl must be more than 0 and at most 31536000000 milliseconds (1 year), got -1',
          ],
          [
            () => sessions.create(u, {}, { ttl: Number.NaN }),
            'SessionService.create: ttl must be more than 0 and at most 31536000000 milliseconds (1 year), got NaN',
          ],
          [
            // Redis refuses such an expiry: it must be refused before the script runs, not
            // halfway through it (which left the user index without a TTL).
            () => sessions.create(u, {}, { absoluteTtl: 1e20 }),
            'SessionService.create: absoluteTtl must be more than 0 and at most 31536000000 milliseconds (1 year), got 100000000000000000000',
          ],
          [
            () => sessions.create(u, {}, { ttl: 1e20 }),
            'SessionService.create: ttl must be more than 0 and at most 31536000000 milliseconds (1 year), got 100000000000000000000',
          ],
          [
            () => sessions.create(u, {}, { ttl: '60000' as unknown as number }),
            'SessionService.create: ttl must be a number of milliseconds, got "60000"',
          ],
          [
            () => sessions.create(u, {}, { meta: { at: Number.POSITIVE_INFINITY } }),
            'SessionService.create: meta.at is Infinity, which JSON turns into null; store a JSON value (e.g. a string) instead',
          ],
          [
            () => sessions.create(u, { blob: 'x'.repeat(70_000) }),
            'SessionService.create: the session is 70011 bytes (data and meta as JSON), more than session.maxBytes (65536); nothing was written. Keep large data elsewhere and store its key in the session, or raise session.maxBytes.',
          ],
        ];
        for (const [call, message] of cases) await expect(call()).rejects.toThrow(message);
        expect(await sessions.listByUser(u)).toEqual([]);
        expect(await redis.exists(sessionKeys.index(u))).toBe(0);
      });

      it('create: fractional TTLs are rounded up to whole ms, every key gets an expiry', async () => {
        const u = user('fraction');
        const s = await sessions.create(u, {}, { ttl: 60_000.4, absoluteTtl: 120_000.5 });
        expect(Number.isInteger(s.expiresAt)).toBe(true);
        expect(s.absoluteExpiresAt - s.createdAt).toBe(120_001);
        expect(s.expiresAt - s.createdAt).toBe(60_001);
        expect(await redis.pttl(sessionKeys.index(u))).toBeGreaterThan(0);
      });

      it('update: a patch that would make the session too large, or is not JSON, changes nothing', async () => {
        const s = await sessions.create(user('bad-update'), { big: 'a'.repeat(40_000) });
        await expect(sessions.update(s.id, { more: 'b'.repeat(30_000) })).rejects.toThrow(
          'SessionService.update: the session would be 70020 bytes (data and meta as JSON), more than session.maxBytes (65536); nothing was written.',
        );
        await expect(sessions.update(s.id, { big: undefined, n: 1n })).rejects.toThrow(
          'SessionService.update: data.n is a bigint, which JSON cannot represent',
        );
        await expect(sessions.update(s.id, 'x' as unknown as object)).rejects.toThrow(
          'SessionService.update: patch must be a plain object such as { cartId: 42 }, got "x"',
        );
        await expect(sessions.update(s.id, () => [])).rejects.toThrow(
          'SessionService.update: the update function must return the new data as a plain object, got an array',
        );
        const after = (await sessions.get(s.id))!;
        expect(after.data).toEqual({ big: 'a'.repeat(40_000) });
        expect(await redis.hget(recordKey(s.id), '_v')).toBe('1');
      });

      it('listByUser, destroyAllForUser and destroy check their arguments', async () => {
        await expect(sessions.listByUser('')).rejects.toThrow(
          'SessionService.listByUser: userId must be a non-empty string, got ""',
        );
        await expect(sessions.destroyAllForUser('x'.repeat(513))).rejects.toThrow(
          'SessionService.destroyAllForUser: userId is 513 characters long; use at most 512',
        );
        await expect(sessions.destroyAllForUser('u', { except: 'nope' })).rejects.toThrow(
          'SessionService.destroyAllForUser: except must be a session id or handle, got a string of 4 characters (ids have 46, handles 47)',
        );
        await expect(sessions.destroy('x', { userId: '' })).rejects.toThrow(
          'SessionService.destroy: userId must be a non-empty string, got ""',
        );
      });

      it('malformed ids are null or false, and never reach Redis', async () => {
        const s = await sessions.create(user('malformed'), {});
        const spy = jest.spyOn(redis, 'sendCommand');
        try {
          for (const bad of ['', 'nope', `${s.id}x`, s.id.slice(1), `${s.id.slice(0, 45)}.`]) {
            expect(await sessions.get(bad)).toBeNull();
            expect(await sessions.touch(bad)).toBeNull();
            expect(await sessions.update(bad, { a: 1 })).toBeNull();
            expect(await sessions.update(bad, (d) => d)).toBeNull();
            expect(await sessions.rotate(bad)).toBeNull();
            expect(await sessions.destroy(bad)).toBe(false);
          }
          expect(await sessions.get(s.handle)).toBeNull();
          expect(await sessions.get(undefined as unknown as string)).toBeNull();
          expect(spy).not.toHaveBeenCalled();
        } finally {
          spy.mockRestore();
        }
      });
    });
  },
);
