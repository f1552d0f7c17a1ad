import type { Logger } from '@nestjs/common';

import type { Waiters } from '../common/async.js';
import type { RedisClient } from '../connection/client-factory.js';
import type { RedisConnection } from '../connection/redis-connection.js';

import type { HeldLease, LeaseOps } from './lease.js';
import type { ResolvedLockOptions } from './lock.options.js';
import type { Renewals } from './renewals.js';

// What semaphores, read-write locks and elections need from their connection's coordinator
// (`coordination.ts`), in a module of its own: they import these types, the coordinator
// imports them to build them, and neither imports the other back.

/** What one acquisition attempt found: the prize, or how long it is worth waiting. */
export interface AttemptResult<T> {
  value?: T;
  /** Ms until the current holder expires (a hint; negative or undefined: unknown). */
  retryIn?: number;
}

/** A permit granted to a queued waiter of this process. */
export interface Grant {
  /** By a script this process ran (its reply), rather than by a message. */
  local: boolean;
  /** The grant happened no earlier than this (epoch ms). */
  notBefore: number;
}

/** A semaphore waiter of this process, queued in Redis. */
export interface QueuedWaiter {
  /** Set when it was granted a permit. */
  grant?: Grant;
  /** Ends its current sleep. */
  wake?: () => void;
}

/** A candidacy the coordinator stops at shutdown (a `LeaderElection`). */
export interface Candidacy {
  stop(): Promise<void>;
}

/**
 * The shared machinery of the coordination primitives of one connection: tokens, release
 * notifications, semaphore grants, the waiting loop, and everything held (for shutdown).
 */
export interface Coordinator {
  readonly connection: RedisConnection;
  readonly logger: Logger;
  /** Callers of this process waiting for a release notification, by wake key. */
  readonly waiters: Waiters;
  readonly defaults: ResolvedLockOptions;
  readonly client: RedisClient;
  /** Channel on which releases of read-write locks and leaderships are announced. */
  readonly channel: string;
  /** Prefix of the per-process channels on which semaphore grants are told. */
  readonly grantChannelPrefix: string;
  /** This process's id in semaphore queue entries and its grant channel. */
  readonly processId: string;
  /** Grants reach this process by message (else its queued waiters find them by polling). */
  readonly grantsSubscribed: boolean;
  /** Aborted once the application shuts down. */
  readonly shutdownSignal: AbortSignal;
  /** How long a waiter's mark (queue entry, intent) lives without renewal (ms). */
  readonly waitMarkTtl: number;
  /** When the auto-extended leases renew (one timer for all of them). */
  readonly renewals: Renewals;
  /** A holder's token: 128 random bits, hex. */
  token(): string;
  /** The lease callbacks of one primitive, with failures of a release logged, not thrown. */
  leaseOps(
    what: string,
    extend: (token: string, ttl: number) => Promise<boolean>,
    release: (token: string) => Promise<boolean>,
  ): LeaseOps;
  /** Remembers a lease (for shutdown). */
  track(lease: HeldLease): void;
  trackElection(election: Candidacy): void;
  forgetElection(election: Candidacy): void;
  /** The waiting loop of read-write locks and elections (woken by release notifications). */
  acquireWaiting<T>(
    name: string,
    wakeKey: string,
    wait: number,
    signal: AbortSignal | undefined,
    attempt: (markTtl: number) => Promise<AttemptResult<T>>,
  ): Promise<T>;
  ensureSubscribed(): Promise<boolean>;
  ensureGrantChannel(): Promise<boolean>;
  /** Remembers an acquisition until it settles (for shutdown); returns it. */
  waiting<T>(run: Promise<T>): Promise<T>;
  /** Registers a semaphore waiter of this process (before its first attempt is sent). */
  enqueue(token: string): QueuedWaiter;
  dequeue(token: string): void;
  /** Hands the grants a semaphore script reports to this process's waiters; returns orphans. */
  granted(
    reply: Array<number | string>,
    from: number,
    sentAt: number,
    self?: string,
  ): string[] | undefined;
  renewDue(name: string): boolean;
  renewed(name: string, sentAt: number): void;
  /** Waits `ms`, or until a grant, `signal` or shutdown wakes `waiter`. */
  sleep(waiter: QueuedWaiter, ms: number, signal: AbortSignal | undefined): Promise<void>;
  /** Best effort: a semaphore waiter that gave up leaves the queue (or passes its grant on). */
  leave(token: string, member: string, keys: string[], limit: number): void;
}
