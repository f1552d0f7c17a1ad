import { inspect } from 'node:util';

import type { INestApplication } from '@nestjs/common';

import {
  CacheService,
  getRedisToken,
  LockService,
  RedisInfraError,
  RedisModule,
  SessionService,
  type RedisClient,
  type RedisModuleOptions,
} from '../../src/index.js';
import { CapturingLogger, startApp } from '../support/app.js';
import {
  isAlive,
  isRedisProcess,
  sendCommand,
  uniqueConnectionName,
  uniquePrefix,
  type RespTarget,
  type ServerNode,
} from '../support/redis.js';

/** The password every failover topology runs with, to prove it never leaks. */
export const PASSWORD = 'failover-Secret-4711';

/**
 * Errors that still reach the application untyped during a failover: ioredis's own, passed
 * through by the services. They are printed with the figures; any other untyped error fails
 * the spec. Empty this list once the connection layer wraps them in a `RedisInfraError`.
 */
export const KNOWN_RAW_ERRORS: readonly RegExp[] = [
  /^ClusterAllFailedError: Failed to refresh slots cache/,
  /^Error: Too many Cluster redirections/,
  /^Error: Command timed out/,
  /^AbortError: /,
  /^ReplyError: (LOADING|READONLY|CLUSTERDOWN|TRYAGAIN|MASTERDOWN|NOSCRIPT|UNBLOCKED)\b/,
  /^Error: (read|write|connect) (ECONNRESET|ECONNREFUSED|EPIPE)/,
  /^Error: Stream isn't writeable/,
];

/** Pacing after an error, so that an instantly failing call does not spin the event loop. */
const ERROR_PAUSE_MS = 20;

const pause = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** `name: first line of message`, the form errors are grouped and reported in. */
export function describeError(error: unknown): string {
  if (error instanceof Error) {
    return `${error.name}: ${error.message.split('\n')[0].slice(0, 120)}`;
  }
  return `non-error: ${String(error).slice(0, 120)}`;
}

/**
 * A sequential INCR on one key through the application's client: every acknowledged reply must
 * be higher than every earlier one, and the final value at least the number of acknowledged
 * writes. Measures the longest interval without a successful write.
 */
export class WriteProbe {
  acknowledged = 0;
  /** Replies not above an earlier acknowledged one: the counter went back. */
  regressions = 0;
  /** Acknowledged writes a regression took back (sum of the depths). */
  rolledBack = 0;
  readonly errors: unknown[] = [];
  private previous = 0;
  private lastOkAt = performance.now();
  private longestGap = 0;
  private okTimes: number[] = [];
  private running = true;
  private readonly loop: Promise<void>;

  constructor(
    private readonly client: RedisClient,
    readonly key: string,
  ) {
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    while (this.running) {
      try {
        const value = await this.client.incr(this.key);
        const now = performance.now();
        this.longestGap = Math.max(this.longestGap, now - this.lastOkAt);
        this.lastOkAt = now;
        this.okTimes.push(now);
        this.acknowledged += 1;
        // One writer, one key: each reply must be the previous one plus one (or more, when a
        // re-sent command was applied twice). A lower one means the writes in between are gone.
        if (value <= this.previous) {
          this.regressions += 1;
          this.rolledBack += this.previous - value + 1;
        }
        this.previous = value;
      } catch (error) {
        this.errors.push(error);
        await pause(ERROR_PAUSE_MS);
      }
    }
  }

  /** Successful writes acknowledged after `since` (a `performance.now()` time). */
  successesSince(since: number): number {
    let n = 0;
    for (let i = this.okTimes.length - 1; i >= 0 && this.okTimes[i] > since; i -= 1) n += 1;
    return n;
  }

  /** Stops the loop and reads the final value. */
  async stop(): Promise<ProbeFigures> {
    this.running = false;
    await this.loop;
    const final = Number((await this.client.get(this.key)) ?? 0);
    return {
      acknowledged: this.acknowledged,
      final,
      lost: Math.max(this.rolledBack, this.acknowledged - final),
      regressions: this.regressions,
      duplicated: Math.max(0, final - this.acknowledged),
      writeGapMs: Math.round(this.longestGap),
      errors: this.errors.length,
    };
  }
}

