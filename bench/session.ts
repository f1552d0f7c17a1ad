/**
 * Session benchmark: `RedisSessionStore` (SessionService behind express-session's
 * store API) against `connect-redis`, on the same server, in one process and one run.
 *
 * Stores compared, each with its own connection:
 *  - `ours`: `RedisSessionStore` over `SessionService`, in a Nest application context
 *    (`RedisModule.forRoot({ url })`, the module's defaults: RESP3, write coalescing, no
 *    auto-pipelining; the store's defaults: `touchOnGet`).
 *  - `ours-plain-get`: the same connection, with a store made with `touchOnGet: false`: `get`
 *    only reads, so express-session's `touch` goes to Redis (what `touchOnGet` is worth).
 *  - `ours+ap`: `ours` with `autoPipelining: true`, for the many-in-flight case (node-redis,
 *    connect-redis's client, always batches the commands of one tick into one write).
 *  - `connect-redis`: connect-redis 9.0.0, its newest version that runs on Node 20
 *    (10.0.0 requires Node >= 22), with the client it supports, node-redis 5.
 *  - `cr-pattern/ioredis`: connect-redis's command pattern (SET EX / GET / EXPIRE of a JSON
 *    string) written with ioredis and the same client options as ours: what is left of the
 *    difference is the stores' design, not the client library.
 *
 * Scenarios:
 *  1. `set` + `get` + `touch` cycles/s through express-session's store API, with sessions of
 *     1 KB of JSON (an express-session `Cookie` plus user data) over 1000 session ids;
 *     sequential (one cycle in flight) and 16 cycles in flight. The calls carry the objects
 *     express-session would pass: `set` and `touch` get the session `createSession` made of
 *     what `get` returned (see `measure`).
 *  2. `SessionService.destroyAllForUser` of a user with 100 sessions: time per call. For
 *     context, what a connect-redis application does instead (it has no per-user index):
 *     `all()`, filter by user, `destroy` each match, over the same number of sessions.
 *
 * Method: one warm-up round, then `rounds` rounds; in each round every store runs for
 * `sliceMs` in a fresh random order, with a full GC (with --expose-gc) before every slice. A
 * store's figure is the median of its rounds; `ratio` = median(ours) / median(theirs); `paired`
 * = median over rounds of ours/theirs within the round (steadier on a busy machine).
 *
 * Server: `REDIS_URL` if set, else a throwaway redis-server on a free loopback port, stopped
 * at the end (also on error, SIGINT and SIGTERM). Keys: `bench:session:<run>:*`, deleted at
 * the end.
 *
 * Usage: npm run bench -- session [--rounds N] [--slice-ms MS] [--destroy-rounds N]
 *   or env BENCH_ROUNDS, BENCH_SLICE_MS, BENCH_DESTROY_ROUNDS.
 *   The last line of output is `BENCH_JSON {...}` with every figure.
 */
import 'reflect-metadata';
import { performance } from 'node:perf_hooks';

