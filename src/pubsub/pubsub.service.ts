import {
  Inject,
  Injectable,
  Logger,
  type BeforeApplicationShutdown,
  type OnApplicationBootstrap,
} from '@nestjs/common';

import { RedisConnection } from '../connection/redis-connection.js';
import type { SubscriptionKind } from '../connection/subscriber.js';
import { getRedisConnectionToken } from '../connection/tokens.js';
import type { DecoratorExplorer } from '../discovery/explorer.js';

import { KeyEvents } from './key-events.js';
import { escapeGlob, type KeyEventName } from './keyspace.js';
import { messageIterator, type DeliveryHandlers } from './message-iterator.js';
import {
  checkDeliveryOptions,
  checkHandler,
  checkKeyEventArguments,
  checkMessagesArguments,
  checkName,
  decodeMessage,
  encodeMessage,
} from './pubsub.checks.js';
import { ON_REDIS_MESSAGE_METADATA } from './pubsub.constants.js';
import type {
  KeyEventHandler,
  KeyEventOptions,
  KeyEventSubscription,
  MessagesOptions,
  OnRedisMessageMetadata,
  PubSubEvent,
  PubSubGap,
  PubSubHandler,
  PubSubMessageContext,
  PubSubSource,
  PubSubStats,
  PublishOptions,
  SubscribeOptions,
  Unsubscribe,
} from './pubsub.types.js';
import { ShardFollower } from './shard-follower.js';
import { publisherFor, shardHub } from './shard-routing.js';
import { SubscriptionRegistry } from './subscription-registry.js';

/**
 * Publish/subscribe over the module's connections: JSON messages (strict, like the cache's
 * serializer), channels under the module's `keyPrefix`, handlers multiplexed on the one
 * subscriber connection (counted in `maxConnections`, closed at shutdown), each with its own
 * bounded buffer so a slow or failing handler never holds up the others, and gap notices
 * wherever messages were missed. Delivery is at most once.
 *
 * @example
 * ```ts
 * const unsubscribe = await this.pubsub.subscribe<Order>('orders', (order) => this.index(order), {
 *   onGap: () => this.reindexAll(),
 * });
 * await this.pubsub.publish('orders', { id: 'o-1', total: 42 });
 * await unsubscribe();
 * ```
 */
