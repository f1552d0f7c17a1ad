// `npm run chaos [-- --seconds N]`: a bounded chaos run against the built module (dist/).
//
// Starts its own redis-server (loopback, free port, its own directory), an HTTP app with the
// module, and drives mixed cache / session / lock traffic through it from several concurrent
// loops while the module's command connection is killed every 5 s (CLIENT KILL ID of the
// connections named `<connectionName>:command`) and the subscriber every 7 s (CLIENT KILL TYPE
// pubsub). It prints the failed requests (non-2xx or no answer), whether a counter updated
// under `withLock` with a plain GET + SET equals the number of sections that completed, the
// longest stall, the reconnects and heap growth, and stops its server by pid in every case.
//
// Every failed request is classified. Honest outcomes: a typed module error (`RedisInfraError`)
// that tells the truth, e.g. a `LockLostError` whose lock Redis no longer held for us (checked
// on the server right away: the key gone or another token in it, and our token not among the
// recently released ones). Defects: an untyped error, a request without an answer, a *false*
// loss (Redis still held our token, or had released it for us), an inexact counter, a session
// lost right after create, heap growth over LEAK_MB. Exits 0 when there is no defect, 1
// otherwise (2 when the run itself could not be done).
//
// Options: --seconds N (default 60, 5..600), --kill-every MS (5000), --pubsub-kill-every MS (7000).

import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { Controller, Get, Inject, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';

import { sendCommand, startStandalone } from './redis/servers.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist', 'index.js');
if (!fs.existsSync(dist)) {
  console.error('chaos: dist/index.js is missing: run `npm run build` first (npm run chaos does)');
  process.exit(2);
}
const {
  CacheService,
  LockLostError,
  LockService,
  RedisInfraError,
  RedisModule,
  SessionService,
  getRedisToken,
} = await import(dist);

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

function intOption(values, name, fallback, min, max) {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    console.error(
      `chaos: --${name} must be an integer between ${min} and ${max}, got ${JSON.stringify(raw)}`,
    );
    process.exit(2);
  }
  return n;
}

const { values } = parseArgs({
  options: {
    seconds: { type: 'string' },
    'kill-every': { type: 'string' },
    'pubsub-kill-every': { type: 'string' },
  },
});
const SECONDS = intOption(values, 'seconds', 60, 5, 600);
const KILL_EVERY_MS = intOption(values, 'kill-every', 5_000, 500, 60_000);
const PUBSUB_KILL_EVERY_MS = intOption(values, 'pubsub-kill-every', 7_000, 500, 60_000);
/** Concurrent request loops per kind of traffic. */
const LOOPS = { cache: 3, session: 2, lock: 2 };
/** The whole run is abandoned (exit 2) if it has not finished this long after its end. */
const WATCHDOG_GRACE_MS = 30_000;
const CONNECTION_NAME = `chaos-${randomUUID().slice(0, 8)}`;
const COUNTER_KEY = 'chaos:counter';
const KEY_PREFIX = 'chaos:';
/** The lock's keys on the server (the module's layout: `lock:{resource}`, `:fence`). */
const LOCK_KEY = `${KEY_PREFIX}lock:{chaos:counter}`;
/** Heap growth over the run counted as a leak, in MB (a 60 s run grows 5-10 MB). */
const LEAK_MB = 64;
/** The server, for the routes' evidence checks. */
const shared = { server: undefined };

// ---------------------------------------------------------------------------------------------
// The application: one controller over the module's services
// ---------------------------------------------------------------------------------------------

/** What the lock route counted: sections whose write Redis acknowledged. */
const sections = { completed: 0 };
/** Why the routes failed, as `verdict route: name: message`, counted (HTTP only says 500). */
const routeErrors = new Map();
/** Route failures by verdict: `honest` (typed and true) or `defect`. */
const verdicts = { honest: 0, defect: 0 };

function count(map, text) {
  map.set(text, (map.get(text) ?? 0) + 1);
}

/**
 * Runs a route, classifying a failure before Nest turns it into a 500: a typed module error
 * is honest unless `judge` (given the error) finds it false; anything else is a defect.
 */
async function recorded(route, fn, judge = async () => null) {
  try {
    return await fn();
  } catch (error) {
    let verdict = error instanceof RedisInfraError ? 'honest' : 'defect';
    let evidence = '';
    if (verdict === 'honest') {
      const found = await judge(error).catch((e) => ({ false: false, why: `unchecked: ${e}` }));
      if (found) {
        if (found.false) verdict = 'defect';
        evidence = ` [${found.why}]`;
      }
    }
    verdicts[verdict] += 1;
    const message = String(error?.message).split('\n')[0];
    // A lock loss's reason is at the end of its message: keep it.
    const shown =
      message.length > 160 ? `${message.slice(0, 60)} … ${message.slice(-100)}` : message;
    count(routeErrors, `${verdict} ${route}: ${error?.name}: ${shown}${evidence}`);
    throw error;
  }
}

