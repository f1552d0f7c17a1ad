import type { LoggerService } from '@nestjs/common';

import { disconnectAndWait, type RedisClient } from './client-factory.js';
import { withTimeout } from './wait.js';

/** Receives a published message. */
export type MessageListener = (message: string, channel: string) => void;

/**
 * What a listener listens to: a channel (`SUBSCRIBE`), a glob pattern (`PSUBSCRIBE`) or a
 * shard channel (`SSUBSCRIBE`, Redis 7: on a cluster only the slot's owner hears it).
 */
export type SubscriptionKind = 'channel' | 'pattern' | 'shard';

const COMMANDS: Record<SubscriptionKind, { on: string; off: string }> = {
  channel: { on: 'subscribe', off: 'unsubscribe' },
  pattern: { on: 'psubscribe', off: 'punsubscribe' },
  shard: { on: 'ssubscribe', off: 'sunsubscribe' },
};

const KINDS: SubscriptionKind[] = ['channel', 'pattern', 'shard'];

interface Registry {
  listeners: Map<string, Set<MessageListener>>;
  /** Pending or done subscribe command per name, so concurrent subscribers wait for the same ack. */
  subscribed: Map<string, Promise<unknown>>;
}

/**
 * One subscriber connection of a registration, shared by every feature that listens (cache
 * invalidation, lock wake-ups, `PubSubService`): opened on the first `subscribe`, multiplexing
 * listeners per channel, pattern and shard channel, and telling interested parties when it
 * comes back after a drop, because whatever was published meanwhile is lost.
 */
export class RedisSubscriber {
  private client?: RedisClient;
  private opening?: Promise<RedisClient>;
  private readonly registries: Record<SubscriptionKind, Registry> = {
    channel: { listeners: new Map(), subscribed: new Map() },
    pattern: { listeners: new Map(), subscribed: new Map() },
    shard: { listeners: new Map(), subscribed: new Map() },
  };
  private readonly resubscribeListeners = new Set<() => void>();
  private readonly dropListeners = new Set<() => void>();
  private readonly movedListeners = new Set<() => void>();
  private dropped = false;
  private closed = false;
  /** `add` calls between opening the connection and registering their listener. */
  private adding = 0;
  private detach?: () => void;
  private keepalive?: NodeJS.Timeout;
  /** Last sign of life of the connection: `ready`, or a PING answered. */
  private aliveAt = 0;

  constructor(
    private readonly deps: {
      open: () => Promise<RedisClient>;
      logger: LoggerService;
      /** Upper bound of waiting for the socket to close at shutdown (ms). */
      closeBound: number;
      /**
       * PING the connection this often (ms; 0: never). A half-open connection (a peer gone
       * without a FIN or RST, a frozen proxy) raises no error: without a probe, subscriptions
       * would just fall silent. After two intervals without an answer it is reconnected.
       */
      pingInterval?: number;
    },
  ) {}

  /** `true` while the connection is open or being opened. */
  get isOpen(): boolean {
    return !this.closed && (this.client !== undefined || this.opening !== undefined);
  }

  /** `true` while the connection is up and subscribed (not between a drop and its resubscribe). */
  get isLive(): boolean {
    return !this.closed && !this.dropped && this.client?.status === 'ready';
  }

  /**
   * The server this connection is on right now (`host:port` of the socket's peer), or
   * `undefined` while it is not connected. Through Sentinel it changes after a failover.
   */
  get remoteAddress(): string | undefined {
    const stream = (this.client as { stream?: { remoteAddress?: string; remotePort?: number } })
      ?.stream;
    if (this.client?.status !== 'ready' || !stream?.remoteAddress) return undefined;
    return `${stream.remoteAddress}:${stream.remotePort}`;
  }

  /**
   * Closes the connection when nothing listens on it any more (a cluster node that stopped
   * being a master), freeing its place in `maxConnections`; the next subscribe opens it again.
   * Resolves with whether it closed.
   */
  async closeIfIdle(): Promise<boolean> {
    const client = this.client;
    if (this.closed || !client || this.opening || this.adding > 0) return false;
    if (KINDS.some((kind) => this.registries[kind].listeners.size > 0)) return false;
    this.detach?.();
    this.detach = undefined;
    clearInterval(this.keepalive);
    this.keepalive = undefined;
    this.client = undefined;
    this.dropped = false;
    for (const kind of KINDS) this.registries[kind].subscribed.clear();
    // The connection set's state logger listens on this client too and would report a
    // deliberate close as a lost connection, then as an error ("ended"). The client is
    // discarded: its state listeners go with it; errors keep a listener (no crash on one).
    for (const event of ['ready', 'close', 'reconnecting', 'end'] as const) {
      client.removeAllListeners(event);
    }
    client.on('error', () => undefined);
    await disconnectAndWait(client, this.deps.closeBound);
    return true;
  }

  /** Listens to `channel`; resolves once the server confirmed the subscription. */
  subscribe(channel: string, listener: MessageListener): Promise<() => Promise<void>> {
    return this.add('channel', channel, listener);
  }

