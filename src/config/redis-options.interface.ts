import type { RedisHealthThresholds } from '../health/thresholds.js';
import type { ConnectionOptions as TlsConnectionOptions } from 'node:tls';
import type { Cluster, ClusterOptions, Redis, RedisOptions } from 'ioredis';
import type { CacheSerializer } from '../cache/serializer.js';
import type { RedisConnectionOptions } from '../connection/connection.options.js';
import type { RedisPubSubModuleOptions } from '../pubsub/pubsub.options.js';

export type { RedisPubSubModuleOptions } from '../pubsub/pubsub.options.js';
export type {
  RedisConnectionOptions,
  RedisRetryOnTimeoutOptions,
  RedisRetryOptions,
} from '../connection/connection.options.js';

/** A `host:port` pair, as `sentinel.sentinels` and `cluster.nodes` take them. */
export interface RedisNodeAddress {
  host: string;
  port: number;
}

/** Connecting through Redis Sentinel. */
export interface RedisSentinelOptions {
  /** Sentinel addresses; any reachable one is enough. */
  sentinels: RedisNodeAddress[];
  /**
   * The monitored master's name (`sentinel monitor <name> ...`).
   * @example 'mymaster'
   */
  name: string;
  /**
   * Connect to the master (default) or to a replica, for read-only use.
   * @defaultValue 'master'
   */
  role?: 'master' | 'slave';
  /** Password of the sentinels themselves, when they require one. */
  sentinelPassword?: string;
  /** ACL user of the sentinels themselves. */
  sentinelUsername?: string;
  /**
   * Subscribe to sentinel events to follow a failover sooner (about 1.2 s measured) instead of
   * waiting for the old master's connection to fail.
   * @defaultValue true
   */
  failoverDetector?: boolean;
}

/** Connecting to a Redis Cluster. */
export interface RedisClusterOptions {
  /**
   * Seed nodes; one reachable node is enough, the rest is discovered.
   * @example [{ host: '10.0.0.1', port: 7000 }]
   */
  nodes: RedisNodeAddress[];
  /**
   * Where reads go.
   * @defaultValue 'master'
   */
  scaleReads?: 'master' | 'slave' | 'all';
  /** Passed through to ioredis's `Cluster` (our own settings win where both are set). */
  clusterOptions?: Omit<ClusterOptions, 'redisOptions' | 'lazyConnect' | 'keyPrefix'>;
}

/** Defaults for `CacheService`. */
export interface RedisCacheModuleOptions {
  /**
   * Time to live of an entry when a call gives none, in ms.
   * @defaultValue 60000
   */
  ttl?: number;
  /**
   * How long an entry outlives its TTL as a stale fallback (stale-if-error, soft timeouts),
   * when a call gives none, in ms. The Redis TTL is `ttl + grace`.
   * @defaultValue 0
   */
  grace?: number;
  /**
   * The in-process tier in front of Redis, kept coherent across instances by pub/sub.
   * `false` turns it off.
   * @defaultValue { maxEntries: 10000, maxBytes: 67108864 }
   */
  l1?: false | { maxEntries?: number; maxBytes?: number };
  /**
   * How long the cross-instance stampede lock is held at most: if the instance loading a key
   * dies, another takes over after this, in ms.
   * @defaultValue 10000
   */
  lockTtl?: number;
  /**
   * Bound on every Redis call of the cache, in ms: past it the call counts as a miss (reads)
   * or is dropped (writes). Defaults to the module's `commandTimeout`, else 1000.
   */
  timeout?: number;
  /** How values become bytes. @defaultValue strict JSON */
  serializer?: CacheSerializer;
  /**
   * Largest value the cache stores, in bytes once serialized: `set` throws a `RangeError` for
   * a bigger one (writing nothing); `getOrSet` returns a bigger loaded value without caching it.
   * @defaultValue 1048576 (1 MiB)
   */
  maxValueBytes?: number;
}

