import {
  ConfigurableModuleBuilder,
  Module,
  type DynamicModule,
  type InjectionToken,
  type Provider,
  type Type,
} from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';

import { RedisBullMq } from './bullmq/redis-bullmq.js';
import { CacheService } from './cache/cache.service.js';
import { DEFAULT_CONNECTION_NAME } from './config/defaults.js';
import { RedisConnection } from './connection/redis-connection.js';
import {
  getCacheServiceToken,
  getLockServiceToken,
  getPresenceServiceToken,
  getPubSubServiceToken,
  getRedisBullMqToken,
  getRedisConnectionToken,
  getRedisHealthIndicatorToken,
  getRedisServiceToken,
  getRedisToken,
  getSessionServiceToken,
  getStreamsServiceToken,
} from './connection/tokens.js';
import {
  RedisDecoratorExplorer,
  RedisDiscoveryModule,
  type DecoratorExplorer,
} from './discovery/explorer.js';
import { RedisHealthMonitor } from './health/health-monitor.js';
import { RedisAlerts } from './health/redis-alerts.js';
import { RedisHealthIndicator } from './health/redis-health.indicator.js';
import { CoordinationLifecycle } from './lock/coordination.lifecycle.js';
import { LockService } from './lock/lock.service.js';
import { PresenceService } from './presence/presence.service.js';
import { PubSubService } from './pubsub/pubsub.service.js';
import {
  resolveRedisOptions,
  type RedisModuleExtras,
  type RedisModuleOptions,
} from './redis-module.options.js';
import { RedisService } from './redis.service.js';
import { SessionService } from './session/session.service.js';
import { StreamsService } from './streams/streams.service.js';
import { RedisTelemetry } from './telemetry/redis-telemetry.js';

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

/** What a service's factory receives in place of a dependency. */
const CONNECTION = Symbol('this connection');
const EXPLORER = Symbol('the decorator explorer of this connection');
/** Another service of the same connection, named by its class. */
type Dependency = typeof CONNECTION | typeof EXPLORER | typeof ModuleRef | Type<object>;

interface ServiceDefinition {
  /** The class: the default connection's injection token. */
  type: Type<object>;
  /** The token of a named connection's instance (public ones from connection/tokens.ts). */
  token: (name: string) => symbol;
  inject: Dependency[];
  create: (...dependencies: never[]) => object;
}

/**
 * Every connection's services, in one table so that the default and the named connections are
 * built the same way: by factories handed that connection, not by constructor injection of the
 * default connection's token.
 */
const SERVICES: ServiceDefinition[] = [
  {
    type: RedisService,
    token: getRedisServiceToken,
    inject: [CONNECTION],
    create: (connection: RedisConnection) => new RedisService(connection),
  },
  {
    type: RedisHealthIndicator,
    token: getRedisHealthIndicatorToken,
    inject: [CONNECTION, ModuleRef],
    create: (connection: RedisConnection, moduleRef: ModuleRef) =>
      new RedisHealthIndicator(connection, moduleRef),
  },
  {
    type: CacheService,
    token: getCacheServiceToken,
    inject: [CONNECTION, RedisService, EXPLORER, PubSubService],
    create: (
      connection: RedisConnection,
      redis: RedisService,
      explorer: DecoratorExplorer,
      pubsub: PubSubService,
    ) => new CacheService(connection, redis, explorer, pubsub),
  },
  {
    type: LockService,
    token: getLockServiceToken,
    inject: [CONNECTION, EXPLORER],
    create: (connection: RedisConnection, explorer: DecoratorExplorer) =>
      new LockService(connection, explorer),
  },
  {
    type: CoordinationLifecycle,
    token: (name) => Symbol.for(`nestjs-redis-infra:CoordinationLifecycle:${name}`),
    inject: [CONNECTION, EXPLORER],
    create: (connection: RedisConnection, explorer: DecoratorExplorer) =>
      new CoordinationLifecycle(connection, explorer),
  },
  {
    type: SessionService,
    token: getSessionServiceToken,
    inject: [CONNECTION, RedisService, PubSubService],
    create: (connection: RedisConnection, redis: RedisService, pubsub: PubSubService) =>
      new SessionService(connection, redis, pubsub),
  },
  {
    type: PubSubService,
    token: getPubSubServiceToken,
    inject: [CONNECTION, EXPLORER],
    create: (connection: RedisConnection, explorer: DecoratorExplorer) =>
      new PubSubService(connection, explorer),
  },
  {
    type: StreamsService,
    token: getStreamsServiceToken,
    inject: [CONNECTION, EXPLORER],
    create: (connection: RedisConnection, explorer: DecoratorExplorer) =>
      new StreamsService(connection, explorer),
  },
  {
    type: PresenceService,
    token: getPresenceServiceToken,
    inject: [CONNECTION, PubSubService],
    create: (connection: RedisConnection, pubsub: PubSubService) =>
      new PresenceService(connection, pubsub),
  },
  {
    type: RedisBullMq,
    token: getRedisBullMqToken,
    inject: [CONNECTION],
    create: (connection: RedisConnection) => new RedisBullMq(connection),
  },
];

