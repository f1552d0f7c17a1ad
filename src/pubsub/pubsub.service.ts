import {
  Inject,
  Injectable,
  Logger,
  type BeforeApplicationShutdown,
  type OnApplicationBootstrap,
} from '@nestjs/common';
import type { Cluster, Redis } from 'ioredis';

import { jsonSerializer } from '../cache/serializer.js';
import { isCluster } from '../connection/client-factory.js';
import { RedisConnection } from '../connection/redis-connection.js';
import type { RedisSubscriber, SubscriptionKind } from '../connection/subscriber.js';
import { getRedisConnectionToken } from '../connection/tokens.js';
import { pause, withTimeout } from '../connection/wait.js';
import type { DecoratorExplorer } from '../discovery/explorer.js';
import { keySlot as hashSlot } from '../toolkit/slots.js';

import { DeliveryQueue, type DeliverySink, type GapEntry } from './delivery-queue.js';
import {
  escapeGlob,
  flagsFor,
  KEY_EVENT_FLAGS,
  mergeFlags,
  missingFlags,
  type KeyEventName,
} from './keyspace.js';
import { MAX_CHANNEL_BYTES, ON_REDIS_MESSAGE_METADATA } from './pubsub.constants.js';

/** A channel name, or `{ pattern }` for every channel matching a glob pattern. */
export type PubSubSource = string | { pattern: string };

/** Where a message came from; names are given without the module's `keyPrefix`. */
export interface PubSubMessageContext {
  /** The channel it was published on. */
  channel: string;
  /** The pattern that matched, for pattern subscriptions. */
  pattern?: string;
}

/** Handles one message. A promise makes the next message of this subscription wait for it. */
export type PubSubHandler<T = unknown> = (
  message: T,
  context: PubSubMessageContext,
) => void | Promise<void>;

/**
 * Messages were missed: the subscriber connection was down (`reconnect`: nothing published
 * meanwhile reached us), or the handler fell behind and the oldest buffered messages were
 * dropped (`overflow`). Resynchronise from the source of truth.
 */
export interface PubSubGap {
  type: 'gap';
  reason: 'reconnect' | 'overflow';
  /** The subscription's channel (absent for pattern subscriptions). */
  channel?: string;
  /** The subscription's pattern (absent for channel subscriptions). */
  pattern?: string;
  /** How many messages were dropped, when known (overflow); `undefined` after a reconnect. */
  dropped?: number;
  /** When messages started being missed. */
  since: Date;
  /** When delivery resumed. */
  until: Date;
}

/** One message, as `messages()` yields it. */
export interface PubSubMessage<T = unknown> extends PubSubMessageContext {
  type: 'message';
  message: T;
}

/** What `messages()` yields: messages, and a gap notice wherever some were missed. */
export type PubSubEvent<T = unknown> = PubSubMessage<T> | PubSubGap;

/** Options of `subscribe`, `psubscribe` and `@OnRedisMessage`. */
export interface SubscribeOptions {
  /**
   * Hand the handler the payload string as received, without JSON parsing.
   * @defaultValue false
   */
  raw?: boolean;
  /**
   * Subscribe with `SSUBSCRIBE` (Redis 7 sharded pub/sub: on a cluster only the channel's
   * shard carries it); pair with `publish(..., { sharded: true })`. Channels only.
   * @defaultValue false
   */
  sharded?: boolean;
  /**
   * Messages buffered while the handler is busy; when full, the oldest is dropped.
   * @defaultValue the module's `pubsub.bufferSize` (1000)
   */
  bufferSize?: number;
  /** Called, in order with the messages, wherever messages were missed. */
  onGap?: (gap: PubSubGap) => void | Promise<void>;
  /**
   * How long the handler's promise may stay pending before the next message is delivered
   * anyway, in ms.
   * @defaultValue the module's `pubsub.handlerTimeout` (30000)
   */
  handlerTimeout?: number;
}

/** Options of `@OnRedisMessage`: those of `subscribe`, except the gap callback. */
export type OnRedisMessageOptions = Omit<SubscribeOptions, 'onGap'>;

/** What `@OnRedisMessage` records on the method, read once at startup by `PubSubService`. */
export interface OnRedisMessageMetadata {
  source: PubSubSource;
  options: OnRedisMessageOptions;
}

/** Options of `messages()`. */
export interface MessagesOptions extends Omit<SubscribeOptions, 'onGap' | 'handlerTimeout'> {
  /** Aborting ends the iteration and unsubscribes. */
  signal?: AbortSignal;
}

