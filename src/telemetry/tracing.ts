import diagnosticsChannel, { type TracingChannel } from 'node:diagnostics_channel';

/** Prefix of every tracing channel this package publishes on. */
export const TRACE_CHANNEL_PREFIX = 'nestjs-redis-infra:';

/**
 * The operations this package traces. Each one is published on the `node:diagnostics_channel`
 * tracing channel `nestjs-redis-infra:<name>` (e.g. `nestjs-redis-infra:cache.getOrSet`) and,
 * under an active OpenTelemetry span, becomes a child span of that name.
 */
export type RedisTraceName =
  | 'cache.getOrSet'
  | 'cache.load'
  | 'lock.acquire'
  | 'lock.withLock'
  | 'session.create'
  | 'session.get'
  | 'session.touch'
  | 'session.update'
  | 'session.rotate'
  | 'session.destroy'
  | 'session.destroyAllForUser';

/**
 * What a traced operation tells its subscribers. Never a key, session id or resource name: the
 * context is public to every subscriber of the channel and becomes span attributes.
 */
export interface RedisTraceContext {
  /** The registered connection (`'default'` unless named). */
  connection?: string;
  /**
   * How it ended, set by the operation before it settles: `hit`, `miss`, `stale`, `loaded` for
   * `cache.getOrSet`; `acquired`, `timeout` for `lock.acquire`.
   */
  outcome?: string;
  /** Low-cardinality facts of the operation (`tier: 'l1'`, `ttl: 60000`). */
  [attribute: string]: string | number | boolean | undefined;
}

/**
 * Runs one traced operation: `start`/`end` around the call and `asyncStart`/`asyncEnd` (or
 * `error`) when its promise settles, and a span (see `setSpanFactory`). Subscribers may read
 * `ctx.outcome` at `asyncEnd`.
 */
export type SpanFactory = <T>(
  name: RedisTraceName,
  ctx: RedisTraceContext,
  run: () => Promise<T>,
) => Promise<T> | undefined;

const channels = new Map<string, TracingChannel<unknown, RedisTraceContext & object>>();
let spanFactory: SpanFactory | undefined;

/** The tracing channel of one operation (created once, kept: channels are looked up by name). */
export function traceChannel(
  name: RedisTraceName,
): TracingChannel<unknown, RedisTraceContext & object> {
  let channel = channels.get(name);
  if (!channel) {
    channel = diagnosticsChannel.tracingChannel<unknown, RedisTraceContext & object>(
      TRACE_CHANNEL_PREFIX + name,
    );
    channels.set(name, channel);
  }
  return channel;
}

/**
 * Installs (or with `undefined`, removes) what turns traced operations into spans; the
 * OpenTelemetry bridge installs one when `@opentelemetry/api` is present. The factory returns
 * `undefined` to decline (no active parent span): the operation then runs as is.
 */
export function setSpanFactory(factory: SpanFactory | undefined): void {
  spanFactory = factory;
}

/**
 * Traces `fn` as the operation `name`: publishes on its `node:diagnostics_channel` tracing
 * channel when anyone subscribes, and makes a child span when an OpenTelemetry span is active.
 * With neither, `fn` runs directly: the cost is two property reads.
 *
 * @example
 * ```ts
 * const ctx: RedisTraceContext = { connection: 'default' };
 * return trace('cache.getOrSet', ctx, async () => {
 *   ctx.outcome = 'hit';
 *   return value;
 * });
 * ```
 */
export function trace<T>(
  name: RedisTraceName,
  ctx: RedisTraceContext,
  fn: () => Promise<T>,
): Promise<T> {
  const channel = traceChannel(name);
  const published = channel.hasSubscribers;
  if (!published && spanFactory === undefined) return fn();
  const run = published ? () => channel.tracePromise(fn, ctx) : fn;
  return spanFactory?.(name, ctx, run) ?? run();
}
