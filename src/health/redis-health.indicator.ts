import { Inject, Injectable } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import type { HealthIndicatorService } from '@nestjs/terminus';
import type { Cluster } from 'ioredis';
import { DEFAULTS, DEFAULT_CONNECTION_NAME } from '../config/defaults.js';
import { isCluster } from '../connection/client-factory.js';
import { RedisConnection } from '../connection/redis-connection.js';
import { isNoPermission } from '../connection/permission.js';
import { getRedisConnectionToken } from '../connection/tokens.js';
import { withTimeout } from '../connection/wait.js';
import { parseInfo } from '../redis-info.js';
import { HEALTH_MESSAGES } from './health-messages.js';

/** Options of `RedisHealthIndicator.isHealthy`. */
export interface RedisHealthCheckOptions {
  /**
   * Every probe together must answer within this many ms, or the check is `down`.
   * @defaultValue 1000
   */
  timeout?: number;
  /** `down` when the `PING` round trip (the slowest master's, on a cluster) exceeds this, in ms. */
  maxLatency?: number;
  /**
   * `down` when `used_memory / maxmemory` exceeds this (0..1) on any master. Servers without
   * `maxmemory` pass.
   * @example 0.9
   */
  maxMemoryRatio?: number;
  /**
   * Which registered connection to check.
   * @defaultValue 'default'
   */
  connection?: string;
}

/** Details reported with the status; figures that were not probed are absent. */
export interface RedisHealthDetails {
  status: 'up' | 'down';
  /** Why the check is down. */
  message?: string;
  /**
   * While the connection is not ready: the last error it got (secrets removed), e.g. a
   * `WRONGPASS` that a `lazyConnect` client keeps retrying on.
   */
  lastError?: string;
  /** The connection checked, when it is not the default one. */
  connection?: string;
  /** `PING` round trip in ms. */
  latency?: number;
  /** Highest `used_memory / maxmemory` over the masters (`null`: no `maxmemory` set). */
  memoryRatio?: number | null;
  usedMemory?: number;
  maxMemory?: number;
  /** `cluster_state` of every master, when it is a cluster (`ok` or `fail`). */
  clusterState?: string;
  [detail: string]: unknown;
}

/** The indicator result, in the shape `@nestjs/terminus` expects. */
export type RedisHealthIndicatorResult<Key extends string = string> = Record<
  Key,
  RedisHealthDetails
>;

interface Probe {
  latency?: number;
  memoryRatio?: number | null;
  usedMemory?: number;
  maxMemory?: number;
  clusterState?: string;
  problem?: string;
}

let terminus: Promise<HealthIndicatorService> | undefined;

/**
 * `@nestjs/terminus` is an optional peer: loaded on the first check, so that applications
 * without health checks need not install it.
 */
function healthIndicatorService(): Promise<HealthIndicatorService> {
  terminus ??= import('@nestjs/terminus').then(
    (m) => new m.HealthIndicatorService(),
    (err: unknown) => {
      terminus = undefined;
      throw new Error(HEALTH_MESSAGES.terminusMissing, { cause: err });
    },
  );
  return terminus;
}

/**
 * A `@nestjs/terminus` health indicator for Redis. The result is a value, never an exception:
 * `down` with the figures and the reason, within `timeout`, also while Redis is down or frozen.
 *
 * @example
 * ```ts
 * @Get('health') @HealthCheck()
 * check() {
 *   return this.health.check([() => this.redis.isHealthy('redis', { maxMemoryRatio: 0.9 })]);
 * }
 * ```
 */
@Injectable()
export class RedisHealthIndicator {
  constructor(
    @Inject(getRedisConnectionToken()) private readonly defaultConnection: RedisConnection,
    private readonly moduleRef: ModuleRef,
  ) {}

