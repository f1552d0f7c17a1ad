import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';

import {
  getRedisToken,
  RedisModule,
  RedisService,
  SessionService,
  type ExpiredSession,
  type RedisClient,
  type Session,
} from '../../src/index.js';
import { addressOfId } from '../../src/session/session-id.js';
import { OWNER_GRACE, sessionKeys } from '../../src/session/session.scripts.js';
import { CapturingLogger, startApp } from '../support/app.js';
import {
  specDir,
  startStandalone,
  topologies,
  uniqueConnectionName,
  uniquePrefix,
  waitFor,
  type StandaloneServer,
  type TopologyCase,
} from '../support/redis.js';

/** Idle timeout of the sessions these tests let expire: short, so Redis ends them soon. */
const SHORT_TTL = 150;

describe.each(topologies().map((t) => [t.name, t] as const))(
  'SessionService.onExpired on %s',
  (_name, topology: TopologyCase) => {
    let app: INestApplication;
    let sessions: SessionService;
    let redis: RedisClient;
    let n = 0;
    const user = (label: string): string => `${label}-${++n}`;
    const record = (s: Session): string => sessionKeys.record(addressOfId(s.id));
    const owner = (s: Session): string => sessionKeys.owner(addressOfId(s.id));

    beforeAll(async () => {
      app = await startApp({
        imports: [
          RedisModule.forRoot({
            ...topology.options,
            keyPrefix: uniquePrefix(`session-expiry-${topology.name}`),
            connectionName: uniqueConnectionName('session-expiry'),
            pubsub: { keyspaceEvents: 'configure' },
          }),
        ],
      });
      sessions = app.get(SessionService);
      redis = app.get<RedisClient>(getRedisToken());
    });

    afterAll(async () => {
      await app?.get(RedisService).unlinkByPattern('*');
      await app?.close();
    });

    it('hands over the handle and user of sessions Redis expired, not of those ended on purpose', async () => {
      const seen: ExpiredSession[] = [];
      const sub = await sessions.onExpired((expired) => void seen.push(expired));
      try {
        expect(sub.active).toBe(true);
        const u = user('expiry');
        const short = { ttl: SHORT_TTL };
        const [destroyed, rotatedAway, expiring] = await Promise.all([
          sessions.create(u, {}, short),
          sessions.create(u, {}, short),
          sessions.create(u, { cart: [1] }, short),
        ]);
        expect(await sessions.destroy(destroyed.id)).toBe(true);
        const rotated = (await sessions.rotate(rotatedAway.id))!;
        // Reading an expired key makes Redis expire it now rather than in its next sweep.
        await waitFor(
          async () => {
            await Promise.all([redis.exists(record(expiring)), redis.exists(record(rotated))]);
            return seen.length >= 2;
          },
          { what: 'two expiry notices' },
        );
        expect(seen).toHaveLength(2);
        expect(seen).toEqual(
          expect.arrayContaining([
            { handle: expiring.handle, userId: u },
            { handle: rotated.handle, userId: u },
          ]),
        );
        // The user was kept beside the record: read once, it lives only the grace on.
        const left = await redis.pttl(owner(expiring));
        expect(left).toBeGreaterThan(0);
        expect(left).toBeLessThanOrEqual(OWNER_GRACE);
        // Ended on purpose: nothing of theirs is left behind.
        expect(await redis.exists(owner(destroyed), owner(rotatedAway))).toBe(0);
      } finally {
        await sub.unsubscribe();
      }
    });

    it('refuses a handler that is not a function, naming it', async () => {
      await expect(sessions.onExpired('nope' as unknown as () => void)).rejects.toThrow(
        'SessionService.onExpired: handler must be a function, got "nope"',
      );
    });
  },
);

/** A server of our own: its keyspace notifications stay off, as on a fresh Redis. */
describe('SessionService.onExpired without keyspace notifications (own standalone)', () => {
  let server: StandaloneServer;

  beforeAll(async () => {
    server = await startStandalone({ baseDir: specDir('session-expiry') });
  });

  afterAll(async () => {
    await server?.stop();
  });

  it('reports itself inactive and names the flags to set, as onKeyEvent does', async () => {
    const logs = new CapturingLogger();
    const app = await startApp(
      {
        imports: [
          RedisModule.forRoot({
            url: server.url,
            connectionName: uniqueConnectionName('session-expiry-off'),
          }),
        ],
      },
      logs,
    );
    try {
      const sub = await app.get(SessionService).onExpired(() => undefined);
      expect(sub).toMatchObject({ active: false, missingFlags: 'Kx' });
      expect(sub.reason).toMatch(/notify-keyspace-events must include "Kx"/);
      expect(logs.matching('keyspace notifications are off')).toHaveLength(1);
      await sub.unsubscribe();
    } finally {
      await app.close();
    }
  });
});
