import type { Logger } from '@nestjs/common';

import { Coalescer } from '../common/async.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import type { RedisSubscriber } from '../connection/subscriber.js';

import { refreshSlots } from './shard-routing.js';
import type { SubscriptionRegistry } from './subscription-registry.js';

/**
 * Keeps sharded subscriptions (`SSUBSCRIBE`) on the owner of their channel's slot while a
 * cluster fails over or reshards: after a drop, a reconnect or an unsolicited `SUNSUBSCRIBE`,
 * each channel of the connection concerned is moved to its slot's owner.
 */
export class ShardFollower {
  private readonly ownerWatches = new Map<RedisSubscriber, NodeJS.Timeout>();
  /**
   * One follow per hub runs at a time (`true`: the server dropped channels of the hub, so the
   * others are re-subscribed where they are); a signal meanwhile runs one more after it, at
   * most every 100 ms, so a slot map that stays stale for a while costs no busy loop.
   */
  private readonly follows = new Coalescer<RedisSubscriber>(
    (hub, moved) => this.followOnce(hub, moved),
    { spacingMs: 100, proceed: () => !this.isClosing() },
  );

  constructor(
    private readonly connection: RedisConnection,
    private readonly registry: SubscriptionRegistry,
    private readonly logger: Logger,
    private readonly isClosing: () => boolean,
    /** Asks key events to follow the cluster's masters (reading the slot map first). */
    private readonly followMasters: () => Promise<void>,
  ) {}

  /** Moves the shard channels of `hub` whose slot now lives elsewhere. */
  follow(hub: RedisSubscriber, moved = false): Promise<void> {
    return this.follows.run(hub, moved);
  }

  /**
   * While `hub` is down, looks every half second whether the slots of its shard channels got
   * a new owner (a failover of a dead master sends no `SUNSUBSCRIBE`), and moves them there;
   * key events move to the new masters alike.
   */
  watchOwners(hub: RedisSubscriber): void {
    const followed = (): boolean =>
      this.registry.on(hub).some((s) => s.shard !== undefined || s.afterResubscribe !== undefined);
    if (!this.connection.isCluster || this.ownerWatches.has(hub) || !followed()) return;
    let running = false;
    const timer = setInterval(() => {
      if (this.isClosing() || hub.isLive || !followed()) {
        clearInterval(timer);
        this.ownerWatches.delete(hub);
        return;
      }
      if (running) return;
      running = true;
      // A dead master's slots go to a replica: its shard channels and key events follow.
      void Promise.all([this.follow(hub), this.followMasters()]).finally(() => (running = false));
    }, 500);
    timer.unref();
    this.ownerWatches.set(hub, timer);
  }

  /** Stops the owner watches (shutdown). */
  close(): void {
    for (const timer of this.ownerWatches.values()) clearInterval(timer);
    this.ownerWatches.clear();
  }

  private async followOnce(hub: RedisSubscriber, force: boolean): Promise<void> {
    const subs = this.registry.on(hub).filter((s) => s.shard);
    if (subs.length === 0 || this.isClosing()) return;
    await refreshSlots(this.connection);
    for (const sub of subs) {
      await sub
        .shard!.move(force)
        .catch((err: unknown) =>
          this.logger.warn(
            `${sub.label}: could not follow its shard: ${this.connection.scrub((err as Error).message)}`,
          ),
        );
    }
  }
}
