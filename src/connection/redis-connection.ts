import {
  Logger,
  type BeforeApplicationShutdown,
  type OnApplicationShutdown,
  type OnModuleInit,
} from '@nestjs/common';
import type { Redis } from 'ioredis';

import { elapsedMs, withTimeout } from '../common/async.js';
import { scrubSecrets } from '../config/redact.js';
import { RedisConnectionError } from '../errors.js';
import type { ResolvedRedisConfig } from '../redis-module.options.js';

import {
  createClient,
  disconnectAndWait,
  failQueuedCommands,
  isCluster,
  type ConnectionRole,
  type RedisClient,
} from './client-factory.js';
import { CONNECTION_DEFAULTS } from './connection.options.js';
import { DedicatedPool, poolExhausted } from './dedicated-pool.js';
import { retryOnTimeout, type RetryCounter } from './retry-on-timeout.js';
import { watchConnectionState } from './state-logger.js';
import { RedisSubscriber, type MessageListener } from './subscriber.js';

/**
 * One registered connection (`forRoot()` registers `default`; `forRoot({ name })` more): the
 * command connection handed out by `@InjectRedis()`, a subscriber connection opened on first
 * subscribe, and a small pool of dedicated connections for blocking commands. It opens them,
 * watches them, bounds them by `maxConnections` and closes what it opened.
 */
