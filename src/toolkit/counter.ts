import { checkInteger, checkMs as checkDuration, checkName } from '../common/checks.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import { RedisScript } from '../connection/script.js';

import { runBatch } from './batch.js';
import { keySlot } from './slots.js';

/** Options of `RedisService.counter`. */
export interface CounterOptions {
  /**
   * How many keys the count is spread over; each lives in its own cluster hash slot, so a
   * cluster spreads the writes over its masters.
   * @defaultValue 16
   */
  shards?: number;
  /** Remove the count after this many ms without an increment (at most a year). */
  ttl?: number;
}

/** The most shards a counter may have. */
export const MAX_COUNTER_SHARDS = 1024;

// Hash tags with pairwise different slots, found once: shard i of every counter uses TAGS[i].
const TAGS: string[] = (() => {
  const tags: string[] = [];
  const used = new Set<number>();
  for (let n = 0; tags.length < MAX_COUNTER_SHARDS; n++) {
    const tag = `s${n.toString(36)}`;
    const slot = keySlot(tag);
    if (used.has(slot)) continue;
    used.add(slot);
    tags.push(tag);
  }
  return tags;
})();

const INCR_TTL = new RedisScript<number>(
  'counter.incr',
  `local n = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n`,
);

/**
 * A counter for hot keys (page views, rate tallies): each increment goes to one of `shards`
 * keys picked at random, so no single key (or, on a cluster, no single master) takes every
 * write; `get` sums the shards with one round trip per node. Obtained from
 * `RedisService.counter()`. An increment whose reply was lost may have counted: it is not
 * retried.
 *
 * @example
 * ```ts
 * const views = redis.counter('views:home', { shards: 8 });
 * await views.incr();
 * const total = await views.get();
 * ```
 */
export class ShardedCounter {
  /** The number of shard keys. */
  readonly shards: number;
  private readonly ttl?: number;
  private readonly keys: string[];

  constructor(
    private readonly connection: RedisConnection,
    /** The counter's name; shard `i` lives at `<keyPrefix>{<tag i>}<name>`. */
    readonly name: string,
    options: CounterOptions = {},
  ) {
    checkName(name, 'counter name', 1024);
    this.shards = checkInteger(
      options.shards ?? 16,
      `counter("${name}") options.shards`,
      1,
      MAX_COUNTER_SHARDS,
    );
    if (options.ttl !== undefined)
      this.ttl = checkDuration(options.ttl, `counter("${name}") options.ttl`);
    // The tag comes first, so braces in the name cannot move a shard to another slot.
    this.keys = TAGS.slice(0, this.shards).map((tag) => `{${tag}}${name}`);
  }

  /** Adds `by` (an integer, default 1) to one shard. */
  async incr(by = 1): Promise<void> {
    checkInteger(by, 'counter.incr by', -Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
    const key = this.keys[Math.floor(Math.random() * this.shards)];
    if (this.ttl === undefined) await this.connection.client.incrby(key, by);
    else await INCR_TTL.run(this.connection.client, [key], [by, this.ttl]);
  }

  /** The sum of every shard. */
  async get(): Promise<number> {
    const replies = await runBatch(
      this.connection,
      this.keys.map((key) => ['get', key]),
    );
    let total = 0;
    for (const [err, value] of replies) {
      if (err) throw err;
      total += value === null ? 0 : Number(value);
    }
    return total;
  }

  /** Removes every shard: the count starts again from 0. */
  async reset(): Promise<void> {
    const replies = await runBatch(
      this.connection,
      this.keys.map((key) => ['unlink', key]),
    );
    for (const [err] of replies) if (err) throw err;
  }
}
