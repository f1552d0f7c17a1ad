import type { Logger } from '@nestjs/common';
import type { Cluster, Redis } from 'ioredis';

import { Coalescer, pause } from '../common/async.js';
import { isCluster } from '../connection/client-factory.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import type { RedisSubscriber } from '../connection/subscriber.js';

import { KeyspaceCheck, unionFlags, type NodeCheck } from './keyspace-check.js';
import { escapeGlob, flagsFor, type KeyEventName } from './keyspace.js';
import type {
  KeyEventGroup,
  KeyEventHandler,
  KeyEventOptions,
  KeyEventSubscription,
  Subscription,
} from './pubsub.types.js';
import { addressOf, parseAddress, refreshSlots } from './shard-routing.js';
import type { SubscriptionRegistry } from './subscription-registry.js';

/**
 * Keyspace notifications for `onKeyEvent`: one pattern subscription per master (keyspace
 * notifications are published on the node that holds the key), checked for the
 * `notify-keyspace-events` flags they need, and kept in step with the masters through
 * failovers and new cluster nodes.
 */
export class KeyEvents {
  private readonly groups = new Set<KeyEventGroup>();
  private readonly check: KeyspaceCheck;
  /**
   * Following cluster masters: one pass at a time (`true`: read the slot map first); a signal
   * meanwhile runs one more after it, at most every 100 ms. Our own refresh signals too: that
   * second pass is cheap.
   */
  private readonly follows = new Coalescer<null>(
    (_, refresh) =>
      this.followOnce(refresh).catch((err: unknown) =>
        this.logger.warn(
          `key events could not follow the cluster's masters: ${this.connection.scrub((err as Error).message)}`,
        ),
      ),
    { spacingMs: 100, proceed: () => !this.isClosing() && this.groups.size > 0 },
  );
  private watch?: { timer?: NodeJS.Timeout; detach: () => void };

  constructor(
    private readonly connection: RedisConnection,
    private readonly registry: SubscriptionRegistry,
    private readonly logger: Logger,
    private readonly isClosing: () => boolean,
  ) {
    this.check = new KeyspaceCheck(connection, logger);
  }

  /** Subscribes `handler` to `events` on keys matching `keyPattern` (arguments checked). */
  async subscribe(
    events: KeyEventName[],
    keyPattern: string,
    handler: KeyEventHandler,
    options: KeyEventOptions,
  ): Promise<KeyEventSubscription> {
    const needed = flagsFor(events);
    const state = await this.check.all(needed);
    if (!state.active) {
      return {
        active: false,
        missingFlags: state.missing,
        reason: state.reason,
        unsubscribe: () => Promise.resolve(),
      };
    }
    const group = this.group(events, keyPattern, handler, options, needed);
    this.groups.add(group);
    try {
      if (this.connection.isCluster) {
        for (const node of this.connection.masters()) {
          await this.attachNode(group, addressOf(node));
        }
        group.ready = true;
        this.watchMasters();
        // A master may have changed while subscribing.
        void this.follow(false);
      } else {
        await this.attachNode(group, '');
      }
    } catch (err) {
      await group.close();
      throw err;
    }
    const check = this.check;
    const missing = (): string =>
      [...group.problems.values()].reduce((all, p) => unionFlags(all, p.missing), '');
    return {
      get active() {
        return group.problems.size === 0;
      },
      get missingFlags() {
        return missing();
      },
      get reason() {
        if (group.problems.size === 0) return undefined;
        return check.advice(
          missing(),
          [...group.problems.values()].map((p) => p.text),
        );
      },
      unsubscribe: () => group.close(),
    };
  }

  /** Closes every key event subscription and stops following the masters (shutdown). */
  async close(): Promise<void> {
    await Promise.allSettled([...this.groups].map((g) => g.close()));
    this.unwatchMasters();
    await this.follows.idle();
  }

  /** Follows the cluster's masters now (`refresh`: read the slot map first). */
  follow(refresh: boolean): Promise<void> {
    return this.follows.run(null, refresh);
  }

