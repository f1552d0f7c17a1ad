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
