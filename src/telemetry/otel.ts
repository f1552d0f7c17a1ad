import type * as OpenTelemetryApi from '@opentelemetry/api';
import type {
  Attributes,
  BatchObservableResult,
  Meter,
  Observable,
  ObservableResult,
} from '@opentelemetry/api';

import { DEFAULT_CONNECTION_NAME } from '../config/defaults.js';
import type { LockStats } from '../lock/lock-stats.js';
import type { PubSubStats } from '../pubsub/pubsub.types.js';
import type { StreamCounters } from '../streams/stream-consumer.js';

import { DURATION_BUCKETS, instrumentCommandDuration } from './command-duration.js';
import type { recordCommands } from './command-recorder.js';
import { instrumentLocks } from './lock-metrics.js';
import {
  traceChannel,
  type RedisTraceContext,
  type RedisTraceName,
  type SpanFactory,
} from './tracing.js';

/** The `@opentelemetry/api` module, when the application has it. */
export type OtelApi = typeof OpenTelemetryApi;

/** Name of the meter and the tracer. */
export const INSTRUMENTATION_SCOPE = 'nestjs-redis-infra';

// A variable, not a literal: the peer is optional, and bundlers must not insist on it.
const OTEL_PACKAGE = '@opentelemetry/api';

/** Loads `@opentelemetry/api` if the application installed it; `undefined` otherwise. */
export async function loadOpenTelemetry(): Promise<OtelApi | undefined> {
  try {
    const m = (await import(OTEL_PACKAGE)) as OtelApi & { default?: OtelApi };
    return typeof m.metrics?.getMeter === 'function' ? m : m.default;
  } catch {
    return undefined;
  }
}

/** `true` when no metrics SDK is registered: instruments would drop everything. */
export function isNoopMeter(api: OtelApi, meter: Meter): boolean {
  return meter.constructor === api.createNoopMeter().constructor;
}

/**
 * Spans for traced operations: a child of the active span, when there is one and it records;
 * none otherwise (the operation runs untouched). Keys never become attributes: the context
 * carries none.
 */
export function createSpanFactory(api: OtelApi): SpanFactory {
  const tracer = api.trace.getTracer(INSTRUMENTATION_SCOPE);
  return <T>(name: RedisTraceName, ctx: RedisTraceContext, run: () => Promise<T>) => {
    const parent = api.trace.getActiveSpan();
    if (!parent || !parent.isRecording()) return undefined;
    const span = tracer.startSpan(name, {
      kind: api.SpanKind.INTERNAL,
      attributes: { 'db.system.name': 'redis', ...spanAttributes(ctx) },
    });
    const finish = (err?: unknown): void => {
      if (ctx.outcome !== undefined) span.setAttribute('nestjs_redis.outcome', ctx.outcome);
      if (err !== undefined) {
        const type = (err as { name?: unknown })?.name;
        span.setAttribute('error.type', typeof type === 'string' ? type : '_OTHER');
        // The message may quote a key or resource: the error's class tells enough.
        span.setStatus({ code: api.SpanStatusCode.ERROR });
      }
      span.end();
    };
    return api.context.with(api.trace.setSpan(api.context.active(), span), () =>
      run().then(
        (value) => {
          finish();
          return value;
        },
        (err: unknown) => {
          finish(err);
          throw err;
        },
      ),
    );
  };
}

function spanAttributes(ctx: RedisTraceContext): Attributes {
  const out: Attributes = {};
  for (const [k, v] of Object.entries(ctx)) {
    if (k === 'outcome' || v === undefined) continue;
    out[k === 'connection' ? 'db.client.connection.pool.name' : `nestjs_redis.${k}`] = v;
  }
  return out;
}

/** What the metrics read; every part optional (a service the application does not use). */
export interface MetricSources {
  /** The registered connection's name. */
  name: string;
  /** The database index (`db.namespace`); `0` on a cluster. */
  database: number;
  client: Parameters<typeof recordCommands>[0];
  connections: () => { byRole: Record<string, number>; max: number };
  /** Times the command connection came back after a drop. */
  reconnects: () => number;
  cache?: () => {
    l1: { hits: number; misses: number; size: number; bytes: number; evictions: number };
    l2: { hits: number; misses: number };
    loads: number;
    loadErrors: number;
    staleServed: number;
    stampedeWaits: number;
    earlyRefreshes: number;
    redisErrors: number;
  };
  pubsub?: () => PubSubStats;
  streams?: StreamSources;
  /** `LockService.stats()` of this connection. */
  locks?: () => LockStats;
}

