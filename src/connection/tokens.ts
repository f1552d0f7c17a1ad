import { Inject } from '@nestjs/common';

import { DEFAULT_CONNECTION_NAME } from '../config/defaults.js';

/**
 * The injection token of the ioredis client (`Redis` or `Cluster`) of a connection. The
 * symbol's description names the connection, so a DI error says which one is missing.
 *
 * @example
 * ```ts
 * const redis = app.get<Redis>(getRedisToken());
 * ```
 */
export function getRedisToken(name: string = DEFAULT_CONNECTION_NAME): symbol {
  return Symbol.for(`nestjs-redis-infra:client:${name}`);
}

/** Internal: the token of the `RedisConnection` that owns a connection's clients. */
export function getRedisConnectionToken(name: string = DEFAULT_CONNECTION_NAME): symbol {
  return Symbol.for(`nestjs-redis-infra:connection:${name}`);
}

/**
 * Injects the ioredis client of a connection: `Redis` for standalone and Sentinel, `Cluster`
 * for a cluster. Without a name, the default connection.
 *
 * @example
 * ```ts
 * constructor(@InjectRedis() private readonly redis: Redis) {}
 * constructor(@InjectRedis('analytics') private readonly analytics: Cluster) {}
 * ```
 */
export function InjectRedis(name?: string): ParameterDecorator & PropertyDecorator {
  return Inject(getRedisToken(name));
}

/**
 * The token of one service of a connection. The default connection's services are also
 * injected by class; the symbol's description names the service and the connection, so a DI
 * error says which registration is missing.
 */
function serviceToken(service: string, name: string): symbol {
  return Symbol.for(`nestjs-redis-infra:${service}:${name}`);
}

/**
 * The injection token of a connection's `RedisService`. Without a name, the default
 * connection's (the same instance as injecting `RedisService` by class).
 *
 * @example
 * ```ts
 * const analytics = app.get<RedisService>(getRedisServiceToken('analytics'));
 * ```
 */
export function getRedisServiceToken(name: string = DEFAULT_CONNECTION_NAME): symbol {
  return serviceToken('RedisService', name);
}

/**
 * Injects a connection's `RedisService`.
 *
 * @example
 * ```ts
 * constructor(@InjectRedisService('analytics') private readonly analytics: RedisService) {}
 * ```
 */
export function InjectRedisService(name?: string): ParameterDecorator & PropertyDecorator {
  return Inject(getRedisServiceToken(name));
}

/**
 * The injection token of a connection's `CacheService`. Without a name, the default
 * connection's (the same instance as injecting `CacheService` by class).
 *
 * @example
 * ```ts
 * const cache = app.get<CacheService>(getCacheServiceToken('analytics'));
 * ```
 */
export function getCacheServiceToken(name: string = DEFAULT_CONNECTION_NAME): symbol {
  return serviceToken('CacheService', name);
}

/**
 * Injects a connection's `CacheService`.
 *
 * @example
 * ```ts
 * constructor(@InjectCacheService('analytics') private readonly cache: CacheService) {}
 * ```
 */
export function InjectCacheService(name?: string): ParameterDecorator & PropertyDecorator {
  return Inject(getCacheServiceToken(name));
}

/**
 * The injection token of a connection's `SessionService`. Without a name, the default
 * connection's (the same instance as injecting `SessionService` by class).
 *
 * @example
 * ```ts
 * const sessions = app.get<SessionService>(getSessionServiceToken('sessions'));
 * ```
 */
export function getSessionServiceToken(name: string = DEFAULT_CONNECTION_NAME): symbol {
  return serviceToken('SessionService', name);
}

/**
 * Injects a connection's `SessionService`.
 *
 * @example
 * ```ts
 * constructor(@InjectSessionService('sessions') private readonly sessions: SessionService) {}
 * ```
 */
export function InjectSessionService(name?: string): ParameterDecorator & PropertyDecorator {
  return Inject(getSessionServiceToken(name));
}

/**
 * The injection token of a connection's `LockService`. Without a name, the default
 * connection's (the same instance as injecting `LockService` by class).
 *
 * @example
 * ```ts
 * const locks = app.get<LockService>(getLockServiceToken('locks'));
 * ```
 */
export function getLockServiceToken(name: string = DEFAULT_CONNECTION_NAME): symbol {
  return serviceToken('LockService', name);
}