/**
 * A `LockLostError` is true when Redis no longer holds the lock for us: the key is gone or
 * carries another token, and our token is not among the recently released ones (a release
 * that ran but whose reply was lost). Read on the server right away.
 */
async function judgeLockLoss(error, token) {
  if (!(error instanceof LockLostError) || token === undefined) return null;
  const [current, released] = await Promise.all([
    sendCommand(shared.server, ['GET', LOCK_KEY]),
    sendCommand(shared.server, ['HGET', `${LOCK_KEY}:fence`, 'r']),
  ]);
  if (current === token) return { false: true, why: 'FALSE loss: the key still holds our token' };
  if (String(released ?? '').includes(token)) {
    return { false: true, why: 'FALSE loss: Redis released it for us' };
  }
  return {
    false: false,
    why: current ? 'true loss: another token holds the key' : 'true loss: the key is gone',
  };
}

/** Sessions created, then not found by the very next read. */
const sessionsLost = { count: 0 };

class ChaosController {
  constructor(cache, sessions, locks, redis) {
    this.cache = cache;
    this.sessions = sessions;
    this.locks = locks;
    this.redis = redis;
    this.round = 0;
  }

  cacheRoute() {
    return recorded('cache', () => this.cacheRouteImpl());
  }

  async cacheRouteImpl() {
    this.round += 1;
    const key = `item:${this.round % 40}`;
    if (this.round % 25 === 0) await this.cache.invalidateTags([`group:${this.round % 4}`]);
    if (this.round % 10 === 0)
      await this.cache.set(
        key,
        { v: this.round },
        { ttl: 5_000, tags: [`group:${this.round % 4}`] },
      );
    return this.cache.getOrSet(key, () => ({ v: this.round }), {
      ttl: 2_000,
      tags: [`group:${this.round % 4}`],
    });
  }

  sessionRoute() {
    return recorded('session', () => this.sessionRouteImpl());
  }

  async sessionRouteImpl() {
    const user = `user-${this.round % 5}`;
    const session = await this.sessions.create(user, { n: this.round });
    const read = await this.sessions.get(session.id);
    if (read === null) {
      sessionsLost.count += 1;
      throw new Error('session not found right after create');
    }
    await this.sessions.update(session.id, { seen: true });
    await this.sessions.destroy(session.id);
    return { ok: true };
  }

  lockRoute() {
    const held = { token: undefined };
    return recorded(
      'lock',
      () => this.lockRouteImpl(held),
      (error) => judgeLockLoss(error, held.token),
    );
  }

  async lockRouteImpl(held) {
    // A plain read-modify-write: exact only if the sections never overlap.
    await this.locks.withLock(
      'chaos:counter',
      async (lock) => {
        held.token = lock.token;
        const current = Number((await this.redis.get(COUNTER_KEY)) ?? 0);
        await this.redis.set(COUNTER_KEY, String(current + 1));
        sections.completed += 1;
      },
      { ttl: 5_000, wait: 10_000 },
    );
    return { ok: true };
  }
}

Controller('chaos')(ChaosController);
for (const [index, token] of [
  CacheService,
  SessionService,
  LockService,
  getRedisToken(),
].entries()) {
  Inject(token)(ChaosController, undefined, index);
}
for (const [method, route] of [
  ['cacheRoute', 'cache'],
  ['sessionRoute', 'session'],
  ['lockRoute', 'lock'],
]) {
  Get(route)(
    ChaosController.prototype,
    method,
    Object.getOwnPropertyDescriptor(ChaosController.prototype, method),
  );
}

/** Keeps the application's log lines, counted by level (printed at the end, not as they come). */
class CountingLogger {
  constructor() {
    this.counts = {};
    this.samples = [];
  }
  add(level, message) {
    this.counts[level] = (this.counts[level] ?? 0) + 1;
    if (level !== 'log' && this.samples.length < 8)
      this.samples.push(`${level}: ${String(message).slice(0, 160)}`);
  }
  log(m) {
    this.add('log', m);
  }
  error(m) {
    this.add('error', m);
  }
  warn(m) {
    this.add('warn', m);
  }
  debug(m) {
    this.add('debug', m);
  }
  verbose(m) {
    this.add('verbose', m);
  }
}

// ---------------------------------------------------------------------------------------------
// Traffic and faults
// ---------------------------------------------------------------------------------------------

const stats = {
  requests: 0,
  ok: 0,
  failed: 0,
  noAnswer: 0,
  failures: new Map(), // `route status: body` -> count
  maxLatencyMs: 0,
  lastOkAt: 0,
  longestStallMs: 0,
  kills: { command: 0, pubsub: 0, rounds: 0, foundNone: 0 },
};