  /** Listens to every channel matching the glob `pattern`. */
  psubscribe(pattern: string, listener: MessageListener): Promise<() => Promise<void>> {
    return this.add('pattern', pattern, listener);
  }

  /** Listens to the shard channel `channel` (this connection must reach the slot's owner). */
  ssubscribe(channel: string, listener: MessageListener): Promise<() => Promise<void>> {
    return this.add('shard', channel, listener);
  }

  /**
   * Sends the subscribe command for `name` again although it is registered: the server may
   * have dropped it on its own (an unsolicited `SUNSUBSCRIBE` when its slot moved). Redis
   * treats a repeated subscribe as a no-op; `MOVED` rejects (and signals `onMoved`).
   */
  async resubscribe(kind: SubscriptionKind, name: string): Promise<void> {
    const { listeners, subscribed } = this.registries[kind];
    if (!listeners.has(name)) return;
    const client = await this.ensureOpen();
    const ack = this.send(client, COMMANDS[kind].on, [name]);
    subscribed.set(name, ack);
    try {
      await ack;
    } catch (err) {
      if (subscribed.get(name) === ack) subscribed.delete(name);
      throw err;
    }
  }

  /**
   * Whether the server's replies leave `name` subscribed on this connection, as ioredis
   * tracks them (it also drops a name on an unsolicited `SUNSUBSCRIBE`); `undefined` when
   * the client keeps no such record.
   */
  isSubscribed(kind: SubscriptionKind, name: string): boolean | undefined {
    const condition = (
      this.client as unknown as {
        condition?: { subscriber?: false | { channels(set: string): string[] } };
      }
    )?.condition;
    if (!condition || this.client?.status !== 'ready') return undefined;
    if (!condition.subscriber) return false;
    return condition.subscriber.channels(COMMANDS[kind].on).includes(name);
  }

  /** The names subscribed with `kind`, e.g. to move shard channels after a resharding. */
  names(kind: SubscriptionKind): string[] {
    return [...this.registries[kind].listeners.keys()];
  }

  onResubscribe(listener: () => void): () => void {
    this.resubscribeListeners.add(listener);
    return () => this.resubscribeListeners.delete(listener);
  }

  /** Called once when the connection drops (until it is back, messages are being missed). */
  onDrop(listener: () => void): () => void {
    this.dropListeners.add(listener);
    return () => this.dropListeners.delete(listener);
  }

  /**
   * Called when the server moved a shard channel away from this node (an unsolicited
   * `SUNSUBSCRIBE` after a resharding or failover, or `MOVED` to an `SSUBSCRIBE`).
   */
  onMoved(listener: () => void): () => void {
    this.movedListeners.add(listener);
    return () => this.movedListeners.delete(listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.keepalive);
    const client = this.client ?? (await this.opening?.catch(() => undefined));
    this.detach?.();
    for (const kind of KINDS) {
      this.registries[kind].listeners.clear();
      this.registries[kind].subscribed.clear();
    }
    this.resubscribeListeners.clear();
    this.dropListeners.clear();
    this.movedListeners.clear();
    if (client) await disconnectAndWait(client, this.deps.closeBound);
  }

  private async add(
    kind: SubscriptionKind,
    name: string,
    listener: MessageListener,
  ): Promise<() => Promise<void>> {
    this.adding += 1;
    let client: RedisClient;
    try {
      client = await this.ensureOpen();
    } finally {
      this.adding -= 1;
    }
    const { listeners, subscribed } = this.registries[kind];
    let set = listeners.get(name);
    if (!set) {
      set = new Set();
      listeners.set(name, set);
    }
    set.add(listener);
    let ack = subscribed.get(name);
    if (!ack) {
      ack = this.send(client, COMMANDS[kind].on, [name]);
      subscribed.set(name, ack);
    }
    try {
      await ack;
    } catch (err) {
      if (subscribed.get(name) === ack) subscribed.delete(name);
      set.delete(listener);
      if (set.size === 0 && listeners.get(name) === set) listeners.delete(name);
      throw err;
    }
    let active = true;
    return async () => {
      if (!active) return;
      active = false;
      const current = listeners.get(name);
      current?.delete(listener);
      if (current && current.size === 0 && !this.closed) {
        listeners.delete(name);
        subscribed.delete(name);
        // While disconnected ioredis would queue the UNSUBSCRIBE (and this call would wait for
        // the reconnect); the server forgets our subscriptions with the connection anyway, and
        // we re-subscribe only the names still registered.
        const off = this.send(client, COMMANDS[kind].off, [name]);
        if (client.status === 'ready') {
          await withTimeout(off, 1_000, () => new Error('timeout')).catch(() => undefined);
        } else {
          off.catch(() => undefined);
        }
      }
    };
  }

  private send(client: RedisClient, command: string, args: string[]): Promise<unknown> {
    return (client as unknown as Record<string, (...a: string[]) => Promise<unknown>>)[command](
      ...args,
    );
  }

