import type { LoggerService } from '@nestjs/common';
import type { Redis } from 'ioredis';

import { disconnectAndWait } from '../connection/client-factory.js';

/** The channel a RESP2 redirect target hears invalidations on. */
export const INVALIDATE_CHANNEL = '__redis__:invalidate';

/** What a link needs from its owner. */
export interface TrackingLinkDeps {
  /** The connection whose reads are tracked (a cluster's node connection to one master). */
  tracked: Redis;
  /** Creates (without connecting) the RESP2 connection invalidations are redirected to. */
  openRedirect: () => Redis;
  /** `CLIENT TRACKING ON REDIRECT <id>` followed by these (mode, prefix, `NOLOOP`). */
  trackingArgs: readonly string[];
  /** Keys invalidated by the server; `null` when it flushed a whole database. */
  onInvalidate: (keys: string[] | null) => void;
  /** The link stopped tracking (either connection dropped): L1 must stop serving. */
  onLost: (reason: string) => void;
  /** Tracking is on again, redirected to a subscribed connection on the same server. */
  onEnabled: () => void;
  logger: LoggerService;
  /** Removes secrets from a message before it is logged. */
  scrub: (text: string) => string;
  /** PING the redirect connection this often (ms; 0: never), to notice a silent drop. */
  pingInterval: number;
  /** Upper bound of waiting for the redirect socket to close. */
  closeBound: number;
}

/**
 * One tracked connection and the RESP2 connection its invalidations are redirected to, on one
 * server. Tracking lives on the server's side of a connection and dies with it, so a link
 * re-enables it whenever either connection is `ready` again, and reports every drop.
 *
 * Each (re)enable first proves that both connections reach the same server (same `run_id`):
 * client ids are per-server counters, and after a Sentinel failover the two connections may
 * briefly reach different servers, where the redirect id could name some other client and
 * invalidations would be lost without an error.
 */
export class TrackingLink {
  private redirect?: Redis;
  /** Identity of the redirect connection once it is subscribed; cleared when it drops. */
  private redirectInfo?: { id: string; runId: string };
  /** Bumped by every drop: an enable that started before one is stale. */
  private cycle = 0;
  private enabling = false;
  private enabledNow = false;
  private closed = false;
  private readonly detachers: Array<() => void> = [];
  private keepalive?: NodeJS.Timeout;
  private aliveAt = 0;
  /** Last failure logged, so that a retry loop logs once, not once per attempt. */
  private lastLogged?: string;

  constructor(private readonly deps: TrackingLinkDeps) {}

  /** `true` while tracking is on and redirected to a live, subscribed connection. */
  get enabled(): boolean {
    return this.enabledNow;
  }

  /** The tracked connection. */
  get tracked(): Redis {
    return this.deps.tracked;
  }

  /** The redirect connection (once opened), for tests and diagnostics. */
  get redirectClient(): Redis | undefined {
    return this.redirect;
  }

  /** Opens the redirect connection and enables tracking as soon as both are ready. */
  start(): void {
    if (this.closed || this.redirect) return;
    const tracked = this.deps.tracked;
    const onTrackedClose = (): void => this.lose('the tracked connection dropped');
    const onTrackedReady = (): void => this.tryEnable();
    tracked.on('close', onTrackedClose);
    tracked.on('end', onTrackedClose);
    tracked.on('ready', onTrackedReady);
    this.detachers.push(() => {
      tracked.off('close', onTrackedClose);
      tracked.off('end', onTrackedClose);
      tracked.off('ready', onTrackedReady);
    });

    const redirect = this.deps.openRedirect();
    this.redirect = redirect;
    const onRedirectClose = (): void => {
      this.redirectInfo = undefined;
      this.lose('the invalidation connection dropped');
    };
    const onRedirectReady = (): void => this.prepareRedirect(redirect);
    const onMessage = (channel: Buffer, payload: unknown): void => {
      if (channel.toString() !== INVALIDATE_CHANNEL) return;
      this.deps.onInvalidate(
        Array.isArray(payload) ? payload.map((k: Buffer | string) => k.toString()) : null,
      );
    };
    // An 'error' listener keeps ioredis from reporting reconnect failures as unhandled; the
    // drop itself is what matters, and `close` reports it.
    const onError = (): void => undefined;
    redirect.on('close', onRedirectClose);
    redirect.on('ready', onRedirectReady);
    redirect.on('messageBuffer', onMessage);
    redirect.on('error', onError);
    this.detachers.push(() => {
      redirect.off('close', onRedirectClose);
      redirect.off('ready', onRedirectReady);
      redirect.off('messageBuffer', onMessage);
      redirect.off('error', onError);
    });
    redirect.connect().catch(() => undefined);
    this.startKeepalive(redirect);
  }

