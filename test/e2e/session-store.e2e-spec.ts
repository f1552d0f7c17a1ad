import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import {
  Body,
  Controller,
  Get,
  HttpCode,
  Inject,
  Post,
  Req,
  UnauthorizedException,
  type INestApplication,
} from '@nestjs/common';
import { Test } from '@nestjs/testing';
import express, { type Request } from 'express';
import session from 'express-session';
import request from 'supertest';

import { RedisSessionStore } from '../../src/express-session.js';
import { RedisModule, RedisService, RedisSessionError, SessionService } from '../../src/index.js';
import { addressOfId, isSessionId, userTag } from '../../src/session/session-id.js';
import { LOAD_AND_TOUCH, RESAVE, sessionKeys } from '../../src/session/session.scripts.js';
import { CapturingLogger } from '../support/app.js';
import {
  countSocketWrites,
  recordCommands,
  topologies,
  uniqueConnectionName,
  uniquePrefix,
  waitFor,
  type TopologyCase,
} from '../support/redis.js';

declare module 'express-session' {
  interface SessionData {
    user?: string;
    views?: number;
  }
}

const STORE = Symbol('RedisSessionStore');
/** Cookie lifetime: short, so that rolling expiry shows within a second. */
const MAX_AGE = 400;

/** Lets a test hold a request after it loaded its session, and release it later. */
let gate: { reached: () => void; released: Promise<void> } | undefined;

@Controller()
class AuthController {
  constructor(@Inject(STORE) private readonly store: RedisSessionStore) {}

  @Post('login')
  @HttpCode(200)
  async login(@Req() req: Request, @Body() body: { user: string }): Promise<{ user: string }> {
    await this.store.login(req, body.user);
    req.session.user = body.user;
    req.session.views = 0;
    return { user: body.user };
  }

  /** Modifies the session: express-session calls `set`. */
  @Get('me')
  me(@Req() req: Request): { user: string; views: number } {
    if (!req.session.user) throw new UnauthorizedException('not signed in');
    req.session.views = (req.session.views ?? 0) + 1;
    return { user: req.session.user, views: req.session.views };
  }

  /** Reads only: express-session calls `touch` (rolling). */
  @Get('peek')
  peek(@Req() req: Request): { user: string } {
    if (!req.session.user) throw new UnauthorizedException('not signed in');
    return { user: req.session.user };
  }

  /** A session without a user (a visitor's cart). */
  @Post('visit')
  @HttpCode(200)
  visit(@Req() req: Request): { views: number } {
    req.session.views = (req.session.views ?? 0) + 1;
    return { views: req.session.views };
  }

  /** Loads the session, waits for the test, then modifies it. */
  @Get('slow')
  async slow(@Req() req: Request): Promise<{ views: number }> {
    gate?.reached();
    await gate?.released;
    req.session.views = 999;
    return { views: 999 };
  }

  @Post('logout')
  @HttpCode(200)
  async logout(@Req() req: Request): Promise<{ ok: true }> {
    await new Promise<void>((resolve, reject) =>
      req.session.destroy((err: unknown) => (err ? reject(err) : resolve())),
    );
    return { ok: true };
  }
}

/**
 * A browser that keeps the `sid` cookie. Unlike supertest's agent it ignores `Expires`, which
 * express-session writes with one-second precision (a 400 ms cookie would often be born
 * expired): what these tests check is the server side, where Redis decides.
 */
/** Asserts the status, showing the body when it differs. */
function status(res: request.Response, code: number): request.Response {
  expect({ status: res.status, body: res.body as unknown }).toMatchObject({ status: code });
  return res;
}

class Browser {
  cookie?: string;
  constructor(private readonly app: INestApplication) {}

  get(path: string): Promise<request.Response> {
    return this.send(request(this.app.getHttpServer() as Parameters<typeof request>[0]).get(path));
  }

  post(path: string, body: object = {}): Promise<request.Response> {
    return this.send(
      request(this.app.getHttpServer() as Parameters<typeof request>[0])
        .post(path)
        .send(body),
    );
  }

