import type { Logger } from '@nestjs/common';
import { Command } from 'ioredis';

import { describeKey } from '../common/describe.js';
import type { RedisConnection } from '../connection/redis-connection.js';

import { decodeEntry, decodeTextEntry, type CacheEntry } from './cache-entry.js';
import { RedisUnavailable, type DegradingCaller } from './cache.degrade.js';
import type { ResolvedCacheOptions } from './cache.options.js';
import { cacheKeys, READ_OR_LOCK } from './cache.scripts.js';
import type { LocalTicket, LocalTier } from './local-tier.js';
import type { TagVersions } from './tag-versions.js';

/** What `READ_OR_LOCK` said besides the entry: 0, the lock is ours; -1, another holds it. */
export type LockClaim = 0 | -1;

/** An L2 read in flight, shared by the callers asking for the same key meanwhile. */
interface L2Read {
  key: string;
  promise: Promise<CacheEntry | undefined>;
  /** Settles `promise`; cleared once it has. */
  settle?: (entry: CacheEntry | undefined) => void;
  /** When the read is given up (epoch ms); `Infinity` once it answered. */
  deadline: number;
  /** An invalidation for this key arrived while the read was in flight: L1 must not keep it. */
  dirty: boolean;
  /** Taken before the read was sent (see `LocalTier.begin`). */
  ticket: LocalTicket;
  /** Set by a `READ_OR_LOCK` read that found no entry, before `promise` settles. */
  claim?: LockClaim;
}

const NO_ENTRY: Promise<undefined> = Promise.resolve(undefined);

/** A read as its starter sees it. */
export interface PendingRead {
  readonly promise: Promise<CacheEntry | undefined>;
  readonly claim?: LockClaim;
}

/**
 * The L2 reader: one command per read, shared by the callers asking for the same key
 * meanwhile, bounded by `cache.timeout`; a corrupted entry is logged, deleted and a miss; a
 * result is kept in L1 unless an invalidation arrived while it was in flight. This is the L2
 * hit path (bench/cache): one promise per read, settled from the reply's handler or by the
 * deadline sweep, with no `async` frame in between.
 */
export class L2Reader {
  private readonly reads = new Map<string, L2Read>();
  /** The interval that gives up reads past `cache.timeout`, while any is in flight. */
  private readSweep?: NodeJS.Timeout;

  constructor(
    private readonly connection: RedisConnection,
    private readonly options: ResolvedCacheOptions,
    /** JSON entries are read as strings: one UTF-8 decode instead of a Buffer in two parts. */
    private readonly text: boolean,
    private readonly redis: DegradingCaller,
    private readonly local: LocalTier,
    private readonly tags: TagVersions,
    private readonly logger: Logger,
    /** Gives up a stampede lock that a read took after it was given up. */
    private readonly releaseLate: (key: string, token: string) => void,
  ) {}

  /** The entry of `key` (a `GET`, joined by concurrent callers), or of one of its copies. */
  read(key: string, name: string = cacheKeys.entry(key)): Promise<CacheEntry | undefined> {
    const running = this.reads.get(key);
    if (running) return running.promise;
    return this.start(key, 'get', [this.connection.keyPrefix + name])?.promise ?? NO_ENTRY;
  }

  /** A read in flight for `key`, to join, if any. */
  running(key: string): Promise<CacheEntry | undefined> | undefined {
    return this.reads.get(key)?.promise;
  }

  /**
   * `getOrSet`'s read: the entry, or on a miss the stampede lock in the same round trip. Once
   * `promise` settles, `claim` is 0 when the lock is now `token`'s, -1 when another caller
   * holds it, undefined when there was an entry or Redis did not answer. Undefined when Redis
   * is not ready (a miss, already counted). Take `promise` at once: it is let go when it settles.
   */
  readOrLock(key: string, token: string): PendingRead | undefined {
    const p = this.connection.keyPrefix;
    return this.start(key, 'evalsha', [
      READ_OR_LOCK.sha,
      3,
      p + cacheKeys.entry(key),
      p + cacheKeys.lock(key),
      p + cacheKeys.waiting(key),
      token,
      this.options.lockTtl,
    ]);
  }

  /** Marks the read in flight for `key` (if any): its answer must not go to L1. */
  markDirty(key: string): void {
    const read = this.reads.get(key);
    if (read) read.dirty = true;
  }

  /** Marks the reads in flight whose key starts with `prefix` ('' = all). */
  markDirtyPrefix(prefix: string): void {
    for (const [key, read] of this.reads) if (key.startsWith(prefix)) read.dirty = true;
  }