/** What the stream instruments read: counters from memory, backlogs from Redis. */
export interface StreamSources {
  counters: () => StreamCounters;
  /** The groups this process consumes now, with the handlers running for each. */
  groups: () => Array<{ stream: string; group: string; inFlight: number }>;
  backlog: (
    stream: string,
    group: string,
  ) => Promise<{ pending: number; lag: number | null; consumers: number } | undefined>;
}

/**
 * How long one collection waits for the stream backlogs (a Redis round trip per group): an
 * exporter must not hang on a slow or unreachable server; the figures are skipped instead.
 */
export const BACKLOG_READ_TIMEOUT_MS = 1_000;

/** What `MetricSources.cache` returns. */
type CacheFigures = ReturnType<NonNullable<MetricSources['cache']>>;

/** What `MetricSources.pubsub` returns. */
type PubSubFigures = ReturnType<NonNullable<MetricSources['pubsub']>>;

/** An observable instrument whose callbacks can be added and removed. */
interface ObservableInstrument {
  addCallback(cb: (r: ObservableResult) => void): void;
  removeCallback(cb: (r: ObservableResult) => void): void;
}

/** Adds a callback to an observable instrument; the callback's removal goes to `undo`. */
type Observe = (instrument: ObservableInstrument, cb: (r: ObservableResult) => void) => void;

/**
 * Registers every instrument of one connection on `meter`; returns what removes them (the
 * command hook and the observable callbacks). Attributes are low-cardinality only: command
 * names, the connection's name, roles, tiers, outcomes.
 */
export function instrumentConnection(meter: Meter, src: MetricSources): () => void {
  const undo: Array<() => void> = [];
  const pool = { 'db.client.connection.pool.name': src.name };

  const commands = instrumentCommandDuration(meter, src);
  undo.push(() => commands.stop());
  const observe = safeObserver(undo);
  const { max } = instrumentConnectionCounts(meter, src, pool, observe);
  // Command durations reach the histogram after the reply, in batches: a callback of this meter
  // hands over those still held, and the SDK runs every observable callback of a meter before
  // it reads its synchronous instruments, so a collection sees every command settled before it.
  observe(max, () => commands.flush());
  if (src.cache) instrumentCache(meter, src.cache, pool, observe);
  if (src.pubsub) instrumentPubSub(meter, src.pubsub, pool, observe);

  if (src.streams) undo.push(instrumentStreams(meter, src.streams, pool, () => src.client.status));
  if (src.locks) undo.push(instrumentLocks(meter, src.locks, pool));

  undo.push(instrumentOperations(meter, src.name));
  return () => {
    for (const u of undo.splice(0)) u();
  };
}

/** An `Observe` whose callbacks never fail the collection and whose removals go to `undo`. */
function safeObserver(undo: Array<() => void>): Observe {
  return (instrument, cb) => {
    const safe = (r: ObservableResult): void => {
      try {
        cb(r);
      } catch {
        // A figure that cannot be read this time is skipped, never an exporter failure.
      }
    };
    instrument.addCallback(safe);
    undo.push(() => instrument.removeCallback(safe));
  };
}

/**
 * Connections held open by role, the `maxConnections` bound and the reconnects; returns the
 * bound's instrument (it is always there: the command histogram flushes from one of its callbacks).
 */
function instrumentConnectionCounts(
  meter: Meter,
  src: MetricSources,
  pool: Attributes,
  observe: Observe,
): { max: ObservableInstrument } {
  observe(
    meter.createObservableUpDownCounter('db.client.connection.count', {
      description: 'Connections this registration holds open, by role.',
      unit: '{connection}',
    }),
    (r) => {
      for (const [role, count] of Object.entries(src.connections().byRole)) {
        r.observe(count, { ...pool, 'nestjs_redis.connection.role': role });
      }
    },
  );
  const max = meter.createObservableUpDownCounter('db.client.connection.max', {
    description: 'The maxConnections bound of this registration.',
    unit: '{connection}',
  });
  observe(max, (r) => r.observe(src.connections().max, pool));
  observe(
    meter.createObservableCounter('nestjs_redis.connection.reconnects', {
      description: 'Times the command connection became ready again after a drop.',
      unit: '{reconnect}',
    }),
    (r) => r.observe(src.reconnects(), pool),
  );
  return { max };
}