  private async send(req: request.Test): Promise<request.Response> {
    if (this.cookie) req.set('Cookie', this.cookie);
    const res = await req;
    const set = ([] as string[]).concat(res.headers['set-cookie'] ?? []);
    const sid = set.find((c) => c.startsWith('sid='));
    if (sid) this.cookie = sid.split(';')[0];
    return res;
  }
}

/** The session id inside express-session's signed cookie (`s:<id>.<signature>`). */
function sessionIdOf(res: request.Response): string {
  const cookies = ([] as string[]).concat(res.headers['set-cookie'] ?? []);
  const cookie = cookies.find((c) => c.startsWith('sid='));
  if (!cookie) throw new Error(`no sid cookie in ${JSON.stringify(cookies)}`);
  const value = decodeURIComponent(cookie.slice(4, cookie.indexOf(';')));
  return value.slice(2, value.lastIndexOf('.'));
}

describe.each(topologies().map((t) => [t.name, t] as const))(
  'RedisSessionStore with express-session on %s',
  (_name, topology: TopologyCase) => {
    let app: INestApplication;
    let store: RedisSessionStore;
    let sessions: SessionService;
    const prefix = uniquePrefix(`session-store-${topology.name}`);
    let n = 0;
    const user = (label: string): string => `${label}-${++n}`;
    const http = () => request(app.getHttpServer() as Parameters<typeof request>[0]);

    beforeAll(async () => {
      const logger = new CapturingLogger();
      const moduleRef = await Test.createTestingModule({
        imports: [
          RedisModule.forRoot({
            ...topology.options,
            keyPrefix: prefix,
            connectionName: uniqueConnectionName('session-store'),
          }),
        ],
        controllers: [AuthController],
        providers: [
          {
            provide: STORE,
            useFactory: (s: SessionService) => new RedisSessionStore(s),
            inject: [SessionService],
          },
        ],
      })
        .setLogger(logger)
        .compile();
      app = moduleRef.createNestApplication({ logger });
      store = app.get(STORE);
      sessions = app.get(SessionService);
      app.use(
        session({
          store,
          genid: store.genid,
          name: 'sid',
          secret: 'test secret',
          resave: false,
          saveUninitialized: false,
          rolling: true,
          cookie: { maxAge: MAX_AGE, httpOnly: true, sameSite: 'lax' },
        }),
      );
      await app.init();
    });

    afterAll(async () => {
      await app?.get(RedisService).unlinkByPattern('*');
      await app?.close();
    });

    it('login issues a cookie whose id is ours, stored only as a digest in the user’s index', async () => {
      const u = user('login');
      const agent = new Browser(app);
      const res = status(await agent.post('/login', { user: u }), 200);
      const sid = sessionIdOf(res);
      expect(isSessionId(sid)).toBe(true);
      expect(sid.startsWith(userTag(u))).toBe(true);
      const redis = app.get(RedisService).client;
      const key = sessionKeys.record(addressOfId(sid));
      expect(JSON.parse((await redis.hget(key, 'd'))!)).toMatchObject({ user: u, views: 0 });
      expect(await redis.pttl(key)).toBeLessThanOrEqual(MAX_AGE);
      const listed = await sessions.listByUser(u);
      expect(listed).toHaveLength(1);
      expect(listed[0].handle).toBe(`${sid.slice(0, 3)}.${addressOfId(sid).digest}`);
      // The service sees the same session.
      expect((await sessions.get(sid))!.data).toMatchObject({ user: u, views: 0 });
    });

    it('requests read and write the session through the store', async () => {
      const agent = new Browser(app);
      const u = user('request');
      status(await agent.post('/login', { user: u }), 200);
      expect(status(await agent.get('/me'), 200).body).toEqual({ user: u, views: 1 });
      expect(status(await agent.get('/me'), 200).body).toEqual({ user: u, views: 2 });
      await http().get('/me').expect(401); // no cookie, no session
    });

    it('rolling expiry: each request slides the session; idle, it expires', async () => {
      const agent = new Browser(app);
      const u = user('rolling');
      const res = status(await agent.post('/login', { user: u }), 200);
      const sid = sessionIdOf(res);
      const start = Date.now();
      // Read-only requests (express-session calls store.touch) for well over the cookie's maxAge.
      await waitFor(
        async () => {
          status(await agent.get('/peek'), 200);
          return Date.now() - start > 2.5 * MAX_AGE;
        },
        { intervalMs: MAX_AGE / 4, what: 'the session to outlive its maxAge' },
      );
      expect(await sessions.get(sid)).not.toBeNull();
      // Touches that only slid the record's expiry left the user's index alone: still listed.
      expect(await sessions.listByUser(u)).toHaveLength(1);
      // Now idle: Redis drops it once the cookie's maxAge has passed.
      await waitFor(async () => (await sessions.get(sid)) === null, {
        what: 'the idle session to expire',
      });
      expect(await sessions.listByUser(u)).toEqual([]);
      status(await agent.get('/peek'), 401);
    });

    describe('what a touch costs', () => {
      const call = <T>(fn: (cb: (err: unknown, value?: T) => void) => void): Promise<T> =>
        new Promise((resolve, reject) =>
          fn((err, value) => (err ? reject(err) : resolve(value as T))),
        );
      /** What express-session does at the start of a request: get, then createSession. */
      const load = async (
        store: RedisSessionStore,
        sid: string,
      ): Promise<session.Session & session.SessionData> => {
        const data = await call<session.SessionData | null>((cb) => store.get(sid, cb));
        if (!data) throw new Error(`session ${sid} not found`);
        const req = { sessionID: sid } as unknown as Request;
        return store.createSession(req, data);
      };
      /** What express-session does at the end of a request that did not change the session. */
      const touch = (
        store: RedisSessionStore,
        sid: string,
        loaded: session.Session & session.SessionData,
        maxAge?: number,
      ): Promise<void> => {
        if (maxAge !== undefined) loaded.cookie.maxAge = maxAge;
        else loaded.touch();
        return new Promise<void>((resolve) => store.touch(sid, loaded, resolve));
      };
      /** A new session of `maxAge` ms; its record key and recorded last use. */
      const start = async (store: RedisSessionStore, maxAge: number) => {
        const redis = app.get(RedisService).client;
        const sid = store.genid({} as Request);
        const key = sessionKeys.record(addressOfId(sid));
        const fresh = { cookie: new session.Cookie(), views: 1 } as session.SessionData;
        fresh.cookie.maxAge = maxAge;
        await call((cb) => store.set(sid, fresh, cb));
        return { sid, key, lastSeen: Number(await redis.hget(key, '_l')) };
      };

      it('loading a session touches it, so the touch at the end of the request costs no round trip', async () => {
        const redis = app.get(RedisService).client;
        const { sid, key } = await start(store, 60_000);
        // Shorten the expiry behind the store's back: the load must slide it again.
        await redis.pexpire(key, 5_000);
        const loaded = await load(store, sid);
        const slid = await redis.pttl(key);
        expect(slid).toBeGreaterThan(55_000);
        expect(slid).toBeLessThanOrEqual(60_000);
        // The cookie asks for what the load already set: nothing is sent.
        expect(await countSocketWrites(redis, () => touch(store, sid, loaded))).toBe(0);
        // A cookie that asks for 10 s more does go to Redis.
        expect(
          await countSocketWrites(redis, () => touch(store, sid, loaded, 70_000)),
        ).toBeGreaterThan(0);
        expect(await redis.pttl(key)).toBeGreaterThan(60_000);
      });

      it('with touchOnGet: false, loading leaves the expiry alone and the touch slides it', async () => {
        const plain = new RedisSessionStore(sessions, { touchOnGet: false });
        const redis = app.get(RedisService).client;
        const { sid, key } = await start(plain, 60_000);
        await redis.pexpire(key, 5_000);
        const loaded = await load(plain, sid);
        expect(await redis.pttl(key)).toBeLessThanOrEqual(5_000);
        expect(await countSocketWrites(redis, () => touch(plain, sid, loaded))).toBe(1);
        expect(await redis.pttl(key)).toBeGreaterThan(55_000);
        expect(() => new RedisSessionStore(sessions, { touchOnGet: 'yes' as never })).toThrow(
          'RedisSessionStore: touchOnGet must be a boolean, got "yes"',
        );
        // An expiry Redis would refuse is refused here, before any script runs.
        expect(() => new RedisSessionStore(sessions, { absoluteTtl: 1e20 })).toThrow(
          'RedisSessionStore: absoluteTtl must be more than 0 and at most 31536000000 milliseconds (1 year), got 100000000000000000000',
        );
        expect(() => new RedisSessionStore(sessions, { ttl: 0 })).toThrow(RangeError);
      });

      it('never past the absolute expiry; a new idle timeout is recorded, and used by the next load', async () => {
        const capped = new RedisSessionStore(sessions, { absoluteTtl: 1500 });
        const redis = app.get(RedisService).client;
        const { sid, key, lastSeen } = await start(capped, 1000);

        // A request that only reads: the cookie says 60 s, the absolute lifetime (1.5 s) wins.
        let loaded = await load(capped, sid);
        expect(Number(await redis.hget(key, '_l'))).toBe(lastSeen); // recent: not recorded
        await touch(capped, sid, loaded, 60_000);
        expect(await redis.pttl(key)).toBeGreaterThan(1000);
        expect(await redis.pttl(key)).toBeLessThanOrEqual(1500);
        // (express-session derives the cookie's maxAge from its expiry: a ms may be lost)
        expect(Number(await redis.hget(key, '_i'))).toBeGreaterThanOrEqual(59_990);
        // The next load slides by the recorded 60 s, still capped.
        await redis.pexpire(key, 900);
        loaded = await load(capped, sid);
        expect(await redis.pttl(key)).toBeGreaterThan(1000);
        // Back to a short cookie: the expiry follows it down.
        await touch(capped, sid, loaded, 200);
        expect(await redis.pttl(key)).toBeLessThanOrEqual(200);
        expect(Number(await redis.hget(key, '_i'))).toBeLessThanOrEqual(200);
      });

      it('a load records the use once the last recorded one is older than the resolution; the touch in between only slides', async () => {
        const redis = app.get(RedisService).client;
        // A 400 ms idle timeout: the resolution is half of it, 200 ms.
        const { sid, key, lastSeen } = await start(store, 400);
        let loaded = await load(store, sid);
        expect(Number(await redis.hget(key, '_l'))).toBe(lastSeen);
        // 100 ms later (a slow request): the touch slides the expiry, records nothing.
        await waitFor(() => Date.now() - lastSeen > 100, { what: '100 ms to pass' });
        expect(await countSocketWrites(redis, () => touch(store, sid, loaded))).toBe(1);
        expect(Number(await redis.hget(key, '_l'))).toBe(lastSeen);
        expect(await redis.pttl(key)).toBeGreaterThan(300);
        // Past the resolution, the next load records the use.
        await waitFor(() => Date.now() - lastSeen > 250, { what: '250 ms to pass' });
        loaded = await load(store, sid);
        expect(Number(await redis.hget(key, '_l'))).toBeGreaterThan(lastSeen);
        expect(loaded.views).toBe(1);
      });

      it('a session loaded lately is loaded again with one PEXPIREAT and saved with the short script; gone, it stays gone', async () => {
        const redis = app.get(RedisService).client;
        const { sid, key } = await start(store, 60_000);
        let loaded!: session.Session & session.SessionData;
        // The store did not know the session: the script that reads and slides.
        const first = await recordCommands(redis, async () => (loaded = await load(store, sid)));
        expect(first[0]).toBe(`evalsha ${LOAD_AND_TOUCH.sha}`);
        await redis.pexpire(key, 5_000);
        // Known now: PEXPIREAT + HMGET, no script.
        expect(await recordCommands(redis, async () => (loaded = await load(store, sid)))).toEqual([
          'pexpireat',
          'hmget',
        ]);
        expect(await redis.pttl(key)).toBeGreaterThan(55_000);
        const version = Number(await redis.hget(key, '_v'));
        loaded.views = 2;
        // Saved with the short script.
        const saved = await recordCommands(redis, () => call((cb) => store.set(sid, loaded, cb)));
        expect(saved[0]).toBe(`evalsha ${RESAVE.sha}`);
        expect(JSON.parse((await redis.hget(key, 'd'))!)).toMatchObject({ views: 2 });
        expect(Number(await redis.hget(key, '_v'))).toBe(version + 1);
        expect(await redis.pttl(key)).toBeGreaterThan(55_000);

        // Ended elsewhere (another instance, "log out everywhere"): neither path brings it back.
        loaded = await load(store, sid);
        await redis.del(key);
        loaded.views = 3;
        await call((cb) => store.set(sid, loaded, cb));
        expect(await redis.exists(key)).toBe(0);
        expect(await call((cb) => store.get(sid, cb))).toBeNull();
        expect(await redis.exists(key)).toBe(0);
      });

      it('a save whose absolute expiry has passed by the application’s clock ends the session and leaves no stub', async () => {
        const capped = new RedisSessionStore(sessions, { absoluteTtl: 300 });
        const redis = app.get(RedisService).client;
        const { sid, key } = await start(capped, 60_000);
        const loaded = await load(capped, sid);
        // Keep the record past its absolute expiry, as a Redis clock behind the app's would.
        await redis.persist(key);
        const absolute = Number(await redis.hget(key, '_a'));
        await waitFor(() => Date.now() > absolute + 10, { what: 'the absolute expiry to pass' });
        loaded.views = 2;
        await call((cb) => capped.set(sid, loaded, cb));
        expect(await redis.exists(key)).toBe(0);
      });

      it('a touch never brings a destroyed session back; neither does a load', async () => {
        const redis = app.get(RedisService).client;
        const { sid, key } = await start(store, 60_000);
        const late = await load(store, sid);
        await call((cb) => store.destroy(sid, cb));
        await touch(store, sid, late, 120_000);
        await touch(store, sid, late);
        expect(await redis.exists(key)).toBe(0);
        expect(await call((cb) => store.get(sid, cb))).toBeNull();
        expect(await redis.exists(key)).toBe(0);
      });
    });

    it('a save by the store moves the version: an update function that read before it runs again', async () => {
      const u = user('version');
      const agent = new Browser(app);
      const sid = sessionIdOf(status(await agent.post('/login', { user: u }), 200));
      let release: () => void = () => undefined;
      const released = new Promise<void>((resolve) => (release = resolve));
      const seen: unknown[] = [];
      const updating = sessions.update<{ views?: number; tag?: string }>(sid, async (data) => {
        seen.push(data.views);
        await released;
        return { ...data, tag: 'x' };
      });
      await waitFor(() => seen.length === 1, { what: 'the update function to read' });
      expect(status(await agent.get('/me'), 200).body).toEqual({ user: u, views: 1 });
      release();
      expect((await updating)!.data).toMatchObject({ views: 1, tag: 'x' });
      expect(seen).toEqual([0, 1]);
    });

    it('logout destroys the session; replaying its cookie finds nothing', async () => {
      const agent = new Browser(app);
      const login = status(await agent.post('/login', { user: user('logout') }), 200);
      const cookie = agent.cookie!;
      const sid = sessionIdOf(login);
      status(await agent.get('/me'), 200);
      status(await agent.post('/logout'), 200);
      expect(await sessions.get(sid)).toBeNull();
      await http().get('/me').set('Cookie', cookie).expect(401);
    });

    it('SessionService.destroyAllForUser logs every browser out, and a request in flight cannot bring its session back', async () => {
      const u = user('everywhere');
      const browsers = [new Browser(app), new Browser(app)];
      for (const b of browsers) status(await b.post('/login', { user: u }), 200);
      expect(await sessions.listByUser(u)).toHaveLength(2);

      let reached: () => void = () => undefined;
      let release: () => void = () => undefined;
      const entered = new Promise<void>((resolve) => (reached = resolve));
      gate = { reached, released: new Promise<void>((resolve) => (release = resolve)) };
      try {
        const slow = browsers[0].get('/slow').then((r) => r);
        await entered; // the request has loaded its session
        expect(await sessions.destroyAllForUser(u)).toBe(2);
        release();
        expect((await slow).status).toBe(200); // it modified the session and saved it
      } finally {
        gate = undefined;
      }
      expect(await sessions.listByUser(u)).toEqual([]);
      for (const b of browsers) status(await b.get('/me'), 401);
      // Nothing of it is left in Redis: the late save re-created nothing.
      const left: string[] = [];
      for await (const key of app.get(RedisService).scan(`sess:{${userTag(u)}}:*`)) left.push(key);
      expect(left).toEqual([]);
    });

    it('visitors get sessions without a user; SessionService does not treat them as users’', async () => {
      const agent = new Browser(app);
      const res = status(await agent.post('/visit'), 200);
      const sid = sessionIdOf(res);
      expect(isSessionId(sid)).toBe(true);
      expect(status(await agent.post('/visit'), 200).body).toEqual({ views: 2 });
      expect(await new Promise((r) => store.get(sid, (_e, s) => r(s?.views)))).toBe(2);
      expect(await sessions.get(sid)).toBeNull();
    });

    it('login without genid: store.genid fails with what to do', async () => {
      const req = {
        sessionID: 'old',
        sessionStore: store,
        session: {
          regenerate(cb: (err?: unknown) => void) {
            req.sessionID = 'an-id-express-session-made-itself';
            cb();
          },
        },
      };
      const err = await store.login(req as unknown as Request, 'u').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RedisSessionError);
      expect(err).toMatchObject({ code: 'REDIS_SESSION_STORE_SETUP' });
      expect((err as Error).message).toContain(
        'express-session did not call store.genid; pass "genid: store.genid" in the options of session()',
      );
      await expect(store.login(req as unknown as Request, '')).rejects.toThrow(
        'RedisSessionStore.login: userId must be a non-empty string, got ""',
      );
    });

    it('login on a second store instance names the real cause: two instances, not genid', async () => {
      // What a new user did: main.ts gave session() one store, the controller made another.
      const used = new RedisSessionStore(sessions);
      const other = new RedisSessionStore(sessions);
      const web = express();
      web.use(
        session({
          store: used,
          genid: used.genid,
          secret: 's',
          resave: false,
          saveUninitialized: false,
        }),
      );
      web.post('/login', (req, res) => {
        void (req.query.same ? used : other).login(req, user('two-stores')).then(
          () => res.json({ ok: true }),
          (e: RedisSessionError) => res.status(500).json({ code: e.code, message: e.message }),
        );
      });
      const res = await request(web).post('/login');
      expect(res.status).toBe(500);
      expect(res.body).toMatchObject({ code: 'REDIS_SESSION_STORE_SETUP' });
      expect((res.body as { message: string }).message).toMatch(
        /login was called on a different RedisSessionStore instance than the one given to session\(\) \(two instances/,
      );
      expect((res.body as { message: string }).message).not.toMatch(/did not call store\.genid/);
      // The same request on the instance session() uses signs in.
      expect(status(await request(web).post('/login?same=1'), 200).body).toEqual({ ok: true });
    });

    it('all, length and clear cover every session of the connection', async () => {
      for (const label of ['all-a', 'all-b']) {
        status(await new Browser(app).post('/login', { user: user(label) }), 200);
      }
      const count = await new Promise<number>((resolve, reject) =>
        store.length((err, value) => (err ? reject(err) : resolve(value!))),
      );
      expect(count).toBeGreaterThanOrEqual(2);
      const all = await new Promise<session.SessionData[]>((resolve, reject) =>
        store.all((err, value) => (err ? reject(err) : resolve(value!))),
      );
      // Sessions of earlier tests (400 ms cookies) may expire between the two calls: none appear.
      expect(all.length).toBeLessThanOrEqual(count);
      expect(all.length).toBeGreaterThanOrEqual(2);
      expect(all.map((s) => s.user)).toEqual(
        expect.arrayContaining([`all-a-${n - 1}`, `all-b-${n}`]),
      );
      await new Promise<void>((resolve, reject) =>
        store.clear((err) => (err ? reject(err) : resolve())),
      );
      const after = await new Promise<number>((resolve, reject) =>
        store.length((err, value) => (err ? reject(err) : resolve(value!))),
      );
      expect(after).toBe(0);
    });
  },
);
