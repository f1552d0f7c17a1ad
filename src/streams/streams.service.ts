import {
  Inject,
  Injectable,
  SetMetadata,
  type BeforeApplicationShutdown,
  type OnApplicationBootstrap,
} from '@nestjs/common';

import type { RedisConnection } from '../connection/redis-connection.js';
import { getRedisConnectionToken } from '../connection/tokens.js';
import type { DecoratorExplorer } from '../discovery/explorer.js';
import { checkDuration, checkInteger, checkName, shown } from '../toolkit/args.js';

import {
  defaultConsumerName,
  emptyStreamCounters,
  StreamConsumer,
  type ResolvedConsumerOptions,
  type StreamBacklog,
  type StreamCounters,
  type StreamConsumerOptions,
  type StreamHandler,
  type StreamStats,
} from './stream-consumer.js';
import { ON_STREAM_MESSAGE_METADATA } from './streams.constants.js';
import { streamKeys } from './streams.keys.js';

/** The largest message `add` accepts, serialized: far below Redis's 512 MB bulk limit. */
export const MAX_STREAM_MESSAGE_BYTES = 16 * 1024 * 1024;

interface OnStreamMessageMetadata {
  stream: string;
  group: string;
  options: StreamConsumerOptions;
}

/**
 * Consumes a stream in a consumer group with the decorated method, from application start to
 * shutdown: `StreamsService.consumer(stream, group, method, options)` for a provider method.
 *
 * @example
 * ```ts
 * @Injectable()
 * export class Mailer {
 *   @OnStreamMessage('emails', 'mailer', { concurrency: 4, maxAttempts: 3 })
 *   async send(email: { to: string; subject: string }): Promise<void> {
 *     // a throw leaves the message pending: it is delivered again later
 *   }
 * }
 * ```
 */
export function OnStreamMessage(
  stream: string,
  group: string,
  options: StreamConsumerOptions = {},
): MethodDecorator {
  checkName(stream, '@OnStreamMessage stream', 1024);
  checkName(group, '@OnStreamMessage group', 256);
  return SetMetadata<string, OnStreamMessageMetadata>(ON_STREAM_MESSAGE_METADATA, {
    stream,
    group,
    options,
  });
}

/** Options of `StreamProducer.add`. */
export interface StreamAddOptions {
  /** Trim the stream to about this many entries (`XADD MAXLEN ~`). */
  maxLen?: number;
}

/**
 * Adds messages to one stream: `XADD` of the JSON-encoded message. Obtained from
 * `StreamsService.producer(name)`.
 */
export class StreamProducer<T = unknown> {
  constructor(
    private readonly connection: RedisConnection,
    /** The stream's name. */
    readonly stream: string,
    private readonly key: string,
  ) {}

  /** Appends `message`; resolves with the entry id Redis gave it. */
  async add(message: T, options: StreamAddOptions = {}): Promise<string> {
    let data: string | undefined;
    try {
      data = JSON.stringify(message);
    } catch (err) {
      throw new TypeError(
        `stream "${this.stream.slice(0, 100)}" add: message cannot be sent as JSON: ${(err as Error).message}`,
        { cause: err },
      );
    }
    if (data === undefined) {
      throw new TypeError(
        `stream "${this.stream.slice(0, 100)}" add: message cannot be sent as JSON, got ${shown(message)}`,
      );
    }
    if (Buffer.byteLength(data) > MAX_STREAM_MESSAGE_BYTES) {
      throw new RangeError(
        `stream "${this.stream.slice(0, 100)}" add: message is ${Buffer.byteLength(data)} bytes as JSON; at most ${MAX_STREAM_MESSAGE_BYTES}`,
      );
    }
    const client = this.connection.client;
    if (options.maxLen === undefined)
      return (await client.xadd(this.key, '*', 'd', data)) as string;
    const maxLen = checkInteger(options.maxLen, 'add options.maxLen', 1, Number.MAX_SAFE_INTEGER);
    return (await client.xadd(this.key, 'MAXLEN', '~', maxLen, '*', 'd', data)) as string;
  }
}

