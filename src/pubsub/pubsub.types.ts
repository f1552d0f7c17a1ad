import type { RedisSubscriber } from '../connection/subscriber.js';

import type { DeliveryQueue } from './delivery-queue.js';
import type { KeyEventName } from './keyspace.js';

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

// ------------------------------------------------------------------- internal, not exported

/** One subscription of a delivery queue on a subscriber connection. */
export interface Subscription {
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
export interface KeyEventGroup {
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

/** The counters of `stats()` that are counted as things happen (internal). */
export type Counters = Omit<PubSubStats, 'subscriptions'>;
