import { Inject, Injectable, type OnModuleDestroy } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import { Observable, Subject, share, takeUntil } from 'rxjs';

import { CacheService, type CacheStats } from '../cache/cache.service.js';
import { RedisConnection } from '../connection/redis-connection.js';
import { getRedisConnectionToken } from '../connection/tokens.js';
import type { SlowlogEntry } from '../diagnostics/diagnostics.js';
import { LockService } from '../lock/lock.service.js';
import { PubSubService } from '../pubsub/pubsub.service.js';
import type { PubSubStats } from '../pubsub/pubsub.types.js';
import { RedisService, type RedisStats } from '../redis.service.js';
import { StreamsService } from '../streams/streams.service.js';
import { recordCommands } from '../telemetry/command-recorder.js';
import { traceChannel, type RedisTraceContext, type RedisTraceName } from '../telemetry/tracing.js';

/** Token of the resolved dashboard options. */
export const DASHBOARD_OPTIONS = Symbol('nestjs-redis-infra:dashboard-options');

/** The dashboard's options once validated. */
export interface ResolvedDashboardOptions {
  path: string;
  interval: number;
  streams: ReadonlyArray<{ stream: string; group?: string }>;
  slowlogEntries: number;
}

/** One sample the page draws: everything counted since the previous one, and the gauges now. */
export interface DashboardSample {
  at: number;
  /** Commands of the command connection since the previous sample. */
  commands: { count: number; errors: number; avgMs: number | null; maxMs: number | null };
  /** `PING` round trip (the slowest master's), ms; `null` when it failed. */
  pingMs: number | null;
  server: RedisStats | null;
  connections: { open: number; max: number };
  cache: CacheStats | null;
  pubsub: PubSubStats | null;
  /** `LockService.stats()`: locks held and callers waiting now, acquired and failed (timeouts and losses) since the start. */
  locks: { held: number; waiting: number; acquired: number; failed: number };
  /** Session operations since the start, by name. */
  sessions: Record<string, number>;
  streams: Array<{ stream: string; group: string; lag: number | null; pending: number }>;
  /** The latest slow log entries (refreshed every fifth sample). */
  slowlog: Array<Pick<SlowlogEntry, 'id' | 'durationMicros' | 'command'> & { at: string }>;
  /** Probes that failed this time (what the page shows instead of a figure). */
  errors: string[];
}

const SLOWLOG_EVERY = 5;

/**
 * Samples the figures the dashboard draws, once per interval while at least one page is
 * open, shared by every open page: a second viewer adds no Redis round trip. Nothing runs
 * and the command path is untouched while no page is open.
 */
@Injectable()
export class RedisDashboardSampler implements OnModuleDestroy {
  /** The stream every open page subscribes to. */
  readonly samples: Observable<DashboardSample>;

  private window = { count: 0, errors: 0, totalMs: 0, maxMs: 0 };
  private readonly locks = { held: 0, waiting: 0, acquired: 0, failed: 0 };
  private readonly sessions: Record<string, number> = {};
  private slowlog: DashboardSample['slowlog'] = [];
  private tick = 0;
  private readonly stops = new Set<() => void>();
  /** Ends every open page's stream at shutdown: an open response would hold the HTTP server. */
  private readonly closing = new Subject<void>();

  constructor(
    @Inject(getRedisConnectionToken()) private readonly connection: RedisConnection,
    @Inject(DASHBOARD_OPTIONS) private readonly options: ResolvedDashboardOptions,
    private readonly moduleRef: ModuleRef,
  ) {
    this.samples = new Observable<DashboardSample>((subscriber) => {
      const stop = this.start();
      let timer: NodeJS.Timeout | undefined;
      let closed = false;
      const loop = async (): Promise<void> => {
        const sample = await this.sample();
        if (closed) return;
        subscriber.next(sample);
        timer = setTimeout(() => void loop(), this.options.interval);
      };
      void loop();
      return () => {
        closed = true;
        clearTimeout(timer);
        stop();
      };
    }).pipe(takeUntil(this.closing), share());
  }

  onModuleDestroy(): void {
    this.closing.next();
    this.closing.complete();
    for (const stop of [...this.stops]) stop();
  }