  private group(
    events: KeyEventName[],
    keyPattern: string,
    handler: KeyEventHandler,
    options: KeyEventOptions,
    needed: string,
  ): KeyEventGroup {
    const channelPrefix = `__keyspace@${this.db()}__:`;
    const prefix = this.connection.keyPrefix;
    const wanted = new Set<string>(events);
    const keyStart = channelPrefix.length + prefix.length;
    const onGap = options.onGap;
    const label = `key events ${events.join(',')} on "${keyPattern}"`;
    const { bufferSize, handlerTimeout } = this.connection.config.pubsub;
    const group: KeyEventGroup = {
      needed,
      pattern: channelPrefix + escapeGlob(prefix) + keyPattern,
      label,
      accept: (m) => wanted.has(m),
      queue: this.registry.queue(label, {
        bufferSize,
        timeout: handlerTimeout,
        message: (event, channel) =>
          handler({ event: event as KeyEventName, key: channel.slice(keyStart) }),
        gap: (gap) =>
          onGap?.({
            type: 'gap',
            reason: gap.reason,
            pattern: keyPattern,
            ...(gap.dropped !== undefined ? { dropped: gap.dropped } : {}),
            since: new Date(gap.since),
            until: new Date(gap.until),
          }),
      }),
      nodes: new Map(),
      problems: new Map(),
      confirmedAt: Date.now(),
      ready: false,
      closed: false,
      close: async () => {
        if (group.closed) return;
        group.closed = true;
        this.groups.delete(group);
        group.queue.close();
        const subs = [...group.nodes.values()];
        group.nodes.clear();
        await Promise.all(subs.map((s) => s.close()));
        if (this.groups.size === 0) this.unwatchMasters();
      },
    };
    return group;
  }

  /** Subscribes `group` on the master at `where` ('' for the one server of a non-cluster). */
  private async attachNode(group: KeyEventGroup, where: string, gapSince?: number): Promise<void> {
    const hub =
      where === ''
        ? this.connection.subscriberFor()
        : this.connection.subscriberFor(parseAddress(where));
    const sub = await this.registry.attach(
      hub,
      'pattern',
      group.pattern,
      group.queue,
      group.label,
      {
        accept: group.accept,
        gapSince,
        sharedQueue: true,
        afterResubscribe: (s) => this.recheckNode(group, where, s),
      },
    );
    if (group.closed) {
      await sub.close();
      return;
    }
    group.nodes.set(where, sub);
    // The first event may have come first and sent it already.
    sub.flushGap();
  }

  /**
   * After a reconnect the server may be another one (a Sentinel failover) or the same one
   * restarted: neither keeps flags set by `CONFIG SET` elsewhere. Reads them again (setting
   * them in `'configure'` mode) before the gap notice, so the notice ends where events flow.
   */
  private async recheckNode(group: KeyEventGroup, where: string, sub: Subscription): Promise<void> {
    try {
      if (group.closed || this.isClosing()) return;
      let node: Redis | undefined;
      if (where === '') {
        node = this.connection.client as Redis;
        await this.sameServerAs(sub.hub, node);
      } else {
        node = this.connection.masters().find((n) => addressOf(n) === where);
      }
      // A cluster node that is no longer a master: the next follow pass drops it.
      if (!node) return;
      const label = where || this.connection.address;
      this.check.forget(label);
      this.note(group, where, await this.check.node(node, label, group.needed));
    } catch (err) {
      this.logger.warn(
        `${group.label}: could not check notify-keyspace-events after a reconnect: ${this.connection.scrub((err as Error).message)}`,
      );
    } finally {
      sub.flushGap();
    }
  }