/** What the INCR probe saw in one failover. */
export interface ProbeFigures {
  acknowledged: number;
  final: number;
  /** Acknowledged writes the data set no longer holds. */
  lost: number;
  regressions: number;
  /** Increments applied twice (a command re-sent after its reply was lost). */
  duplicated: number;
  /** Longest interval without a successful write, in ms: reported, never asserted. */
  writeGapMs: number;
  errors: number;
}

/** One service call that failed, and where. */
export interface ServiceFailure {
  op: string;
  error: unknown;
}

/**
 * What an application does meanwhile: cache-aside reads, a session created and read back, a
 * section under a lock; sequentially, counting what worked and keeping what failed.
 */
export class ServiceLoop {
  ok = 0;
  readonly failures: ServiceFailure[] = [];
  /** Sessions created (acknowledged) but not found right after. */
  sessionsMissing = 0;
  private okTimes: number[] = [];
  private running = true;
  private readonly loop: Promise<void>;

  constructor(
    private readonly app: INestApplication,
    /** A hash tag the cache keys and the lock share with the probe (one slot on a cluster). */
    private readonly tag: string,
  ) {
    this.loop = this.run();
  }

  private async step(op: string, call: () => Promise<unknown>): Promise<void> {
    try {
      await call();
      this.ok += 1;
      this.okTimes.push(performance.now());
    } catch (error) {
      this.failures.push({ op, error });
      await pause(ERROR_PAUSE_MS);
    }
  }

  private async run(): Promise<void> {
    const cache = this.app.get(CacheService);
    const sessions = this.app.get(SessionService);
    const locks = this.app.get(LockService);
    // Without its braces, the module puts the tag's text in braces itself: same slot.
    const bare = this.tag.replace(/^\{|\}$/g, '');
    for (let i = 0; this.running; i += 1) {
      await this.step('cache.getOrSet', () => cache.getOrSet(bare, () => i, { ttl: 10_000 }));
      await this.step('sessions.create+get', async () => {
        const session = await sessions.create('failover-user', { i });
        if ((await sessions.get(session.id)) === null) this.sessionsMissing += 1;
      });
      await this.step('locks.withLock', () =>
        locks.withLock(bare, async () => i, { ttl: 2_000, wait: 4_000 }),
      );
    }
  }

  /** Successful calls after `since`. */
  successesSince(since: number): number {
    let n = 0;
    for (let i = this.okTimes.length - 1; i >= 0 && this.okTimes[i] > since; i -= 1) n += 1;
    return n;
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }
}

/** An application with the module, on its own prefix and connection name. */
export async function startFailoverApp(
  options: RedisModuleOptions,
): Promise<{ app: INestApplication; client: RedisClient; logger: CapturingLogger }> {
  const logger = new CapturingLogger();
  const app = await startApp(
    {
      imports: [
        RedisModule.forRoot({
          ...options,
          keyPrefix: uniquePrefix('fo'),
          connectionName: uniqueConnectionName('failover'),
          // Reads must reach Redis, so that "works again" is about Redis, not memory.
          cache: { l1: false },
          // ioredis ends a socket it closes (its slot refresher's too) with a timer of this
          // length, which can outlive app.close() by up to that much.
          shutdownTimeout: 500,
        }),
      ],
    },
    logger,
  );
  return { app, client: app.get<RedisClient>(getRedisToken()), logger };
}

/** Errors grouped as `name: message` with their counts, most frequent first. */
export function groupErrors(errors: unknown[]): string {
  const counts = new Map<string, number>();
  for (const e of errors) {
    const text = typeof e === 'string' ? e : describeError(e);
    counts.set(text, (counts.get(text) ?? 0) + 1);
  }
  return [...counts]
    .sort((a, b) => b[1] - a[1])
    .map(([text, n]) => `${n}× ${text}`)
    .join(' | ');
}

/** Whether an error is typed (a module error) or a raw one we know reaches the app today. */
export function classify(error: unknown): 'typed' | 'known-raw' | 'unknown' {
  if (error instanceof RedisInfraError) return 'typed';
  const text = describeError(error);
  return KNOWN_RAW_ERRORS.some((re) => re.test(text)) ? 'known-raw' : 'unknown';
}