/** The cache's plain counters: name, description, unit and the figure each reads. */
const CACHE_COUNTERS: ReadonlyArray<
  readonly [string, string, string, (s: CacheFigures) => number]
> = [
  [
    'nestjs_redis.cache.stampede_waits',
    'getOrSet calls that waited for a load already running.',
    '{wait}',
    (s) => s.stampedeWaits,
  ],
  ['nestjs_redis.cache.loads', 'Loader runs.', '{load}', (s) => s.loads],
  [
    'nestjs_redis.cache.load_errors',
    'Loader runs that threw or timed out.',
    '{load}',
    (s) => s.loadErrors,
  ],
  [
    'nestjs_redis.cache.stale_served',
    'Stale values returned under grace.',
    '{value}',
    (s) => s.staleServed,
  ],
  [
    'nestjs_redis.cache.early_refreshes',
    'Early refreshes started by XFetch.',
    '{refresh}',
    (s) => s.earlyRefreshes,
  ],
  [
    'nestjs_redis.cache.redis_errors',
    'Redis calls of the cache that failed (it degraded).',
    '{error}',
    (s) => s.redisErrors,
  ],
];

/** Cache instruments: lookups by tier and result, the plain counters, the L1's size. */
function instrumentCache(
  meter: Meter,
  cache: () => CacheFigures,
  pool: Attributes,
  observe: Observe,
): void {
  observe(
    meter.createObservableCounter('nestjs_redis.cache.requests', {
      description: 'Cache lookups by tier (l1, l2) and result (hit, miss).',
      unit: '{request}',
    }),
    (r) => {
      const s = cache();
      r.observe(s.l1.hits, {
        ...pool,
        'nestjs_redis.cache.tier': 'l1',
        'nestjs_redis.cache.result': 'hit',
      });
      r.observe(s.l1.misses, {
        ...pool,
        'nestjs_redis.cache.tier': 'l1',
        'nestjs_redis.cache.result': 'miss',
      });
      r.observe(s.l2.hits, {
        ...pool,
        'nestjs_redis.cache.tier': 'l2',
        'nestjs_redis.cache.result': 'hit',
      });
      r.observe(s.l2.misses, {
        ...pool,
        'nestjs_redis.cache.tier': 'l2',
        'nestjs_redis.cache.result': 'miss',
      });
    },
  );
  for (const [name, description, unit, read] of CACHE_COUNTERS) {
    observe(meter.createObservableCounter(name, { description, unit }), (r) =>
      r.observe(read(cache()), pool),
    );
  }
  observe(
    meter.createObservableUpDownCounter('nestjs_redis.cache.l1.size', {
      description: 'Entries in the in-process cache (L1).',
      unit: '{entry}',
    }),
    (r) => r.observe(cache().l1.size, pool),
  );
  observe(
    meter.createObservableCounter('nestjs_redis.cache.l1.evictions', {
      description: 'Entries the in-process cache (L1) evicted to stay within its bounds.',
      unit: '{entry}',
    }),
    (r) => r.observe(cache().l1.evictions, pool),
  );
  observe(
    meter.createObservableUpDownCounter('nestjs_redis.cache.l1.bytes', {
      description: 'Approximate bytes held by the in-process cache (L1).',
      unit: 'By',
    }),
    (r) => r.observe(cache().l1.bytes, pool),
  );
}

