import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';

import { withTimeout } from '../common/async.js';
import type { ResolvedRedisConfig } from '../redis-module.options.js';

import { backoffDelay } from './backoff.js';
import { coalesceWrites } from './coalesce-writes.js';
import { redactClientErrors } from './redact-errors.js';

/** The ioredis client we hand out: a standalone/Sentinel `Redis` or a `Cluster`. */
export type RedisClient = Redis | Cluster;

/**
 * How a Cluster client rides out a master failover. A command sent to a master that died is
 * retried every `retryDelayOnFailover` ms (with a slot refresh) until a replica has taken over;
 * ioredis's defaults (16 tries, 100 ms apart) give up after about 1.6 s with "Too many Cluster
 * redirections", while a cluster needs about its `cluster-node-timeout` (15 s by default) plus an
 * election. 100 tries 200 ms apart cover 20 s; `commandTimeout`, when set, still bounds every
 * command. `cluster.clusterOptions` overrides each of these.
 */
const CLUSTER_FAILOVER_DEFAULTS = {
  retryDelayOnFailover: 200,
  retryDelayOnClusterDown: 200,
  maxRedirections: 100,
} as const satisfies ClusterOptions;

/**
 * Through Sentinel, the next reconnect attempt asks the sentinels where the master is, so after
 * a failover the first attempt after the switch finds the new master: a long backoff would only
 * add to the write gap (measured: 2.2 s of a 5 s gap after a SIGKILL of the master).
 */
const SENTINEL_MAX_RECONNECT_DELAY = 500;

/** What a connection is for; it shows in `CLIENT LIST` as `<connectionName>:<role>`. */
export type ConnectionRole = 'command' | 'subscriber' | 'dedicated';

/** The `CLIENT SETNAME` of a connection, so operators (and our tests) can find it. */
export function connectionNameFor(config: ResolvedRedisConfig, role: ConnectionRole): string {
  // CLIENT SETNAME rejects spaces, which a connection name may contain.
  return `${config.connectionName.replace(/\s+/g, '_')}:${role}`;
}

export function isCluster(client: RedisClient): client is Cluster {
  return (client as Cluster).isCluster === true;
}

/**
 * Creates (without connecting) one ioredis client for the configured target, or for one
 * `node` of it. Every client is created with `lazyConnect` so that the owner decides when to
 * connect and can bound the wait.
 */
export function createClient(
  config: ResolvedRedisConfig,
  role: ConnectionRole,
  node?: { host: string; port: number },
): RedisClient {
  const client = newClient(config, role, node);
  redactClientErrors(client, clientSecrets(config));
  if (config.target.kind === 'sentinel' && !node && role !== 'dedicated') {
    reconnectAfterSwitchRace(client as Redis);
  }
  // Not on the subscriber (it hardly writes), nor on copies of a client the application owns.
  if (config.coalesceWrites && role !== 'subscriber' && config.target.kind !== 'client') {
    coalesceWrites(client);
  }
  return client;
}

/** Every secret a client of this configuration may send: what its errors must never show. */
export function clientSecrets(config: ResolvedRedisConfig): Array<string | undefined> {
  const target = config.target;
  if (target.kind === 'client') {
    const source = target.client;
    const options = (isCluster(source) ? source.options.redisOptions : source.options) ?? {};
    return [options.password, (options as RedisOptions).sentinelPassword];
  }
  return [config.password, target.kind === 'sentinel' ? target.sentinelPassword : undefined];
}

/** A target of the given kind. */
type TargetOf<K extends ResolvedRedisConfig['target']['kind']> = Extract<
  ResolvedRedisConfig['target'],
  { kind: K }
>;

/** What every kind of client is built from. */
interface ClientParts {
  role: ConnectionRole;
  /** The connection options every client shares. */
  base: RedisOptions;
  keyPrefix: string | undefined;
  retryStrategy: (times: number) => number | null;
  autoPipelining: boolean;
}

function newClient(
  config: ResolvedRedisConfig,
  role: ConnectionRole,
  node?: { host: string; port: number },
): RedisClient {
  const target = config.target;
  const parts: ClientParts = {
    role,
    base: baseOptions(config, role),
    // Pub/sub channels are not keys; the subscriber gets no key prefix.
    keyPrefix: role === 'subscriber' ? undefined : config.keyPrefix || undefined,
    retryStrategy: (times: number): number | null => backoffDelay(times, config.retry),
    autoPipelining: role === 'command' && config.autoPipelining,
  };

  if (node) {
    // A plain connection to one node of a cluster: PUBLISH is broadcast to every node, so a
    // subscriber needs just one, with reconnects we can watch (the Cluster's internal
    // subscriber reconnects silently, and a drop would go unnoticed).
    const { base, retryStrategy } = parts;
    return new Redis({ ...base, retryStrategy, host: node.host, port: node.port });
  }

  switch (target.kind) {
    case 'cluster':
      return newClusterClient(target, parts);
    case 'sentinel':
      return newSentinelClient(target, parts, config.tls !== undefined);
    case 'standalone':
      return new Redis({
        ...parts.base,
        keyPrefix: parts.keyPrefix,
        enableAutoPipelining: parts.autoPipelining,
        retryStrategy: parts.retryStrategy,
        host: target.host,
        port: target.port,
        db: target.db,
      });
    case 'client':
      return duplicateClient(target.client, parts);
  }
}

