import { Logger, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { DEFAULTS } from '../config/defaults.js';
import { scrubSecrets } from '../config/redact.js';
import type { ResolvedRedisConfig } from '../config/resolve-options.js';
import { RedisConnectionError } from '../errors.js';
import {
  createClient,
  disconnectAndWait,
  isCluster,
  type ConnectionRole,
  type RedisClient,
} from './client-factory.js';
import { watchConnectionState } from './state-logger.js';
import { RedisSubscriber, type MessageListener } from './subscriber.js';
import { elapsedMs, withTimeout } from './wait.js';

interface Waiter {
  resolve: (client: RedisClient) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * One registered connection (`forRoot()` registers `default`; `forRoot({ name })` more): the
 * command connection handed out by `@InjectRedis()`, a subscriber connection opened on first
 * subscribe, and a small pool of dedicated connections for blocking commands. It opens them,
 * watches them, bounds them by `maxConnections` and closes what it opened.
 */
export class RedisConnection implements OnModuleInit, OnApplicationShutdown {
  /** The command connection: what `@InjectRedis()` injects. */
  readonly client: RedisClient;
  /** Key prefix that ioredis adds to every key of `client`. */
  readonly keyPrefix: string;

  private readonly logger: Logger;
  private readonly owned: boolean;
  private readonly detachers: Array<() => void> = [];
  private readonly idle: RedisClient[] = [];
  private readonly idleTimers = new Map<RedisClient, NodeJS.Timeout>();
  private readonly busy = new Set<RedisClient>();
  /** Detaches the state logger of each dedicated connection. */
  private readonly dedicatedWatchers = new Map<RedisClient, () => void>();
  private readonly waiters: Waiter[] = [];
  private dedicatedOpening = 0;
  private subscriberHub?: RedisSubscriber;
  /** Subscriber connections to one cluster node each (keyspace events, shard channels). */
  private readonly nodeHubs = new Map<string, RedisSubscriber>();
  private closing?: Promise<void>;

  constructor(readonly config: ResolvedRedisConfig) {
    this.logger = new Logger(`Redis:${config.name}`);
    if (config.target.kind === 'client') {
      this.client = config.target.client;
      this.owned = false;
      const own = (this.client.options as { keyPrefix?: string }).keyPrefix;
      this.keyPrefix = own ?? '';
    } else {
      this.client = createClient(config, 'command');
      this.owned = true;
      this.keyPrefix = config.keyPrefix;
    }
    this.detachers.push(this.watch(this.client, 'command'));
  }

  /** The connection's name (`default` unless registered with `name`). */
  get name(): string {
    return this.config.name;
  }

  /** Address for logs and errors; never contains a password. */
  get address(): string {
    return this.config.address;
  }

  get isCluster(): boolean {
    return isCluster(this.client);
  }

  /** `true` once `close()` has started: new work should not start. */
  get isClosing(): boolean {
    return this.closing !== undefined;
  }

  /** How many connections this registration holds open or is opening right now. */
  get openConnections(): number {
    return (
      (this.owned ? 1 : 0) +
      (this.subscriberHub?.isOpen ? 1 : 0) +
      [...this.nodeHubs.values()].filter((hub) => hub.isOpen).length +
      this.idle.length +
      this.busy.size +
      this.dedicatedOpening
    );
  }

  /** Removes secrets from a text before it is logged or thrown. */
  scrub(text: string): string {
    return scrubSecrets(text, [
      this.config.password,
      this.config.target.kind === 'sentinel' ? this.config.target.sentinelPassword : undefined,
    ]);
  }

  async onModuleInit(): Promise<void> {
    if (!this.owned) return;
    if (this.config.lazyConnect) {
      // Boot now; ioredis keeps retrying with our backoff and the state logger reports it.
      this.client.connect().catch(() => undefined);
      return;
    }
    await this.connectOrFail(this.client, 'command');
  }

  async onApplicationShutdown(): Promise<void> {
    await this.close();
  }

  /**
   * Closes every connection this registration opened: in-flight commands get up to
   * `shutdownTimeout` to finish, then sockets are closed. Idempotent. A client the
   * application passed in is left open (only our listeners are removed).
   */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  /**
   * Subscribes to a channel on the shared subscriber connection, opening it on first use.
   * Returns a function that unsubscribes this listener.
   */
  subscribe(channel: string, listener: MessageListener): Promise<() => Promise<void>> {
    return this.subscriber().subscribe(channel, listener);
  }

  /**
   * Calls `listener` when the subscriber connection comes back after a drop: messages
   * published meanwhile were lost, so anything kept coherent by them must be reset.
   * Returns a function that removes the listener.
   */
  onResubscribe(listener: () => void): () => void {
    return this.subscriber().onResubscribe(listener);
  }

  /**
   * Calls `listener` when the subscriber connection drops: from then until `onResubscribe`
   * fires, published messages are being missed. Returns a function that removes it.
   */
  onSubscriberDrop(listener: () => void): () => void {
    return this.subscriber().onDrop(listener);
  }

  /**
   * The shared subscriber connection, or with `node` a subscriber connection to that one node
   * of a cluster (opened on first use, counted in `maxConnections`, closed on shutdown), for
   * what a single node publishes: keyspace notifications and shard channels. Without a
   * cluster, every `node` is the shared connection's server, so the shared one is returned.
   */
  subscriberFor(node?: { host: string; port: number }): RedisSubscriber {
    if (!node || !this.isCluster) return this.subscriber();
    if (this.closing) {
      throw new RedisConnectionError(this.name, this.address, 'the connection is shutting down');
    }
    const key = `${node.host}:${node.port}`;
    let hub = this.nodeHubs.get(key);
    if (!hub) {
      hub = new RedisSubscriber({
        open: async () => {
          this.reserveSlot(`subscriber connection to ${key}`);
          const client = createClient(this.config, 'subscriber', node);
          this.detachers.push(this.watch(client, 'subscriber'));
          try {
            await this.connectOrFail(client, 'subscriber');
          } catch (err) {
            client.disconnect();
            throw err;
          }
          return client;
        },
        logger: this.logger,
        closeBound: this.config.shutdownTimeout,
        pingInterval: this.config.pubsub.pingInterval,
      });
      this.nodeHubs.set(key, hub);
    }
    return hub;
  }

  /** `true` when the subscriber connection exists (it is opened on first subscribe). */
  get hasSubscriber(): boolean {
    return this.subscriberHub?.isOpen ?? false;
  }

  /**
   * Runs `fn` with a connection of its own, for blocking commands (`BLPOP`, `XREAD BLOCK`,
   * `WAIT`) that must never stall the shared command connection. Connections are pooled and
   * bounded by `maxConnections`; when all are busy, the call waits up to `connectTimeout`.
   */
  async withDedicated<T>(fn: (client: RedisClient) => Promise<T>): Promise<T> {
    const client = await this.acquireDedicated();
    try {
      return await fn(client);
    } finally {
      this.releaseDedicated(client);
    }
  }

  /** `PING` round trip in ms: the slowest master's on a cluster (0 when no master is known). */
  async pingLatency(): Promise<number> {
    const latencies = await Promise.all(
      this.masters().map(async (node) => {
        const start = performance.now();
        await node.ping();
        return elapsedMs(start);
      }),
    );
    return latencies.length ? Math.max(...latencies) : 0;
  }

  /** Every master of a cluster, or the one server otherwise, for per-node commands. */
  masters(): Redis[] {
    return isCluster(this.client) ? this.client.nodes('master') : [this.client];
  }

  // ---------------------------------------------------------------------------------------

  private subscriber(): RedisSubscriber {
    if (this.closing) {
      throw new RedisConnectionError(this.name, this.address, 'the connection is shutting down');
    }
    this.subscriberHub ??= new RedisSubscriber({
      open: async () => {
        this.reserveSlot('subscriber connection');
        const client = createClient(this.config, 'subscriber', await this.subscriberNode());
        this.detachers.push(this.watch(client, 'subscriber'));
        try {
          await this.connectOrFail(client, 'subscriber');
        } catch (err) {
          client.disconnect();
          throw err;
        }
        return client;
      },
      logger: this.logger,
      closeBound: this.config.shutdownTimeout,
      pingInterval: this.config.pubsub.pingInterval,
    });
    return this.subscriberHub;
  }

  /** On a cluster, a node to subscribe on (any node hears every PUBLISH). */
  private async subscriberNode(): Promise<{ host: string; port: number } | undefined> {
    if (!isCluster(this.client) || this.config.target.kind !== 'cluster') return undefined;
    const nodes = this.client.nodes('master');
    const pick = nodes[Math.floor(Math.random() * nodes.length)];
    const { host, port } = (pick?.options ?? this.config.target.nodes[0]) as {
      host: string;
      port: number;
    };
    return { host, port };
  }

  private reserveSlot(what: string): void {
    if (this.openConnections >= this.config.maxConnections) {
      throw new RedisConnectionError(
        this.name,
        this.address,
        `cannot open a ${what}: all ${this.config.maxConnections} connections allowed by maxConnections are open`,
        {
          hint: 'Raise maxConnections (REDIS_MAX_CONNECTIONS), or release dedicated connections sooner.',
        },
      );
    }
  }

  private async acquireDedicated(): Promise<RedisClient> {
    if (this.closing) {
      throw new RedisConnectionError(this.name, this.address, 'the connection is shutting down');
    }
    while (this.idle.length > 0) {
      const client = this.idle.pop()!;
      clearTimeout(this.idleTimers.get(client));
      this.idleTimers.delete(client);
      if (client.status === 'ready') {
        this.busy.add(client);
        return client;
      }
      client.disconnect();
    }
    if (this.openConnections < this.config.maxConnections) {
      this.dedicatedOpening += 1;
      const client = createClient(this.config, 'dedicated');
      const detach = this.watch(client, 'dedicated');
      try {
        await this.connectOrFail(client, 'dedicated');
      } catch (err) {
        detach();
        client.disconnect();
        throw err;
      } finally {
        this.dedicatedOpening -= 1;
      }
      this.dedicatedWatchers.set(client, detach);
      this.busy.add(client);
      return client;
    }
    return new Promise<RedisClient>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.splice(this.waiters.indexOf(waiter), 1);
          reject(
            new RedisConnectionError(
              this.name,
              this.address,
              `no dedicated connection became free within ${this.config.connectTimeout} ms ` +
                `(all ${this.config.maxConnections} allowed by maxConnections are in use)`,
              { hint: 'Raise maxConnections, or make blocking commands use shorter timeouts.' },
            ),
          );
        }, this.config.connectTimeout),
      };
      this.waiters.push(waiter);
    });
  }

  private releaseDedicated(client: RedisClient): void {
    this.busy.delete(client);
    if (this.closing || client.status !== 'ready') {
      this.dropDedicated(client);
      // A slot freed up: let the next waiter open a fresh connection.
      const next = this.waiters.shift();
      if (next && !this.closing) {
        clearTimeout(next.timer);
        this.acquireDedicated().then(next.resolve, next.reject);
      }
      return;
    }
    const next = this.waiters.shift();
    if (next) {
      clearTimeout(next.timer);
      this.busy.add(client);
      next.resolve(client);
      return;
    }
    this.idle.push(client);
    const timer = setTimeout(() => {
      const i = this.idle.indexOf(client);
      if (i >= 0) this.idle.splice(i, 1);
      this.idleTimers.delete(client);
      this.dropDedicated(client);
    }, DEFAULTS.dedicatedIdleMs);
    timer.unref();
    this.idleTimers.set(client, timer);
  }

  private dropDedicated(client: RedisClient): void {
    this.dedicatedWatchers.get(client)?.();
    this.dedicatedWatchers.delete(client);
    client.disconnect();
  }

  private watch(client: RedisClient, role: ConnectionRole): () => void {
    return watchConnectionState(
      client,
      this.logger,
      { role, address: this.address, scrub: (t) => this.scrub(t) },
      { isClosing: () => this.closing !== undefined },
    );
  }

  /**
   * Connects and waits for `ready`, retrying with our backoff until `connectTimeout` has
   * passed. On failure the client is stopped (no retry timer survives) and a
   * `RedisConnectionError` names the address and the last cause.
   */
  private async connectOrFail(client: RedisClient, role: ConnectionRole): Promise<void> {
    let lastError: Error | undefined;
    let onReady: () => void = () => undefined;
    let onEnd: () => void = () => undefined;
    let onError: (err: Error) => void = () => undefined;
    const ready = new Promise<void>((resolve, reject) => {
      onReady = resolve;
      onEnd = () => reject(lastError ?? new Error('the client gave up reconnecting'));
      onError = (err: Error) => {
        lastError = err;
        // Retrying cannot fix bad credentials or a missing permission: fail now.
        if (isPermanentConnectError(err)) reject(err);
      };
      client.on('error', onError);
      client.once('ready', onReady);
      client.once('end', onEnd);
    });
    client.connect().catch((err: Error) => {
      lastError ??= err;
    });
    try {
      await withTimeout(ready, this.config.connectTimeout, () => new Error('timeout'));
    } catch (err) {
      client.disconnect();
      const cause = lastError ?? (err as Error);
      const reason =
        lastError === undefined
          ? `not ready within connectTimeout (${this.config.connectTimeout} ms)`
          : isPermanentConnectError(lastError)
            ? this.scrub(cause.message)
            : `${this.scrub(cause.message)} (gave up after connectTimeout, ${this.config.connectTimeout} ms)`;
      throw new RedisConnectionError(this.name, this.address, `${role} connection ${reason}`, {
        cause: new Error(this.scrub(cause.message)),
      });
    } finally {
      client.off('error', onError);
      client.off('ready', onReady);
      client.off('end', onEnd);
    }
  }

  private async doClose(): Promise<void> {
    for (const waiter of this.waiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(
        new RedisConnectionError(this.name, this.address, 'the connection is shutting down'),
      );
    }
    for (const timer of this.idleTimers.values()) clearTimeout(timer);
    this.idleTimers.clear();

    const closing: Array<Promise<void>> = [];
    if (this.subscriberHub) closing.push(this.subscriberHub.close());
    for (const hub of this.nodeHubs.values()) closing.push(hub.close());
    for (const client of [...this.idle.splice(0), ...this.busy]) {
      closing.push(this.shutdownClient(client, false));
    }
    this.busy.clear();
    if (this.owned) closing.push(this.shutdownClient(this.client, true));
    const results = await Promise.allSettled(closing);
    for (const detach of this.detachers.splice(0)) detach();
    for (const detach of this.dedicatedWatchers.values()) detach();
    this.dedicatedWatchers.clear();
    for (const r of results) {
      if (r.status === 'rejected') {
        this.logger.warn(
          `error while closing: ${this.scrub(String((r.reason as Error)?.message ?? r.reason))}`,
        );
      }
    }
    this.logger.log(
      this.owned
        ? 'connections closed'
        : 'connections closed (the application-owned client stays open)',
    );
  }

  /**
   * Graceful close without `QUIT` (deprecated since Redis 7.2): a `PING` queued behind the
   * in-flight commands is answered only after them, so once it returns nothing is pending and
   * the socket can be dropped. Bounded by `shutdownTimeout`.
   */
  private async shutdownClient(client: RedisClient, drain: boolean): Promise<void> {
    if (client.status === 'end') return;
    if (drain && client.status === 'ready') {
      const nodes: Redis[] = isCluster(client) ? client.nodes('all') : [client];
      const drained = Promise.all(
        nodes.filter((n) => n.status === 'ready').map((n) => n.ping().catch(() => undefined)),
      );
      await withTimeout(
        drained,
        this.config.shutdownTimeout,
        () => new Error('drain timeout'),
      ).catch(() =>
        this.logger.warn(
          `in-flight commands did not finish within shutdownTimeout (${this.config.shutdownTimeout} ms); closing anyway`,
        ),
      );
    }
    await disconnectAndWait(client, this.config.shutdownTimeout);
  }
}

/** Errors that no reconnect attempt can cure: authentication and authorisation failures. */
function isPermanentConnectError(err: Error): boolean {
  return /WRONGPASS|NOAUTH|NOPERM|invalid password|invalid username-password/i.test(err.message);
}