  /** Hooks the command connection and the lock and session channels while a page is open. */
  private start(): () => void {
    const undo: Array<() => void> = [];
    undo.push(
      recordCommands(this.connection.client, (_op, seconds, errorType) => {
        const ms = seconds * 1000;
        const w = this.window;
        w.count++;
        w.totalMs += ms;
        if (ms > w.maxMs) w.maxMs = ms;
        if (errorType !== undefined) w.errors++;
      }),
    );
    const listen = (
      name: RedisTraceName,
      onStart: () => void,
      onDone: (ctx: RedisTraceContext, failed: boolean) => void,
    ): void => {
      const running = new WeakSet<object>();
      const done = (ctx: RedisTraceContext & object, failed: boolean): void => {
        if (!running.delete(ctx)) return;
        onDone(ctx, failed);
      };
      const handlers = {
        start: (ctx: RedisTraceContext & object) => {
          running.add(ctx);
          onStart();
        },
        end: () => undefined,
        asyncStart: () => undefined,
        asyncEnd: (ctx: RedisTraceContext & object) => done(ctx, false),
        error: (ctx: RedisTraceContext & object) => done(ctx, true),
      };
      traceChannel(name).subscribe(handlers);
      undo.push(() => traceChannel(name).unsubscribe(handlers));
    };
    listen(
      'lock.acquire',
      () => this.locks.waiting++,
      (ctx, failed) => {
        this.locks.waiting--;
        if (failed || (ctx.outcome !== undefined && ctx.outcome !== 'acquired'))
          this.locks.failed++;
        else this.locks.acquired++;
      },
    );
    listen(
      'lock.withLock',
      () => this.locks.held++,
      () => this.locks.held--,
    );
    for (const op of ['create', 'get', 'touch', 'update', 'rotate', 'destroy'] as const) {
      listen(
        `session.${op}`,
        () => undefined,
        () => {
          this.sessions[op] = (this.sessions[op] ?? 0) + 1;
        },
      );
    }
    const stop = (): void => {
      this.stops.delete(stop);
      for (const u of undo.splice(0)) u();
      this.locks.held = 0;
      this.locks.waiting = 0;
    };
    this.stops.add(stop);
    return stop;
  }

  private async sample(): Promise<DashboardSample> {
    const errors: string[] = [];
    const w = this.window;
    this.window = { count: 0, errors: 0, totalMs: 0, maxMs: 0 };
    const redis = this.optional(RedisService);
    const cache = this.optional(CacheService);
    const pubsub = this.optional(PubSubService);
    const streams = this.optional(StreamsService);
    const lockStats = this.optional(LockService)?.stats();
    const guard = async <T>(what: string, fn: () => Promise<T>): Promise<T | null> => {
      try {
        return await fn();
      } catch (err) {
        errors.push(`${what}: ${this.connection.scrub(String((err as Error)?.message ?? err))}`);
        return null;
      }
    };
    const slowlogDue = this.tick++ % SLOWLOG_EVERY === 0 && this.options.slowlogEntries > 0;
    const [pingMs, server, streamRows, report] = await Promise.all([
      guard('ping', () => this.connection.pingLatency()),
      redis ? guard('stats', () => redis.stats()) : Promise.resolve(null),
      streams ? this.streamRows(streams, guard) : Promise.resolve([]),
      slowlogDue && redis
        ? guard('slowlog', () =>
            redis.diagnostics({ slowlogEntries: this.options.slowlogEntries, timeout: 1000 }),
          )
        : Promise.resolve(null),
    ]);
    if (report) {
      this.slowlog = report.nodes
        .flatMap((n) => n.slowlog)
        .sort((a, b) => b.at.getTime() - a.at.getTime())
        .slice(0, this.options.slowlogEntries)
        .map((e) => ({
          id: e.id,
          at: e.at.toISOString(),
          durationMicros: e.durationMicros,
          // The command name and how many arguments: arguments may hold keys or values.
          command: [
            e.command[0] ?? '?',
            ...(e.command.length > 1 ? [`+${e.command.length - 1} args`] : []),
          ],
        }));
    }
    return {
      at: Date.now(),
      commands: {
        count: w.count,
        errors: w.errors,
        avgMs: w.count ? w.totalMs / w.count : null,
        maxMs: w.count ? w.maxMs : null,
      },
      pingMs,
      server,
      connections: {
        open: this.connection.openConnections,
        max: this.connection.config.maxConnections,
      },
      cache: cache ? cache.stats() : null,
      pubsub: pubsub ? pubsub.stats() : null,
      // The service's own figures count every lock of this process since it started (also
      // those taken before a page was opened); the trace channels are the fallback.
      locks: lockStats
        ? {
            held: lockStats.held,
            waiting: lockStats.waiting,
            acquired: lockStats.acquired,
            failed: lockStats.timeouts + lockStats.losses,
          }
        : { ...this.locks },
      sessions: { ...this.sessions },
      streams: streamRows,
      slowlog: this.slowlog,
      errors,
    };
  }

  private async streamRows(
    streams: StreamsService,
    guard: <T>(what: string, fn: () => Promise<T>) => Promise<T | null>,
  ): Promise<DashboardSample['streams']> {
    const rows: DashboardSample['streams'] = [];
    await Promise.all(
      this.options.streams.map(async ({ stream, group }) => {
        const stats = await guard(`stream ${stream}`, () => streams.stats(stream));
        for (const g of stats?.groups ?? []) {
          if (group === undefined || g.name === group) {
            rows.push({ stream, group: g.name, lag: g.lag, pending: g.pending });
          }
        }
      }),
    );
    return rows.sort((a, b) => `${a.stream}/${a.group}`.localeCompare(`${b.stream}/${b.group}`));
  }

  private optional<T>(type: abstract new (...args: never[]) => T): T | undefined {
    try {
      return this.moduleRef.get(type, { strict: false });
    } catch {
      return undefined;
    }
  }
}