  /**
   * Probes the connection: `PING` (latency), `INFO memory` when `maxMemoryRatio` is set, and
   * `CLUSTER INFO` on a cluster, all bounded by `timeout`.
   */
  async isHealthy<const Key extends string = 'redis'>(
    key: Key = 'redis' as Key,
    options: RedisHealthCheckOptions = {},
  ): Promise<RedisHealthIndicatorResult<Key>> {
    const indicator = (await healthIndicatorService()).check(key);
    const name = options.connection ?? DEFAULT_CONNECTION_NAME;
    const named = name === DEFAULT_CONNECTION_NAME ? {} : { connection: name };
    const connection = this.resolve(name);
    if (!connection) {
      return indicator.down({
        ...named,
        message: HEALTH_MESSAGES.unknownConnection(name),
      }) as RedisHealthIndicatorResult<Key>;
    }
    const status = connection.client.status;
    if (status !== 'ready') {
      const lastError = connection.lastError;
      return indicator.down({
        ...named,
        message: HEALTH_MESSAGES.notReady(status, lastError),
        ...(lastError ? { lastError } : {}),
      }) as RedisHealthIndicatorResult<Key>;
    }
    const timeout = options.timeout ?? DEFAULTS.healthTimeout;
    let probe: Probe;
    try {
      probe = await withTimeout(
        this.probe(connection, options),
        timeout,
        () => new Error(HEALTH_MESSAGES.timeout(timeout)),
      );
    } catch (err) {
      return indicator.down({
        ...named,
        message: connection.scrub((err as Error).message),
      }) as RedisHealthIndicatorResult<Key>;
    }
    const { problem, ...details } = probe;
    return (
      problem
        ? indicator.down({ ...named, ...details, message: problem })
        : indicator.up({ ...named, ...details })
    ) as RedisHealthIndicatorResult<Key>;
  }

  private resolve(name: string): RedisConnection | undefined {
    if (name === DEFAULT_CONNECTION_NAME) return this.defaultConnection;
    try {
      return this.moduleRef.get<RedisConnection>(getRedisConnectionToken(name), { strict: false });
    } catch {
      return undefined;
    }
  }

  private async probe(
    connection: RedisConnection,
    options: RedisHealthCheckOptions,
  ): Promise<Probe> {
    const client = connection.client;
    const masters = connection.masters();
    const problems: string[] = [];
    const result: Probe = {};

    const pings = connection.pingLatency();
    const memory =
      options.maxMemoryRatio === undefined
        ? undefined
        : Promise.all(masters.map(async (node) => parseInfo(await node.info('memory')).memory));
    const cluster = isCluster(client) ? clusterState(client) : undefined;
    // Settled below, in order; a rejection meanwhile must not go unhandled.
    memory?.catch(() => undefined);
    cluster?.catch(() => undefined);

    result.latency = await pings;
    if (options.maxLatency !== undefined && result.latency > options.maxLatency) {
      problems.push(HEALTH_MESSAGES.slow(result.latency, options.maxLatency));
    }
    const sections = memory && (await memory.catch(refusedBy('INFO', '@dangerous', problems)));
    if (sections && options.maxMemoryRatio !== undefined) {
      let used = 0;
      let max = 0;
      let worst: number | null = null;
      for (const m of sections) {
        const u = Number(m?.used_memory ?? 0);
        const x = Number(m?.maxmemory ?? 0);
        used += u;
        max += x;
        if (x > 0) worst = Math.max(worst ?? 0, u / x);
      }
      result.usedMemory = used;
      result.maxMemory = max;
      result.memoryRatio = worst === null ? null : Math.round(worst * 10_000) / 10_000;
      if (worst !== null && worst > options.maxMemoryRatio) {
        problems.push(HEALTH_MESSAGES.memory(worst, options.maxMemoryRatio, used, max));
      }
    }
    const state = cluster && (await cluster.catch(refusedBy('CLUSTER', '@slow', problems)));
    if (state) {
      result.clusterState = state;
      if (result.clusterState !== 'ok')
        problems.push(HEALTH_MESSAGES.clusterState(result.clusterState));
    }
    if (problems.length) result.problem = problems.join('; ');
    return result;
  }
}

/**
 * A rejection handler for one probe: an ACL refusal (`NOPERM`) becomes a problem that names the
 * permission to grant, instead of a raw server reply; any other error fails the check as usual.
 */
function refusedBy(command: string, category: string, problems: string[]) {
  return (err: unknown): undefined => {
    if (!isNoPermission(err)) throw err;
    problems.push(HEALTH_MESSAGES.noPermission(command, category));
    return undefined;
  };
}

/** `ok` when every master reports `cluster_state:ok`, else the first other state seen. */
async function clusterState(cluster: Cluster): Promise<string> {
  const states = await Promise.all(
    cluster.nodes('master').map(async (node) => {
      const text = (await node.cluster('INFO')) as string;
      return /cluster_state:(\w+)/.exec(text)?.[1] ?? 'unknown';
    }),
  );
  return states.find((s) => s !== 'ok') ?? (states.length ? 'ok' : 'unknown');
}