/** Every place a password could hide in an error: message, properties, cause chain. */
export function leaksPassword(error: unknown, password: string): boolean {
  return inspect(error, { depth: 10, showHidden: true }).includes(password);
}

/**
 * After a failover, with the probes stopped: cache, sessions and locks work on the first call.
 * Returns what each gave back, for the assertion.
 */
export async function servicesWorkAgain(app: INestApplication, tag: string) {
  const cache = app.get(CacheService);
  const sessions = app.get(SessionService);
  const locks = app.get(LockService);
  const key = `${tag}:after`;
  const loaded = await cache.getOrSet(key, () => 'loaded', { ttl: 30_000 });
  const cached = await cache.get<string>(key);
  const session = await sessions.create('after-user', { after: true });
  const readBack = await sessions.get(session.id);
  const underLock = await locks.withLock(`${tag}:after`, async () => 'locked', { wait: 5_000 });
  return { loaded, cached, session: readBack?.data, underLock };
}

/** SIGKILL a server we started (checked to be a redis-server in its own directory). */
export async function sigkill(node: ServerNode): Promise<void> {
  if (!isRedisProcess(node.pid, node.dir)) {
    throw new Error(`pid ${node.pid} is not the redis-server of ${node.dir}`);
  }
  process.kill(node.pid, 'SIGKILL');
  const deadline = Date.now() + 5_000;
  while (isAlive(node.pid)) {
    if (Date.now() > deadline) throw new Error(`pid ${node.pid} survived SIGKILL`);
    await pause(10);
  }
}

/** Turns on `requirepass` on data nodes (masterauth first, so replication keeps working). */
export async function requirePassword(nodes: RespTarget[], password: string): Promise<void> {
  for (const node of nodes) await sendCommand(node, ['CONFIG', 'SET', 'masterauth', password]);
  for (const node of nodes) await sendCommand(node, ['CONFIG', 'SET', 'requirepass', password]);
}

/** One node's line of `CLUSTER NODES`. */
export interface ClusterNodeView {
  id: string;
  port: number;
  flags: string[];
  masterId: string | null;
  /** Slot ranges `[from, to]` a master serves (importing/migrating markers left out). */
  slots: Array<[number, number]>;
}

/** `CLUSTER NODES` as `node` sees it. */
export async function clusterNodes(node: RespTarget): Promise<ClusterNodeView[]> {
  const text = String(await sendCommand(node, ['CLUSTER', 'NODES']));
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((line) => {
      const [id, addr, flags, master, , , , , ...slots] = line.trim().split(' ');
      return {
        id,
        port: Number(/:(\d+)@/.exec(addr)?.[1]),
        flags: flags.split(','),
        masterId: master === '-' ? null : master,
        slots: slots
          .filter((s) => !s.startsWith('['))
          .map((s) => {
            const [from, to] = s.split('-').map(Number);
            return [from, to ?? from] as [number, number];
          }),
      };
    });
}

/** The master that `node` believes serves `slot`. */
export function ownerOf(view: ClusterNodeView[], slot: number): ClusterNodeView | undefined {
  return view.find(
    (n) => n.flags.includes('master') && n.slots.some(([from, to]) => slot >= from && slot <= to),
  );
}

/** The compact line each case prints, and what the report quotes. */
export function figuresLine(
  label: string,
  probe: ProbeFigures,
  loop: ServiceLoop,
  probeErrors: unknown[],
): string {
  const service = loop.failures.map((f) => f.error);
  const typed = service.filter((e) => classify(e) === 'typed').length;
  return (
    `[failover] ${label}: write gap ${probe.writeGapMs} ms, acknowledged ${probe.acknowledged}, ` +
    `lost ${probe.lost} (regressions ${probe.regressions}, duplicated ${probe.duplicated}), ` +
    `probe errors ${probe.errors}${probeErrors.length ? ` [${groupErrors(probeErrors)}]` : ''}; ` +
    `services ${loop.ok} ok / ${service.length} failed (typed ${typed})` +
    `${service.length ? ` [${groupErrors(loop.failures.map((f) => `${f.op} ${describeError(f.error)}`))}]` : ''}` +
    `, sessions missing right after create ${loop.sessionsMissing}`
  );
}
