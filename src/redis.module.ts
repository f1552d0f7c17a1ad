import {
  ConfigurableModuleBuilder,
  Module,
  type DynamicModule,
  type Provider,
} from '@nestjs/common';
import { DiscoveryModule, ModuleRef } from '@nestjs/core';
import { DEFAULT_CONNECTION_NAME } from './config/defaults.js';
import {
  resolveRedisOptions,
  type RedisModuleExtras,
  type RedisModuleOptions,
} from './redis-module.options.js';
import { RedisConnection } from './connection/redis-connection.js';
import { getRedisConnectionToken, getRedisToken } from './connection/tokens.js';
import { RedisHealthIndicator } from './health/redis-health.indicator.js';
import { RedisHealthMonitor } from './health/health-monitor.js';
import { RedisAlerts } from './health/redis-alerts.js';
import { LockService } from './lock/lock.service.js';
import { CoordinationLifecycle } from './lock/coordination.lifecycle.js';
import { CacheService } from './cache/cache.service.js';
import { RedisService } from './redis.service.js';
import { SessionService } from './session/session.service.js';
import { PubSubService } from './pubsub/pubsub.service.js';
import { StreamsService } from './streams/streams.service.js';
import { PresenceService } from './presence/presence.service.js';
import { RedisBullMq } from './bullmq/redis-bullmq.js';

const builder = new ConfigurableModuleBuilder<RedisModuleOptions>({ moduleName: 'Redis' })
  .setClassMethodName('forRoot')
  .setFactoryMethodName('createRedisOptions')
  .setExtras<RedisModuleExtras>(
    { isGlobal: true, name: DEFAULT_CONNECTION_NAME },
    (definition, extras) => withConnection(definition, extras),
  )
  .build();

const { ConfigurableModuleClass, MODULE_OPTIONS_TOKEN } = builder;

/** The options object of `RedisModule.forRoot`: connection options plus `isGlobal` and `name`. */
export type RedisModuleForRootOptions = typeof builder.OPTIONS_TYPE;
/** The options object of `RedisModule.forRootAsync`. */
export type RedisModuleAsyncOptions = typeof builder.ASYNC_OPTIONS_TYPE;
/** What a `useClass` / `useExisting` options factory implements. */
export interface RedisOptionsFactory {
  createRedisOptions(): Promise<RedisModuleOptions> | RedisModuleOptions;
}

/** The services the default connection provides to the application. */
const SERVICES = [
  RedisService,
  RedisHealthIndicator,
  RedisAlerts,
  CacheService,
  LockService,
  SessionService,
  PubSubService,
  StreamsService,
  PresenceService,
  RedisBullMq,
];

function withConnection(definition: DynamicModule, extras: RedisModuleExtras): DynamicModule {
  const name = extras.name ?? DEFAULT_CONNECTION_NAME;
  const connectionToken = getRedisConnectionToken(name);
  const providers: Provider[] = [
    {
      provide: connectionToken,
      // Validation runs here, once, while the application starts.
      useFactory: (options: RedisModuleOptions | undefined) =>
        new RedisConnection(resolveRedisOptions(options, process.env, name)),
      inject: [MODULE_OPTIONS_TOKEN],
    },
    {
      provide: getRedisToken(name),
      useFactory: (connection: RedisConnection) => connection.client,
      inject: [connectionToken],
    },
  ];
  // The periodic health probe of this connection; idle unless healthCheckInterval or alerts.
  providers.push({
    provide: `RedisHealthMonitor:${name}`,
    useFactory: (connection: RedisConnection, moduleRef: ModuleRef) =>
      new RedisHealthMonitor(connection, moduleRef),
    inject: [connectionToken, ModuleRef],
  });
  const exported: Array<symbol | Provider> = [getRedisToken(name), connectionToken];
  if (name === DEFAULT_CONNECTION_NAME) {
    providers.push(...SERVICES, CoordinationLifecycle);
    exported.push(...SERVICES);
  }
  return {
    ...definition,
    // DiscoveryService finds the methods decorated with @WithLock, @Cacheable, @CacheEvict,
    // @OnRedisMessage.
    imports: [
      ...(definition.imports ?? []),
      ...(name === DEFAULT_CONNECTION_NAME ? [DiscoveryModule] : []),
    ],
    global: extras.isGlobal,
    providers: [...(definition.providers ?? []), ...providers],
    exports: [...(definition.exports ?? []), ...exported],
  };
}

/**
 * Redis for a NestJS application: connections (standalone, Sentinel, Cluster), `RedisService`,
 * `RedisHealthIndicator`, and the ioredis client through `@InjectRedis()`.
 *
 * @example
 * ```ts
 * @Module({ imports: [RedisModule.forRoot({ url: 'redis://localhost:6379', keyPrefix: 'shop:' })] })
 * export class AppModule {}
 * ```
 */
@Module({})
export class RedisModule extends ConfigurableModuleClass {
  /**
   * Registers a connection from options, or from the `REDIS_*` environment variables when the
   * options name no server (`forRoot()`). Global unless `isGlobal: false`.
   */
  static override forRoot(options: RedisModuleForRootOptions = {}): DynamicModule {
    return super.forRoot(options);
  }

  /**
   * Registers a connection whose options come from a factory (`useFactory` with `inject`,
   * `useClass` or `useExisting`), e.g. from `ConfigService`.
   */
  static override forRootAsync(options: RedisModuleAsyncOptions): DynamicModule {
    return super.forRootAsync(options);
  }
}
