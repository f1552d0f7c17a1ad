import diagnosticsChannel from 'node:diagnostics_channel';

import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';

import {
  CacheService,
  LockNotAcquiredError,
  LockService,
  RedisModule,
  SessionService,
  type RedisModuleOptions,
  type RedisTraceContext,
} from '../../src/index.js';
import { startApp } from '../support/app.js';
import { topologies, uniquePrefix, type TopologyCase } from '../support/redis.js';

interface Seen {
  channel: string;
  outcome?: string;
  failed: boolean;
  context: string;
}

/**
 * The services publish their operations on `node:diagnostics_channel` tracing channels (what
 * the OpenTelemetry bridge and APM tools subscribe to): each operation once, with its outcome,
 * and never a key, resource or session id in the context.
 */
describe.each(topologies().map((t) => [t.name, t] as const))(
  'traced service operations on %s',
  (_name, topology: TopologyCase) => {
    let app: INestApplication;
    const seen: Seen[] = [];
    const unsubscribers: Array<() => void> = [];
    const names = [
      'cache.getOrSet',
      'cache.load',
      'lock.acquire',
      'lock.withLock',
      'session.create',
      'session.get',
      'session.destroy',
    ];

    beforeAll(async () => {
      for (const name of names) {
        const channel = diagnosticsChannel.tracingChannel<unknown, RedisTraceContext>(
          `nestjs-redis-infra:${name}`,
        );
        // On a rejection the channel publishes `error`, then `asyncEnd`: one entry per operation.
        const failed = new WeakSet<object>();
        const handlers = {
          start: () => undefined,
          end: () => undefined,
          asyncStart: () => undefined,
          error: (ctx: RedisTraceContext) => void failed.add(ctx),
          asyncEnd: (ctx: RedisTraceContext) => {
            // `error` is the operation's error as the caller gets it (its message and fields
            // may name the key, as they do for the caller); everything else is checked below.
            const { error: _error, ...rest } = ctx as RedisTraceContext & { error?: unknown };
            seen.push({
              channel: name,
              outcome: ctx.outcome,
              failed: failed.has(ctx),
              context: JSON.stringify(rest),
            });
          },
        };
        channel.subscribe(handlers);
        unsubscribers.push(() => channel.unsubscribe(handlers));
      }
      const options: RedisModuleOptions = {
        ...topology.options,
        keyPrefix: uniquePrefix(`traced-${topology.name}`),
        // Without L1 the second read is an L2 hit, which is traced (an L1 hit is not).
        cache: { l1: false },
      };
      app = await startApp({ imports: [RedisModule.forRoot(options)] });
    });

    afterAll(async () => {
      for (const off of unsubscribers) off();
      await app?.close();
    });

    const of = (channel: string): Seen[] => seen.filter((s) => s.channel === channel);

    it('cache.getOrSet: loaded once (with one cache.load), then a hit', async () => {
      const cache = app.get(CacheService);
      const key = `secret-cache-key-${topology.name}`;
      expect(await cache.getOrSet(key, () => 'v')).toBe('v');
      expect(await cache.getOrSet(key, () => 'never')).toBe('v');
      expect(of('cache.getOrSet').map((s) => s.outcome)).toEqual(['loaded', 'hit']);
      expect(of('cache.load')).toHaveLength(1);
    });

    it('lock.acquire: acquired, then a timeout while it is held; lock.withLock once', async () => {
      const locks = app.get(LockService);
      const resource = `secret-resource-${topology.name}`;
      await locks.withLock(resource, async () => {
        await expect(locks.acquire(resource, { wait: 50 })).rejects.toBeInstanceOf(
          LockNotAcquiredError,
        );
      });
      expect(of('lock.acquire').map((s) => [s.outcome, s.failed])).toEqual([
        ['acquired', false],
        ['timeout', true],
      ]);
      expect(of('lock.withLock')).toHaveLength(1);
    });

    it('session.*: one event per operation', async () => {
      const sessions = app.get(SessionService);
      const session = await sessions.create('user-secret', { role: 'admin' });
      expect(await sessions.get(session.id)).not.toBeNull();
      expect(await sessions.destroy(session.id)).toBe(true);
      expect(of('session.create')).toHaveLength(1);
      expect(of('session.get')).toHaveLength(1);
      expect(of('session.destroy')).toHaveLength(1);
    });

    it('never puts a key, resource, user or session id in the context', () => {
      expect(seen.length).toBeGreaterThan(0);
      for (const s of seen) {
        expect(s.context).not.toMatch(/secret/);
        expect(JSON.parse(s.context)).toEqual(expect.objectContaining({ connection: 'default' }));
      }
    });
  },
);
