import { Cluster } from 'ioredis';

import type { RedisConnection } from '../connection/redis-connection.js';

import { encodeEntry, estimateSize } from './cache-entry.js';
import type { CacheClient, DegradingCaller } from './cache.degrade.js';
import { cacheKeys, replicaNames } from './cache.scripts.js';
import type { CacheScripts } from './defined-scripts.js';
import type { InvalidationBus } from './invalidation-bus.js';
import type { LocalTier } from './local-tier.js';
import type { TagVersions } from './tag-versions.js';

/** A stampede lock this instance holds; `quiet`: the key had no entry when it was taken. */
export interface HeldLock {
  token: string;
  quiet: boolean;
}

/** One write: the value, its bytes and how long and under which tags it lives. */
export interface EntryWrite {
  key: string;
  value: unknown;
  payload: string | Buffer;
  ttl: number;
  grace: number;
  tags?: string[];
  /** How long the loader took (for early refresh); 0 for `set`. */
  loadMs: number;
  /** Copies kept in Redis (`replicas`), 1 or more. */
  copies: number;
  /** The stampede lock to give up with the write (a fill). */
  lock?: HeldLock;
}

/**
 * Writes an entry to Redis (with its copies, giving up the stampede lock of a fill in the same
 * script), tells the other instances, then keeps it in L1. A cache write never fails its
 * caller: a Redis failure is logged once per outage by the degrade wrapper and dropped.
 */
export class EntryWriter {
  constructor(
    private readonly connection: RedisConnection,
    private readonly redis: DegradingCaller,
    private readonly scripts: CacheScripts,
    private readonly bus: InvalidationBus,
    private readonly local: LocalTier,
    private readonly tags: TagVersions,
    /** Drops the key's in-process copy and marks reads in flight. */
    private readonly invalidate: (key: string) => void,
  ) {}

  async write(w: EntryWrite): Promise<void> {
    this.invalidate(w.key);
    const ticket = this.local.begin();
    const now = Date.now();
    try {
      const lifetime = w.ttl + w.grace;
      const versions = w.tags?.length ? await this.tags.forWrite(w.tags, lifetime) : undefined;
      const encoded = encodeEntry(
        { freshUntil: now + w.ttl, staleUntil: now + lifetime, loadMs: w.loadMs, tags: versions },
        w.payload,
      );
      await this.redis.call('set', (client) => this.send(client, w, encoded, lifetime));
      this.local.set(
        w.key,
        {
          value: w.value,
          freshUntil: now + w.ttl,
          staleUntil: now + lifetime,
          loadMs: w.loadMs,
          tags: versions,
          size: estimateSize(encoded.length, w.key.length),
        },
        ticket,
      );
    } catch {
      // Logged by the degrade wrapper (once per outage): a cache write must not fail the caller.
    }
  }

  private async send(
    client: CacheClient,
    w: EntryWrite,
    encoded: Buffer,
    lifetime: number,
  ): Promise<void> {
    const { key } = w;
    const written = this.scripts.write
      .run(
        [
          cacheKeys.entry(key),
          cacheKeys.lock(key),
          cacheKeys.waiting(key),
          cacheKeys.replicas(key),
        ],
        [encoded, lifetime, w.lock?.token ?? '', w.copies],
      )
      .then(async ([waited, before]) => {
        if (before > w.copies) await this.unlinkCopies(client, key, w.copies, before);
        return waited;
      });
    const copies = w.copies > 1 ? this.writeCopies(client, key, encoded, lifetime, w.copies) : 0;
    if (w.lock?.quiet) {
      // A fill of a key that had no entry when we locked it: no instance holds a copy to
      // drop, so only a waiter needs telling, and the fill says whether one asked.
      const waited = await written;
      await copies;
      if (waited === 1) await this.bus.notify(client, { k: [key] });
      return;
    }
    // On one connection commands run in the order sent, so the notification can follow the
    // write at once; a cluster may deliver it from another node before the write lands, and
    // an instance would then reload the old value into L1: there it waits for the write.
    if (client instanceof Cluster) await Promise.all([written, copies]);
    await Promise.all([written, copies, this.bus.notify(client, { k: [key] })]);
  }

  private async writeCopies(
    client: CacheClient,
    key: string,
    encoded: Buffer,
    lifetime: number,
    copies: number,
  ): Promise<void> {
    const names = replicaNames(key, this.connection.keyPrefix).slice(0, copies - 1);
    await Promise.all(names.map((name) => client.set(name, encoded, 'PX', lifetime)));
  }

  /** Removes copies `from` to `to - 1` (copy 0 is the entry itself). */
  async unlinkCopies(client: CacheClient, key: string, from: number, to: number): Promise<void> {
    const names = replicaNames(key, this.connection.keyPrefix).slice(Math.max(from, 1) - 1, to - 1);
    await Promise.all(names.map((name) => client.unlink(name)));
  }
}
