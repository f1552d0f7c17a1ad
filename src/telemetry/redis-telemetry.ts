import {
  Inject,
  Injectable,
  Logger,
  type OnApplicationShutdown,
  type OnModuleInit,
} from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';

import { CacheService } from '../cache/cache.service.js';
import { isCluster } from '../connection/client-factory.js';
import { RedisConnection } from '../connection/redis-connection.js';
import {
  getCacheServiceToken,
  getLockServiceToken,
  getPubSubServiceToken,
  getRedisConnectionToken,
  getStreamsServiceToken,
} from '../connection/tokens.js';
import { LockService } from '../lock/lock.service.js';
import { PubSubService } from '../pubsub/pubsub.service.js';
import { StreamsService } from '../streams/streams.service.js';

import {
  createSpanFactory,
  instrumentConnection,
  isNoopMeter,
  loadOpenTelemetry,
  INSTRUMENTATION_SCOPE,
} from './otel.js';
import { setSpanFactory } from './tracing.js';

/** Connections whose instruments are registered, so that a second provider adds nothing. */
const instrumented = new WeakSet<RedisConnection>();
/** Providers that installed the span factory; the last one out removes it. */
let spanUsers = 0;

/**
 * Connects one connection to OpenTelemetry, when the application has `@opentelemetry/api` and
 * registered an SDK before the application started: command durations, connection, cache,
 * pub/sub and stream metrics, each with `db.client.connection.pool.name` = the connection's
 * name and read from that connection's services only, and child spans for the module's own
 * operations. Without the API or an SDK it does nothing and the command path stays untouched.
 * The module registers one per connection (the class itself for the default connection).
 */
@Injectable()
export class RedisTelemetry implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger('Redis:Telemetry');
  private undo?: () => void;
  private usesSpans = false;
  private readyCount = 0;
  private readonly onReady = (): void => {
    this.readyCount++;
  };

  constructor(
    @Inject(getRedisConnectionToken()) private readonly connection: RedisConnection,
    private readonly moduleRef: ModuleRef,
  ) {}

  async onModuleInit(): Promise<void> {
    const api = await loadOpenTelemetry();
    if (!api) return;
    if (spanUsers++ === 0) setSpanFactory(createSpanFactory(api));
    this.usesSpans = true;

    const meter = api.metrics.getMeter(INSTRUMENTATION_SCOPE);
    if (isNoopMeter(api, meter) || instrumented.has(this.connection)) return;
    instrumented.add(this.connection);
    const connection = this.connection;
    const client = connection.client;
    // The first `ready` is the connection opening; each later one is a reconnect.
    if (client.status === 'ready') this.readyCount = 1;
    client.on('ready', this.onReady);
    // This connection's services, by their per-connection tokens (the default connection's
    // are aliases of the classes): a named connection's instruments never read another's.
    const cache = this.optional<CacheService>(getCacheServiceToken(connection.name));
    const pubsub = this.optional<PubSubService>(getPubSubServiceToken(connection.name));
    const streams = this.optional<StreamsService>(getStreamsServiceToken(connection.name));
    const locks = this.optional<LockService>(getLockServiceToken(connection.name));
    const remove = instrumentConnection(meter, {
      name: connection.name,
      database: isCluster(client) ? 0 : Number((client.options as { db?: number }).db ?? 0),
      client,
      connections: () => {
        const open = connection.openConnections;
        const command = connection.config.target.kind === 'client' ? 0 : 1;
        const subscriber = connection.hasSubscriber ? 1 : 0;
        return {
          // Dedicated connections and, on a cluster, per-node subscriber connections.
          byRole: { command, subscriber, dedicated: Math.max(0, open - command - subscriber) },
          max: connection.config.maxConnections,
        };
      },
      reconnects: () => Math.max(0, this.readyCount - 1),
      ...(cache ? { cache: () => cache.stats() } : {}),
      ...(pubsub ? { pubsub: () => pubsub.stats() } : {}),
      ...(locks ? { locks: () => locks.stats() } : {}),
      ...(streams
        ? {
            streams: {
              counters: () => streams.counters(),
              groups: () => streams.consumedGroups(),
              backlog: (stream: string, group: string) => streams.backlog(stream, group),
            },
          }
        : {}),
    });
    this.undo = () => {
      remove();
      client.off('ready', this.onReady);
      instrumented.delete(connection);
    };
    this.logger.debug(`OpenTelemetry metrics registered for connection "${connection.name}"`);
  }

  onApplicationShutdown(): void {
    this.undo?.();
    this.undo = undefined;
    if (this.usesSpans && --spanUsers === 0) setSpanFactory(undefined);
    this.usesSpans = false;
  }

  private optional<T>(token: symbol): T | undefined {
    try {
      return this.moduleRef.get<T>(token, { strict: false });
    } catch {
      return undefined;
    }
  }
}