/** Pub/sub instruments: messages by state, gaps, reconnects, handler failures, subscriptions. */
function instrumentPubSub(
  meter: Meter,
  pubsub: () => PubSubFigures,
  pool: Attributes,
  observe: Observe,
): void {
  observe(
    meter.createObservableCounter('nestjs_redis.pubsub.messages', {
      description: 'Pub/sub messages by what happened to them.',
      unit: '{message}',
    }),
    (r) => {
      const s = pubsub();
      for (const state of ['published', 'received', 'delivered', 'dropped'] as const) {
        r.observe(s[state], { ...pool, 'nestjs_redis.pubsub.state': state });
      }
    },
  );
  observe(
    meter.createObservableCounter('nestjs_redis.pubsub.gaps', {
      description: 'Gap notices raised (a reconnect or a full buffer lost messages).',
      unit: '{gap}',
    }),
    (r) => r.observe(pubsub().gaps, pool),
  );
  observe(
    meter.createObservableCounter('nestjs_redis.pubsub.reconnects', {
      description: 'Times a subscriber connection came back after a drop.',
      unit: '{reconnect}',
    }),
    (r) => r.observe(pubsub().reconnects, pool),
  );
  observe(
    meter.createObservableCounter('nestjs_redis.pubsub.handler_failures', {
      description: 'Message handlers that threw (error) or did not settle in time (timeout).',
      unit: '{failure}',
    }),
    (r) => {
      const s = pubsub();
      r.observe(s.handlerErrors, { ...pool, 'nestjs_redis.failure': 'error' });
      r.observe(s.handlerTimeouts, { ...pool, 'nestjs_redis.failure': 'timeout' });
    },
  );
  observe(
    meter.createObservableUpDownCounter('nestjs_redis.pubsub.subscriptions', {
      description: 'Subscriptions open now.',
      unit: '{subscription}',
    }),
    (r) => r.observe(pubsub().subscriptions, pool),
  );
}

/**
 * Stream instruments: message counters from the service's memory; per consumed group, the
 * handlers running here and, read from Redis only when the exporter collects, the group's
 * consumers, lag and pending entries. Groups are named by the stream and group names the code
 * consumes (a set the application's consumers bound, not its data).
 */
function instrumentStreams(
  meter: Meter,
  streams: StreamSources,
  pool: Attributes,
  status: () => string,
): () => void {
  const undo: Array<() => void> = [];
  const groupAttrs = (g: { stream: string; group: string }): Attributes => ({
    ...pool,
    'messaging.destination.name': g.stream,
    'messaging.consumer.group.name': g.group,
  });

  const messages = meter.createObservableCounter('nestjs_redis.stream.messages', {
    description: 'Stream messages by what happened to them in this process.',
    unit: '{message}',
  });
  const failures = meter.createObservableCounter('nestjs_redis.stream.handler_failures', {
    description: 'Stream handler calls that threw or rejected.',
    unit: '{failure}',
  });
  const inFlight = meter.createObservableGauge('nestjs_redis.stream.in_flight', {
    description: 'Stream handlers running now in this process, per consumed group.',
    unit: '{message}',
  });
  const local = (r: BatchObservableResult): void => {
    const c = streams.counters();
    const states = [
      ['delivered', c.delivered],
      ['acked', c.acked],
      ['failed', c.failed],
      ['retried', c.retried],
      ['dead_lettered', c.deadLettered],
    ] as const;
    for (const [state, value] of states)
      r.observe(messages, value, { ...pool, 'nestjs_redis.stream.state': state });
    r.observe(failures, c.handlerFailures, pool);
    for (const g of streams.groups()) r.observe(inFlight, g.inFlight, groupAttrs(g));
  };
  batch(meter, undo, [messages, failures, inFlight], local);

  const consumers = meter.createObservableGauge('nestjs_redis.stream.consumers', {
    description: 'Consumers a consumed group has, as Redis counts them (XINFO GROUPS).',
    unit: '{consumer}',
  });
  const lag = meter.createObservableGauge('nestjs_redis.stream.lag', {
    description: 'Entries of the stream not yet delivered to a consumed group.',
    unit: '{message}',
  });
  const pending = meter.createObservableGauge('nestjs_redis.stream.pending', {
    description: 'Entries delivered to a consumed group and not yet acknowledged.',
    unit: '{message}',
  });
  const remote = async (r: BatchObservableResult): Promise<void> => {
    const groups = streams.groups();
    if (groups.length === 0 || status() !== 'ready') return;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), BACKLOG_READ_TIMEOUT_MS);
      timer.unref?.();
    });
    const read = Promise.all(
      groups.map(async (g) => {
        const b = await streams.backlog(g.stream, g.group).catch(() => undefined);
        return [g, b] as const;
      }),
    );
    const found = await Promise.race([read, deadline]).finally(() => clearTimeout(timer));
    if (found === 'late') return;
    for (const [g, b] of found) {
      if (!b) continue;
      const attrs = groupAttrs(g);
      r.observe(consumers, b.consumers, attrs);
      r.observe(pending, b.pending, attrs);
      if (b.lag !== null) r.observe(lag, b.lag, attrs);
    }
  };
  batch(meter, undo, [consumers, lag, pending], remote);
  return () => {
    for (const u of undo.splice(0)) u();
  };
}