  private ensureOpen(): Promise<RedisClient> {
    if (this.closed) return Promise.reject(new Error('the subscriber connection is closed'));
    if (this.client) return Promise.resolve(this.client);
    this.opening ??= this.deps.open().then(
      (client) => {
        this.client = client;
        this.opening = undefined;
        this.detach = this.watch(client);
        this.startKeepalive(client);
        return client;
      },
      (err: unknown) => {
        this.opening = undefined;
        throw err;
      },
    );
    return this.opening;
  }

  private startKeepalive(client: RedisClient): void {
    const interval = this.deps.pingInterval ?? 0;
    if (interval <= 0 || this.closed) return;
    this.aliveAt = Date.now();
    let probing = false;
    this.keepalive = setInterval(() => {
      if (this.closed) return;
      const status = client.status;
      // Reconnecting or closed: ioredis is already on it.
      if (status !== 'ready' && status !== 'connect' && status !== 'connecting') return;
      const silentFor = Date.now() - this.aliveAt;
      if (silentFor >= 2 * interval) {
        this.deps.logger.warn(
          `subscriber connection unresponsive for ${silentFor} ms (no answer to PING); reconnecting`,
        );
        this.aliveAt = Date.now();
        client.disconnect(true);
        return;
      }
      if (status !== 'ready' || probing) return;
      probing = true;
      client.ping().then(
        () => {
          probing = false;
          this.aliveAt = Date.now();
        },
        () => (probing = false),
      );
    }, interval);
    this.keepalive.unref();
  }

  private notify(listeners: Set<() => void>, what: string): void {
    for (const listener of listeners) {
      try {
        listener();
      } catch (err) {
        this.deps.logger.error(`${what} threw: ${(err as Error).message}`);
      }
    }
  }

  private deliver(set: Set<MessageListener> | undefined, message: string, channel: string): void {
    if (!set) return;
    for (const listener of set) {
      try {
        listener(message, channel);
      } catch (err) {
        this.deps.logger.error(
          `a listener of channel "${channel}" threw: ${(err as Error).message}`,
        );
      }
    }
  }

  private watch(client: RedisClient): () => void {
    const channels = this.registries.channel.listeners;
    const patterns = this.registries.pattern.listeners;
    const shards = this.registries.shard.listeners;
    const onMessage = (channel: string, message: string): void =>
      this.deliver(channels.get(channel), message, channel);
    const onPMessage = (pattern: string, channel: string, message: string): void =>
      this.deliver(patterns.get(pattern), message, channel);
    const onSMessage = (channel: string, message: string): void =>
      this.deliver(shards.get(channel), message, channel);
    const onMoved = (): void => {
      if (!this.closed) this.notify(this.movedListeners, 'a moved listener');
    };
    const onClose = (): void => {
      if (this.closed || this.dropped) return;
      this.dropped = true;
      this.notify(this.dropListeners, 'a drop listener');
    };
    const onReady = (): void => {
      this.aliveAt = Date.now();
      if (!this.dropped || this.closed) return;
      // We re-subscribe, not ioredis (its `autoResubscribe` is off on this connection): its
      // SUBSCRIBE has no handler, so a shutdown right after a reconnect, which fails the
      // commands still queued, made an unhandled rejection of it. Listeners reset their state
      // once the subscriptions are active, so that no further message can be missed.
      const acks: Array<Promise<unknown>> = [];
      const undo: Array<() => void> = [];
      for (const kind of KINDS) {
        const { listeners, subscribed } = this.registries[kind];
        const names = [...listeners.keys()];
        if (names.length === 0) continue;
        const ack = this.send(client, COMMANDS[kind].on, names);
        for (const name of names) subscribed.set(name, ack);
        acks.push(ack);
        undo.push(() => {
          for (const name of names) if (subscribed.get(name) === ack) subscribed.delete(name);
        });
      }
      this.dropped = false;
      if (acks.length === 0) {
        this.notify(this.resubscribeListeners, 'a resubscribe listener');
        return;
      }
      // Until every subscription is back, a drop is still in progress for our listeners.
      this.dropped = true;
      Promise.all(acks).then(
        () => {
          if (this.closed) return;
          this.dropped = false;
          this.notify(this.resubscribeListeners, 'a resubscribe listener');
        },
        (err: unknown) => {
          // The connection dropped again (its next 'ready' retries), or it is being closed, or
          // a shard channel moved (its owner re-subscribes it elsewhere).
          for (const u of undo) u();
          if (!this.closed) {
            this.deps.logger.warn(`re-subscribing failed: ${(err as Error).message}`);
            if (/^MOVED /.test((err as Error).message)) {
              this.dropped = false;
              this.notify(this.resubscribeListeners, 'a resubscribe listener');
            }
          }
        },
      );
    };
    client.on('message', onMessage);
    client.on('pmessage', onPMessage);
    client.on('smessage', onSMessage);
    client.on('moved', onMoved);
    client.on('close', onClose);
    client.on('ready', onReady);
    return () => {
      client.off('message', onMessage);
      client.off('pmessage', onPMessage);
      client.off('smessage', onSMessage);
      client.off('moved', onMoved);
      client.off('close', onClose);
      client.off('ready', onReady);
    };
  }
}