import { Module, type INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { RedisStore as ConnectRedisStore } from 'connect-redis';
import type express from 'express';
import session, { Store, type SessionData } from 'express-session';
import { Redis } from 'ioredis';
import { createClient } from 'redis';

import type { StandaloneServer } from '../scripts/redis/servers.mjs';
import { RedisSessionStore } from '../src/express-session.js';
import { RedisModule, SessionService } from '../src/index.js';

import {
  cleanupSteps,
  collectGarbage,
  measureLoops,
  median,
  packageVersion,
  pairedRounds,
  quantile,
  readArgs,
  redisUrlFor,
  runBenchmark,
  sampler,
  stopThrowawayServer,
  table,
  unlinkMatching,
} from './harness.js';

const TARGET_RATIO = 1.0;
const SESSION_IDS = 1000;
const SESSION_BYTES = 1024;
const IN_FLIGHT = [1, 16] as const;
const USER_SESSIONS = 100;

interface Settings {
  rounds: number;
  sliceMs: number;
  destroyRounds: number;
}

function readSettings(argv: string[]): Settings {
  const args = readArgs(argv, ['rounds', 'slice-ms', 'destroy-rounds']);
  return {
    rounds: args.num('rounds', 12, 1, 1000),
    sliceMs: args.num('slice-ms', 250, 20, 10_000),
    destroyRounds: args.num('destroy-rounds', 20, 1, 1000),
  };
}

// ---------------------------------------------------------------------------------------------
// Stores
// ---------------------------------------------------------------------------------------------

/** express-session's store API, promisified. */
interface StoreApi {
  set(sid: string, sess: SessionData): Promise<void>;
  get(sid: string): Promise<SessionData | null | undefined>;
  touch(sid: string, sess: SessionData): Promise<void>;
  /** What express-session does with what `get` returned: `req.session` of the next request. */
  createSession(sid: string, data: SessionData): SessionData;
}

function promisify(store: Store): StoreApi {
  return {
    createSession: (sid, data) =>
      store.createSession({ sessionID: sid } as unknown as express.Request, data),
    set: (sid, sess) =>
      new Promise((resolve, reject) =>
        store.set(sid, sess, (err?: unknown) => (err ? reject(err) : resolve())),
      ),
    get: (sid) =>
      new Promise((resolve, reject) =>
        store.get(sid, (err: unknown, s?: SessionData | null) => (err ? reject(err) : resolve(s))),
      ),
    touch: (sid, sess) => new Promise((resolve) => store.touch!(sid, sess, () => resolve())),
  };
}

/**
 * connect-redis's command pattern on ioredis: the session as one JSON string under
 * `prefix + sid`, `SET ... EX` from the cookie's expiry, `GET`, and `EXPIRE` to touch.
 */
class IoredisPatternStore extends Store {
  constructor(
    private readonly client: Redis,
    private readonly prefix: string,
  ) {
    super();
  }
  private ttlSeconds(sess: SessionData): number {
    const expires = sess.cookie?.expires;
    return expires ? Math.ceil((new Date(expires).getTime() - Date.now()) / 1000) : 86_400;
  }
  override get(sid: string, cb: (err: unknown, s?: SessionData | null) => void): void {
    this.client.get(this.prefix + sid).then(
      (raw) => cb(null, raw ? (JSON.parse(raw) as SessionData) : null),
      (err: unknown) => cb(err),
    );
  }
  override set(sid: string, sess: SessionData, cb?: (err?: unknown) => void): void {
    this.client.set(this.prefix + sid, JSON.stringify(sess), 'EX', this.ttlSeconds(sess)).then(
      () => cb?.(),
      (err: unknown) => cb?.(err),
    );
  }
  override touch(sid: string, sess: SessionData, cb?: () => void): void {
    this.client.expire(this.prefix + sid, this.ttlSeconds(sess)).then(
      () => cb?.(),
      () => cb?.(),
    );
  }
  override destroy(sid: string, cb?: (err?: unknown) => void): void {
    this.client.del(this.prefix + sid).then(
      () => cb?.(),
      (err: unknown) => cb?.(err),
    );
  }
}

/** express-session's Cookie; its types omit the constructor's options. */
const CookieWithOptions = session.Cookie as unknown as new (
  options: session.CookieOptions,
) => session.Cookie;

/** An express-session session of `SESSION_BYTES` bytes of JSON. */
function makeSession(userId: string): SessionData {
  const sess = {
    cookie: new CookieWithOptions({ maxAge: 30 * 60_000, httpOnly: true, sameSite: 'lax' }),
    userId,
    roles: ['customer'],
    cart: [
      { sku: 'A-1001', qty: 1, price: 1999 },
      { sku: 'B-2002', qty: 2, price: 499 },
    ],
    profile: { name: 'Ada Lovelace', locale: 'en-GB', theme: 'dark' },
    pad: '',
  } as unknown as SessionData & { pad: string };
  const size = JSON.stringify(sess).length;
  sess.pad = 'x'.repeat(Math.max(0, SESSION_BYTES - size));
  return sess;
}

// ---------------------------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------------------------

interface Contender {
  id: 'ours' | 'ours-plain-get' | 'ours+ap' | 'connect-redis' | 'cr-pattern/ioredis';
  label: string;
  api: StoreApi;
  sids: string[];
}

/**
 * Cycles of set + get + touch completed in `ms`, with `inFlight` loops. Returns cycles/s.
 *
 * Each call is what express-session makes of a request, with the objects it would pass: `set`
 * saves the session a previous request loaded (`req.session`, from `createSession`); `get`
 * loads it for the next request, which does not change it, so express-session resets the
 * cookie's expiry (`req.session.touch()`) and calls `touch` with that session.
 * `current` holds, per session id, the session the next `set` saves: `sess` (a new session)
 * the first time, a loaded one afterwards.
 */
async function measure(
  c: Contender,
  inFlight: number,
  ms: number,
  sess: SessionData,
  current: Map<string, SessionData>,
): Promise<number> {
  let next = Math.floor(Math.random() * c.sids.length);
  const cycle = async (): Promise<void> => {
    const sid = c.sids[next++ % c.sids.length];
    await c.api.set(sid, current.get(sid) ?? sess);
    const got = await c.api.get(sid);
    if (!got) throw new Error(`${c.id}: get after set found nothing`);
    const loaded = c.api.createSession(sid, got) as session.Session & SessionData;
    loaded.touch();
    await c.api.touch(sid, loaded);
    current.set(sid, loaded);
  };
  const sample = await measureLoops(cycle, { concurrency: inFlight, durationMs: ms });
  return sample.opsPerSec;
}

/** Seeded, so that runs shuffle and resample alike. */
// sampler's functions are closures over the seeded state: they do not use `this`.
// eslint-disable-next-line @typescript-eslint/unbound-method -- see above
const { random, medianInterval } = sampler(0x7f4a7c15);

const round2 = (n: number): number => Math.round(n * 100) / 100;

// ---------------------------------------------------------------------------------------------
// Run
// ---------------------------------------------------------------------------------------------

/** Everything to close and remove, whatever happens. */
interface State {
  app?: INestApplicationContext;
  appAp?: INestApplicationContext;
  nodeRedis?: ReturnType<typeof createClient>;
  ioredis?: Redis;
  server?: StandaloneServer;
  baseDir?: string;
  prefix?: string;
}

async function cleanup(state: State): Promise<void> {
  const steps = cleanupSteps();
  const { app, appAp, nodeRedis, ioredis, prefix } = state;
  Object.assign(state, {
    app: undefined,
    appAp: undefined,
    nodeRedis: undefined,
    ioredis: undefined,
  });
  if (ioredis && prefix && ioredis.status === 'ready') {
    await steps.run(() => unlinkMatching(ioredis, `${prefix}*`));
  }
  if (app) await steps.run(() => app.close());
  if (appAp) await steps.run(() => appAp.close());
  if (nodeRedis) await steps.run(() => nodeRedis.close());
  if (ioredis) await steps.run(() => ioredis.quit());
  await stopThrowawayServer(state, steps);
  steps.report();
}

type Versions = Awaited<ReturnType<typeof readVersions>>;

async function readVersions(ioredis: Redis) {
  const redisInfo = String(await ioredis.info('server'));
  return {
    node: process.version,
    redis: /redis_version:(\S+)/.exec(redisInfo)?.[1] ?? 'unknown',
    ioredis: await packageVersion('ioredis'),
    'connect-redis': await packageVersion('connect-redis'),
    redisClient: await packageVersion('redis'),
    'express-session': await packageVersion('express-session'),
  };
}

/** Every store under test, on connections of its own. */
async function openStores(url: string, prefix: string, state: State) {
  @Module({ imports: [RedisModule.forRoot({ url, keyPrefix: `${prefix}ours:` })] })
  class BenchModule {}
  state.app = await NestFactory.createApplicationContext(BenchModule, { logger: false });
  const sessions = state.app.get(SessionService);
  const ours = new RedisSessionStore(sessions);
  @Module({
    imports: [RedisModule.forRoot({ url, keyPrefix: `${prefix}ours-ap:`, autoPipelining: true })],
  })
  class BenchApModule {}
  state.appAp = await NestFactory.createApplicationContext(BenchApModule, { logger: false });
  const oursAp = new RedisSessionStore(state.appAp.get(SessionService));

  state.nodeRedis = createClient({ url });
  state.nodeRedis.on('error', (err: unknown) => console.error('node-redis:', err));
  await state.nodeRedis.connect();
  const connectRedis = new ConnectRedisStore({ client: state.nodeRedis, prefix: `${prefix}cr:` });

  state.ioredis = new Redis(url, { lazyConnect: true });
  await state.ioredis.connect();
  const pattern = new IoredisPatternStore(state.ioredis, `${prefix}io:`);
  return { sessions, ours, oursAp, connectRedis, pattern };
}

type Stores = Awaited<ReturnType<typeof openStores>>;

function contendersOf(stores: Stores, versions: Versions): Contender[] {
  const { sessions, ours, oursAp, connectRedis, pattern } = stores;
  // Session ids as express-session would hand them to each store.
  const sids = Array.from({ length: SESSION_IDS }, () => ours.genid(undefined as never));
  return [
    { id: 'ours', label: 'ours (RedisSessionStore)', api: promisify(ours), sids },
    {
      id: 'ours-plain-get',
      label: 'ours, touchOnGet: false',
      api: promisify(new RedisSessionStore(sessions, { touchOnGet: false })),
      // Its own sessions: the same records would be shared with `ours`.
      sids: Array.from({ length: SESSION_IDS }, () => ours.genid(undefined as never)),
    },
    { id: 'ours+ap', label: 'ours, autoPipelining: true', api: promisify(oursAp), sids },
    {
      id: 'connect-redis',
      label: `connect-redis ${versions['connect-redis']} (node-redis)`,
      api: promisify(connectRedis),
      sids,
    },
    {
      id: 'cr-pattern/ioredis',
      label: 'connect-redis pattern (ioredis)',
      api: promisify(pattern),
      sids,
    },
  ];
}

/** Scenario 1: set + get + touch cycles/s per store, per number in flight. */
async function measureCycles(
  contenders: Contender[],
  sess: SessionData,
  settings: Settings,
): Promise<Record<string, Record<string, number[]>>> {
  // Per store, the session each id's next `set` saves.
  const loadedBy = new Map(contenders.map((c) => [c.id, new Map<string, SessionData>()]));
  const cycles: Record<string, Record<string, number[]>> = {};
  for (const inFlight of IN_FLIGHT) {
    const rounds = await pairedRounds({
      rounds: settings.rounds,
      warmup: 1,
      random,
      between: () => collectGarbage('major'),
      contenders: contenders.map((c) => ({
        name: c.id,
        measure: () => measure(c, inFlight, settings.sliceMs, sess, loadedBy.get(c.id)!),
      })),
    });
    cycles[String(inFlight)] = rounds.samples;
  }
  return cycles;
}

/** Scenario 2: destroyAllForUser of 100 sessions, and the connect-redis way for context. */
async function measureDestroy(
  stores: Stores,
  contenders: Contender[],
  settings: Settings,
): Promise<{ destroyMs: number[]; baselineMs: number[]; crSessionCount: number }> {
  const { sessions, connectRedis } = stores;
  const destroyMs: number[] = [];
  const baselineMs: number[] = [];
  const userData = makeSession('x') as unknown as Record<string, unknown>;
  delete userData.cookie;
  for (let round = 0; round <= settings.destroyRounds; round += 1) {
    const userId = `bench-user-${round}`;
    await Promise.all(
      Array.from({ length: USER_SESSIONS }, () => sessions.create(userId, userData)),
    );
    collectGarbage('major');
    const t0 = performance.now();
    const ended = await sessions.destroyAllForUser(userId);
    const ms = performance.now() - t0;
    if (ended !== USER_SESSIONS) throw new Error(`destroyAllForUser ended ${ended}, expected 100`);
    if (round > 0) destroyMs.push(ms);
  }
  const api = contenders.find((c) => c.id === 'connect-redis')!.api;
  for (let round = 0; round <= Math.min(settings.destroyRounds, 10); round += 1) {
    const userId = `bench-user-${round}`;
    const crSids = contenders[0].sids.slice(0, USER_SESSIONS).map((sid) => `${sid}-${round}`);
    const userSess = makeSession(userId);
    await Promise.all(crSids.map((sid) => api.set(sid, userSess)));
    collectGarbage('major');
    const t0 = performance.now();
    const all = (await connectRedis.all()) as Array<SessionData & { id: string; userId?: string }>;
    const mine = all.filter((s) => s.userId === userId);
    await Promise.all(mine.map((s) => connectRedis.destroy(s.id)));
    const ms = performance.now() - t0;
    if (mine.length !== USER_SESSIONS)
      throw new Error(`found ${mine.length} of the user's sessions`);
    if (round > 0) baselineMs.push(ms);
  }
  const crSessionCount = (await connectRedis.length()) as number;
  return { destroyMs, baselineMs, crSessionCount };
}

const compare = (a: number[], b: number[]) => {
  const paired = a.map((x, i) => x / b[i]);
  const interval = medianInterval(paired);
  return {
    ratio: round2(median(a) / median(b)),
    paired: round2(median(paired)),
    pairedInterval: interval.map(round2) as [number, number],
  };
};

/** Every store against connect-redis, and ours against its command pattern on ioredis. */
function reportCycles(
  cycles: Record<string, Record<string, number[]>>,
  contenders: Contender[],
  sessionBytes: number,
  settings: Settings,
): Record<string, unknown> {
  const figures: Record<string, unknown> = {};
  const rows: string[][] = [];
  for (const inFlight of IN_FLIGHT) {
    const per = cycles[String(inFlight)];
    const entry: Record<string, unknown> = {};
    for (const c of contenders) {
      const vs = compare(per[c.id], per['connect-redis']);
      entry[c.id] = { cyclesPerSec: Math.round(median(per[c.id])), vsConnectRedis: vs };
      rows.push([
        c.id === contenders[0].id ? `${inFlight} in flight` : '',
        c.label,
        Math.round(median(per[c.id])).toLocaleString('en'),
        c.id === 'connect-redis' ? '1.00x' : `${vs.ratio.toFixed(2)}x`,
        c.id === 'connect-redis'
          ? ''
          : `${vs.paired.toFixed(2)}x [${vs.pairedInterval[0].toFixed(2)}, ${vs.pairedInterval[1].toFixed(2)}]`,
      ]);
    }
    entry.oursVsPatternOnIoredis = compare(per.ours, per['cr-pattern/ioredis']);
    figures[`inFlight${inFlight}`] = entry;
  }
  console.log(
    `\nset + get + touch cycles/s, ${sessionBytes}-byte sessions (median of ${settings.rounds} rounds)\n`,
  );
  console.log(
    table(['scenario', 'store', 'cycles/s', 'vs connect-redis', 'paired [90% CI]'], rows),
  );
  for (const inFlight of IN_FLIGHT) {
    const o = (figures[`inFlight${inFlight}`] as { oursVsPatternOnIoredis: { paired: number } })
      .oursVsPatternOnIoredis;
    console.log(
      `ours vs connect-redis's pattern on the same ioredis client, ${inFlight} in flight: ${o.paired.toFixed(2)}x (paired)`,
    );
  }
  return figures;
}

function reportDestroy(timings: Awaited<ReturnType<typeof measureDestroy>>, settings: Settings) {
  const { destroyMs, baselineMs, crSessionCount } = timings;
  const destroy = {
    sessions: USER_SESSIONS,
    medianMs: round2(median(destroyMs)),
    p95Ms: round2(quantile(destroyMs, 0.95)),
    connectRedisAllFilterDestroyMs: round2(median(baselineMs)),
    connectRedisSessionsScanned: crSessionCount + USER_SESSIONS,
  };
  console.log(
    `\ndestroyAllForUser, ${USER_SESSIONS} sessions (${settings.destroyRounds} rounds)\n`,
  );
  console.log(
    table(
      ['operation', 'median ms', 'p95 ms'],
      [
        [
          'ours: SessionService.destroyAllForUser (one script)',
          destroy.medianMs.toFixed(2),
          destroy.p95Ms.toFixed(2),
        ],
        [
          `connect-redis: all() + filter + destroy (${destroy.connectRedisSessionsScanned} sessions)`,
          destroy.connectRedisAllFilterDestroyMs.toFixed(2),
          round2(quantile(baselineMs, 0.95)).toFixed(2),
        ],
      ],
    ),
  );
  return destroy;
}

async function run(settings: Settings, state: State): Promise<void> {
  const wall = performance.now();
  const url = await redisUrlFor(state);
  const prefix = `bench:session:${process.pid}-${Date.now().toString(36)}:`;
  state.prefix = prefix;
  const stores = await openStores(url, prefix, state);
  const versions = await readVersions(state.ioredis!);
  console.log(
    `session benchmark: node ${versions.node}, redis ${versions.redis}, ioredis ${versions.ioredis}, ` +
      `connect-redis ${versions['connect-redis']} + node-redis ${versions.redisClient}, ` +
      `express-session ${versions['express-session']}; ${settings.rounds} rounds of ${settings.sliceMs} ms per store`,
  );
  const contenders = contendersOf(stores, versions);
  const sess = makeSession('bench-user');
  const sessionBytes = JSON.stringify(sess).length;

  const cycles = await measureCycles(contenders, sess, settings);
  const timings = await measureDestroy(stores, contenders, settings);
  const figures = reportCycles(cycles, contenders, sessionBytes, settings);
  const destroy = reportDestroy(timings, settings);
  const headline = (figures.inFlight1 as Record<string, { vsConnectRedis: { paired: number } }>)
    .ours.vsConnectRedis;
  const verdict = headline.paired >= TARGET_RATIO ? 'MET' : 'MISSED';
  console.log(
    `\ntarget: ours >= ${TARGET_RATIO.toFixed(1)}x connect-redis (sequential, paired): ${headline.paired.toFixed(2)}x, ${verdict}`,
  );
  const json = {
    benchmark: 'session',
    versions,
    settings,
    sessionBytes,
    sessionIds: SESSION_IDS,
    cycles: figures,
    destroyAllForUser: destroy,
    target: TARGET_RATIO,
    verdict,
    seconds: round2((performance.now() - wall) / 1000),
  };
  console.log(`BENCH_JSON ${JSON.stringify(json)}`);
}

await runBenchmark('session', {
  readSettings,
  state: {},
  run: run,
  cleanup,
});