export class RedisConnection
  implements OnModuleInit, BeforeApplicationShutdown, OnApplicationShutdown
{
  /** The command connection: what `@InjectRedis()` injects. */
  readonly client: RedisClient;
  /** Key prefix that ioredis adds to every key of `client`. */
  readonly keyPrefix: string;
  /** Commands of `client` sent again by `retryOnTimeout` since startup. */
  readonly commandRetries: RetryCounter = { retries: 0 };

  private readonly logger: Logger;
  private readonly owned: boolean;
  private readonly detachers: Array<() => void> = [];
  private readonly dedicated: DedicatedPool;
  /** Detaches the state logger of each dedicated connection. */
  private readonly dedicatedWatchers = new Map<RedisClient, () => void>();
  private subscriberHub?: RedisSubscriber;
  /** Subscriber connections to one cluster node each (keyspace events, shard channels). */
  private readonly nodeHubs = new Map<string, RedisSubscriber>();
  private closing?: Promise<void>;
  /** Ends each connection attempt in progress (`connectOrFail`): a close does not wait for one. */
  private readonly connectAttempts = new Set<() => void>();
  /** When shutdown began (`performance.now()`): every shutdown wait shares one budget. */
  private shutdownStart?: number;
  private lastErrorText?: string;

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
      if (config.retryOnTimeout) {
        retryOnTimeout(
          this.client,
          config.retryOnTimeout,
          this.commandRetries,
          () => this.closing !== undefined,
        );
      }
    }
    this.detachers.push(this.watch(this.client, 'command'));
    this.detachers.push(this.rememberLastError(this.client));
    this.dedicated = new DedicatedPool({
      open: () => this.openDedicated(),
      drop: (client) => this.dropDedicated(client),
      hasRoom: () => this.openConnections < config.maxConnections,
      shuttingDown: () => this.shuttingDown(),
      exhausted: (waitMs) => poolExhausted(this.name, this.address, waitMs, config.maxConnections),
      waitMs: config.connectTimeout,
      idleMs: CONNECTION_DEFAULTS.dedicatedIdleMs,
    });
  }

  /**
   * The last error of the command connection since it was last ready (message only, secrets
   * removed), e.g. `WRONGPASS ...` while a `lazyConnect` client keeps retrying; `undefined`
   * while it is ready.
   */
  get lastError(): string | undefined {
    return this.lastErrorText;
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
      this.dedicated.size
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

  /**
   * Runs before Nest closes the HTTP server, which waits for the requests in flight: a request
   * waiting on a command that Redis cannot answer (it is down, or frozen) would hold
   * `app.close()` until ioredis gives up retrying, about a minute. So the commands in flight
   * get `shutdownTimeout` from here; if they have not all been answered by then, every
   * connection is closed now and their commands fail, and the requests can be answered.
   * When they were answered, the connection stays open for the requests still running.
   */
  async beforeApplicationShutdown(): Promise<void> {
    if (!this.owned || this.closing) return;
    this.shutdownStart ??= performance.now();
    if (await this.drain(this.client)) {
      // Answered: the requests still running may take their time, and what they send after
      // the HTTP server has closed gets a full shutdownTimeout of its own in close().
      this.shutdownStart = undefined;
      return;
    }
    await this.close();
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
    this.shutdownStart ??= performance.now();
    for (const stop of [...this.connectAttempts]) stop();
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
          await this.connectOrFail(client, 'subscriber');
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
  withDedicated<T>(fn: (client: RedisClient) => Promise<T>): Promise<T> {
    return this.dedicated.run(fn);
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
      throw this.shuttingDown();
    }
    this.subscriberHub ??= new RedisSubscriber({
      open: async () => {
        this.reserveSlot('subscriber connection');
        const client = createClient(this.config, 'subscriber', this.subscriberNode());
        this.detachers.push(this.watch(client, 'subscriber'));
        await this.connectOrFail(client, 'subscriber');
        return client;
      },
      logger: this.logger,
      closeBound: this.config.shutdownTimeout,
      pingInterval: this.config.pubsub.pingInterval,
    });
    return this.subscriberHub;
  }

  /** On a cluster, a node to subscribe on (any node hears every PUBLISH). */
  private subscriberNode(): { host: string; port: number } | undefined {
    if (!isCluster(this.client) || this.config.target.kind !== 'cluster') return undefined;
    const nodes = this.client.nodes('master');
    const pick = nodes[Math.floor(Math.random() * nodes.length)];
    const { host, port } = (pick?.options ?? this.config.target.nodes[0]) as {
      host: string;
      port: number;
    };
    return { host, port };
  }

  /** Refusal of new work during shutdown: not an outage, so no "is Redis running?" hint. */
  private shuttingDown(): RedisConnectionError {
    return new RedisConnectionError(this.name, this.address, 'the application is shutting down', {
      hint: 'This call started after app.close(); nothing is wrong with Redis.',
    });
  }

  private rememberLastError(client: RedisClient): () => void {
    const onError = (err: Error): void => {
      this.lastErrorText = this.scrub(err.message);
    };
    const onReady = (): void => {
      this.lastErrorText = undefined;
    };
    client.on('error', onError);
    client.on('ready', onReady);
    return () => {
      client.off('error', onError);
      client.off('ready', onReady);
    };
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

  /** Opens one dedicated connection, connected and watched, for the pool. */
  private async openDedicated(): Promise<RedisClient> {
    const client = createClient(this.config, 'dedicated');
    const detach = this.watch(client, 'dedicated');
    try {
      await this.connectOrFail(client, 'dedicated');
    } catch (err) {
      detach();
      throw err;
    }
    this.dedicatedWatchers.set(client, detach);
    return client;
  }

  private dropDedicated(client: RedisClient): void {
    this.dedicatedWatchers.get(client)?.();
    this.dedicatedWatchers.delete(client);
    // Through the shared close: it skips a client its user closed already (a stream consumer
    // drops a blocked reader) and one between reconnect attempts, where a plain disconnect()
    // would arm ioredis's socket-destroy timer with no close event left to clear it.
    void disconnectAndWait(client, this.config.shutdownTimeout);
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
   * passed. On failure the client is stopped and its socket closed (no retry timer survives)
   * and a `RedisConnectionError` names the address and the last cause.
   */
  private async connectOrFail(client: RedisClient, role: ConnectionRole): Promise<void> {
    let lastError: Error | undefined;
    let onReady: () => void = () => undefined;
    let onEnd: () => void = () => undefined;
    let onError: (err: Error) => void = () => undefined;
    let onClose: () => void = () => undefined;
    const shutDown = new Error('the application shut down while it was connecting');
    const ready = new Promise<void>((resolve, reject) => {
      onReady = resolve;
      // A subscriber opened by a call that came just before the shutdown (e.g. a lock's first
      // acquire while Redis is unreachable): closing must not wait out connectTimeout for it.
      onClose = () => reject(shutDown);
      this.connectAttempts.add(onClose);
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
      // Closed here, and waited for (bounded): the caller must not disconnect it again, which
      // would arm ioredis's socket-destroy timer with no close event left to clear it.
      await disconnectAndWait(client, this.config.shutdownTimeout);
      const cause = err === shutDown ? shutDown : (lastError ?? (err as Error));
      const reason =
        err === shutDown
          ? shutDown.message
          : lastError === undefined
            ? `not ready within connectTimeout (${this.config.connectTimeout} ms)`
            : isTlsCertificateError(lastError)
              ? `TLS: the server's certificate was rejected (${this.scrub(cause.message)}); ` +
                'set tls.ca to the CA that signed it, and check that it names this host'
              : isPermanentConnectError(lastError)
                ? this.scrub(cause.message)
                : `${this.scrub(cause.message)} (gave up after connectTimeout, ${this.config.connectTimeout} ms)`;
      throw new RedisConnectionError(this.name, this.address, `${role} connection ${reason}`, {
        cause: new Error(this.scrub(cause.message)),
        // Not an outage: nothing to check.
        ...(err === shutDown ? { hint: 'Nothing to fix: the application closed first.' } : {}),
      });
    } finally {
      this.connectAttempts.delete(onClose);
      client.off('error', onError);
      client.off('ready', onReady);
      client.off('end', onEnd);
    }
  }

  private async doClose(): Promise<void> {
    const dedicated = this.dedicated.close();
    const closing: Array<Promise<void>> = [];
    if (this.subscriberHub) closing.push(this.subscriberHub.close());
    for (const hub of this.nodeHubs.values()) closing.push(hub.close());
    for (const client of dedicated) closing.push(this.shutdownClient(client, false));
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

  /** What is left of the shutdown budget (`shutdownTimeout` from the first shutdown hook). */
  private shutdownBudget(): number {
    const spent = performance.now() - (this.shutdownStart ?? performance.now());
    return Math.max(0, this.config.shutdownTimeout - spent);
  }

  /**
   * Waits, within the shutdown budget, until every command sent so far has its reply: resolves
   * `true` then, `false` when the budget ran out first. Graceful without `QUIT` (deprecated
   * since Redis 7.2): a `PING` queued behind the commands in flight is answered only after them.
   * A client that is reconnecting gets the rest of the budget to come back first.
   */
  private async drain(client: RedisClient): Promise<boolean> {
    const answered = (async () => {
      if (client.status !== 'ready') {
        await new Promise<void>((resolve, reject) => {
          const onReady = (): void => {
            client.off('end', onEnd);
            resolve();
          };
          const onEnd = (): void => {
            client.off('ready', onReady);
            reject(new Error('ended'));
          };
          client.once('ready', onReady);
          client.once('end', onEnd);
        });
      }
      const nodes: Redis[] = isCluster(client) ? client.nodes('all') : [client];
      await Promise.all(nodes.filter((n) => n.status === 'ready').map((n) => n.ping()));
    })();
    return withTimeout(answered, this.shutdownBudget(), () => new Error('drain timeout')).then(
      () => true,
      () => false,
    );
  }

  /**
   * Drains (the command connection), then closes the socket. Whatever is still queued when the
   * budget runs out fails at once with a `RedisConnectionError`: left to ioredis, commands queued
   * while it reconnects would wait for retries that `disconnect()` has cancelled, forever.
   */
  private async shutdownClient(client: RedisClient, drain: boolean): Promise<void> {
    if (client.status === 'end') return;
    if (drain && client.status === 'ready' && !(await this.drain(client))) {
      this.logger.warn(
        `in-flight commands did not finish within shutdownTimeout (${this.config.shutdownTimeout} ms); closing anyway`,
      );
    }
    failQueuedCommands(
      client,
      new RedisConnectionError(
        this.name,
        this.address,
        `the application shut down before Redis answered (shutdownTimeout ${this.config.shutdownTimeout} ms)`,
        { hint: 'The command may or may not have run. Redis was unreachable or too slow.' },
      ),
    );
    await disconnectAndWait(client, this.config.shutdownTimeout);
  }
}

/** Errors that no reconnect attempt can cure: authentication and authorisation failures. */
function isPermanentConnectError(err: Error): boolean {
  const code = errorCode(err);
  return (
    /WRONGPASS|NOAUTH|NOPERM|invalid password|invalid username-password/i.test(err.message) ||
    // No retry will change a certificate, nor a TLS handshake the server refuses.
    isTlsCertificateError(err) ||
    /^ERR_SSL_/.test(code)
  );
}

/** A certificate the CA does not vouch for, or one for another host. */
function isTlsCertificateError(err: Error): boolean {
  const code = errorCode(err);
  return TLS_PERMANENT_CODES.has(code) || /^ERR_TLS_CERT/.test(code);
}

const TLS_PERMANENT_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'HOSTNAME_MISMATCH',
]);

/** The `code` of a Node or Redis error, as a string ('' when it has none). */
function errorCode(err: Error): string {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' || typeof code === 'number' ? String(code) : '';
}