/**
 * Durable, at-least-once messaging on Redis Streams with consumer groups: producers append,
 * consumers in a group share the work, acknowledge what succeeded, take over what a dead
 * consumer left behind, and dead-letter what keeps failing. Every key of one stream lives in
 * one cluster hash slot.
 *
 * @example
 * ```ts
 * @Injectable()
 * export class Orders {
 *   constructor(private readonly streams: StreamsService) {}
 *   placed(id: string) {
 *     return this.streams.producer<{ id: string }>('orders').add({ id });
 *   }
 * }
 * ```
 */
@Injectable()
export class StreamsService implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly consumers = new Set<StreamConsumer<unknown>>();
  private readonly totals = emptyStreamCounters();
  private closing = false;

  constructor(
    @Inject(getRedisConnectionToken()) private readonly connection: RedisConnection,
    private readonly explorer: DecoratorExplorer,
  ) {}

  /** A producer for the stream `name`. */
  producer<T = unknown>(name: string): StreamProducer<T> {
    checkName(name, 'stream name', 1024);
    return new StreamProducer<T>(this.connection, name, streamKeys(name).stream);
  }

  /**
   * Starts a consumer of `stream` in `group` (created when missing) that runs `handler` for
   * each message; stopped at shutdown. Resolves once the group exists and reading started.
   */
  async consumer<T = unknown>(
    stream: string,
    group: string,
    handler: StreamHandler<T>,
    options: StreamConsumerOptions = {},
  ): Promise<StreamConsumer<T>> {
    checkName(stream, 'stream name', 1024);
    checkName(group, 'consumer group', 256);
    if (typeof handler !== 'function') {
      throw new TypeError(`consumer handler must be a function, got ${shown(handler)}`);
    }
    if (this.closing) throw new Error('StreamsService is shutting down: no new consumer can start');
    const consumer = new StreamConsumer<T>(
      this.connection,
      stream,
      group,
      streamKeys(stream),
      handler,
      resolveConsumerOptions(options),
      this.totals,
    );
    await consumer.start();
    this.consumers.add(consumer as StreamConsumer<unknown>);
    return consumer;
  }

  /** Length, dead letters and, per group, pending messages, consumers and lag of a stream. */
  async stats(stream: string): Promise<StreamStats> {
    checkName(stream, 'stream name', 1024);
    const keys = streamKeys(stream);
    const client = this.connection.client;
    const [length, deadLetters, groups] = await Promise.all([
      client.xlen(keys.stream),
      client.xlen(keys.dead),
      this.readGroups(stream),
    ]);
    return {
      length,
      deadLetters,
      groups: [...groups].map(([name, g]) => ({
        name,
        pending: g.pending,
        consumers: g.consumers,
        lag: g.lag,
      })),
    };
  }

  /**
   * What this process's consumers (of this connection) did since the application started:
   * deliveries, acknowledgements, failures, redeliveries, dead letters, handler failures.
   * Counted in memory: reading them sends nothing to Redis.
   *
   * @example
   * ```ts
   * const { delivered, acked, handlerFailures } = streams.counters();
   * ```
   */
  counters(): StreamCounters {
    return { ...this.totals };
  }

  /**
   * How far `group` is behind on `stream`, as Redis sees it (one `XINFO GROUPS`): entries
   * delivered and not yet acknowledged (`pending`), entries not yet delivered (`lag`), and the
   * group's consumers. `undefined` when the stream or the group does not exist.
   *
   * @example
   * ```ts
   * const backlog = await streams.backlog('emails', 'mailer');
   * if (backlog && (backlog.lag ?? 0) > 10_000) logger.warn('the mailer is falling behind');
   * ```
   */
  async backlog(stream: string, group: string): Promise<StreamBacklog | undefined> {
    checkName(stream, 'stream name', 1024);
    checkName(group, 'consumer group', 256);
    return (await this.readGroups(stream)).get(group);
  }

  /**
   * The groups this process consumes now, each once, with its handlers running now (several
   * consumers of one group add up); for the metrics, which read only these.
   * @internal
   */
  consumedGroups(): Array<{ stream: string; group: string; inFlight: number }> {
    const out = new Map<string, { stream: string; group: string; inFlight: number }>();
    for (const c of this.consumers) {
      const id = JSON.stringify([c.stream, c.group]);
      const found = out.get(id);
      if (found) found.inFlight += c.inFlightCount;
      else out.set(id, { stream: c.stream, group: c.group, inFlight: c.inFlightCount });
    }
    return [...out.values()];
  }

  /** Every group of `stream` by name (empty when the stream does not exist). */
  private async readGroups(stream: string): Promise<Map<string, StreamBacklog>> {
    let groups: unknown[] = [];
    try {
      groups = (await this.connection.client.xinfo(
        'GROUPS',
        streamKeys(stream).stream,
      )) as unknown[];
    } catch (err) {
      if (!(err instanceof Error && /no such key/i.test(err.message))) throw err;
    }
    const out = new Map<string, StreamBacklog>();
    for (const flat of groups) {
      const info = pairs(flat as unknown[]);
      out.set(String(info.name), {
        pending: Number(info.pending ?? 0),
        lag: info.lag === null || info.lag === undefined ? null : Number(info.lag),
        consumers: Number(info.consumers ?? 0),
      });
    }
    return out;
  }

  /** Starts a consumer for every `@OnStreamMessage` method of the application's providers. */
  async onApplicationBootstrap(): Promise<void> {
    const found = this.explorer
      .find<OnStreamMessageMetadata>(ON_STREAM_MESSAGE_METADATA)
      .map(({ meta, method, instance, label }) => {
        // Typed here, not asserted: the explorer hands back an untyped method.
        const handler: StreamHandler<unknown> = (message, context) =>
          method.call(instance, message, context);
        return { meta, handler, label };
      });
    for (const { meta, handler, label } of found) {
      await this.consumer(meta.stream, meta.group, handler, meta.options).catch((err: unknown) => {
        throw new Error(
          `@OnStreamMessage on ${label}: could not start consuming "${meta.stream}" as group "${meta.group}": ` +
            this.connection.scrub(err instanceof Error ? err.message : String(err)),
          { cause: err },
        );
      });
    }
  }

  /** Stops reading everywhere, then lets running handlers finish within `shutdownTimeout`. */
  async beforeApplicationShutdown(): Promise<void> {
    this.closing = true;
    const timeout = this.connection.config.shutdownTimeout;
    await Promise.all([...this.consumers].map((c) => c.stop(timeout)));
    this.consumers.clear();
  }
}

function resolveConsumerOptions(options: StreamConsumerOptions): ResolvedConsumerOptions {
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`consumer options must be an object, got ${shown(options)}`);
  }
  const from = options.from ?? 'start';
  if (from !== 'start' && from !== 'new') {
    throw new TypeError(`consumer options.from must be 'start' or 'new', got ${shown(from)}`);
  }
  return {
    concurrency: checkInteger(options.concurrency ?? 1, 'consumer options.concurrency', 1, 10_000),
    visibilityTimeout: checkDuration(
      options.visibilityTimeout ?? 30_000,
      'consumer options.visibilityTimeout',
      24 * 3600_000,
    ),
    maxAttempts: checkInteger(options.maxAttempts ?? 5, 'consumer options.maxAttempts', 1, 1000),
    deadLetter: options.deadLetter ?? true,
    from,
    consumerName: checkName(
      options.consumerName ?? defaultConsumerName(),
      'consumer options.consumerName',
      256,
    ),
    block: checkDuration(options.block ?? 2000, 'consumer options.block', 60_000),
  };
}

/** A flat `[name, value, name, value]` reply as an object. */
function pairs(flat: unknown[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = flat[i + 1];
  return out;
}