function recordFailure(route, what) {
  stats.failed += 1;
  const text = `${route} ${what}`.slice(0, 200);
  stats.failures.set(text, (stats.failures.get(text) ?? 0) + 1);
}

async function requestLoop(baseUrl, route, until) {
  while (performance.now() < until) {
    const started = performance.now();
    stats.requests += 1;
    try {
      const response = await fetch(`${baseUrl}/chaos/${route}`, {
        signal: AbortSignal.timeout(30_000),
      });
      const body = await response.text();
      if (response.status >= 200 && response.status < 300) {
        stats.ok += 1;
        const now = performance.now();
        stats.longestStallMs = Math.max(stats.longestStallMs, now - stats.lastOkAt);
        stats.lastOkAt = now;
      } else {
        recordFailure(route, `${response.status}: ${body.slice(0, 120)}`);
      }
    } catch (error) {
      stats.noAnswer += 1;
      recordFailure(route, `no answer: ${error.message}`);
    }
    stats.maxLatencyMs = Math.max(stats.maxLatencyMs, performance.now() - started);
  }
}

async function killOurCommandConnections(server) {
  const list = String(await sendCommand(server, ['CLIENT', 'LIST']));
  let killed = 0;
  for (const line of list.split('\n')) {
    if (!line.includes(` name=${CONNECTION_NAME}:command `)) continue;
    const id = /(?:^|\s)id=(\d+)/.exec(line)?.[1];
    if (id)
      killed += Number(await sendCommand(server, ['CLIENT', 'KILL', 'ID', id]).catch(() => 0));
  }
  return killed;
}

