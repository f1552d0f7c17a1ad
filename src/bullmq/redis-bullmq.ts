import { Inject, Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import type { Cluster, Redis, RedisOptions } from 'ioredis';

import {
  createClient,
  disconnectAndWait,
  isCluster,
  type RedisClient,
} from '../connection/client-factory.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import { getRedisConnectionToken } from '../connection/tokens.js';
import type { ResolvedRedisConfig } from '../redis-module.options.js';

import { toBullMqPrefix } from './bullmq-prefix.js';

/**
 * What BullMQ needs from the module: the connection BullMQ's `Queue`, `Worker`, `QueueEvents`
 * and `FlowProducer` share, and the key prefix of their keys. Structurally a subset of
 * BullMQ's `QueueOptions` / `WorkerOptions`, so this package needs no BullMQ import.
 */
export interface RedisBullMqOptions {
  /**
   * An ioredis client the module created and owns (`maxRetriesPerRequest: null`, no ioredis
   * `keyPrefix`). BullMQ uses it for its non-blocking commands and duplicates it for a
   * worker's blocking connection (which BullMQ opens and closes itself).
   */
  connection: Redis | Cluster;
  /** BullMQ's `prefix`: the module's `keyPrefix` translated (`{shop}` on a cluster). */
  prefix: string;
}

/**
 * Runs BullMQ (`bullmq`, `@nestjs/bullmq`) on the default connection's configuration:
 * Standalone, Sentinel, Cluster, TLS and credentials come from the same `RedisModule` options
 * or `REDIS_*` environment. The module creates one connection for BullMQ on first use and
 * closes it at shutdown, after BullMQ's queues and workers let go of it.
 *
 * @example
 * ```ts
 * BullModule.forRootAsync({ inject: [RedisBullMq], useFactory: (b: RedisBullMq) => b.rootOptions() });
 * ```
 */
@Injectable()
export class RedisBullMq implements OnApplicationShutdown {
  private readonly logger = new Logger('Redis:bullmq');
  private readonly config: ResolvedRedisConfig;
  private shared?: RedisClient;
  private policyChecked = false;
  private policy?: string;
  private lastErrorText?: string;
  /** 'ready' listeners of the shared client that are not BullMQ's. */
  private ownReadyListeners = 0;

  constructor(@Inject(getRedisConnectionToken()) private readonly redis: RedisConnection) {
    this.config = redis.config;
  }

  /**
   * BullMQ's `prefix` for this configuration: the `keyPrefix` without its trailing `:`
   * (`shop:` → `shop`), `bull` (BullMQ's default) without one; on a cluster wrapped in a hash
   * tag (`{shop}`, `{bull}`) so that every key of a queue lands in one slot, as BullMQ's Lua
   * scripts require.
   */
  get prefix(): string {
    const target = this.config.target;
    const cluster =
      target.kind === 'cluster' || (target.kind === 'client' && isCluster(target.client));
    // A client passed in carries its own keyPrefix; the connection knows which applies.
    return toBullMqPrefix(this.redis.keyPrefix, cluster);
  }

  /**
   * The server's `maxmemory-policy` as read at first use (`undefined` until then, or when
   * `CONFIG GET` is denied). BullMQ needs `noeviction`.
   */
  get maxmemoryPolicy(): string | undefined {
    return this.policy;
  }

  /**
   * The connection shared by every queue and worker built from this bridge, created (and
   * connected) on first call.
   */
  connection(): Redis | Cluster {
    if (this.shared) return this.shared;
    const client = this.createSharedClient();
    this.shared = client;
    client.on('error', (err: Error) => {
      // One line per distinct failure, not one per reconnect attempt.
      if (err.message !== this.lastErrorText) {
        this.lastErrorText = err.message;
        this.logger.warn(
          `BullMQ connection to ${this.config.address}: ${this.redis.scrub(err.message)}`,
        );
      }
    });
    client.on('ready', () => {
      this.lastErrorText = undefined;
      void this.checkEvictionPolicy(client);
    });
    this.ownReadyListeners = client.listenerCount('ready');
    if (client.status === 'wait') client.connect().catch(() => undefined);
    return client;
  }

  /**
   * Options for `BullModule.forRoot` / `forRootAsync` of `@nestjs/bullmq`; `extra` is merged
   * in (e.g. `defaultJobOptions`).
   *
   * @example
   * ```ts
   * BullModule.forRootAsync({ inject: [RedisBullMq], useFactory: (b: RedisBullMq) => b.rootOptions() });
   * ```
   */
  rootOptions<T extends object = object>(extra?: T): T & RedisBullMqOptions {
    return this.options(extra);
  }

  /**
   * Options for `new Queue(name, …)` (and `QueueEvents`, `FlowProducer`).
   *
   * @example
   * ```ts
   * const queue = new Queue('mail', bridge.queueOptions({ defaultJobOptions: { attempts: 3 } }));
   * ```
   */
  queueOptions<T extends object = object>(extra?: T): T & RedisBullMqOptions {
    return this.options(extra);
  }

  /**
   * Options for `new Worker(name, processor, …)`.
   *
   * @example
   * ```ts
   * const worker = new Worker('mail', async (job) => send(job.data), bridge.workerOptions({ concurrency: 4 }));
   * ```
   */
  workerOptions<T extends object = object>(extra?: T): T & RedisBullMqOptions {
    return this.options(extra);
  }

  /**
   * Closes the shared connection once BullMQ let go of it (bounded by `shutdownTimeout`):
   * `@nestjs/bullmq` closes its workers and queues in the same shutdown phase, and a worker
   * still finishing a job needs the connection to record the result.
   */
  async onApplicationShutdown(): Promise<void> {
    const client = this.shared;
    if (!client) return;
    this.shared = undefined;
    const bound = this.config.shutdownTimeout;
    const deadline = performance.now() + bound;
    // Every BullMQ RedisConnection on the client listens for 'ready' until it is closed.
    const inUse = (): boolean =>
      client.listenerCount('ready') > this.ownReadyListeners && client.status === 'ready';
    while (inUse() && performance.now() < deadline) {
      await new Promise<void>((resolve) => setTimeout(resolve, 10));
    }
    if (inUse()) {
      this.logger.warn(
        `closing the BullMQ connection after ${bound} ms while queues or workers still use it: ` +
          'close them first (import RedisModule before BullModule)',
      );
    }
    await disconnectAndWait(client, bound);
  }

  private options<T extends object>(extra: T | undefined): T & RedisBullMqOptions {
    return { ...(extra ?? ({} as T)), connection: this.connection(), prefix: this.prefix };
  }

  private createSharedClient(): RedisClient {
    const config = this.config;
    const target = config.target;
    if (target.kind === 'client') {
      // A copy of the application's client without its prefix and with BullMQ's retry setting.
      const source = target.client;
      const connectionName = `${config.connectionName.replace(/\s+/g, '_')}:bullmq`;
      if (isCluster(source)) {
        return source.duplicate(undefined, {
          keyPrefix: undefined,
          enableAutoPipelining: false,
          redisOptions: {
            ...source.options.redisOptions,
            keyPrefix: undefined,
            maxRetriesPerRequest: null,
            connectionName,
          },
        });
      }
      return source.duplicate({
        keyPrefix: undefined,
        enableAutoPipelining: false,
        maxRetriesPerRequest: null,
        commandTimeout: undefined,
        connectionName,
      });
    }
    const redisOptions: RedisOptions = { ...config.redisOptions, maxRetriesPerRequest: null };
    return createClient(
      {
        ...config,
        // BullMQ refuses an ioredis keyPrefix: its keys carry `prefix` instead.
        keyPrefix: '',
        connectionName: `${config.connectionName}:bullmq`,
        // BullMQ pipelines its own commands and times its blocking ones itself.
        autoPipelining: false,
        coalesceWrites: false,
        redisOptions,
      },
      // 'dedicated': no commandTimeout, which would cut BullMQ's blocking commands short.
      'dedicated',
    );
  }

  /** Warns once when the server may evict BullMQ's keys (BullMQ requires `noeviction`). */
  private async checkEvictionPolicy(client: RedisClient): Promise<void> {
    if (this.policyChecked) return;
    this.policyChecked = true;
    try {
      const reply = (await (client as Redis).config('GET', 'maxmemory-policy')) as unknown;
      const list = Array.isArray(reply) ? (reply as unknown[]).map(String) : [];
      this.policy = list[1];
      if (this.policy !== undefined && this.policy !== 'noeviction') {
        this.logger.warn(
          `maxmemory-policy is "${this.policy}" on ${this.config.address}: BullMQ needs ` +
            '"noeviction", or the server may evict queue keys under memory pressure',
        );
      }
    } catch (err) {
      this.logger.warn(
        `could not read maxmemory-policy on ${this.config.address} (CONFIG GET: ` +
          `${(err as Error).message}): make sure it is "noeviction", as BullMQ requires`,
      );
    }
  }
}