/** Defaults for `SessionService`. */
export interface RedisSessionModuleOptions {
  /**
   * Idle timeout: a session not touched for this long expires, in ms.
   * @defaultValue 1800000 (30 minutes)
   */
  ttl?: number;
  /**
   * Absolute lifetime: no amount of activity keeps a session alive past this, in ms.
   * @defaultValue 86400000 (24 hours)
   */
  absoluteTtl?: number;
  /**
   * Largest session accepted, in bytes: its data (property names and JSON values) plus its
   * `meta` as JSON. A `create` or `update` that would exceed it throws and writes nothing.
   * @defaultValue 65536 (64 KiB)
   */
  maxBytes?: number;
  /**
   * At most this many live sessions per user: creating one more ends the user's oldest
   * (earliest created) sessions in the same step. `null`: no limit.
   * @defaultValue null
   * @example 5
   */
  maxSessionsPerUser?: number | null;
}

/** Defaults for `LockService`. */
export interface RedisLockModuleOptions {
  /**
   * Lock time to live when a call gives none, in ms.
   * @defaultValue 30000
   */
  ttl?: number;
  /**
   * How long `acquire` and `withLock` wait for a taken lock when a call gives no `wait`, in ms.
   * @defaultValue 10000
   */
  wait?: number;
  /**
   * While waiting, a release wakes waiters at once (pub/sub); this jittered poll is only the
   * fallback for a lost notification or a holder that died, in ms.
   * @defaultValue 250
   */
  retryInterval?: number;
  /**
   * Auto-extension renews a lock when this much of its TTL is left (or a third of it, if more).
   * A `withLock` TTL must be longer, or the lock would expire before it could be renewed.
   * @defaultValue 200
   */
  extendMargin?: number;
  /**
   * After acquiring, wait until this many replicas have the lock (`WAIT`), so a failover right
   * after acquisition does not hand the lock to a second owner. Costs a replication round trip
   * per acquisition; an acquisition that is not acknowledged in time is undone and retried.
   * @defaultValue 0
   */
  replicas?: number;
  /**
   * How long `WAIT` may take for `replicas` acknowledgements, in ms.
   * @defaultValue 500
   */
  replicaTimeout?: number;
  /**
   * This process's label as a lock holder, shown by `LockService.inspect` (1-256 characters).
   * @defaultValue `<hostname>:<pid>`
   * @example 'billing-worker-3'
   */
  holderId?: string;
}

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
export interface RedisModuleOptions extends RedisConnectionOptions {
  /**
   * `redis://[[user]:password@]host[:port][/db]`, or `rediss://` for TLS.
   * @example 'redis://localhost:6379/0'
   */
  url?: string;
  /** @defaultValue '127.0.0.1' */
  host?: string;
  /** @defaultValue 6379 */
  port?: number;
  /** Database index (standalone and Sentinel only; a cluster has only 0). @defaultValue 0 */
  db?: number;
  /** ACL user name (Redis 6+). */
  username?: string;
  /** Never logged and never part of an error message. */
  password?: string;
  /** `true` for TLS with Node's defaults, or Node's TLS options. @defaultValue false */
  tls?: boolean | TlsConnectionOptions;
  /** Connect through Redis Sentinel. */
  sentinel?: RedisSentinelOptions;
  /** Connect to a Redis Cluster. */
  cluster?: RedisClusterOptions;
  /**
   * Use a client you created and own. We never connect or close it; you do.
   * Other connection options are ignored.
   */
  client?: Redis | Cluster;
  /**
   * Prepended to every key, by ioredis on the injected client and by our services.
   * @example 'shop:'
   * @defaultValue ''
   */
  keyPrefix?: string;
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

/** Options that shape the module itself rather than the connection (`forRoot` and `forRootAsync`). */
export interface RedisModuleExtras {
  /**
   * Register the module globally, so every module can inject its providers.
   * @defaultValue true
   */
  isGlobal?: boolean;
  /**
   * Name of this connection, for apps that talk to more than one Redis. Inject it with
   * `@InjectRedis(name)`. The unnamed registration also provides the services
   * (`RedisService`, `CacheService`, ...).
   * @defaultValue 'default'
   */
  name?: string;
}
