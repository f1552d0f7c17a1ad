import { randomBytes } from 'node:crypto';

import type { Logger } from '@nestjs/common';

import type { RedisConnection } from '../connection/redis-connection.js';

import { GRANT_CHANNEL } from './lock.scripts.js';

/** A caller of this process queued in Redis for a lock. */
export interface PendingGrant {
  /** Set by the grant message, or by the reply of a release of this process. */
  fence?: number;
  /** When that release was sent (epoch ms): the grant happened no earlier. */
  notBefore?: number;
  /** Ends the current sleep. */
  wake?: () => void;
}

const RESUBSCRIBE_AFTER_MS = 60_000;

/**
 * How lock grants reach the callers of this process queued in Redis: a release (of any
 * process) that grants the lock to one of them publishes `<token>:<fencingToken>` on this
 * process's channel `<keyPrefix>lock:grant:<process id>`; a release of this process names the
 * grantee in its reply instead. Callers register before their first attempt, since the
 * message may arrive before that attempt's reply.
 */
export class LockGrants {
  /** This process's id in grant channels and queue entries. */
  readonly processId = randomBytes(8).toString('hex');
  /** Grants reach this process by message (else its queued callers notice them by polling). */
  subscribed = false;
  private readonly pending = new Map<string, PendingGrant>();
  private subscription?: Promise<boolean>;
  /** When subscribing last failed (ms): not retried for a while, and warned about once. */
  private subscribeFailedAt = 0;
  private refusedWarned = false;

  constructor(
    private readonly connection: RedisConnection,
    private readonly logger: Logger,
  ) {}

  /** Prefix of every process's grant channel. */
  get channelPrefix(): string {
    return `${this.connection.keyPrefix}${GRANT_CHANNEL}`;
  }

  /** Callers of this process queued now (or about to be). */
  get size(): number {
    return this.pending.size;
  }

  /** Registers a caller about to be queued under `token`. */
  register(token: string): PendingGrant {
    const pending: PendingGrant = {};
    this.pending.set(token, pending);
    return pending;
  }

  /** Forgets a caller: a grant to it from now on is passed on by its departure (LEAVE). */
  forget(token: string): void {
    this.pending.delete(token);
  }

  /**
   * A release of this process, sent at `sentAt`, granted the lock to `token`: it learns here,
   * not by message. One that gave up meanwhile is not pending any more; its departure passes
   * the lock on.
   */
  grantedByReply(token: string, fence: number, sentAt: number): void {
    const pending = this.pending.get(token);
    if (!pending) return;
    pending.fence = fence;
    pending.notBefore = sentAt;
    pending.wake?.();
  }

  /** Wakes every waiting caller (shutdown: they see it and give up). */
  wakeAll(): void {
    for (const pending of this.pending.values()) pending.wake?.();
  }

  /**
   * Subscribes once to this process's grant channel; without it, queued callers notice their
   * grant by polling. A failure is warned about once and retried at most once a minute.
   */
  ensureSubscribed(): Promise<boolean> {
    if (!this.subscription && Date.now() - this.subscribeFailedAt < RESUBSCRIBE_AFTER_MS) {
      return Promise.resolve(false);
    }
    this.subscription ??= this.connection
      .subscribe(`${this.channelPrefix}${this.processId}`, (message) => this.onMessage(message))
      .then(
        () => (this.subscribed = true),
        (err: unknown) => {
          if (this.subscribeFailedAt === 0) {
            this.logger.warn(
              `lock hand-off notifications unavailable, waiting locks poll every ~${this.retryInterval} ms: ${this.describe(err)}`,
            );
          }
          this.subscribeFailedAt = Date.now();
          this.subscription = undefined;
          this.subscribed = false;
          return false;
        },
      );
    return this.subscription;
  }

  /** A grant notification was refused (no channel rights): say so once; waiters poll. */
  noteRefused(refused: number | undefined): void {
    if (Number(refused) !== 1 || this.refusedWarned) return;
    this.refusedWarned = true;
    this.logger.warn(
      'Redis refused PUBLISH of a lock hand-off notification (ACL channel rights?): locks are ' +
        `still released and handed over, and waiters notice by polling every ~${this.retryInterval} ms. ` +
        `Grant the user "&${this.channelPrefix}*" for immediate hand-offs.`,
    );
  }

  /** `<token>:<fencingToken>`: wakes that caller, who takes the lock without a round trip. */
  private onMessage(message: string): void {
    const colon = message.indexOf(':');
    const pending = this.pending.get(message.slice(0, colon));
    if (!pending) return; // gave up meanwhile: its LEAVE passes the lock on
    pending.fence = Number(message.slice(colon + 1));
    pending.wake?.();
  }

  private get retryInterval(): number {
    return this.connection.config.lock.retryInterval;
  }

  private describe(err: unknown): string {
    return this.connection.scrub(err instanceof Error ? err.message : String(err));
  }
}