  private start(key: string, command: string, args: Array<string | number>): L2Read | undefined {
    const client = this.connection.client;
    if (client.status !== 'ready') {
      this.redis.failed('get', new RedisUnavailable(`connection is ${client.status}`));
      return undefined;
    }
    const timeout = this.options.timeout;
    let settle!: (entry: CacheEntry | undefined) => void;
    const promise = new Promise<CacheEntry | undefined>((resolve) => (settle = resolve));
    const read: L2Read = {
      key,
      promise,
      settle,
      deadline: timeout > 0 ? Date.now() + timeout : Infinity,
      dirty: false,
      ticket: this.local.begin(),
    };
    this.reads.set(key, read);
    if (timeout > 0) this.sweepReadsEvery(timeout);
    this.send(read, command, args);
    return read;
  }

  /**
   * Keys are prefixed by the caller, once, rather than by ioredis, which finds the key
   * arguments of every command it sends through its command table: 5-10% of the hit path.
   */
  private send(read: L2Read, command: string, args: Array<string | number>): void {
    const cmd = new Command(command, args, { replyEncoding: this.text ? 'utf8' : null });
    const reply = this.connection.client.sendCommand(cmd) as Promise<string | Buffer | number>;
    const token = command === 'get' ? undefined : String(args[5]);
    reply.then(
      (raw) => this.onReply(read, raw, token),
      (err: unknown) => {
        if (!read.settle) return; // given up already
        if (command === 'evalsha' && /^NOSCRIPT/.test((err as Error)?.message ?? '')) {
          // A fresh, restarted or failed-over server: send the script itself, once.
          return this.send(read, 'eval', [READ_OR_LOCK.lua, ...args.slice(1)]);
        }
        this.redis.failed('get', err);
        this.endRead(read, undefined);
      },
    );
  }

  private onReply(read: L2Read, raw: string | Buffer | number | null, token?: string): void {
    if (!read.settle) {
      // Past its deadline: the caller had a miss, and that was logged. A lock the late answer
      // took is nobody's: give it up, or other callers would wait out its lifetime.
      if (raw === 0 && token !== undefined) this.releaseLate(read.key, token);
      return;
    }
    // Answered: what follows (UNLINK, tag versions) goes through the caller and its own bound.
    read.deadline = Infinity;
    this.redis.answered();
    if (raw === null) return this.endRead(read, undefined);
    if (typeof raw === 'number') {
      read.claim = raw === 0 ? 0 : -1;
      return this.endRead(read, undefined);
    }
    const { key } = read;
    let entry: CacheEntry;
    try {
      entry =
        typeof raw === 'string'
          ? decodeTextEntry(raw, key.length, this.local.enabled)
          : decodeEntry(raw, this.options.serializer, key.length);
    } catch (err) {
      this.logger.warn(
        `cache entry ${describeKey(key)} is corrupted and was removed: ${(err as Error).message}`,
      );
      // Removed before the caller hears of the miss, so its next read does not log it again.
      const miss = (): void => this.endRead(read, undefined);
      void this.redis.call('unlink', (c) => c.unlink(cacheKeys.entry(key))).then(miss, miss);
      return;
    }
    if (entry.staleUntil <= Date.now()) return this.endRead(read, undefined);
    if (!entry.tags) return this.endRead(read, entry);
    const ok = (current: boolean): void => this.endRead(read, current ? entry : undefined);
    void this.tags.current(entry.tags).then(ok);
  }

  /** Ends a shared read with its result, which L1 keeps unless an invalidation arrived meanwhile. */
  private endRead(read: L2Read, entry: CacheEntry | undefined): void {
    const settle = read.settle;
    if (!settle) return;
    // The read lets go of its promise (and so of the value): V8 keeps a `Map`'s replaced hash
    // tables, which still point at former entries, until the next full GC, and a value
    // reachable from them survived every young GC. With it, the L2 hit path at 64 in flight
    // spent a tenth of its time in GC (bench/cache, --trace-gc).
    read.settle = undefined;
    read.promise = NO_ENTRY;
    if (this.reads.get(read.key) === read) this.reads.delete(read.key);
    if (entry && !read.dirty) this.local.set(read.key, entry, read.ticket);
    settle(entry);
  }

  /**
   * Bounds the reads by `cache.timeout` with one interval over the reads in flight, rather
   * than a deadline, a promise and two closures more per read: at 64 reads in flight that was
   * a fifth of the hit throughput (bench/cache). A read is given up within a quarter of its
   * bound after its deadline; the interval stops once no read is in flight and never keeps the
   * process alive.
   */
  private sweepReadsEvery(timeout: number): void {
    if (this.readSweep) return;
    const sweep = (): void => {
      if (this.reads.size === 0) {
        clearInterval(this.readSweep);
        this.readSweep = undefined;
        return;
      }
      const now = Date.now();
      for (const read of this.reads.values()) {
        if (read.deadline > now) continue;
        this.redis.failed('get', new RedisUnavailable(`no answer within ${timeout} ms`));
        this.endRead(read, undefined);
      }
    };
    this.readSweep = setInterval(sweep, Math.max(5, Math.floor(timeout / 4))).unref();
  }
}