/**
 * Injects a connection's `LockService`.
 *
 * @example
 * ```ts
 * constructor(@InjectLockService('locks') private readonly locks: LockService) {}
 * ```
 */
export function InjectLockService(name?: string): ParameterDecorator & PropertyDecorator {
  return Inject(getLockServiceToken(name));
}

/**
 * The injection token of a connection's `RedisHealthIndicator`, whose `isHealthy()` probes
 * that connection. Without a name, the default connection's.
 *
 * @example
 * ```ts
 * const health = app.get<RedisHealthIndicator>(getRedisHealthIndicatorToken('analytics'));
 * ```
 */
export function getRedisHealthIndicatorToken(name: string = DEFAULT_CONNECTION_NAME): symbol {
  return serviceToken('RedisHealthIndicator', name);
}

/**
 * Injects a connection's `RedisHealthIndicator`.
 *
 * @example
 * ```ts
 * constructor(@InjectRedisHealthIndicator('analytics') private readonly analytics: RedisHealthIndicator) {}
 * ```
 */
export function InjectRedisHealthIndicator(name?: string): ParameterDecorator & PropertyDecorator {
  return Inject(getRedisHealthIndicatorToken(name));
}

/**
 * The injection token of a connection's `PubSubService`. Without a name, the default
 * connection's (the same instance as injecting `PubSubService` by class).
 *
 * @example
 * ```ts
 * const events = app.get<PubSubService>(getPubSubServiceToken('events'));
 * ```
 */
export function getPubSubServiceToken(name: string = DEFAULT_CONNECTION_NAME): symbol {
  return serviceToken('PubSubService', name);
}

/**
 * Injects a connection's `PubSubService`.
 *
 * @example
 * ```ts
 * constructor(@InjectPubSubService('events') private readonly events: PubSubService) {}
 * ```
 */
export function InjectPubSubService(name?: string): ParameterDecorator & PropertyDecorator {
  return Inject(getPubSubServiceToken(name));
}

/**
 * The injection token of a connection's `StreamsService`. Without a name, the default
 * connection's (the same instance as injecting `StreamsService` by class).
 *
 * @example
 * ```ts
 * const streams = app.get<StreamsService>(getStreamsServiceToken('events'));
 * ```
 */
export function getStreamsServiceToken(name: string = DEFAULT_CONNECTION_NAME): symbol {
  return serviceToken('StreamsService', name);
}

/**
 * Injects a connection's `StreamsService`.
 *
 * @example
 * ```ts
 * constructor(@InjectStreamsService('events') private readonly streams: StreamsService) {}
 * ```
 */
export function InjectStreamsService(name?: string): ParameterDecorator & PropertyDecorator {
  return Inject(getStreamsServiceToken(name));
}

/**
 * The injection token of a connection's `PresenceService`. Without a name, the default
 * connection's (the same instance as injecting `PresenceService` by class).
 *
 * @example
 * ```ts
 * const presence = app.get<PresenceService>(getPresenceServiceToken('events'));
 * ```
 */
export function getPresenceServiceToken(name: string = DEFAULT_CONNECTION_NAME): symbol {
  return serviceToken('PresenceService', name);
}

/**
 * Injects a connection's `PresenceService`.
 *
 * @example
 * ```ts
 * constructor(@InjectPresenceService('events') private readonly presence: PresenceService) {}
 * ```
 */
export function InjectPresenceService(name?: string): ParameterDecorator & PropertyDecorator {
  return Inject(getPresenceServiceToken(name));
}

/**
 * The injection token of a connection's `RedisBullMq` bridge. Without a name, the default
 * connection's (the same instance as injecting `RedisBullMq` by class).
 *
 * @example
 * ```ts
 * const queues = app.get<RedisBullMq>(getRedisBullMqToken('jobs'));
 * ```
 */
export function getRedisBullMqToken(name: string = DEFAULT_CONNECTION_NAME): symbol {
  return serviceToken('RedisBullMq', name);
}

/**
 * Injects a connection's `RedisBullMq` bridge.
 *
 * @example
 * ```ts
 * constructor(@InjectRedisBullMq('jobs') private readonly queues: RedisBullMq) {}
 * ```
 */
export function InjectRedisBullMq(name?: string): ParameterDecorator & PropertyDecorator {
  return Inject(getRedisBullMqToken(name));
}