/** Options of `publish`. */
export interface PublishOptions {
  /**
   * Send the message as it is: it must be a string or a `Buffer` (no JSON encoding).
   * @defaultValue false
   */
  raw?: boolean;
  /**
   * Publish with `SPUBLISH` to subscribers that used `{ sharded: true }`.
   * @defaultValue false
   */
  sharded?: boolean;
}

/** Removes a subscription; resolves once the server confirmed it (bounded, never throws). */
export type Unsubscribe = () => Promise<void>;

/** One keyspace notification: what happened to which key (without the module's `keyPrefix`). */
export interface KeyEvent {
  event: KeyEventName;
  key: string;
}

/** Handles one keyspace notification. */
export type KeyEventHandler = (event: KeyEvent) => void | Promise<void>;

/** Options of `onKeyEvent`. */
export interface KeyEventOptions {
  /**
   * Called, in order with the events, wherever some may have been missed: a subscriber
   * connection was down, a cluster master failed over or joined (its events before we
   * subscribed there were not heard), or the handler fell behind. Resynchronise from the keys.
   */
  onGap?: (gap: PubSubGap) => void | Promise<void>;
}

/**
 * What `onKeyEvent` returns: whether notifications will arrive, and how to stop them. The
 * fields are live: they follow the masters as they change (a failover, a restarted server
 * that lost its `CONFIG SET`, a new cluster master).
 */
export interface KeyEventSubscription {
  /**
   * `false` when a master does not publish these events (its `notify-keyspace-events`
   * lacks `missingFlags`) and they could not be enabled. Inactive from the start: nothing
   * was subscribed. Inactive later (a new master lacking the flags): the other masters are
   * still heard, and the subscription turns active again once the flags are there.
   */
  readonly active: boolean;
  /** The `notify-keyspace-events` flags a master lacks ('' when active). */
  readonly missingFlags: string;
  /** Why the subscription is inactive, for logs and health pages. */
  readonly reason?: string;
  /** Stops the notifications (a no-op for an inactive handle). */
  unsubscribe(): Promise<void>;
}

/** Counters since startup. */
export interface PubSubStats {
  /** Messages published through `publish`. */
  published: number;
  /** Messages received from Redis, summed over subscriptions. */
  received: number;
  /** Messages handed to a handler or an iterator. */
  delivered: number;
  /** Messages dropped because a subscription's buffer was full. */
  dropped: number;
  /** Gap notices (reconnect or overflow) raised, summed over subscriptions. */
  gaps: number;
  /** Times a subscriber connection came back after a drop. */
  reconnects: number;
  /** Handlers that threw or rejected. */
  handlerErrors: number;
  /** Handlers whose promise did not settle within `pubsub.handlerTimeout`. */
  handlerTimeouts: number;
  /** Subscriptions open right now (handlers, iterators, key events, decorated methods). */
  subscriptions: number;
}

interface Subscription {
  hub: RedisSubscriber;
  queue: DeliveryQueue;
  label: string;
  close: () => Promise<void>;
  /** From `since` on, messages may be missed: a gap notice is owed (kept if one is owed already). */
  openGap: (since: number) => void;
  /**
   * Sends the owed gap notice, if any; returns whether one was owed. Called when the
   * subscription is active again and, at the latest, before the next message is queued, so
   * the notice always precedes the first message after the gap.
   */
  flushGap: () => boolean;
  /**
   * Shard channels: the full channel name, to find its owner again after a move. `move(true)`
   * also re-subscribes where the channel already is: the server dropped it (an unsolicited
   * `SUNSUBSCRIBE`) while the slot map read right after may still name the same node.
   */
  shard?: { full: string; move: (force?: boolean) => Promise<void> };
  /**
   * Runs instead of `flushGap` when the hub is subscribed again (and must call it): key
   * events first check that the server they now listen to publishes them.
   */
  afterResubscribe?: () => Promise<void>;
}

/** One `onKeyEvent` call: its pattern subscription on every master, kept in step with them. */
interface KeyEventGroup {
  needed: string;
  pattern: string;
  queue: DeliveryQueue;
  label: string;
  accept: (message: string) => boolean;
  /** The subscription per master (`host:port`; '' for the one server of a non-cluster). */
  nodes: Map<string, Subscription>;
  /** Masters lacking flags: what they lack and why. */
  problems: Map<string, { missing: string; text: string }>;
  /** When the set of masters was last confirmed: a newly found master's gap starts here. */
  confirmedAt: number;
  /** Subscribed on the masters known at the start: from then on, follow passes may add more. */
  ready: boolean;
  closed: boolean;
  close: () => Promise<void>;
}