/** The options every connection of `config` in `role` shares, whatever the target. */
function baseOptions(config: ResolvedRedisConfig, role: ConnectionRole): RedisOptions {
  return {
    ...config.redisOptions,
    username: config.username,
    password: config.password,
    tls: config.tls,
    connectTimeout: config.connectTimeout,
    commandTimeout: role === 'dedicated' ? undefined : config.commandTimeout,
    protocol: config.protocol,
    connectionName: connectionNameFor(config, role),
    // After a drained shutdown the FIN exchange takes microseconds; a frozen server never
    // answers it, and the socket must not outlive shutdown by ioredis's default 2 s.
    disconnectTimeout: config.shutdownTimeout,
    lazyConnect: true,
    // The subscriber re-subscribes itself after a reconnect, with a handler (subscriber.ts).
    ...(role === 'subscriber' ? { autoResubscribe: false } : {}),
    // With retryOnTimeout, what is sent again is decided command by command (idempotent ones
    // only): ioredis's blind resend of unanswered commands after a reconnect would run an
    // INCR whose reply was lost a second time. Such a command fails at commandTimeout instead.
    ...(role === 'command' && config.retryOnTimeout
      ? { autoResendUnfulfilledCommands: false }
      : {}),
  };
}

function newClusterClient(target: TargetOf<'cluster'>, parts: ClientParts): Cluster {
  const options: ClusterOptions = {
    ...CLUSTER_FAILOVER_DEFAULTS,
    ...target.clusterOptions,
    keyPrefix: parts.keyPrefix,
    scaleReads: target.scaleReads,
    lazyConnect: true,
    enableAutoPipelining: parts.autoPipelining,
    clusterRetryStrategy: parts.retryStrategy,
    redisOptions: parts.base,
  };
  return new Cluster(target.nodes, options);
}

function newSentinelClient(target: TargetOf<'sentinel'>, parts: ClientParts, tls: boolean): Redis {
  const { retryStrategy } = parts;
  return new Redis({
    ...parts.base,
    keyPrefix: parts.keyPrefix,
    enableAutoPipelining: parts.autoPipelining,
    retryStrategy: (times: number) => {
      const delay = retryStrategy(times);
      return delay === null ? null : Math.min(delay, SENTINEL_MAX_RECONNECT_DELAY);
    },
    sentinels: target.sentinels,
    name: target.name,
    role: target.role,
    db: target.db,
    sentinelUsername: target.sentinelUsername,
    sentinelPassword: target.sentinelPassword,
    sentinelRetryStrategy: retryStrategy,
    failoverDetector: target.failoverDetector,
    enableTLSForSentinelMode: tls,
  });
}

/** Extra connections for a client the application owns copy its settings. */
function duplicateClient(source: RedisClient, parts: ClientParts): RedisClient {
  const { keyPrefix, base, role } = parts;
  if (isCluster(source)) {
    return source.duplicate(undefined, {
      lazyConnect: true,
      keyPrefix,
      enableAutoPipelining: false,
      redisOptions: { ...source.options.redisOptions, connectionName: base.connectionName },
    });
  }
  return source.duplicate({
    lazyConnect: true,
    keyPrefix,
    enableAutoPipelining: false,
    connectionName: base.connectionName,
    ...(role === 'subscriber' ? { autoResubscribe: false } : {}),
  });
}

/** Clients being closed by us: their `end` is wanted. */
const closingOnPurpose = new WeakSet<RedisClient>();

/**
 * ioredis ends a Sentinel client for good, without a retry, when its failover detector hears
 * `+switch-master` while the client is asking the sentinels where the master is: the detector
 * aborts the connect in flight, and an aborted connect ends the client. That happens when the
 * master dies (the client retries in a loop) and the switch is announced during a retry: after
 * a failover every command would then fail with "Connection is closed". A client that was ready
 * once and ends straight from `connecting` without us closing it is connected again; the
 * dedicated connections, which the pool closes itself at any time, are left out (a broken one
 * is replaced on next use).
 */
