import type { LoggerService } from '@nestjs/common';
import { disconnectAndWait, type RedisClient } from './client-factory.js';
import { withTimeout } from './wait.js';

/** Receives a published message. */
export type MessageListener = (message: string, channel: string) => void;

/**
 * The one subscriber connection of a registration, shared by every feature that listens
 * (cache invalidation, lock wake-ups): opened on the first `subscribe`, multiplexing
 * listeners per channel, and telling interested parties when it comes back after a drop,
 * because whatever was published meanwhile is lost.
 */
export class RedisSubscriber {
  private client?: RedisClient;
  private opening?: Promise<RedisClient>;
  private readonly listeners = new Map<string, Set<MessageListener>>();
  /** Pending or done `SUBSCRIBE` per channel, so concurrent subscribers wait for the same ack. */
  private readonly subscribed = new Map<string, Promise<unknown>>();
  private readonly resubscribeListeners = new Set<() => void>();
  private readonly dropListeners = new Set<() => void>();
  private dropped = false;
  private closed = false;
  private detach?: () => void;

  constructor(
    private readonly deps: {
      open: () => Promise<RedisClient>;
      logger: LoggerService;
      /** Upper bound of waiting for the socket to close at shutdown (ms). */
      closeBound: number;
    },
  ) {}

  /** `true` while the connection is open or being opened. */
  get isOpen(): boolean {
    return !this.closed && (this.client !== undefined || this.opening !== undefined);
  }

  async subscribe(channel: string, listener: MessageListener): Promise<() => Promise<void>> {
    const client = await this.ensureOpen();
    let set = this.listeners.get(channel);
    if (!set) {
      set = new Set();
      this.listeners.set(channel, set);
    }
    set.add(listener);
    let ack = this.subscribed.get(channel);
    if (!ack) {
      ack = client.subscribe(channel);
      this.subscribed.set(channel, ack);
    }
    try {
      await ack;
    } catch (err) {
      this.subscribed.delete(channel);
      set.delete(listener);
      throw err;
    }
    let active = true;
    return async () => {
      if (!active) return;
      active = false;
      const current = this.listeners.get(channel);
      current?.delete(listener);
      if (current && current.size === 0 && !this.closed) {
        this.listeners.delete(channel);
        this.subscribed.delete(channel);
        // While disconnected ioredis would queue the UNSUBSCRIBE (and this call would wait for
        // the reconnect); the server forgets our subscriptions with the connection anyway, and
        // ioredis re-subscribes only the channels still in its own set.
        if (client.status === 'ready') {
          await withTimeout(client.unsubscribe(channel), 1_000, () => new Error('timeout')).catch(
            () => undefined,
          );
        } else {
          void client.unsubscribe(channel).catch(() => undefined);
        }
      }
    };
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

  async close(): Promise<void> {
    this.closed = true;
    const client = this.client ?? (await this.opening?.catch(() => undefined));
    this.detach?.();
    this.listeners.clear();
    this.subscribed.clear();
    this.resubscribeListeners.clear();
    this.dropListeners.clear();
    if (client) await disconnectAndWait(client, this.deps.closeBound);
  }

  private ensureOpen(): Promise<RedisClient> {
    if (this.closed) return Promise.reject(new Error('the subscriber connection is closed'));
    if (this.client) return Promise.resolve(this.client);
    this.opening ??= this.deps.open().then(
      (client) => {
        this.client = client;
        this.opening = undefined;
        this.detach = this.watch(client);
        return client;
      },
      (err: unknown) => {
        this.opening = undefined;
        throw err;
      },
    );
    return this.opening;
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

  private watch(client: RedisClient): () => void {
    const onMessage = (channel: string, message: string): void => {
      const set = this.listeners.get(channel);
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
    };
    const onClose = (): void => {
      if (this.closed || this.dropped) return;
      this.dropped = true;
      this.notify(this.dropListeners, 'a drop listener');
    };
    const onReady = (): void => {
      if (!this.dropped || this.closed) return;
      this.dropped = false;
      // We re-subscribe, not ioredis (its `autoResubscribe` is off on this connection): its
      // SUBSCRIBE has no handler, so a shutdown right after a reconnect, which fails the
      // commands still queued, made an unhandled rejection of it. Listeners reset their state
      // once the subscriptions are active, so that no further message can be missed.
      const channels = [...this.listeners.keys()];
      if (channels.length === 0) {
        this.notify(this.resubscribeListeners, 'a resubscribe listener');
        return;
      }
      const ack = client.subscribe(...channels);
      for (const channel of channels) this.subscribed.set(channel, ack);
      ack.then(
        () => {
          if (!this.closed) this.notify(this.resubscribeListeners, 'a resubscribe listener');
        },
        (err: unknown) => {
          // The connection dropped again (its next 'ready' retries), or it is being closed.
          for (const channel of channels) {
            if (this.subscribed.get(channel) === ack) this.subscribed.delete(channel);
          }
          if (!this.closed) {
            this.deps.logger.warn(`re-subscribing failed: ${(err as Error).message}`);
          }
        },
      );
    };
    client.on('message', onMessage);
    client.on('close', onClose);
    client.on('ready', onReady);
    return () => {
      client.off('message', onMessage);
      client.off('close', onClose);
      client.off('ready', onReady);
    };
  }
}
