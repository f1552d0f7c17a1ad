import { Logger, type LoggerService } from '@nestjs/common';
import type { Redis, RedisOptions } from 'ioredis';

import { backoffDelay } from '../connection/backoff.js';
import { clientSecrets, isCluster } from '../connection/client-factory.js';
import { redactClientErrors } from '../connection/redact-errors.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import { RedisConfigError } from '../errors.js';

import { TrackingReadGuard, UNTRACKED_READ, type ReadTicket } from './tracking-guard.js';
import { TrackingLink } from './tracking-link.js';
import type { CacheTrackingMode } from './tracking.options.js';

export type { ReadTicket } from './tracking-guard.js';

export {
  DEFAULT_TRACKING_MODE,
  validateTrackingOption,
  type CacheTrackingMode,
  type CacheTrackingOption,
  type ResolvedCacheTracking,
} from './tracking.options.js';

/** What `CacheTracking` needs. */
export interface CacheTrackingOptions {
  /** The registration whose command connection (every master's, on a cluster) is tracked. */
  connection: RedisConnection;
  /** Full key prefix of the cached keys (the connection's `keyPrefix` included). */
  prefix: string;
  mode: CacheTrackingMode;
  /**
   * A key under `prefix` changed on the server (full key, as Redis names it): drop it from L1.
   * Called synchronously from the connection's message handler: keep it cheap, never throw.
   */
  invalidate: (fullKey: string) => void;
  /** Everything must go: a connection dropped, tracking was lost, or the server flushed. */
  flushAll: (reason: string) => void;
  /**
   * Oldest read (ms) whose reply may still be stored (see `TrackingReadGuard`).
   *
   * @defaultValue 30000
   */
  maxReadAge?: number;
  logger?: LoggerService;
}

/** Counters of what tracking did, for stats and benchmarks. */
export interface CacheTrackingStats {
  /** Whether L1 may serve now (tracking on everywhere, nothing dropped since). */
  active: boolean;
  mode: CacheTrackingMode;
  /** Servers tracked (masters of a cluster). */
  links: number;
  /** Keys invalidated by the server (under the prefix). */
  invalidations: number;
  /** `flushAll` calls. */
  flushes: number;
  /** Replies refused by the race guard (an invalidation or flush overtook them). */
  refusedStores: number;
}

/**
 * Server-assisted client-side caching for the L1 tier: Redis tells us when any client (another
 * service, `redis-cli`) writes a cached key, so L1 never serves a value older than that write
 * by more than the invalidation delay.
 *
 * - Tracking is enabled with `CLIENT TRACKING ON REDIRECT <id> [BCAST PREFIX <prefix>] NOLOOP`
 *   on the command connection (each master's node connection on a cluster), redirected to a
 *   RESP2 connection of ours on the same server subscribed to `__redis__:invalidate`: ioredis 6
 *   drops RESP3 pushes other than pub/sub, so the redirect target must not speak RESP3.
 *   `NOLOOP`: the writer drops its own L1 entries itself when it writes through the tracked
 *   connection; the server does not echo them.
 * - Tracking lives with a connection on the server: every `ready` of either connection
 *   re-enables it, every drop calls `flushAll`, and L1 may not serve (`active` is `false`)
 *   until every link is enabled again. A `null` invalidation (the server flushed) flushes too.
 * - On a cluster each master is one link; a change of the master set (failover, new node)
 *   flushes and enables the new masters.
 * - Reads must go to masters: a replica's reply may predate a write whose invalidation
 *   already came from the master.
 *
 * Use: take `beginRead()` before sending a read, and store its reply only if
 * `mayStore(fullKey, ticket)` (see `TrackingReadGuard` for the race this closes).
 */
export class CacheTracking {
  private readonly logger: LoggerService;
  private readonly guard: TrackingReadGuard;
  private readonly links = new Map<string, TrackingLink>();
  private readonly detachers: Array<() => void> = [];
  private readonly trackingArgs: readonly string[];
  private started = false;
  private closed = false;
  /** Something may have entered L1 since the last flush: a loss must flush. */
  private servedSinceFlush = false;
  private activeNow = false;
  /** Slot owners of a cluster without a node connection yet. */
  private missingOwners = 0;
  private readonly activeWaiters = new Set<() => void>();
  private readonly counters = { invalidations: 0, flushes: 0, refusedStores: 0 };