function reconnectAfterSwitchRace(client: Redis): void {
  let wasReady = false;
  let last = '';
  for (const status of ['connecting', 'connect', 'ready', 'close', 'reconnecting'] as const) {
    client.on(status, () => {
      last = status;
      if (status === 'ready') wasReady = true;
    });
  }
  const switchRace = (): boolean =>
    wasReady && last === 'connecting' && !closingOnPurpose.has(client);
  // The aborted connect also rejects, with a raw "Connection is closed.", every command queued
  // meanwhile and every command that was awaiting a reply when the old master went away (which
  // ioredis keeps to re-send once ready). Keep both for the reconnect below, as after any other
  // reconnect: unsent commands go out once ready, unanswered ones are re-sent.
  const holder = client as unknown as QueueHolder & {
    commandQueue?: unknown;
    prevCommandQueue?: unknown;
  };
  const flush = holder.flushQueue;
  if (typeof flush === 'function') {
    holder.flushQueue = (error, options) => {
      if (!switchRace() || error?.message !== 'Connection is closed.') {
        return flush.call(client, error, options);
      }
      flush.call(client, error, {
        offlineQueue: false,
        commandQueue: holder.commandQueue !== holder.prevCommandQueue,
      });
    };
  }
  client.on('end', () => {
    if (!switchRace()) return;
    client.connect().catch(() => undefined);
  });
}

/**
 * `disconnect()`, then wait (bounded) for the socket (every node's, on a cluster) to be gone so
 * nothing lingers. A client between reconnect attempts has no socket: ioredis then emits no
 * `end`, so there is nothing to wait for.
 */
export async function disconnectAndWait(client: RedisClient, bound: number): Promise<void> {
  closingOnPurpose.add(client);
  const status = client.status;
  if (status === 'end') return;
  if (status !== 'connect' && status !== 'ready' && status !== 'connecting') {
    for (const node of isCluster(client) ? client.nodes('all') : [client]) {
      if (node.status !== 'connect' && node.status !== 'ready') noLingeringDestroyTimer(node);
    }
    client.disconnect();
    markEnded(client);
    return;
  }
  // A cluster reports `end` as soon as it has let go of its nodes, before their sockets have
  // closed: wait for every node that has a socket, too.
  const open = isCluster(client)
    ? client.nodes('all').filter((node) => ['connect', 'ready', 'connecting'].includes(node.status))
    : [];
  const ended = Promise.all(
    [client, ...open].map((c) => new Promise<void>((resolve) => c.once('end', () => resolve()))),
  );
  client.disconnect();
  // ioredis destroys the socket after `disconnectTimeout` (= shutdownTimeout) at the latest.
  await withTimeout(ended, bound + 100, () => new Error('end timeout')).catch(() => undefined);
}

/**
 * Between reconnect attempts the socket is already closed, yet `disconnect()` arms a timer of
 * `disconnectTimeout` to destroy it, which only a `close` event (gone already) would clear:
 * the process could not exit before it fires. With nothing to destroy, it may fire at once.
 */
function noLingeringDestroyTimer(node: Redis): void {
  const connector = (node as unknown as { connector?: { disconnectTimeout?: unknown } }).connector;
  if (connector && typeof connector.disconnectTimeout === 'number') connector.disconnectTimeout = 0;
}

/**
 * `disconnect()` between two reconnect attempts cancels the next attempt, but ioredis leaves the
 * status at `reconnecting` (a cluster's at `disconnecting`): a command sent afterwards would be
 * queued for a reconnect that never comes, and hang. Setting `end`, as ioredis does when a
 * socket closes on purpose, makes such commands fail at once with "Connection is closed."
 */
function markEnded(client: RedisClient): void {
  if (client.status === 'end') return;
  const setStatus = (client as unknown as { setStatus?: (status: string) => void }).setStatus;
  if (typeof setStatus === 'function') setStatus.call(client, 'end');
}

/** The internals `failQueuedCommands` reaches: ioredis keeps its queues private. */
interface QueueHolder {
  flushQueue?: (error: Error, options?: { offlineQueue?: boolean; commandQueue?: boolean }) => void;
}

/**
 * Rejects every command still waiting in a client (the offline queue of a client that is
 * reconnecting, the replies not yet received), on every node of a cluster, with `error`.
 * ioredis does this itself only when a socket closes; a client between reconnect attempts has
 * no socket, so after `disconnect()` its queued commands would never settle.
 */
export function failQueuedCommands(client: RedisClient, error: Error): void {
  const holders: RedisClient[] = isCluster(client) ? [client, ...client.nodes('all')] : [client];
  for (const holder of holders) {
    const flush = (holder as unknown as QueueHolder).flushQueue;
    if (typeof flush === 'function') flush.call(holder, error);
  }
}