type Counters = Omit<PubSubStats, 'subscriptions'>;

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
  private readonly subscriptions = new Set<Subscription>();
  private readonly iterators = new Set<() => Promise<void>>();
  private readonly watchedHubs = new Map<RedisSubscriber, () => void>();
  private readonly ownerWatches = new Map<RedisSubscriber, NodeJS.Timeout>();
  /** The follow running per hub, and whether another was asked for meanwhile. */
  private readonly follows = new Map<
    RedisSubscriber,
    { again: boolean; moved: boolean; done: Promise<void> }
  >();
  private readonly counters: Counters = {
    published: 0,
    received: 0,
    delivered: 0,
    dropped: 0,
    gaps: 0,
    reconnects: 0,
    handlerErrors: 0,
    handlerTimeouts: 0,
  };
  /** `notify-keyspace-events` per master (`host:port`), read once. */
  private readonly keyspaceFlags = new Map<string, Promise<string>>();
  private readonly loggedKeyspace = new Set<string>();
  private readonly keyGroups = new Set<KeyEventGroup>();
  /** Following cluster masters for key events: the running pass, and whether one more is due. */
  private mastersFollow?: { again: boolean; refresh: boolean; done: Promise<void> };
  private mastersWatch?: { timer?: NodeJS.Timeout; detach: () => void };
  private closing = false;

  constructor(
    @Inject(getRedisConnectionToken()) private readonly connection: RedisConnection,
    private readonly explorer: DecoratorExplorer,
  ) {}

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
    this.checkName('publish', 'channel', channel);
    let payload: string | Buffer;
    if (options.raw) {
      if (typeof message !== 'string' && !Buffer.isBuffer(message)) {
        throw new TypeError(
          `PubSubService.publish("${channel}"): with raw: true, message must be a string or a Buffer, got ${describe(message)}`,
        );
      }
      payload = message;
    } else {
      try {
        payload = jsonSerializer.serialize(message);
      } catch (err) {
        throw new TypeError(
          `PubSubService.publish("${channel}"): message cannot be sent as JSON: ${(err as Error).message}`,
          { cause: err },
        );
      }
    }
    const client = this.connection.client;
    // SPUBLISH names its channel as a key, so ioredis adds the key prefix itself.
    const receivers = options.sharded
      ? await client.spublish(channel, payload)
      : await this.publisherFor(this.prefix + channel).publish(this.prefix + channel, payload);
    this.counters.published += 1;
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
    this.checkName('subscribe', 'channel', channel);
    this.checkHandler('subscribe', handler);
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
    this.checkName('psubscribe', 'pattern', pattern);
    this.checkHandler('psubscribe', handler);
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
    const pattern = typeof source === 'object' && source !== null ? source.pattern : undefined;
    const name = pattern ?? source;
    if (pattern !== undefined) this.checkName('messages', 'source.pattern', pattern);
    else this.checkName('messages', 'source', name);
    if (pattern !== undefined && options.sharded) {
      throw new TypeError(`PubSubService.messages: sharded pub/sub has no patterns`);
    }
    const signal = options.signal;
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw new TypeError(`PubSubService.messages: options.signal must be an AbortSignal`);
    }

    type Result = IteratorResult<PubSubEvent<T>>;
    let waiting: ((result: Result) => void) | undefined;
    let offered: { event: PubSubEvent<T>; take: () => void } | undefined;
    let done = false;
    let failure: unknown;
    const offer = (event: PubSubEvent<T>): Promise<void> | undefined => {
      if (done) return undefined;
      if (waiting) {
        const resolve = waiting;
        waiting = undefined;
        resolve({ value: event, done: false });
        return undefined;
      }
      return new Promise<void>((take) => (offered = { event, take }));
    };
    const finish = async (): Promise<void> => {
      if (done) return;
      done = true;
      this.iterators.delete(finish);
      signal?.removeEventListener('abort', onAbort);
      offered?.take();
      offered = undefined;
      waiting?.({ value: undefined, done: true });
      waiting = undefined;
      await (
        await subscribed.catch(() => undefined)
      )?.();
    };
    const onAbort = (): void => void finish();
    const subscribed = this.open(
      pattern !== undefined ? 'pattern' : options.sharded ? 'shard' : 'channel',
      name as string,
      { ...options, iterator: true },
      {
        message: (message, context) =>
          offer({ type: 'message', message: message as T, ...context }),
        gap: (gap) => offer(gap),
      },
    ).then(
      (off) => off,
      (err: unknown) => {
        failure = err;
        void finish();
        return undefined;
      },
    );
    this.iterators.add(finish);
    if (signal?.aborted) void finish();
    else signal?.addEventListener('abort', onAbort, { once: true });

    const iterator: AsyncIterableIterator<PubSubEvent<T>> = {
      next: async (): Promise<Result> => {
        await subscribed;
        if (failure !== undefined) {
          const err = failure;
          failure = undefined;
          throw err as Error;
        }
        if (offered) {
          const { event, take } = offered;
          offered = undefined;
          take();
          return { value: event, done: false };
        }
        if (done) return { value: undefined, done: true };
        return new Promise<Result>((resolve) => (waiting = resolve));
      },
      return: async (): Promise<Result> => {
        await finish();
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return iterator;
      },
    };
    return iterator;
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
    const list = (Array.isArray(events) ? events : [events]) as KeyEventName[];
    if (list.length === 0 || list.some((e) => !Object.hasOwn(KEY_EVENT_FLAGS, e))) {
      throw new TypeError(
        `PubSubService.onKeyEvent: events must be one or more of ${Object.keys(KEY_EVENT_FLAGS).join(', ')}; got ${JSON.stringify(events)}`,
      );
    }
    this.checkName('onKeyEvent', 'keyPattern', keyPattern);
    this.checkHandler('onKeyEvent', handler);
    if (options === null || typeof options !== 'object') {
      throw new TypeError(
        `PubSubService.onKeyEvent: options must be an object, got ${describe(options)}`,
      );
    }
    if (options.onGap !== undefined && typeof options.onGap !== 'function') {
      throw new TypeError(
        `PubSubService.onKeyEvent: options.onGap must be a function, got ${describe(options.onGap)}`,
      );
    }
    if (this.closing) throw new Error('PubSubService: the application is shutting down');
    const needed = flagsFor(list);
    const state = await this.checkKeyspace(needed);
    if (!state.active) {
      return {
        active: false,
        missingFlags: state.missing,
        reason: state.reason,
        unsubscribe: () => Promise.resolve(),
      };
    }
    const channelPrefix = `__keyspace@${this.db()}__:`;
    const wanted = new Set<string>(list);
    const keyStart = channelPrefix.length + this.prefix.length;
    const onGap = options.onGap;
    const group: KeyEventGroup = {
      needed,
      pattern: channelPrefix + escapeGlob(this.prefix) + keyPattern,
      label: `key events ${list.join(',')} on "${keyPattern}"`,
      accept: (m) => wanted.has(m),
      queue: this.queue(`key events ${list.join(',')} on "${keyPattern}"`, {
        bufferSize: this.options.bufferSize,
        timeout: this.options.handlerTimeout,
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
      close: () => close(),
    };
    const close = async (): Promise<void> => {
      if (group.closed) return;
      group.closed = true;
      this.keyGroups.delete(group);
      group.queue.close();
      const subs = [...group.nodes.values()];
      group.nodes.clear();
      await Promise.all(subs.map((s) => s.close()));
      if (this.keyGroups.size === 0) this.unwatchMasters();
    };
    this.keyGroups.add(group);
    try {
      if (this.connection.isCluster) {
        for (const node of this.connection.masters()) {
          await this.attachKeyNode(group, addressOf(node));
        }
        group.ready = true;
        this.watchMasters();
        // A master may have changed while subscribing.
        void this.followMasters(false);
      } else {
        await this.attachKeyNode(group, '');
      }
    } catch (err) {
      await close();
      throw err;
    }
    const configure = this.options.keyspaceEvents === 'configure';
    const missing = (): string =>
      [...group.problems.values()].reduce((all, p) => union(all, p.missing), '');
    return {
      get active() {
        return group.problems.size === 0;
      },
      get missingFlags() {
        return missing();
      },
      get reason() {
        if (group.problems.size === 0) return undefined;
        return keyspaceAdvice(
          missing(),
          [...group.problems.values()].map((p) => p.text),
          configure,
        );
      },
      unsubscribe: close,
    };
  }

  /** Counters since startup. */
  stats(): PubSubStats {
    return { ...this.counters, subscriptions: this.subscriptions.size };
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
      ...[...this.keyGroups].map((g) => g.close()),
      ...[...this.subscriptions].map((s) => s.close()),
    ]);
    for (const detach of this.watchedHubs.values()) detach();
    this.watchedHubs.clear();
    for (const timer of this.ownerWatches.values()) clearInterval(timer);
    this.ownerWatches.clear();
    this.unwatchMasters();
    await this.mastersFollow?.done;
  }

  // ------------------------------------------------------------------------ internals

  private async open(
    kind: SubscriptionKind,
    name: string,
    options: SubscribeOptions & { iterator?: boolean },
    handlers: {
      message: (message: unknown, context: PubSubMessageContext) => unknown;
      gap?: (gap: PubSubGap) => unknown;
    },
  ): Promise<Unsubscribe> {
    const bufferSize = options.bufferSize ?? this.options.bufferSize;
    if (!Number.isInteger(bufferSize) || bufferSize < 1 || bufferSize > 1_000_000) {
      throw new RangeError(
        `PubSubService: options.bufferSize must be an integer from 1 to 1000000, got ${String(options.bufferSize)}`,
      );
    }
    const handlerTimeout = options.handlerTimeout ?? this.options.handlerTimeout;
    if (
      typeof handlerTimeout !== 'number' ||
      !(handlerTimeout > 0) ||
      !Number.isFinite(handlerTimeout)
    ) {
      throw new RangeError(
        `PubSubService: options.handlerTimeout must be a positive number of milliseconds, got ${String(options.handlerTimeout)}`,
      );
    }
    if (options.onGap !== undefined && typeof options.onGap !== 'function') {
      throw new TypeError(`PubSubService: options.onGap must be a function`);
    }
    if (this.closing) throw new Error('PubSubService: the application is shutting down');
    const raw = options.raw === true;
    const prefix = this.prefix;
    const full = kind === 'pattern' ? escapeGlob(prefix) + name : prefix + name;
    const what = kind === 'pattern' ? { pattern: name } : { channel: name };
    const label = kind === 'pattern' ? `pattern "${name}"` : `channel "${name}"`;
    // A channel subscription's context never changes: one frozen object for every message.
    const fixed: PubSubMessageContext | undefined =
      kind === 'pattern' ? undefined : Object.freeze({ channel: name });
    const queue = this.queue(label, {
      bufferSize,
      // An iterator waits for its loop, however long that takes.
      timeout: options.iterator ? 0 : handlerTimeout,
      message: (message, channel) =>
        handlers.message(
          raw ? message : decode(message),
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
      const hub = kind === 'shard' ? this.shardHub(full) : this.connection.subscriberFor();
      const sub = await this.attach(hub, kind, full, queue, label);
      return () => sub.close();
    } catch (err) {
      queue.close();
      throw err;
    }
  }

  /** A delivery queue whose handler errors, timeouts and drops are counted and logged. */
  private queue(
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
  private async attach(
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
    this.watchHub(hub);
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
          const next = this.shardHub(full);
          // Another channel of the same node moved: this one is still subscribed there.
          if (next === sub.hub && (!force || next.isSubscribed('shard', full) === true)) return;
          sub.openGap(Date.now());
          if (next === sub.hub) {
            // A MOVED answer signals the hub again, and the next attempt reads a newer map.
            await next.resubscribe('shard', full);
          } else {
            await off();
            this.watchHub(next);
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

  /** Reports drops of `hub` to its subscriptions as gaps, once it is subscribed again. */
  private watchHub(hub: RedisSubscriber): void {
    if (this.watchedHubs.has(hub)) return;
    let droppedAt: number | undefined;
    const offDrop = hub.onDrop(() => {
      droppedAt ??= Date.now();
      for (const sub of this.subscriptions) if (sub.hub === hub) sub.openGap(droppedAt);
      this.watchShardOwners(hub);
    });
    const offBack = hub.onResubscribe(() => {
      const since = droppedAt ?? Date.now();
      droppedAt = undefined;
      this.counters.reconnects += 1;
      let affected = 0;
      for (const sub of this.subscriptions) {
        if (sub.hub !== hub) continue;
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
      void this.followShards(hub);
    });
    const offMoved = hub.onMoved(() => void this.followShards(hub, true));
    this.watchedHubs.set(hub, () => {
      offDrop();
      offBack();
      offMoved();
    });
  }

  /**
   * While `hub` is down, looks every half second whether the slots of its shard channels got
   * a new owner (a failover of a dead master sends no `SUNSUBSCRIBE`), and moves them there;
   * key events move to the new masters alike.
   */
  private watchShardOwners(hub: RedisSubscriber): void {
    const followed = (): boolean =>
      [...this.subscriptions].some(
        (s) => s.hub === hub && (s.shard !== undefined || s.afterResubscribe !== undefined),
      );
    if (!this.connection.isCluster || this.ownerWatches.has(hub) || !followed()) return;
    let running = false;
    const timer = setInterval(() => {
      if (this.closing || hub.isLive || !followed()) {
        clearInterval(timer);
        this.ownerWatches.delete(hub);
        return;
      }
      if (running) return;
      running = true;
      // A dead master's slots go to a replica: its shard channels and key events follow.
      void Promise.all([this.followShards(hub), this.followMasters(true)]).finally(
        () => (running = false),
      );
    }, 500);
    timer.unref();
    this.ownerWatches.set(hub, timer);
  }

  /**
   * Moves the shard channels of `hub` whose slot now lives elsewhere; `moved` (the server
   * dropped channels of `hub`) re-subscribes the others where they are. One follow per hub
   * runs at a time: a signal meanwhile runs one more after it, at most every 100 ms, so a
   * slot map that stays stale for a while (each retry answered `MOVED`) costs no busy loop.
   */
  private followShards(hub: RedisSubscriber, moved = false): Promise<void> {
    const state = this.follows.get(hub);
    if (state) {
      state.again = true;
      state.moved ||= moved;
      return state.done;
    }
    const next: { again: boolean; moved: boolean; done: Promise<void> } = {
      again: false,
      moved,
      done: Promise.resolve(),
    };
    next.done = (async () => {
      try {
        do {
          const force = next.moved;
          next.again = false;
          next.moved = false;
          await this.followOnce(hub, force);
          if (next.again && !this.closing) await pause(100);
        } while (next.again && !this.closing);
      } finally {
        this.follows.delete(hub);
      }
    })();
    this.follows.set(hub, next);
    return next.done;
  }

  private async followOnce(hub: RedisSubscriber, force: boolean): Promise<void> {
    const subs = [...this.subscriptions].filter((s) => s.hub === hub && s.shard);
    if (subs.length === 0 || this.closing) return;
    const cluster = this.connection.client as Cluster;
    await withTimeout(
      new Promise<void>((resolve) => cluster.refreshSlotsCache(() => resolve())),
      this.connection.config.connectTimeout,
      () => new Error('slot refresh timeout'),
    ).catch(() => undefined);
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

  // ------------------------------------------------------------------------ key events

  /** Subscribes `group` on the master at `where` ('' for the one server of a non-cluster). */
  private async attachKeyNode(
    group: KeyEventGroup,
    where: string,
    gapSince?: number,
  ): Promise<void> {
    const hub =
      where === '' ? this.connection.subscriberFor() : this.connection.subscriberFor(parse(where));
    const sub = await this.attach(hub, 'pattern', group.pattern, group.queue, group.label, {
      accept: group.accept,
      gapSince,
      sharedQueue: true,
      afterResubscribe: (s) => this.recheckKeyNode(group, where, s),
    });
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
  private async recheckKeyNode(
    group: KeyEventGroup,
    where: string,
    sub: Subscription,
  ): Promise<void> {
    try {
      if (group.closed || this.closing) return;
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
      this.keyspaceFlags.delete(label);
      this.noteKeyNode(group, where, await this.checkNode(node, label, group.needed));
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
    while (!this.closing && Date.now() < deadline) {
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
  private noteKeyNode(
    group: KeyEventGroup,
    where: string,
    result: { missing: string; problem?: string },
  ): void {
    if (!result.missing) {
      group.problems.delete(where);
      return;
    }
    group.problems.set(where, { missing: result.missing, text: result.problem ?? '' });
    this.logKeyspace(
      keyspaceAdvice(
        result.missing,
        [result.problem ?? ''],
        this.options.keyspaceEvents === 'configure',
      ),
    );
  }

  /**
   * Keeps key events on every cluster master: on every slot refresh of the cluster client and
   * node change, and every `pubsub.pingInterval` (a refresh of our own: a graceful failover
   * sends no sign to a pattern subscriber of the old master, which just goes on as a replica).
   */
  private watchMasters(): void {
    if (this.mastersWatch || !this.connection.isCluster) return;
    const cluster = this.connection.client as Cluster;
    const onChange = (): void => void this.followMasters(false);
    cluster.on('refresh', onChange);
    cluster.on('+node', onChange);
    cluster.on('-node', onChange);
    const interval = this.options.pingInterval;
    const timer =
      interval > 0 ? setInterval(() => void this.followMasters(true), interval) : undefined;
    timer?.unref();
    this.mastersWatch = {
      timer,
      detach: () => {
        cluster.off('refresh', onChange);
        cluster.off('+node', onChange);
        cluster.off('-node', onChange);
      },
    };
  }

  private unwatchMasters(): void {
    const watch = this.mastersWatch;
    if (!watch) return;
    this.mastersWatch = undefined;
    clearInterval(watch.timer);
    watch.detach();
  }

  /**
   * One pass at a time (`refresh`: read the slot map first); a signal meanwhile runs one more
   * after it, at most every 100 ms. Our own refresh signals too: that second pass is cheap.
   */
  private followMasters(refresh: boolean): Promise<void> {
    const state = this.mastersFollow;
    if (state) {
      state.again = true;
      state.refresh ||= refresh;
      return state.done;
    }
    const next: { again: boolean; refresh: boolean; done: Promise<void> } = {
      again: false,
      refresh,
      done: Promise.resolve(),
    };
    next.done = (async () => {
      try {
        do {
          const withRefresh = next.refresh;
          next.again = false;
          next.refresh = false;
          await this.followMastersOnce(withRefresh).catch((err: unknown) =>
            this.logger.warn(
              `key events could not follow the cluster's masters: ${this.connection.scrub((err as Error).message)}`,
            ),
          );
          if (next.again && !this.closing) await pause(100);
        } while (next.again && !this.closing && this.keyGroups.size > 0);
      } finally {
        this.mastersFollow = undefined;
      }
    })();
    this.mastersFollow = next;
    return next.done;
  }

  private async followMastersOnce(refresh: boolean): Promise<void> {
    if (this.closing || this.keyGroups.size === 0 || !this.connection.isCluster) return;
    const cluster = this.connection.client as Cluster;
    if (refresh) {
      await withTimeout(
        new Promise<void>((resolve) => cluster.refreshSlotsCache(() => resolve())),
        this.connection.config.connectTimeout,
        () => new Error('slot refresh timeout'),
      ).catch(() => undefined);
    }
    if (this.closing) return;
    const masters = new Map(this.connection.masters().map((n) => [addressOf(n), n]));
    // An empty map is a refresh that failed (no node answered), not a cluster without masters.
    if (masters.size === 0) return;
    const gone = new Set<RedisSubscriber>();
    for (const group of [...this.keyGroups]) {
      if (!group.ready) continue;
      let complete = true;
      for (const [where, node] of masters) {
        if (group.closed || group.nodes.has(where)) continue;
        try {
          this.keyspaceFlags.delete(where);
          this.noteKeyNode(group, where, await this.checkNode(node, where, group.needed));
          await this.attachKeyNode(group, where, group.confirmedAt);
          this.counters.reconnects += 1;
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
      if (await hub.closeIfIdle()) {
        this.watchedHubs.get(hub)?.();
        this.watchedHubs.delete(hub);
      }
    }
  }

  /**
   * Where to send a plain `PUBLISH`. A cluster sends keyless commands to any node, and
   * messages published on different nodes reach a subscriber in no particular order: always
   * publishing a channel on its slot's owner keeps one publisher's messages in order.
   */
  private publisherFor(full: string): Redis | Cluster {
    const client = this.connection.client;
    if (!isCluster(client)) return client;
    const owner = client.slots[hashSlot(full)]?.[0];
    const node =
      owner === undefined ? undefined : client.nodes('master').find((n) => addressOf(n) === owner);
    return node ?? client;
  }

  /** The subscriber that hears shard channel `full`: on a cluster, its slot owner's own. */
  private shardHub(full: string): RedisSubscriber {
    const client = this.connection.client;
    if (!isCluster(client)) return this.connection.subscriberFor();
    const owner = client.slots[hashSlot(full)]?.[0];
    if (!owner) {
      throw new Error(
        `PubSubService: no cluster node owns the slot of "${full}" yet (is the cluster ready?)`,
      );
    }
    const at = owner.lastIndexOf(':');
    return this.connection.subscriberFor({
      host: owner.slice(0, at),
      port: Number(owner.slice(at + 1)),
    });
  }

  /** The subscriber of every master (keyspace notifications are published per node). */
  private masterHubs(): RedisSubscriber[] {
    if (!this.connection.isCluster) return [this.connection.subscriberFor()];
    return this.connection
      .masters()
      .map((node) => this.connection.subscriberFor(nodeAddress(node)));
  }

  private db(): number {
    const target = this.connection.config.target;
    if (target.kind === 'standalone' || target.kind === 'sentinel') return target.db;
    if (target.kind === 'client' && !isCluster(target.client)) return target.client.options.db ?? 0;
    return 0;
  }

  /**
   * Whether every master publishes the events `needed` stands for, enabling them with
   * `CONFIG SET` when allowed. Each master's flags are read once; what is missing is logged
   * once per distinct message.
   */
  private async checkKeyspace(
    needed: string,
  ): Promise<{ active: boolean; missing: string; reason?: string }> {
    const nodes = this.connection.masters();
    if (nodes.length === 0) {
      return { active: false, missing: needed, reason: 'no master is connected' };
    }
    const problems: string[] = [];
    let missingAll = '';
    for (const node of nodes) {
      const where = this.connection.isCluster ? addressOf(node) : this.connection.address;
      const result = await this.checkNode(node, where, needed);
      if (!result.missing) continue;
      missingAll = union(missingAll, result.missing);
      problems.push(result.problem ?? '');
    }
    if (problems.length === 0) return { active: true, missing: '' };
    const reason = this.connection.scrub(
      keyspaceAdvice(missingAll, problems, this.options.keyspaceEvents === 'configure'),
    );
    this.logKeyspace(reason);
    return { active: false, missing: missingAll, reason };
  }

  /**
   * What `node` lacks of `needed` (set there in `'configure'` mode), with why; its flags are
   * read once and remembered under `where` (forget them to read again).
   */
  private async checkNode(
    node: Redis,
    where: string,
    needed: string,
  ): Promise<{ missing: string; problem?: string }> {
    let flags = this.keyspaceFlags.get(where);
    if (!flags) {
      flags = readFlags(node);
      this.keyspaceFlags.set(where, flags);
    }
    let current: string;
    try {
      current = await flags;
    } catch (err) {
      // Not cached as a failure forever: the next check may find CONFIG allowed.
      this.keyspaceFlags.delete(where);
      return {
        missing: needed,
        problem: this.connection.scrub(`${where}: CONFIG GET failed (${(err as Error).message})`),
      };
    }
    const missing = missingFlags(current, needed);
    if (!missing) return { missing: '' };
    if (this.options.keyspaceEvents !== 'configure') {
      return { missing, problem: `${where} has "${current}"` };
    }
    const merged = mergeFlags(current, needed);
    try {
      await node.config('SET', 'notify-keyspace-events', merged);
      this.keyspaceFlags.set(where, Promise.resolve(merged));
      this.logger.log(
        `${where}: notify-keyspace-events set to "${merged}" (pubsub.keyspaceEvents: 'configure')`,
      );
      return { missing: '' };
    } catch (err) {
      return {
        missing,
        problem: this.connection.scrub(`${where}: CONFIG SET failed (${(err as Error).message})`),
      };
    }
  }

  /** Logs a keyspace problem once per distinct message. */
  private logKeyspace(text: string): void {
    const scrubbed = this.connection.scrub(text);
    if (this.loggedKeyspace.has(scrubbed)) return;
    this.loggedKeyspace.add(scrubbed);
    this.logger.warn(scrubbed);
  }

  private checkName(method: string, argument: string, name: unknown): void {
    if (typeof name !== 'string' || name === '') {
      throw new TypeError(
        `PubSubService.${method}: ${argument} must be a non-empty string, got ${describe(name)}`,
      );
    }
    const bytes = Buffer.byteLength(this.prefix + name);
    if (bytes > MAX_CHANNEL_BYTES) {
      throw new RangeError(
        `PubSubService.${method}: ${argument} "${name.slice(0, 40)}..." is ${bytes} bytes with the key prefix; at most ${MAX_CHANNEL_BYTES} are accepted`,
      );
    }
  }

  private checkHandler(method: string, handler: unknown): void {
    if (typeof handler !== 'function') {
      throw new TypeError(
        `PubSubService.${method}: handler must be a function, got ${describe(handler)}`,
      );
    }
  }
}

/** JSON when it parses, the string itself otherwise (messages from other publishers). */
function decode(payload: string): unknown {
  try {
    return JSON.parse(payload);
  } catch {
    return payload;
  }
}

async function readFlags(node: Redis): Promise<string> {
  const reply = (await node.config('GET', 'notify-keyspace-events')) as unknown;
  // RESP2: ['notify-keyspace-events', 'flags']; RESP3: a map, which ioredis gives as an object.
  if (Array.isArray(reply)) return String(reply[1] ?? '');
  if (reply && typeof reply === 'object') {
    return String(
      ((reply as Record<string, unknown>)['notify-keyspace-events'] as string | undefined) ?? '',
    );
  }
  throw new Error(`unexpected reply ${JSON.stringify(reply)}`);
}

function nodeAddress(node: Redis): { host: string; port: number } {
  return { host: node.options.host ?? '127.0.0.1', port: node.options.port ?? 6379 };
}

function addressOf(node: Redis): string {
  const { host, port } = nodeAddress(node);
  return `${host}:${port}`;
}

/** The one message saying which flags to set where, and how. */
function keyspaceAdvice(missing: string, problems: string[], configure: boolean): string {
  return (
    `keyspace notifications are off: notify-keyspace-events must include "${missing}" ` +
    `(${problems.join('; ')}). Add these flags on every master (redis.conf, or CONFIG SET ` +
    `notify-keyspace-events keeping the flags already there)` +
    (configure ? '' : `, or set the module option pubsub.keyspaceEvents: 'configure'`)
  );
}

function parse(address: string): { host: string; port: number } {
  const at = address.lastIndexOf(':');
  return { host: address.slice(0, at), port: Number(address.slice(at + 1)) };
}

function union(a: string, b: string): string {
  return a + [...b].filter((f) => !a.includes(f)).join('');
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'string') return JSON.stringify(value.slice(0, 40));
  return typeof value;
}