  constructor(private readonly options: CacheTrackingOptions) {
    this.logger = options.logger ?? new Logger(`Redis:${options.connection.name}:CacheTracking`);
    this.guard = new TrackingReadGuard(options.maxReadAge ?? 30_000);
    this.trackingArgs =
      options.mode === 'bcast'
        ? ['BCAST', 'PREFIX', options.prefix, 'NOLOOP']
        : // Default mode tracks what the connection read; the prefix filters on our side.
          ['NOLOOP'];
    const target = options.connection.config.target;
    if (
      (target.kind === 'cluster' && target.scaleReads !== 'master') ||
      (target.kind === 'sentinel' && target.role !== 'master')
    ) {
      throw new RedisConfigError(
        target.kind === 'cluster' ? 'cluster.scaleReads' : 'sentinel.role',
        target.kind === 'cluster' ? target.scaleReads : target.role,
        "'master' with cache.l1.tracking (a replica may answer with a value older than an invalidation already received)",
      );
    }
  }

  /** `true` while L1 may serve: tracking is on for every server and nothing dropped since. */
  get active(): boolean {
    return this.activeNow;
  }

  /**
   * Opens the redirect connections and enables tracking; resolves once it is active, or
   * after `connectTimeout` (tracking keeps trying in the background; `active` tells).
   */
  async start(): Promise<boolean> {
    if (this.closed) return false;
    if (!this.started) {
      this.started = true;
      this.watchTopology();
      this.reconcile();
    }
    return this.whenActive(this.options.connection.config.connectTimeout);
  }