/**
 * The providers of one connection's services, and the tokens to export. The default
 * connection's services are registered under their class (and under their `get…Token()` symbol
 * as an alias); a named connection's only under `get…Token(name)`. Each closes with its
 * connection: they are providers of the same module, whose shutdown hooks Nest runs before the
 * connection's.
 */
function serviceProviders(
  name: string,
  connectionToken: symbol,
): { providers: Provider[]; exported: InjectionToken[] } {
  const isDefault = name === DEFAULT_CONNECTION_NAME;
  const tokenOf = (definition: ServiceDefinition): InjectionToken =>
    isDefault ? definition.type : definition.token(name);
  const byType = new Map<Dependency, ServiceDefinition>(
    SERVICES.map((definition) => [definition.type, definition]),
  );
  const providers: Provider[] = [];
  const exported: InjectionToken[] = [];
  for (const definition of SERVICES) {
    const token = tokenOf(definition);
    providers.push({
      provide: token,
      inject: definition.inject.map((dependency): InjectionToken => {
        if (dependency === CONNECTION) return connectionToken;
        if (dependency === EXPLORER) return RedisDecoratorExplorer;
        const service = byType.get(dependency);
        // ModuleRef is the one dependency that is neither ours nor a service of the table.
        return service ? tokenOf(service) : ModuleRef;
      }),
      useFactory: (...dependencies: unknown[]) =>
        definition.create(
          ...(dependencies.map((value, i) =>
            definition.inject[i] === EXPLORER
              ? (value as RedisDecoratorExplorer).forConnection(name)
              : value,
          ) as never[]),
        ),
    });
    if (definition.type === CoordinationLifecycle) continue;
    exported.push(token);
    if (isDefault) {
      const alias = definition.token(name);
      providers.push({ provide: alias, useExisting: definition.type });
      exported.push(alias);
    }
  }
  return { providers, exported };
}

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
  // OpenTelemetry for this connection (idle without an SDK); the default one under its class.
  providers.push({
    provide:
      name === DEFAULT_CONNECTION_NAME
        ? RedisTelemetry
        : Symbol.for(`nestjs-redis-infra:RedisTelemetry:${name}`),
    useFactory: (connection: RedisConnection, moduleRef: ModuleRef) =>
      new RedisTelemetry(connection, moduleRef),
    inject: [connectionToken, ModuleRef],
  });
  const services = serviceProviders(name, connectionToken);
  providers.push(...services.providers);
  const exported: InjectionToken[] = [getRedisToken(name), connectionToken, ...services.exported];
  if (name === DEFAULT_CONNECTION_NAME) {
    // Alerts are one stream for the application; a named connection's probe finds this one.
    providers.push(RedisAlerts);
    exported.push(RedisAlerts);
  }
  return {
    ...definition,
    // The one decorator explorer of the application (a static module: one instance however
    // many connections import it).
    imports: [...(definition.imports ?? []), RedisDiscoveryModule],
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