  /** Stops tracking on the server (best effort) and closes the redirect connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.enabledNow = false;
    this.cycle += 1;
    clearInterval(this.keepalive);
    for (const detach of this.detachers.splice(0)) detach();
    const tracked = this.deps.tracked;
    if (tracked.status === 'ready') {
      // The command connection outlives us only when the application owns it; a server that
      // does not answer must not hold shutdown, hence no wait here.
      tracked.call('CLIENT', 'TRACKING', 'OFF').catch(() => undefined);
    }
    if (this.redirect) await disconnectAndWait(this.redirect, this.deps.closeBound);
  }

  private lose(reason: string): void {
    if (this.closed) return;
    this.cycle += 1;
    this.enabledNow = false;
    this.deps.onLost(reason);
  }

  /** Learns the redirect connection's id and server, then subscribes it. */
  private prepareRedirect(redirect: Redis): void {
    if (this.closed) return;
    const cycle = this.cycle;
    void (async () => {
      // In RESP2 a subscribed connection runs nothing but (un)subscribe and PING: ask first.
      const [id, info] = await Promise.all([
        redirect.call('CLIENT', 'ID') as Promise<number>,
        redirect.info('server'),
      ]);
      await redirect.subscribe(INVALIDATE_CHANNEL);
      if (this.closed || cycle !== this.cycle) return;
      this.redirectInfo = { id: String(id), runId: runIdOf(info) };
      this.tryEnable();
    })().catch((err: unknown) => {
      // A drop meanwhile fails the commands too; its `ready` starts over.
      if (cycle === this.cycle) this.failed('subscribing the invalidation connection', err);
    });
  }

  private tryEnable(): void {
    const info = this.redirectInfo;
    const tracked = this.deps.tracked;
    if (this.closed || this.enabling || !info) return;
    // A lazily created node connection (`wait`) connects on its first command; one that is
    // (re)connecting enables on its `ready`.
    if (tracked.status !== 'ready' && tracked.status !== 'wait') return;
    const cycle = this.cycle;
    this.enabling = true;
    void (async () => {
      const runId = runIdOf(await tracked.info('server'));
      if (cycle !== this.cycle) return;
      if (runId !== info.runId) {
        // The two connections reach different servers (a failover in progress): the redirect
        // connection asks again where the master is.
        this.failed(
          'enabling tracking',
          new Error('the tracked and the invalidation connections reach different servers'),
        );
        this.redirect?.disconnect(true);
        return;
      }
      // Re-enabling with a new redirect id or the same BCAST prefix needs tracking off first
      // ("Prefix overlaps with an existing prefix"); both run in order on this connection.
      await Promise.all([
        tracked.call('CLIENT', 'TRACKING', 'OFF'),
        tracked.call('CLIENT', 'TRACKING', 'ON', 'REDIRECT', info.id, ...this.deps.trackingArgs),
      ]);
      if (this.closed || cycle !== this.cycle || this.redirectInfo !== info) return;
      this.enabledNow = true;
      if (this.lastLogged !== undefined) {
        this.deps.logger.log('client-side cache tracking is on again');
        this.lastLogged = undefined;
      }
      this.deps.onEnabled();
    })()
      .catch((err: unknown) => {
        if (cycle === this.cycle) this.failed('enabling tracking', err);
      })
      .finally(() => {
        this.enabling = false;
        // A drop and a new `ready` during the attempt: its own `tryEnable` found us busy.
        if (
          !this.closed &&
          !this.enabledNow &&
          cycle !== this.cycle &&
          this.redirectInfo &&
          this.deps.tracked.status === 'ready'
        ) {
          this.tryEnable();
        }
      });
  }

  private failed(what: string, err: unknown): void {
    if (this.closed) return;
    const text = this.deps.scrub(String((err as Error)?.message ?? err));
    if (text === this.lastLogged) return;
    this.lastLogged = text;
    this.deps.logger.warn(
      `${what} failed, the local cache tier (L1) stays off until it succeeds: ${text}`,
    );
  }

  private startKeepalive(redirect: Redis): void {
    const interval = this.deps.pingInterval;
    if (interval <= 0) return;
    this.aliveAt = Date.now();
    let probing = false;
    this.keepalive = setInterval(() => {
      if (this.closed || redirect.status !== 'ready') {
        this.aliveAt = Date.now();
        return;
      }
      if (Date.now() - this.aliveAt >= 2 * interval) {
        // Half-open (no FIN, no RST): invalidations would just stop. L1 stops serving now,
        // not once the socket has closed (that waits for a FIN that may never come); the
        // reconnect re-enables tracking on the fresh connection.
        this.aliveAt = Date.now();
        this.redirectInfo = undefined;
        this.lose('the invalidation connection stopped answering PING');
        redirect.disconnect(true);
        return;
      }
      if (probing) return;
      probing = true;
      redirect.ping().then(
        () => {
          probing = false;
          this.aliveAt = Date.now();
        },
        () => (probing = false),
      );
    }, interval);
    this.keepalive.unref();
  }
}

/** The `run_id` of an `INFO server` reply: what tells two servers apart. */
export function runIdOf(info: string): string {
  return /(?:^|\n)run_id:(\w+)/.exec(info)?.[1] ?? '';
}
