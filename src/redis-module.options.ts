import {
  validateCacheOptions,
  type RedisCacheModuleOptions,
  type ResolvedCacheOptions,
} from './cache/cache.options.js';
import { DEFAULT_CONNECTION_NAME } from './config/defaults.js';
import type { RedisConnectionTarget } from './config/redis-options.interface.js';
import {
  resolveConnectionConfig,
  type ResolvedConnectionConfig,
} from './config/resolve-options.js';
import type { RedisConnectionOptions } from './connection/connection.options.js';
import { validateHealthModuleOptions, type RedisHealthThresholds } from './health/thresholds.js';
import {
  validateLockOptions,
  type RedisLockModuleOptions,
  type ResolvedLockOptions,
} from './lock/lock.options.js';
import {
  validatePubSubOptions,
  type RedisPubSubModuleOptions,
  type ResolvedPubSubOptions,
} from './pubsub/pubsub.options.js';
import {
  validateSessionOptions,
  type RedisSessionModuleOptions,
  type ResolvedSessionOptions,
} from './session/session.options.js';

/*
 * The module's options, composed: the connection target (config/), how connections behave
 * (connection/), and each capability's own options, which live beside the capability. config/
 * knows nothing of the capabilities; this file is where they meet.
 */

export type {
  RedisClusterOptions,
  RedisConnectionTarget,
  RedisModuleExtras,
  RedisNodeAddress,
  RedisSentinelOptions,
} from './config/redis-options.interface.js';
export type {
  RedisConnectionOptions,
  RedisRetryOnTimeoutOptions,
  RedisRetryOptions,
} from './connection/connection.options.js';
export type { RedisCacheL1Options, RedisCacheModuleOptions } from './cache/cache.options.js';
export type { RedisLockModuleOptions } from './lock/lock.options.js';
export type { RedisPubSubModuleOptions } from './pubsub/pubsub.options.js';
export type { RedisSessionModuleOptions } from './session/session.options.js';

/**
 * Options of `RedisModule.forRoot()` / the factory of `forRootAsync()`.
 *
 * Give one target: `url`, or `host`/`port`, or `sentinel`, or `cluster`, or an existing
 * `client`. With none of them, the environment (`REDIS_URL`, `REDIS_HOST`, ...) is read.
 *
 * @example
 * ```ts
 * RedisModule.forRoot({ url: 'redis://:secret@cache.internal:6379/0', keyPrefix: 'shop:' })
 * ```
 */
export interface RedisModuleOptions extends RedisConnectionTarget, RedisConnectionOptions {
  /** `CacheService` defaults. */
  cache?: RedisCacheModuleOptions;
  /** `SessionService` defaults. */
  session?: RedisSessionModuleOptions;
  /** `LockService` defaults. */
  lock?: RedisLockModuleOptions;
  /** `PubSubService` defaults. */
  pubsub?: RedisPubSubModuleOptions;
  /**
   * Runs a health probe every this many ms: keeps the last result warm for
   * `RedisHealthIndicator.isHealthy`, destroys a command connection whose `PING` does not come
   * back within the timeout (ioredis reconnects), and raises `alerts`. 0 or unset: off, unless
   * `alerts` are set (then 10000).
   * @defaultValue 0
   */
  healthCheckInterval?: number;
  /**
   * Thresholds the periodic probe compares against, raising `redis.alert.raised` /
   * `redis.alert.resolved` once per change (see `RedisAlerts`); `timeout` bounds each probe
   * (default 1000 ms).
   */
  alerts?: RedisHealthThresholds & { timeout?: number };
}

/** Options after defaults, environment and validation: everything the module needs. */
export interface ResolvedRedisConfig extends ResolvedConnectionConfig {
  /** Periodic health probe interval in ms; 0: off. */
  healthCheckInterval: number;
  /** The periodic probe's alert thresholds. */
  alerts?: RedisHealthThresholds & { timeout?: number };
  cache: ResolvedCacheOptions;
  session: ResolvedSessionOptions;
  lock: ResolvedLockOptions;
  pubsub: ResolvedPubSubOptions;
}

/**
 * Turns user options (and, when they name no target, the environment) into a validated
 * configuration. Throws `RedisConfigError` naming the option or variable, the value and the unit.
 */
export function resolveRedisOptions(
  options: RedisModuleOptions | undefined,
  env: NodeJS.ProcessEnv = process.env,
  name: string = DEFAULT_CONNECTION_NAME,
): ResolvedRedisConfig {
  const { config, options: o } = resolveConnectionConfig<RedisModuleOptions>(options, env, name);
  return {
    ...config,
    cache: validateCacheOptions(o.cache, config.commandTimeout),
    session: validateSessionOptions(o.session),
    lock: validateLockOptions(o.lock),
    pubsub: validatePubSubOptions(o.pubsub),
    ...validateHealthModuleOptions(o.healthCheckInterval, o.alerts),
  };
}
