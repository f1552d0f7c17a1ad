import type { OnApplicationBootstrap, OnModuleDestroy } from '@nestjs/common';
import type { ModuleRef } from '@nestjs/core';
import type { Cluster, Redis } from 'ioredis';

import { DEFAULTS } from '../config/defaults.js';
import { isCluster } from '../connection/client-factory.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import { elapsedMs, withTimeout } from '../connection/wait.js';
import { diagnose } from '../diagnostics/diagnostics.js';

import { RedisAlerts } from './redis-alerts.js';
import {
  evaluate,
  type CheckOutcome,
  type HealthSample,
  type RedisHealthThresholds,
} from './thresholds.js';

/** Monitors by connection, so that the indicator finds the warm sample of the one it checks. */
const monitors = new WeakMap<RedisConnection, RedisHealthMonitor>();

/** The periodic probe of `connection`, when `healthCheckInterval` is set. */
export function monitorOf(connection: RedisConnection): RedisHealthMonitor | undefined {
  return monitors.get(connection);
}

/** Raised when a `PING` did not come back within the timeout. */
export class PingTimeoutError extends Error {
  constructor(readonly timeout: number) {
    super(`Redis did not answer within ${timeout} ms`);
  }
}

/**
 * One probe round: a `PING` per master (each bounded by `timeout`; a master that does not answer
 * is passed to `onSilent`), then `INFO`, `SLOWLOG` and `LATENCY` through `diagnose`, and
 * `CLUSTER INFO` on a cluster.
 */
export async function takeSample(
  connection: RedisConnection,
  timeout: number,
  onSilent?: (node: Redis) => void,
): Promise<HealthSample> {
  const at = Date.now();
  const masters = connection.masters();
  const latencies = await Promise.all(
    masters.map(async (node) => {
      const start = performance.now();
      try {
        await withTimeout(node.ping(), timeout, () => new PingTimeoutError(timeout));
      } catch (err) {
        if (err instanceof PingTimeoutError) onSilent?.(node);
        throw err;
      }
      return elapsedMs(start);
    }),
  );
  const client = connection.client;
  const [report, clusterState] = await Promise.all([
    diagnose(connection, { timeout, slowlogEntries: 0 }),
    isCluster(client)
      ? clusterStateOf(client).catch((err: unknown) => {
          // An ACL that refuses CLUSTER INFO leaves the state unknown rather than failing.
          if (/NOPERM|no permissions/i.test(String((err as Error)?.message))) return undefined;
          throw err;
        })
      : Promise.resolve(undefined),
  ]);
  return {
    at,
    latency: latencies.length ? Math.max(...latencies) : 0,
    nodes: report.nodes,
    ...(clusterState !== undefined ? { clusterState } : {}),
  };
}

/** `ok` when every master reports `cluster_state:ok`, else the first other state seen. */
async function clusterStateOf(cluster: Cluster): Promise<string> {
  const states = await Promise.all(
    cluster.nodes('master').map(async (node) => {
      const text = await node.cluster('INFO');
      return /cluster_state:(\w+)/.exec(text)?.[1] ?? 'unknown';
    }),
  );
  return states.find((s) => s !== 'ok') ?? (states.length ? 'ok' : 'unknown');
}

/**
 * The periodic probe of one connection (`healthCheckInterval`): keeps the last sample warm for
 * `isHealthy`, destroys a command connection whose `PING` does not come back within the timeout
 * (a silent half-open socket: ioredis then reconnects), and raises / resolves alerts once per
 * change of each check.
 */
export class RedisHealthMonitor implements OnApplicationBootstrap, OnModuleDestroy {
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private stopped = false;
  private last?: HealthSample;
  private readonly failing = new Map<string, CheckOutcome>();
  private alerts?: RedisAlerts;
  /** Since when the client has sat in `connect` (socket open, handshake unanswered). */
  private handshakeSince?: number;
  /** Probe rounds completed, and connections destroyed because a PING never came back. */
  readonly counts = { rounds: 0, destroyed: 0 };

  constructor(
    private readonly connection: RedisConnection,
    private readonly moduleRef: ModuleRef,
  ) {}

  /** The probe interval in ms (0: off). */
  get interval(): number {
    return this.connection.config.healthCheckInterval;
  }

