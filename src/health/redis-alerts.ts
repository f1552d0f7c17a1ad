import { Injectable, Logger, type OnModuleInit } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';

import type { RedisHealthCheckName } from './thresholds.js';

/** Event name of an alert raised: a check went from passing to failing. */
export const REDIS_ALERT_RAISED = 'redis.alert.raised';
/** Event name of an alert resolved: a failing check passes again. */
export const REDIS_ALERT_RESOLVED = 'redis.alert.resolved';

/** One alert, raised or resolved, as emitted once per change of a check. */
export interface RedisAlert {
  /** `raised` when the check started failing, `resolved` when it passes again. */
  type: 'raised' | 'resolved';
  /** Which check changed. */
  check: RedisHealthCheckName;
  /** The registered connection (`'default'` unless named). */
  connection: string;
  /** The figure measured (ratio, ms, bytes, version, policy, status); `null` when unknown. */
  value: number | string | null;
  /** The threshold it was compared with; `null` for checks without one. */
  threshold: number | string | readonly string[] | null;
  /** Why it failed (on `raised`), without secrets. */
  message?: string;
  /** A warning-level alert (`requireEvictionPolicy` with `mode: 'warn'`). */
  warn?: boolean;
  at: Date;
}

/** A listener of `RedisAlerts.on`. */
export type RedisAlertListener = (alert: RedisAlert) => void;

interface EventEmitterLike {
  emit(event: string, ...values: unknown[]): boolean;
}

// A variable, not a literal: the peer is optional and absent from our own dependencies.
const EVENT_EMITTER_PACKAGE = '@nestjs/event-emitter';

/**
 * Where alerts go: to every listener registered with `on`, and to `@nestjs/event-emitter`'s
 * `EventEmitter2` as `redis.alert.raised` / `redis.alert.resolved` when the application imports
 * `EventEmitterModule` (detected at start-up, never required).
 *
 * @example
 * ```ts
 * alerts.on((alert) => console.warn(alert.type, alert.check, alert.value));
 * ```
 */
@Injectable()
export class RedisAlerts implements OnModuleInit {
  private readonly listeners = new Set<RedisAlertListener>();
  private readonly raised = new Map<string, RedisAlert>();
  private emitter?: EventEmitterLike;
  private readonly logger = new Logger('RedisAlerts');

  constructor(private readonly moduleRef?: ModuleRef) {}

  /** Finds the application's `EventEmitter2`, if `@nestjs/event-emitter` is there. */
  async onModuleInit(): Promise<void> {
    if (!this.moduleRef) return;
    try {
      const m = (await import(EVENT_EMITTER_PACKAGE)) as {
        EventEmitter2?: abstract new () => object;
      };
      if (!m.EventEmitter2) return;
      const found: unknown = this.moduleRef.get(m.EventEmitter2, { strict: false });
      if (found && typeof (found as EventEmitterLike).emit === 'function')
        this.emitter = found as EventEmitterLike;
    } catch {
      // Not installed, or EventEmitterModule not imported: listeners registered with on() only.
    }
  }

  /** Calls `listener` with every alert raised or resolved from now on; returns the unsubscribe. */
  on(listener: RedisAlertListener): () => void {
    if (typeof listener !== 'function') {
      throw new TypeError(`RedisAlerts.on listener must be a function, got ${typeof listener}`);
    }
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The alerts raised and not resolved yet, oldest first. */
  active(): RedisAlert[] {
    return [...this.raised.values()];
  }

  /** Delivers one alert; a throwing listener is logged and never stops the others. */
  emit(alert: RedisAlert): void {
    const id = `${alert.connection}\u0000${alert.check}`;
    if (alert.type === 'raised') this.raised.set(id, alert);
    else this.raised.delete(id);
    for (const listener of this.listeners) {
      try {
        listener(alert);
      } catch (err) {
        this.logger.error(`an alert listener threw: ${(err as Error)?.message ?? String(err)}`);
      }
    }
    try {
      this.emitter?.emit(
        alert.type === 'raised' ? REDIS_ALERT_RAISED : REDIS_ALERT_RESOLVED,
        alert,
      );
    } catch (err) {
      this.logger.error(`an alert listener threw: ${(err as Error)?.message ?? String(err)}`);
    }
  }
}