  /**
   * Through Sentinel the subscriber and the command connection reconnect on their own: waits
   * (bounded by `connectTimeout`) until the command connection is on the subscriber's server,
   * so the flags are read where the events come from.
   */
  private async sameServerAs(hub: RedisSubscriber, client: Redis): Promise<void> {
    const deadline = Date.now() + this.connection.config.connectTimeout;
    while (!this.isClosing() && Date.now() < deadline) {
      const stream = client.stream as { remoteAddress?: string; remotePort?: number } | undefined;
      const commandOn =
        client.status === 'ready' && stream?.remoteAddress
          ? `${stream.remoteAddress}:${stream.remotePort}`
          : undefined;
      const hubOn = hub.remoteAddress;
      if (hubOn === undefined || commandOn === hubOn) return;
      await pause(50);
    }
  }

  /** Records what a master lacks for `group` (nothing: the problem is gone). */
  private note(group: KeyEventGroup, where: string, result: NodeCheck): void {
    if (!result.missing) {
      group.problems.delete(where);
      return;
    }
    group.problems.set(where, { missing: result.missing, text: result.problem ?? '' });
    this.check.log(this.check.advice(result.missing, [result.problem ?? '']));
  }

  /**
   * Keeps key events on every cluster master: on every slot refresh of the cluster client and
   * node change, and every `pubsub.pingInterval` (a refresh of our own: a graceful failover
   * sends no sign to a pattern subscriber of the old master, which just goes on as a replica).
   */
  private watchMasters(): void {
    if (this.watch || !this.connection.isCluster) return;
    const cluster = this.connection.client as Cluster;
    const onChange = (): void => void this.follow(false);
    cluster.on('refresh', onChange);
    cluster.on('+node', onChange);
    cluster.on('-node', onChange);
    const interval = this.connection.config.pubsub.pingInterval;
    const timer = interval > 0 ? setInterval(() => void this.follow(true), interval) : undefined;
    timer?.unref();
    this.watch = {
      timer,
      detach: () => {
        cluster.off('refresh', onChange);
        cluster.off('+node', onChange);
        cluster.off('-node', onChange);
      },
    };
  }

  private unwatchMasters(): void {
    const watch = this.watch;
    if (!watch) return;
    this.watch = undefined;
    clearInterval(watch.timer);
    watch.detach();
  }

  private async followOnce(refresh: boolean): Promise<void> {
    if (this.isClosing() || this.groups.size === 0 || !this.connection.isCluster) return;
    if (refresh) await refreshSlots(this.connection);
    if (this.isClosing()) return;
    const masters = new Map(this.connection.masters().map((n) => [addressOf(n), n]));
    // An empty map is a refresh that failed (no node answered), not a cluster without masters.
    if (masters.size === 0) return;
    const gone = new Set<RedisSubscriber>();
    for (const group of [...this.groups]) {
      if (!group.ready) continue;
      let complete = true;
      for (const [where, node] of masters) {
        if (group.closed || group.nodes.has(where)) continue;
        try {
          this.check.forget(where);
          this.note(group, where, await this.check.node(node, where, group.needed));
          await this.attachNode(group, where, group.confirmedAt);
          this.registry.counters.reconnects += 1;
          this.logger.log(`${group.label}: now also heard from master ${where}`);
        } catch (err) {
          complete = false;
          this.logger.warn(
            `${group.label}: could not subscribe on master ${where}: ${this.connection.scrub((err as Error).message)}`,
          );
        }
      }
      for (const [where, sub] of [...group.nodes]) {
        if (masters.has(where)) continue;
        // No longer a master: as a replica it would repeat the new master's events.
        group.nodes.delete(where);
        group.problems.delete(where);
        sub.flushGap();
        await sub.close();
        gone.add(sub.hub);
      }
      if (complete) group.confirmedAt = Date.now();
    }
    for (const hub of gone) {
      if (await hub.closeIfIdle()) this.registry.forget(hub);
    }
  }

  private db(): number {
    const target = this.connection.config.target;
    if (target.kind === 'standalone' || target.kind === 'sentinel') return target.db;
    if (target.kind === 'client' && !isCluster(target.client)) return target.client.options.db ?? 0;
    return 0;
  }
}
