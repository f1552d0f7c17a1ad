import type { RedisHealthThresholds } from '../health/thresholds.js';
import type { ConnectionOptions as TlsConnectionOptions } from 'node:tls';
import type { Cluster, ClusterOptions, Redis, RedisOptions } from 'ioredis';
import type { RedisCacheModuleOptions } from '../cache/cache.options.js';
import type { RedisLockModuleOptions } from '../lock/lock.options.js';

export type { RedisLockModuleOptions };
export type { RedisCacheModuleOptions, RedisCacheL1Options } from '../cache/cache.options.js';
import type { RedisSessionModuleOptions } from '../session/session.options.js';

export type { RedisSessionModuleOptions } from '../session/session.options.js';

/** A `host:port` pair, as `sentinel.sentinels` and `cluster.nodes` take them. */
export interface RedisNodeAddress {
  host: string;
  port: number;
}

/**
 * Reconnect backoff: `min(maxDelay, initialDelay * factor^(attempt-1))`, then jittered. The
 * attempt count restarts whenever the connection is ready again, so the first attempts after a
 * healthy connection drops are the fast ones: with the defaults a restart that keeps Redis
 * away for 0.4 s is noticed within about 0.1 s of its end.
 */
export interface RedisRetryOptions {
  /**
   * Delay before the first reconnect attempt, in ms.
   * @defaultValue 50
   */
  initialDelay?: number;
  /**
   * Each delay is this many times the previous one (1 to 10). Gentler than doubling, so that
   * the gap between Redis coming back and the next attempt stays a fraction of the outage.
   * @defaultValue 1.5
   */
  factor?: number;
  /**
   * Upper bound of any single delay, in ms: how long, at most, a long outage keeps an instance
   * away after Redis is back.
   * @defaultValue 2000
   */
  maxDelay?: number;
  /**
   * Fraction of each delay that is randomised (0 = none, 1 = anywhere between 0 and the
   * delay), so that many instances do not reconnect in lock-step after an outage.
   * @defaultValue 0.5
   */
  jitter?: number;
  /**
   * Give up reconnecting after this many attempts in a row (`null`: never give up).
   * @defaultValue null
   */
  maxAttempts?: number | null;
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

/** Defaults for `PubSubService`. */
export interface RedisPubSubModuleOptions {
  /**
   * What `onKeyEvent` does when the server's `notify-keyspace-events` lacks the flags it
   * needs: `'check'` logs one message naming the flags to set and returns an inactive
   * handle; `'configure'` sets them with `CONFIG SET` (on every master of a cluster), and
   * falls back to `'check'` when `CONFIG` is renamed or denied.
   * @defaultValue 'check'
   */
  keyspaceEvents?: 'check' | 'configure';
  /**
   * Messages buffered per subscription while its handler is busy. When full, the oldest is
   * dropped (counted in `stats().dropped`) and the handler later gets a gap notice.
   * @defaultValue 1000
   */
  bufferSize?: number;
  /**
   * How long a handler's promise may stay pending before the subscription stops waiting for
   * it and moves on to the next message (counted in `stats().handlerTimeouts`), in ms.
   * @defaultValue 30000
   */
  handlerTimeout?: number;
  /**
   * How often the subscriber connections are probed with `PING`, in ms (0: never). A
   * half-open connection raises no error; after two intervals without an answer it is
   * reconnected, and subscribers get a gap notice.
   * @defaultValue 5000
   */
  pingInterval?: number;
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
export interface RedisModuleOptions {
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
   * Name our connections give themselves (`CLIENT SETNAME`), followed by `:command`,
   * `:subscriber` or `:dedicated`, so they can be told apart in `CLIENT LIST`.
   * @defaultValue 'nestjs-redis-infra:<name>'
   * @example 'checkout-api'
   */
  connectionName?: string;
  /**
   * Prepended to every key, by ioredis on the injected client and by our services.
   * @example 'shop:'
   * @defaultValue ''
   */
  keyPrefix?: string;
  /**
   * How long startup waits for the connection to be ready, in ms. Also the TCP connect
   * timeout of each attempt.
   * @defaultValue 5000
   */
  connectTimeout?: number;
  /**
   * Rejects a command that has no reply after this long, in ms (unset: wait).
   * Our services bound their own calls regardless.
   * @defaultValue undefined
   */
  commandTimeout?: number;
  /**
   * `false`: startup waits for Redis and fails with a `RedisConnectionError` when it cannot
   * connect. `true`: the app boots at once and connects in the background.
   * @defaultValue false
   */
  lazyConnect?: boolean;
  /** Reconnect backoff with jitter and a cap. */
  retry?: RedisRetryOptions;
  /**
   * Upper bound on the connections this registration opens: the command connection, the
   * subscriber connection (opened on first subscribe) and dedicated connections for
   * blocking commands.
   * @defaultValue 10
   */
  maxConnections?: number;
  /**
   * How long shutdown waits for in-flight commands before closing sockets anyway, in ms.
   * @defaultValue 2000
   */
  shutdownTimeout?: number;
  /**
   * Batch commands issued in the same tick into one write. Off by default: measured on
   * loopback it is 1.4-1.7x faster at 64 commands in flight but 18-25% slower for awaited,
   * sequential commands, and pays off only from about 8 in flight (see bench/).
   * @defaultValue false
   */
  autoPipelining?: boolean;
  /**
   * Send the commands written in one tick in one system call (cork the socket, uncork on
   * `process.nextTick`). Unlike `autoPipelining` it costs sequential commands nothing
   * measurable, and with many commands in flight it is the larger gain (see bench/).
   * @defaultValue true
   */
  coalesceWrites?: boolean;
  /**
   * RESP protocol version (3 needs Redis 6+; use 2 behind proxies that do not speak it).
   * @defaultValue 3 (ioredis 6's own default; measured no faster or slower than 2, see bench/)
   */
  protocol?: 2 | 3;
  /** Passed through to ioredis; our settings above win where both are set. */
  redisOptions?: RedisOptions;
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
