import { randomUUID } from 'node:crypto';

import type { Logger } from '@nestjs/common';

import type { RedisConnection } from '../connection/redis-connection.js';

import type { CacheClient } from './cache.degrade.js';
import { INVALIDATION_CHANNEL } from './cache.scripts.js';
import type { CacheState } from './cache.types.js';

/** What one instance tells the others (and its own waiters). */
export interface CacheMessage {
  /** Keys whose value changed: drop from L1, wake waiters. */
  k?: string[];
  /** Keys whose load was abandoned: wake waiters only. */
  w?: string[];
  /** New tag versions. */
  t?: Record<string, number>;
  /** Cleared prefix ('' = everything). */
  c?: string;
}

/** What the bus calls back into. */
export interface BusListener {
  /** A message arrived; `own` when this instance sent it. */
  onMessage(message: CacheMessage, own: boolean): void;
  /** Messages are being missed from now on, or were missed: in-process copies are suspect. */
  onLost(): void;
}

/**
 * The invalidation bus: one pub/sub channel (under `keyPrefix`) on the module's subscriber
 * connection, opened on first use of the cache, not at boot. `state.coherent` is true while
 * subscribed and not dropped since; until then L1 stays off.
 */
export class InvalidationBus {
  /** Sender id of this instance's messages. */
  readonly id = randomUUID();
  private subscription?: Promise<void>;
  private readonly unsubscribers: Array<() => unknown> = [];
  private nextSubscribeAttempt = 0;
  /** The Redis user may not PUBLISH to our channel (ACL): notifications are off. */
  private publishRefused = false;

  constructor(
    private readonly connection: RedisConnection,
    private readonly logger: Logger,
    private readonly state: CacheState,
    private readonly listener: BusListener,
  ) {}

  private get channel(): string {
    return `${this.connection.keyPrefix}${INVALIDATION_CHANNEL}`;
  }

  /**
   * Tells the other instances (and our waiters) what changed. Never fails the write it follows:
   * an ACL user without channel rights gets `NOPERM` here, which is logged once and turns the
   * notifications off (the subscription is refused too, so every instance runs without L1 and
   * waiters poll); any other failure is the outage the write itself reports.
   */
  async notify(client: CacheClient, body: CacheMessage): Promise<void> {
    if (this.publishRefused) return;
    try {
      await client.publish(this.channel, JSON.stringify({ s: this.id, ...body }));
    } catch (err) {
      if (!/^NOPERM/.test((err as Error)?.message ?? '')) return;
      this.publishRefused = true;
      this.logger.warn(
        `PUBLISH to "${this.channel}" is refused (${this.connection.scrub((err as Error).message)}): ` +
          'the cache runs without invalidation messages, so without L1; grant the Redis user ' +
          `the channel (&${this.channel}) to turn them on`,
      );
    }
  }

  /**
   * Subscribes in the background, if not yet and not too soon: after a failure the next
   * attempt waits a second, so an outage does not turn every call into a connect.
   */
  kick(): void {
    if (this.subscription || this.state.closing || Date.now() < this.nextSubscribeAttempt) return;
    if (this.connection.client.status !== 'ready') return;
    this.ensureSubscribed().catch(() => undefined);
  }

  ensureSubscribed(): Promise<void> {
    this.subscription ??= (async () => {
      const off = await this.connection.subscribe(this.channel, (text) => this.receive(text));
      this.unsubscribers.push(off);
      this.unsubscribers.push(
        this.connection.onSubscriberDrop(() => {
          this.state.coherent = false;
          this.listener.onLost();
        }),
        this.connection.onResubscribe(() => {
          this.listener.onLost();
          this.state.coherent = !this.state.closing;
        }),
      );
      this.state.coherent = true;
    })().catch((err: unknown) => {
      this.subscription = undefined;
      this.nextSubscribeAttempt = Date.now() + 1_000;
      this.logger.warn(
        `invalidations unavailable, the local tier (L1) stays off until they are: ${this.connection.scrub((err as Error).message)}`,
      );
      throw err;
    });
    return this.subscription;
  }

  async close(): Promise<void> {
    this.state.coherent = false;
    await Promise.allSettled(this.unsubscribers.splice(0).map((off) => off()));
  }

  private receive(text: string): void {
    let message: CacheMessage & { s?: string };
    try {
      message = JSON.parse(text) as CacheMessage & { s?: string };
    } catch {
      return;
    }
    this.listener.onMessage(message, message.s === this.id);
  }
}