/** Runs `fault` every `everyMs` until `until`; counts what it did. */
async function faultLoop(everyMs, until, fault) {
  for (let next = performance.now() + everyMs; next < until; next += everyMs) {
    await delay(Math.max(0, next - performance.now()));
    await fault().catch((error) => console.error(`chaos: fault failed: ${error.message}`));
  }
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

const mb = (bytes) => (bytes / 1024 / 1024).toFixed(1);

function heapUsed() {
  globalThis.gc?.();
  return process.memoryUsage().heapUsed;
}

/** Gives up (exit 2, the server stopped) if the run has not finished long after its end. */
function startWatchdog(currentServer) {
  const watchdog = setTimeout(
    () => {
      console.error(`chaos: not finished ${WATCHDOG_GRACE_MS} ms after its end: giving up`);
      Promise.resolve(currentServer()?.stop())
        .catch(() => {})
        .finally(() => process.exit(2));
    },
    SECONDS * 1000 + WATCHDOG_GRACE_MS,
  );
  watchdog.unref();
  return watchdog;
}

/** The HTTP app with the module on `server`, not listening yet. */
function createApp(server, logger) {
  class ChaosModule {}
  Module({
    imports: [
      RedisModule.forRoot({
        url: server.url,
        connectionName: CONNECTION_NAME,
        keyPrefix: KEY_PREFIX,
      }),
    ],
    controllers: [ChaosController],
  })(ChaosModule);
  return NestFactory.create(ChaosModule, { logger });
}

/** Listens on a free loopback port; returns the base URL. */
async function listenOnLoopback(app) {
  await app.listen(0, '127.0.0.1');
  return (await app.getUrl()).replace('[::1]', '127.0.0.1');
}

/** Every route once, so the subscriber exists and scripts are loaded. */
async function warmUp(baseUrl) {
  for (const route of ['cache', 'session', 'lock']) {
    const response = await fetch(`${baseUrl}/chaos/${route}`, {
      signal: AbortSignal.timeout(10_000),
    });
    if (!response.ok)
      throw new Error(
        `warm-up: /chaos/${route} answered ${response.status}: ${await response.text()}`,
      );
  }
}

async function readCounter(server) {
  return Number((await sendCommand(server, ['GET', `chaos:${COUNTER_KEY}`])) ?? 0);
}

/** The request loops and the two fault loops, until `until`. */
function runTrafficAndFaults(baseUrl, server, until) {
  return Promise.all([
    ...Object.entries(LOOPS).flatMap(([route, n]) =>
      Array.from({ length: n }, () => requestLoop(baseUrl, route, until)),
    ),
    faultLoop(KILL_EVERY_MS, until, async () => {
      const n = await killOurCommandConnections(server);
      stats.kills.command += n;
      stats.kills.rounds += 1;
      if (n === 0) stats.kills.foundNone += 1;
    }),
    faultLoop(PUBSUB_KILL_EVERY_MS, until, async () => {
      stats.kills.pubsub += Number(await sendCommand(server, ['CLIENT', 'KILL', 'TYPE', 'pubsub']));
    }),
  ]);
}

/** The defects of a run, by kind, and their total. */
function countDefects({ exact, heapBefore, heapAfter }) {
  const heapGrowthMb = (heapAfter - heapBefore) / 1024 / 1024;
  // Failed requests the routes did not classify (an error outside them, a hang, a crash).
  const unexplained = Math.max(
    0,
    stats.failed - stats.noAnswer - verdicts.honest - verdicts.defect,
  );
  const defects = {
    'untyped or false errors': verdicts.defect,
    'requests without an answer': stats.noAnswer,
    'failures outside the routes': unexplained,
    'inexact counter': exact ? 0 : 1,
    'sessions lost right after create': sessionsLost.count,
    [`heap growth over ${LEAK_MB} MB`]: heapGrowthMb > LEAK_MB ? 1 : 0,
  };
  const defectCount = Object.values(defects).reduce((a, b) => a + b, 0);
  return { defects, defectCount };
}

function printSummary(run, { defects, defectCount }, logger) {
  const { elapsed, counter, completed, exact, heapBefore, heapAfter } = run;
  console.log(
    [
      `chaos: ${stats.requests} requests in ${elapsed.toFixed(1)} s (${Math.round(stats.requests / elapsed)}/s), ` +
        `${stats.ok} ok, ${stats.failed} failed (non-2xx or no answer)`,
      ...[...stats.failures]
        .sort((a, b) => b[1] - a[1])
        .slice(0, 10)
        .map(([t, n]) => `  ${n}× ${t}`),
      ...[...routeErrors]
        .sort((a, b) => b[1] - a[1])
        .slice(0, 10)
        .map(([t, n]) => `  ${n}× ${t}`),
      `counter under withLock: ${counter}, sections completed: ${completed} -> ${exact ? 'exact' : 'INEXACT'}`,
      `sessions not found right after create: ${sessionsLost.count}`,
      `longest stall (no successful request): ${Math.round(stats.longestStallMs)} ms; slowest request: ${Math.round(stats.maxLatencyMs)} ms`,
      `kills: command connection ${stats.kills.command} in ${stats.kills.rounds} rounds (${stats.kills.foundNone} found none), subscriber ${stats.kills.pubsub}`,
      `heap: ${mb(heapBefore)} MB -> ${mb(heapAfter)} MB (${heapAfter >= heapBefore ? '+' : ''}${mb(heapAfter - heapBefore)} MB)` +
        (globalThis.gc ? '' : ' (no --expose-gc: indicative only)'),
      `app log lines by level: ${JSON.stringify(logger.counts)}`,
      `classification: ${verdicts.honest} honest typed outcomes, ${defectCount} defects ` +
        JSON.stringify(defects),
      ...logger.samples.map((s) => `  ${s}`),
    ].join('\n'),
  );
}

async function main() {
  const baseDir = fs.mkdtempSync(path.join(os.tmpdir(), 'nestjs-redis-infra-chaos-'));
  let server;
  let app;
  const watchdog = startWatchdog(() => server);
  try {
    server = await startStandalone({ baseDir });
    shared.server = server;
    const logger = new CountingLogger();
    app = await createApp(server, logger);
    const baseUrl = await listenOnLoopback(app);

    await warmUp(baseUrl);
    const completedBefore = sections.completed;
    const counterBefore = await readCounter(server);
    const heapBefore = heapUsed();

    console.log(
      `chaos: ${SECONDS} s on ${server.host}:${server.port}; command connection killed every ${KILL_EVERY_MS} ms, ` +
        `subscriber every ${PUBSUB_KILL_EVERY_MS} ms; loops: ${JSON.stringify(LOOPS)}`,
    );
    const started = performance.now();
    const until = started + SECONDS * 1000;
    stats.lastOkAt = started;
    await runTrafficAndFaults(baseUrl, server, until);
    const elapsed = (performance.now() - started) / 1000;
    const heapAfter = heapUsed();
    const counter = (await readCounter(server)) - counterBefore;
    const completed = sections.completed - completedBefore;

    await app.close();
    app = undefined;

    const exact = counter === completed;
    const verdict = countDefects({ exact, heapBefore, heapAfter });
    printSummary({ elapsed, counter, completed, exact, heapBefore, heapAfter }, verdict, logger);
    if (stats.kills.command === 0) {
      console.log('chaos: no command connection was killed: the run proved nothing');
      return 2;
    }
    console.log(`chaos: ${verdict.defectCount > 0 ? 'FAILED' : 'passed'}`);
    return verdict.defectCount > 0 ? 1 : 0;
  } finally {
    clearTimeout(watchdog);
    if (app) await app.close().catch(() => {});
    if (server) await server.stop();
    fs.rmSync(baseDir, { recursive: true, force: true });
  }
}

process.exitCode = await main().catch((error) => {
  console.error(`chaos: ${error.stack ?? error}`);
  return 2;
});