  /** Starts probing, when an interval is set. */
  async onApplicationBootstrap(): Promise<void> {
    if (this.interval <= 0) return;
    try {
      this.alerts = this.moduleRef.get(RedisAlerts, { strict: false });
    } catch {
      // No default registration in this application: alerts of our own, EventEmitter2 included.
      this.alerts = new RedisAlerts(this.moduleRef);
      await this.alerts.onModuleInit();
    }
    monitors.set(this.connection, this);
    this.schedule();
  }

  /** Stops the timer and waits for a round in flight, before the connection closes. */
  async onModuleDestroy(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    monitors.delete(this.connection);
    await this.running;
  }

  /** The last sample if it is younger than `maxAge` ms. */
  fresh(maxAge: number): HealthSample | undefined {
    const last = this.last;
    return last && Date.now() - last.at <= maxAge ? last : undefined;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.round().finally(() => {
        this.running = undefined;
        this.schedule();
      });
    }, this.interval);
    // The probe alone must never keep the process alive.
    this.timer.unref();
  }

  private async round(): Promise<void> {
    const thresholds: RedisHealthThresholds = this.connection.config.alerts ?? {};
    const timeout = this.connection.config.alerts?.timeout ?? DEFAULTS.healthTimeout;
    const status = this.connection.client.status;
    let outcomes: CheckOutcome[];
    if (status !== 'ready') {
      this.last = undefined;
      this.unstick(status, timeout);
      outcomes = [
        {
          check: 'reachable',
          ok: false,
          value: status,
          threshold: 'ready',
          message: `connection is not ready (status: ${status})`,
        },
      ];
    } else {
      this.handshakeSince = undefined;
      try {
        const sample = await withTimeout(
          takeSample(this.connection, timeout, (node) => this.destroy(node)),
          timeout,
          () => new PingTimeoutError(timeout),
        );
        if (this.stopped) return;
        this.last = sample;
        outcomes = [
          { check: 'reachable', ok: true, value: 'ready', threshold: 'ready' },
          ...evaluate(sample, thresholds, {
            open: this.connection.openConnections,
            max: this.connection.config.maxConnections,
          }),
        ];
      } catch (err) {
        this.last = undefined;
        outcomes = [
          {
            check: 'reachable',
            ok: false,
            value: this.connection.client.status,
            threshold: 'ready',
            message: this.connection.scrub((err as Error)?.message ?? String(err)),
          },
        ];
      }
    }
    this.counts.rounds++;
    if (!this.stopped) this.diff(outcomes);
  }

  /**
   * A reconnect that reached a half-open peer gets its socket but never a handshake reply, and
   * `connectTimeout` only covers the socket: after `timeout` in that state, start over.
   */
  private unstick(status: string, timeout: number): void {
    const client = this.connection.client;
    if (status !== 'connect' || isCluster(client)) {
      this.handshakeSince = undefined;
      return;
    }
    this.handshakeSince ??= Date.now();
    if (Date.now() - this.handshakeSince > timeout) {
      this.handshakeSince = undefined;
      this.destroy(client);
    }
  }

  /** A socket that swallowed a PING: destroy it so ioredis sees the loss and reconnects. */
  private destroy(node: Redis): void {
    const stream = (node as unknown as { stream?: { destroy(): void } }).stream;
    if (!stream || this.connection.isClosing) return;
    this.counts.destroyed++;
    stream.destroy();
  }

  private diff(outcomes: CheckOutcome[]): void {
    for (const o of outcomes) {
      const was = this.failing.get(o.check);
      if (!o.ok && !was) {
        this.failing.set(o.check, o);
        this.alerts?.emit({
          type: 'raised',
          check: o.check,
          connection: this.connection.name,
          value: o.value,
          threshold: o.threshold,
          ...(o.message ? { message: o.message } : {}),
          ...(o.warn ? { warn: true } : {}),
          at: new Date(),
        });
      } else if (o.ok && was) {
        this.failing.delete(o.check);
        this.alerts?.emit({
          type: 'resolved',
          check: o.check,
          connection: this.connection.name,
          value: o.value,
          threshold: o.threshold,
          ...(was.warn ? { warn: true } : {}),
          at: new Date(),
        });
      }
    }
  }
}
