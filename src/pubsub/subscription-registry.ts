import type { Logger } from '@nestjs/common';

import { isCluster } from '../connection/client-factory.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import type { RedisSubscriber, SubscriptionKind } from '../connection/subscriber.js';

import { DeliveryQueue, type DeliverySink, type GapEntry } from './delivery-queue.js';
import type { Counters, Subscription } from './pubsub.types.js';
import { shardHub } from './shard-routing.js';

/** What the registry tells its owner about a subscriber connection it watches. */
export interface HubSignals {
  /** The connection dropped: its subscriptions miss messages from now on. */
  dropped(hub: RedisSubscriber): void;
  /** The connection is subscribed again. */
  resubscribed(hub: RedisSubscriber): void;
  /** The server dropped shard channels of the connection (their slot moved). */
  moved(hub: RedisSubscriber): void;
}

/**
 * Every open subscription of `PubSubService`: many handlers multiplexed on the subscriber
 * connections, each behind its own delivery queue, with the counters of `stats()`. Watches
 * each connection it uses, so that a drop becomes a gap notice on every subscription of it.
 */
export class SubscriptionRegistry {
  readonly subscriptions = new Set<Subscription>();
  readonly counters: Counters = {
    published: 0,
    received: 0,
    delivered: 0,
    dropped: 0,
    gaps: 0,
    reconnects: 0,
    handlerErrors: 0,
    handlerTimeouts: 0,
  };
  private readonly watchedHubs = new Map<RedisSubscriber, () => void>();

  constructor(
    private readonly connection: RedisConnection,
    private readonly logger: Logger,
    private readonly signals: HubSignals,
  ) {}

  /** The subscriptions heard through `hub`. */
  on(hub: RedisSubscriber): Subscription[] {
    return [...this.subscriptions].filter((s) => s.hub === hub);
  }

  /** A delivery queue whose handler errors, timeouts and drops are counted and logged. */
  queue(
    label: string,
    spec: {
      bufferSize: number;
      timeout: number;
      message: (message: string, channel: string) => unknown;
      gap?: (gap: GapEntry) => unknown;
    },
  ): DeliveryQueue {
    let lastErrorLog = 0;
    let suppressed = 0;
    const sink: DeliverySink = {
      deliver: (message, channel) => {
        this.counters.delivered += 1;
        return spec.message(message, channel);
      },
      gap: (gap) => {
        this.counters.gaps += 1;
        return spec.gap?.(gap);
      },
      failed: (err) => {
        this.counters.handlerErrors += 1;
        // A handler failing on every message must not flood the log.
        const now = Date.now();
        if (now - lastErrorLog < 10_000) {
          suppressed += 1;
          return;
        }
        lastErrorLog = now;
        const more = suppressed ? ` (and ${suppressed} more since the last report)` : '';
        suppressed = 0;
        this.logger.error(
          `the handler of ${label} failed: ${this.connection.scrub(String((err as Error)?.message ?? err))}${more}`,
        );
      },
      timedOut: () => {
        this.counters.handlerTimeouts += 1;
        this.logger.warn(
          `the handler of ${label} did not settle within its handlerTimeout (${spec.timeout} ms); delivering the next message`,
        );
      },
      overflowed: () => {
        this.counters.dropped += 1;
      },
    };
    return new DeliveryQueue(sink, spec.bufferSize, spec.timeout);
  }

