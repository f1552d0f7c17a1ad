import { Inject, Injectable } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import type { HealthIndicatorService } from '@nestjs/terminus';

import { DEFAULTS, DEFAULT_CONNECTION_NAME } from '../config/defaults.js';
import { RedisConnection } from '../connection/redis-connection.js';
import { getRedisConnectionToken } from '../connection/tokens.js';
import { withTimeout } from '../connection/wait.js';

import { HEALTH_MESSAGES } from './health-messages.js';
import { monitorOf, takeSample } from './health-monitor.js';
import {
  evaluate,
  infoFailure,
  lowestVersion,
  needsInfo,
  validateThresholds,
  type HealthSample,
  type PoolFigures,
  type RedisHealthThresholds,
} from './thresholds.js';

/** Options of `RedisHealthIndicator.isHealthy`: the thresholds, plus how to probe. */
export interface RedisHealthCheckOptions extends RedisHealthThresholds {
  /**
   * Every probe together must answer within this many ms, or the check is `down`.
   * @defaultValue 1000
   */
  timeout?: number;
  /**
   * Which registered connection to check.
   * @defaultValue 'default'
   */
  connection?: string;
  /**
   * Answer from the periodic probe's last result (`healthCheckInterval`) when it is at most this
   * many ms old; 0 always probes now. Without a periodic probe, every check probes now.
   * @defaultValue the connection's `healthCheckInterval`
   */
  maxAge?: number;
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
  /** The oldest `redis_version` among the masters (absent when the ACL denies `INFO`). */
  redis_version?: string;
  /** Highest `mem_fragmentation_ratio` over the masters, with `maxFragmentation`. */
  fragmentation?: number | null;
  /** Open connections / `maxConnections` of this registration, with `maxPoolUsage`. */
  poolUsage?: number;
  /** This registration's open connections and its `maxConnections`, with `maxPoolUsage`. */
  connections?: { open: number; max: number };
  /** `maxmemory-policy` of the first master that breaks `requireEvictionPolicy`, else of the first. */
  evictionPolicy?: string | null;
  /** Bytes the furthest-behind replica lags, with `maxReplicationLag` (`null`: no replica). */
  replicationLag?: number | null;
  /** Failed checks that only warn (`requireEvictionPolicy` with `mode: 'warn'`). */
  warnings?: string[];
  /** Set when answered from the periodic probe: how old that result is, in ms. */
  age?: number;
  [detail: string]: unknown;
}

/** The indicator result, in the shape `@nestjs/terminus` expects. */
export type RedisHealthIndicatorResult<Key extends string = string> = Record<
  Key,
  RedisHealthDetails
>;

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
   * Probes the connection: a `PING` per master (latency), `INFO` (version, memory, policy,
   * fragmentation, replication), `CLUSTER INFO` on a cluster, all bounded by `timeout`; or
   * answers from the periodic probe's result when it is fresh (see `maxAge`). `down` when a
   * threshold is crossed; a threshold whose `INFO` the ACL denies is `down` and names the grant.
   */
  async isHealthy<const Key extends string = 'redis'>(
    key: Key = 'redis' as Key,
    options: RedisHealthCheckOptions = {},
  ): Promise<RedisHealthIndicatorResult<Key>> {
    const thresholds = validateThresholds(options as Record<string, unknown>, 'isHealthy options');
    for (const [option, value] of [
      ['timeout', options.timeout],
      ['maxAge', options.maxAge],
    ] as const) {
      if (value !== undefined && !(typeof value === 'number' && value >= 0 && value <= 3_600_000)) {
        throw new TypeError(`isHealthy ${option} must be a number of ms, got ${String(value)}`);
      }
    }
    const indicator = (await healthIndicatorService()).check(key);
    const name = options.connection ?? DEFAULT_CONNECTION_NAME;
    const named = name === DEFAULT_CONNECTION_NAME ? {} : { connection: name };
    const connection = this.resolve(name);
    if (!connection) {
      return indicator.down({
        ...named,
        message: HEALTH_MESSAGES.unknownConnection(name),
      });
    }
    const status = connection.client.status;
    if (status !== 'ready') {
      const lastError = connection.lastError;
      return indicator.down({
        ...named,
        message: HEALTH_MESSAGES.notReady(status, lastError),
        ...(lastError ? { lastError } : {}),
      });
    }
    const timeout = options.timeout ?? DEFAULTS.healthTimeout;
    const monitor = monitorOf(connection);
    const maxAge = options.maxAge ?? monitor?.interval ?? 0;
    let sample = maxAge > 0 ? monitor?.fresh(maxAge) : undefined;
    const age = sample ? Date.now() - sample.at : undefined;
    if (!sample) {
      try {
        sample = await withTimeout(
          takeSample(connection, timeout),
          timeout,
          () => new Error(HEALTH_MESSAGES.timeout(timeout)),
        );
      } catch (err) {
        return indicator.down({
          ...named,
          message: connection.scrub((err as Error).message),
        });
      }
    }
    const { details, problems, warnings } = verdict(sample, thresholds, {
      open: connection.openConnections,
      max: connection.config.maxConnections,
    });
    // A failed INFO (other than a denial) matters only to a check that needs it.
    const infoError = needsInfo(thresholds) ? infoFailure(sample.nodes) : undefined;
    if (infoError) problems.push(connection.scrub(infoError));
    const all: Record<string, unknown> = {
      ...named,
      ...details,
      ...(warnings.length ? { warnings } : {}),
      ...(age !== undefined ? { age } : {}),
    };
    return problems.length
      ? indicator.down({ ...all, message: problems.join('; ') })
      : indicator.up(all);
  }

  private resolve(name: string): RedisConnection | undefined {
    if (name === DEFAULT_CONNECTION_NAME) return this.defaultConnection;
    try {
      return this.moduleRef.get<RedisConnection>(getRedisConnectionToken(name), { strict: false });
    } catch {
      return undefined;
    }
  }
}

/** The details and the problems of one sample against the thresholds. */
function verdict(
  sample: HealthSample,
  thresholds: RedisHealthThresholds,
  pool: PoolFigures,
): { details: Omit<RedisHealthDetails, 'status'>; problems: string[]; warnings: string[] } {
  const details: Omit<RedisHealthDetails, 'status'> = { latency: sample.latency };
  const version = lowestVersion(sample.nodes);
  if (version !== undefined) details.redis_version = version;
  const problems: string[] = [];
  const warnings: string[] = [];
  for (const o of evaluate(sample, thresholds, pool)) {
    switch (o.check) {
      case 'memory': {
        let used = 0;
        let max = 0;
        for (const n of sample.nodes) {
          used += n.memory?.used ?? 0;
          max += n.memory?.max ?? 0;
        }
        details.usedMemory = used;
        details.maxMemory = max;
        details.memoryRatio = o.value;
        break;
      }
      case 'clusterState':
        details.clusterState = String(o.value);
        break;
      case 'fragmentation':
        details.fragmentation = o.value;
        break;
      case 'poolUsage':
        details.poolUsage = o.value;
        details.connections = { open: pool.open, max: pool.max };
        break;
      case 'evictionPolicy':
        details.evictionPolicy = o.value;
        break;
      case 'replicationLag':
        details.replicationLag = o.value;
        break;
      default:
        break;
    }
    if (o.ok || !o.message) continue;
    (o.warn ? warnings : problems).push(o.message);
  }
  return { details, problems, warnings };
}