  /** Resolves `true` once tracking is active, `false` after `timeoutMs`. */
  whenActive(timeoutMs: number): Promise<boolean> {
    if (this.activeNow) return Promise.resolve(true);
    if (this.closed) return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.activeWaiters.delete(done);
        resolve(this.activeNow);
      };
      const timer = setTimeout(done, timeoutMs);
      this.activeWaiters.add(done);
    });
  }

  /**
   * A ticket for a read about to be sent on the tracked connection. Taken while tracking is
   * off, it never lets the reply be stored.
   */
  beginRead(): ReadTicket {
    return this.activeNow ? this.guard.begin() : UNTRACKED_READ;
  }

  /**
   * Whether the reply of a read of `fullKey` that began with `ticket` may enter L1: tracking
   * is still active and no invalidation of that key, nor a flush, arrived since it began.
   */
  mayStore(fullKey: string, ticket: ReadTicket): boolean {
    if (this.activeNow && ticket.seq >= 0 && this.guard.mayStore(fullKey, ticket)) return true;
    this.counters.refusedStores += 1;
    return false;
  }

  /** What tracking did so far. */
  stats(): CacheTrackingStats {
    return {
      active: this.activeNow,
      mode: this.options.mode,
      links: this.links.size,
      ...this.counters,
    };
  }

  /** The tracked connections with their redirect connections (tests, diagnostics). */
  connections(): Array<{ tracked: Redis; redirect?: Redis }> {
    return [...this.links.values()].map((l) => ({
      tracked: l.tracked,
      redirect: l.redirectClient,
    }));
  }

  /** Turns tracking off and closes the redirect connections. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.activeNow = false;
    for (const detach of this.detachers.splice(0)) detach();
    for (const done of [...this.activeWaiters]) done();
    const links = [...this.links.values()];
    this.links.clear();
    await Promise.allSettled(links.map((l) => l.close()));
  }

  // ---------------------------------------------------------------------------------------

  private watchTopology(): void {
    const client = this.options.connection.client;
    if (!isCluster(client)) return;
    // Node connections come and go with the slot map (failover, resharding); a promoted
    // replica shows only in a refresh.
    const onChange = (): void => this.reconcile();
    for (const event of ['+node', '-node', 'refresh', 'ready'] as const) {
      client.on(event, onChange);
      this.detachers.push(() => client.off(event, onChange));
    }
  }

  /**
   * Makes the links match the servers that own data: one per slot owner of a cluster (found
   * among the cluster's node connections), none for anything else. A slot owner without a
   * node connection yet keeps tracking inactive until it has one.
   */
  private reconcile(): void {
    if (this.closed) return;
    const client = this.options.connection.client;
    const wanted = new Map<string, Redis>();
    this.missingOwners = 0;
    if (isCluster(client)) {
      const nodes = new Map(client.nodes('all').map((node) => [nodeKey(node), node]));
      const owners = new Set<string>();
      for (const owner of client.slots) if (owner?.[0]) owners.add(owner[0]);
      for (const key of owners) {
        const node = nodes.get(key);
        if (node) wanted.set(key, node);
        else this.missingOwners += 1;
      }
    } else {
      wanted.set('server', client);
    }
    let changed = false;
    for (const [key, link] of this.links) {
      if (wanted.get(key) === link.tracked) continue;
      this.links.delete(key);
      void link.close();
      changed = true;
    }
    for (const [key, node] of wanted) {
      if (this.links.has(key)) continue;
      const link = new TrackingLink({
        tracked: node,
        openRedirect: () => this.openRedirect(node),
        trackingArgs: this.trackingArgs,
        onInvalidate: (keys) => this.onInvalidate(keys),
        onLost: (reason) => this.lost(reason),
        onEnabled: () => this.updateActive(),
        logger: this.logger,
        scrub: (t) => this.options.connection.scrub(t),
        pingInterval: this.options.connection.config.pubsub.pingInterval,
        closeBound: this.options.connection.config.shutdownTimeout,
      });
      this.links.set(key, link);
      link.start();
      changed = true;
    }
    if (changed) this.lost('the set of masters changed');
    else this.updateActive();
  }

  /**
   * A RESP2 connection to the tracked connection's server, outside the key prefix, never
   * reading from a replica. A copy of the tracked connection's own options, so that it
   * follows the same Sentinel, TLS and credentials; it reconnects with the module's backoff
   * (a cluster's node connections do not reconnect by themselves).
   */
  private openRedirect(tracked: Redis): Redis {
    const config = this.options.connection.config;
    const override: Partial<RedisOptions> = {
      protocol: 2,
      keyPrefix: undefined,
      lazyConnect: true,
      autoResubscribe: false,
      enableAutoPipelining: false,
      enableOfflineQueue: true,
      readOnly: false,
      role: 'master',
      // Shown in CLIENT LIST beside `<name>:command` and `<name>:subscriber`.
      connectionName: `${config.connectionName.replace(/\s+/g, '_')}:tracking`,
      retryStrategy: (times: number) => backoffDelay(times, config.retry),
    };
    const redirect = tracked.duplicate(override);
    redactClientErrors(redirect, clientSecrets(config));
    return redirect;
  }

  private onInvalidate(keys: string[] | null): void {
    if (keys === null) {
      this.flush('the server flushed its keys');
      return;
    }
    const prefix = this.options.prefix;
    for (const key of keys) {
      if (!key.startsWith(prefix)) continue;
      this.counters.invalidations += 1;
      this.guard.invalidated(key);
      try {
        this.options.invalidate(key);
      } catch (err) {
        this.logger.error(`the invalidate callback threw: ${(err as Error).message}`);
      }
    }
  }

  private lost(reason: string): void {
    this.activeNow = false;
    if (this.servedSinceFlush) this.flush(reason);
    else this.guard.flushed();
    this.updateActive();
  }

  private flush(reason: string): void {
    this.guard.flushed();
    this.servedSinceFlush = this.activeNow;
    this.counters.flushes += 1;
    try {
      this.options.flushAll(reason);
    } catch (err) {
      this.logger.error(`the flushAll callback threw: ${(err as Error).message}`);
    }
  }

  private updateActive(): void {
    if (this.closed) return;
    const all =
      this.links.size > 0 &&
      this.missingOwners === 0 &&
      [...this.links.values()].every((l) => l.enabled);
    if (all && !this.activeNow) {
      this.activeNow = true;
      this.servedSinceFlush = true;
      for (const done of [...this.activeWaiters]) done();
    } else if (!all) {
      this.activeNow = false;
    }
  }
}

function nodeKey(node: Redis): string {
  const { host, port } = node.options as { host?: string; port?: number };
  return `${host}:${port}`;
}