  /** Subscribes `queue` on `hub`; the subscription gets reconnect gaps and is closed at shutdown. */
  async attach(
    hub: RedisSubscriber,
    kind: SubscriptionKind,
    full: string,
    queue: DeliveryQueue,
    label: string,
    extra: {
      accept?: (message: string) => boolean;
      /** Messages may have been missed since then already: a gap notice precedes the first. */
      gapSince?: number;
      afterResubscribe?: (sub: Subscription) => Promise<void>;
      /** The queue serves other subscriptions too (key events on every master): keep it open. */
      sharedQueue?: boolean;
    } = {},
  ): Promise<Subscription> {
    this.watch(hub);
    const accept = extra.accept;
    let gapSince: number | undefined = extra.gapSince;
    const flushGap = (): boolean => {
      if (gapSince === undefined) return false;
      queue.pushGap({ reason: 'reconnect', since: gapSince, until: Date.now() });
      gapSince = undefined;
      return true;
    };
    const listener = (message: string, channel: string): void => {
      if (accept && !accept(message)) return;
      this.counters.received += 1;
      // The subscribe acknowledgement resolves a promise; a message right behind it on the
      // socket is emitted before that promise's continuation runs.
      flushGap();
      queue.push(message, channel);
    };
    const subscribe = (h: RedisSubscriber) =>
      kind === 'pattern'
        ? h.psubscribe(full, listener)
        : kind === 'shard'
          ? h.ssubscribe(full, listener)
          : h.subscribe(full, listener);
    let off = await subscribe(hub);
    let closed = false;
    const sub: Subscription = {
      hub,
      queue,
      label,
      close: async () => {
        if (closed) return;
        closed = true;
        this.subscriptions.delete(sub);
        if (!extra.sharedQueue) queue.close();
        await off();
      },
      openGap: (since) => void (gapSince ??= since),
      flushGap,
    };
    const after = extra.afterResubscribe;
    if (after) sub.afterResubscribe = () => after(sub);
    if (kind === 'shard' && isCluster(this.connection.client)) {
      sub.shard = {
        full,
        // After a resharding or failover the channel's slot has a new owner: follow it.
        move: async (force = false) => {
          if (closed) return;
          const next = shardHub(this.connection, full);
          // Another channel of the same node moved: this one is still subscribed there.
          if (next === sub.hub && (!force || next.isSubscribed('shard', full) === true)) return;
          sub.openGap(Date.now());
          if (next === sub.hub) {
            // A MOVED answer signals the hub again, and the next attempt reads a newer map.
            await next.resubscribe('shard', full);
          } else {
            await off();
            this.watch(next);
            off = await subscribe(next);
            sub.hub = next;
          }
          this.counters.reconnects += 1;
          flushGap();
        },
      };
    }
    this.subscriptions.add(sub);
    return sub;
  }

  /** Stops watching `hub` (it was closed). */
  forget(hub: RedisSubscriber): void {
    this.watchedHubs.get(hub)?.();
    this.watchedHubs.delete(hub);
  }

  /** Stops watching every connection (shutdown, once the subscriptions are closed). */
  forgetAll(): void {
    for (const detach of this.watchedHubs.values()) detach();
    this.watchedHubs.clear();
  }

  /** Reports drops of `hub` to its subscriptions as gaps, once it is subscribed again. */
  private watch(hub: RedisSubscriber): void {
    if (this.watchedHubs.has(hub)) return;
    let droppedAt: number | undefined;
    const offDrop = hub.onDrop(() => {
      droppedAt ??= Date.now();
      for (const sub of this.on(hub)) sub.openGap(droppedAt);
      this.signals.dropped(hub);
    });
    const offBack = hub.onResubscribe(() => {
      const since = droppedAt ?? Date.now();
      droppedAt = undefined;
      this.counters.reconnects += 1;
      let affected = 0;
      for (const sub of this.on(hub)) {
        // Already sent when a message came first; the subscription still missed messages.
        if (sub.afterResubscribe) void sub.afterResubscribe();
        else sub.flushGap();
        affected += 1;
      }
      if (affected) {
        this.logger.warn(
          `subscriber connection back after ${Date.now() - since} ms: messages published meanwhile on ${affected} subscription(s) were missed (gap notices sent)`,
        );
      }
      this.signals.resubscribed(hub);
    });
    const offMoved = hub.onMoved(() => this.signals.moved(hub));
    this.watchedHubs.set(hub, () => {
      offDrop();
      offBack();
      offMoved();
    });
  }
}