/** A batch callback that never fails the collection; its removal goes to `undo`. */
function batch(
  meter: Meter,
  undo: Array<() => void>,
  observables: Observable[],
  cb: (r: BatchObservableResult) => void | Promise<void>,
): void {
  const safe = async (r: BatchObservableResult): Promise<void> => {
    try {
      await cb(r);
    } catch {
      // A figure that cannot be read this time is skipped, never an exporter failure.
    }
  };
  meter.addBatchObservableCallback(safe, observables);
  undo.push(() => meter.removeBatchObservableCallback(safe, observables));
}

/**
 * Metrics from the traced operations of the connection `connectionName`, read off their tracing channels
 * (shared by every connection: each registration keeps its own connection's operations). Only
 * channels whose operations cost a round trip anyway (never `cache.getOrSet`, which an L1 hit
 * answers in well under a microsecond).
 */
function instrumentOperations(meter: Meter, connectionName: string): () => void {
  const started = new WeakMap<object, number>();
  const undo: Array<() => void> = [];
  const listen = (
    name: RedisTraceName,
    done: (ctx: RedisTraceContext, seconds: number, failed: boolean) => void,
  ): void => {
    const channel = traceChannel(name);
    const handlers = {
      start: (ctx: RedisTraceContext & object) => {
        if ((ctx.connection ?? DEFAULT_CONNECTION_NAME) === connectionName)
          started.set(ctx, performance.now());
      },
      end: () => undefined,
      asyncStart: () => undefined,
      asyncEnd: (ctx: RedisTraceContext & object) => settle(ctx, false),
      error: (ctx: RedisTraceContext & object) => settle(ctx, true),
    };
    const settle = (ctx: RedisTraceContext & object, failed: boolean): void => {
      const t0 = started.get(ctx);
      if (t0 === undefined) return;
      started.delete(ctx);
      try {
        done(ctx, (performance.now() - t0) / 1000, failed);
      } catch {
        // Never let a metric break the traced operation.
      }
    };
    channel.subscribe(handlers);
    undo.push(() => channel.unsubscribe(handlers));
  };
  const attrs = (_ctx: RedisTraceContext, extra: Attributes = {}): Attributes => ({
    'db.client.connection.pool.name': connectionName,
    ...extra,
  });

  const loadDuration = meter.createHistogram('nestjs_redis.cache.load.duration', {
    description: 'Duration of cache loader runs.',
    unit: 's',
    advice: { explicitBucketBoundaries: DURATION_BUCKETS },
  });
  listen('cache.load', (ctx, s, failed) =>
    loadDuration.record(s, attrs(ctx, { 'nestjs_redis.outcome': failed ? 'error' : 'ok' })),
  );
  const acquireWait = meter.createHistogram('nestjs_redis.lock.acquire.duration', {
    description: 'Time spent acquiring a lock (waiting included), by outcome.',
    unit: 's',
    advice: { explicitBucketBoundaries: DURATION_BUCKETS },
  });
  listen('lock.acquire', (ctx, s, failed) =>
    acquireWait.record(
      s,
      attrs(ctx, { 'nestjs_redis.outcome': failed ? 'error' : (ctx.outcome ?? 'acquired') }),
    ),
  );
  const sessions = meter.createCounter('nestjs_redis.session.operations', {
    description: 'Session operations by name (create, destroy, ...) and outcome.',
    unit: '{operation}',
  });
  for (const op of [
    'create',
    'get',
    'touch',
    'update',
    'rotate',
    'destroy',
    'destroyAllForUser',
  ] as const) {
    listen(`session.${op}`, (ctx, _s, failed) =>
      sessions.add(
        1,
        attrs(ctx, {
          'nestjs_redis.operation': op,
          'nestjs_redis.outcome': failed ? 'error' : 'ok',
        }),
      ),
    );
  }
  return () => {
    for (const u of undo.splice(0)) u();
  };
}