@Injectable()
export class PubSubService implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger('Redis:PubSubService');
  private readonly registry: SubscriptionRegistry;
  private readonly shards: ShardFollower;
  private readonly keyEvents: KeyEvents;
  /** The `finish` of every open `messages()` iterator. */
  private readonly iterators = new Set<() => Promise<void>>();
  private closing = false;

  constructor(
    @Inject(getRedisConnectionToken()) private readonly connection: RedisConnection,
    private readonly explorer: DecoratorExplorer,
  ) {
    const isClosing = (): boolean => this.closing;
    this.registry = new SubscriptionRegistry(connection, this.logger, {
      dropped: (hub) => this.shards.watchOwners(hub),
      resubscribed: (hub) => void this.shards.follow(hub),
      moved: (hub) => void this.shards.follow(hub, true),
    });
    this.keyEvents = new KeyEvents(connection, this.registry, this.logger, isClosing);
    this.shards = new ShardFollower(connection, this.registry, this.logger, isClosing, () =>
      this.keyEvents.follow(true),
    );
  }

  private get options() {
    return this.connection.config.pubsub;
  }

  private get prefix(): string {
    return this.connection.keyPrefix;
  }

  // ------------------------------------------------------------------------ public API

  /**
   * Publishes `message` on `channel` (under the module's `keyPrefix`): JSON-encoded (strict:
   * values JSON would change or drop are refused), or as it is with `{ raw: true }`. Resolves
   * with the number of subscribers that received it (on a cluster, those of the node that
   * answered, for plain pub/sub).
   */
  async publish(channel: string, message: unknown, options: PublishOptions = {}): Promise<number> {
    checkName(this.prefix, 'publish', 'channel', channel);
    const payload = encodeMessage(channel, message, options.raw === true);
    const client = this.connection.client;
    const full = this.prefix + channel;
    // SPUBLISH names its channel as a key, so ioredis adds the key prefix itself.
    const receivers = options.sharded
      ? await client.spublish(channel, payload)
      : await publisherFor(this.connection, full).publish(full, payload);
    this.registry.counters.published += 1;
    return Number(receivers);
  }

  /**
   * Calls `handler` with every message published on `channel` (a literal name: `*` or `?` in
   * it match only themselves). Resolves once the server confirmed the subscription, with a
   * function that unsubscribes.
   */
  async subscribe<T = unknown>(
    channel: string,
    handler: PubSubHandler<T>,
    options: SubscribeOptions = {},
  ): Promise<Unsubscribe> {
    checkName(this.prefix, 'subscribe', 'channel', channel);
    checkHandler('subscribe', handler);
    return this.open(options.sharded ? 'shard' : 'channel', channel, options, {
      message: (message, context) => handler(message as T, context),
      gap: options.onGap,
    });
  }

  /**
   * Calls `handler` with every message published on a channel matching the glob `pattern`
   * (`*`, `?`, `[abc]`, `\` escapes, as Redis's `PSUBSCRIBE`; the key prefix is matched
   * literally). Resolves with a function that unsubscribes.
   */
  async psubscribe<T = unknown>(
    pattern: string,
    handler: PubSubHandler<T>,
    options: Omit<SubscribeOptions, 'sharded'> = {},
  ): Promise<Unsubscribe> {
    checkName(this.prefix, 'psubscribe', 'pattern', pattern);
    checkHandler('psubscribe', handler);
    if ((options as SubscribeOptions).sharded) {
      throw new TypeError(
        `PubSubService.psubscribe("${pattern}"): sharded pub/sub has no patterns`,
      );
    }
    return this.open('pattern', pattern, options, {
      message: (message, context) => handler(message as T, context),
      gap: options.onGap,
    });
  }

  /**
   * The messages of a channel (or `{ pattern }`) as an async iterator, with gap notices in
   * order. Subscribes at once (so nothing published after this call is missed); ends and
   * unsubscribes when the loop breaks, `signal` aborts, or the application shuts down.
   * Buffers up to `bufferSize` messages the loop has not taken yet, dropping the oldest.
   *
   * @example
   * ```ts
   * for await (const event of this.pubsub.messages<Order>('orders', { signal })) {
   *   if (event.type === 'gap') await this.resync();
   *   else await this.apply(event.message);
   * }
   * ```
   */
  messages<T = unknown>(
    source: PubSubSource,
    options: MessagesOptions = {},
  ): AsyncIterableIterator<PubSubEvent<T>> {
    const { name, pattern } = checkMessagesArguments(this.prefix, source, options);
    const kind = pattern !== undefined ? 'pattern' : options.sharded ? 'shard' : 'channel';
    return messageIterator<T>(
      (handlers) => this.open(kind, name, { ...options, iterator: true }, handlers),
      options.signal,
      this.iterators,
    );
  }

  /**
   * Calls `handler` for keyspace notifications of `events` (`'expired'`, `'evicted'`, `'del'`,
   * `'set'`, ...) on keys under the module's `keyPrefix` matching the glob `keyPattern`,
   * received from every master of a cluster. The first call checks the server's
   * `notify-keyspace-events` once: when it lacks flags (and `pubsub.keyspaceEvents` is not
   * `'configure'`, or `CONFIG` is renamed or denied) one message names the flags to set, and
   * the handle comes back with `active: false` instead of staying silent.
   *
   * The subscription follows the masters: after a Sentinel failover, a cluster failover or a
   * new cluster master, it listens on the new master (checking, or in `'configure'` mode
   * setting, its flags first) and stops listening on one that became a replica; events in
   * between may be missed, which `options.onGap` is told.
   *
   * @example
   * ```ts
   * const sub = await this.pubsub.onKeyEvent('expired', 'session:*', ({ key }) => this.ended(key), {
   *   onGap: () => this.sweepExpiredSessions(),
   * });
   * if (!sub.active) this.logger.warn(`session expiry not tracked: ${sub.reason}`);
   * ```
   */
  async onKeyEvent(
    events: KeyEventName | readonly KeyEventName[],
    keyPattern: string,
    handler: KeyEventHandler,
    options: KeyEventOptions = {},
  ): Promise<KeyEventSubscription> {
    const list = checkKeyEventArguments(this.prefix, events, keyPattern, handler, options);
    if (this.closing) throw new Error('PubSubService: the application is shutting down');
    return this.keyEvents.subscribe(list, keyPattern, handler, options);
  }

  /** Counters since startup. */
  stats(): PubSubStats {
    return { ...this.registry.counters, subscriptions: this.registry.subscriptions.size };
  }

  // ------------------------------------------------------------------------ lifecycle

  /** Subscribes the methods decorated with `@OnRedisMessage`; the boot fails if one cannot. */
  async onApplicationBootstrap(): Promise<void> {
    const found = this.explorer.find<OnRedisMessageMetadata>(ON_REDIS_MESSAGE_METADATA);
    await Promise.all(
      found.map(async ({ meta, method, instance, label }) => {
        const handler: PubSubHandler = (message, context) =>
          method.call(instance, message, context) as void | Promise<void>;
        try {
          if (typeof meta.source === 'string') {
            await this.subscribe(meta.source, handler, meta.options);
          } else {
            await this.psubscribe(meta.source.pattern, handler, meta.options);
          }
        } catch (err) {
          throw new Error(
            `@OnRedisMessage(${JSON.stringify(meta.source)}) on ${label}: ${this.connection.scrub((err as Error).message)}`,
            { cause: err },
          );
        }
      }),
    );
    if (found.length) this.logger.log(`${found.length} @OnRedisMessage handler(s) subscribed`);
  }

  /** Ends iterators and subscriptions before the connections close. */
  async beforeApplicationShutdown(): Promise<void> {
    this.closing = true;
    await Promise.allSettled([
      ...[...this.iterators].map((finish) => finish()),
      this.keyEvents.close(),
      ...[...this.registry.subscriptions].map((s) => s.close()),
    ]);
    this.registry.forgetAll();
    this.shards.close();
  }

  // ------------------------------------------------------------------------ internals

  /**
   * Subscribes `handlers` to a channel, pattern or shard channel behind a delivery queue of
   * its own: messages decoded (unless `raw`), gap notices built, overflows logged when the
   * caller takes no gap notices.
   */
  private async open(
    kind: SubscriptionKind,
    name: string,
    options: SubscribeOptions & { iterator?: boolean },
    handlers: DeliveryHandlers,
  ): Promise<Unsubscribe> {
    const { bufferSize, handlerTimeout } = checkDeliveryOptions(options, this.options);
    if (this.closing) throw new Error('PubSubService: the application is shutting down');
    const raw = options.raw === true;
    const prefix = this.prefix;
    const full = kind === 'pattern' ? escapeGlob(prefix) + name : prefix + name;
    const what = kind === 'pattern' ? { pattern: name } : { channel: name };
    const label = kind === 'pattern' ? `pattern "${name}"` : `channel "${name}"`;
    // A channel subscription's context never changes: one frozen object for every message.
    const fixed: PubSubMessageContext | undefined =
      kind === 'pattern' ? undefined : Object.freeze({ channel: name });
    const queue = this.registry.queue(label, {
      bufferSize,
      // An iterator waits for its loop, however long that takes.
      timeout: options.iterator ? 0 : handlerTimeout,
      message: (message, channel) =>
        handlers.message(
          raw ? message : decodeMessage(message),
          fixed ?? { channel: channel.slice(prefix.length), pattern: name },
        ),
      gap: (gap) => {
        const notice: PubSubGap = {
          type: 'gap',
          reason: gap.reason,
          ...what,
          ...(gap.dropped !== undefined ? { dropped: gap.dropped } : {}),
          since: new Date(gap.since),
          until: new Date(gap.until),
        };
        if (handlers.gap) return handlers.gap(notice);
        if (gap.reason === 'overflow') {
          this.logger.warn(
            `${label}: the handler fell behind, ${gap.dropped ?? 0} message(s) dropped (bufferSize ${bufferSize})`,
          );
        }
        return undefined;
      },
    });
    try {
      const hub =
        kind === 'shard' ? shardHub(this.connection, full) : this.connection.subscriberFor();
      const sub = await this.registry.attach(hub, kind, full, queue, label);
      return () => sub.close();
    } catch (err) {
      queue.close();
      throw err;
    }
  }
}
