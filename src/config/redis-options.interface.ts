import type { ConnectionOptions as TlsConnectionOptions } from 'node:tls';

import type { Cluster, ClusterOptions, Redis } from 'ioredis';

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

/**
 * Where the module connects, and the key prefix of everything it writes: one target of `url`,
 * `host`/`port`, `sentinel`, `cluster` or an existing `client`. Part of `RedisModuleOptions`;
 * with none of them, the environment (`REDIS_URL`, `REDIS_HOST`, ...) is read.
 */
export interface RedisConnectionTarget {
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
