import type { Logger } from '@nestjs/common';

import { DeadlineGroup } from '../connection/deadlines.js';
import type { RedisConnection } from '../connection/redis-connection.js';

import type { CacheCounters } from './cache.types.js';

/** Redis did not answer (not ready, or past `cache.timeout`): the cache degrades. */
export class RedisUnavailable extends Error {}

/** The command connection's client, as the cache's parts use it. */
export type CacheClient = RedisConnection['client'];

/**
 * The degrade-on-error wrapper around every Redis call of the cache: a call is skipped at once
 * while the connection is not ready and bounded by `cache.timeout` otherwise; a failure is
 * counted, logged once per outage ("serving from loaders") and rethrown for the caller to
 * turn into a miss or a dropped write; the first answer after an outage logs the recovery.
 */
export class DegradingCaller {
  private degraded = false;
  private readonly deadlines = new DeadlineGroup();

  constructor(
    private readonly connection: RedisConnection,
    private readonly logger: Logger,
    private readonly counters: CacheCounters,
    private readonly timeout: () => number,
  ) {}

  async call<T>(
    what: string,
    fn: (client: CacheClient) => Promise<T>,
    timeout: number = this.timeout(),
  ): Promise<T> {
    const client = this.connection.client;
    try {
      if (client.status !== 'ready') throw new RedisUnavailable(`connection is ${client.status}`);
      const result =
        timeout > 0
          ? await this.deadlines.run(
              fn(client),
              timeout,
              () => new RedisUnavailable(`no answer within ${timeout} ms`),
            )
          : await fn(client);
      this.answered();
      return result;
    } catch (err) {
      this.failed(what, err);
      throw err;
    }
  }

  /** Redis answered: if the cache was degraded, it is back. */
  answered(): void {
    if (!this.degraded) return;
    this.degraded = false;
    this.logger.log('Redis answers again: the cache is back to normal');
  }

  /** A Redis call failed: counted, and logged once per outage. */
  failed(what: string, err: unknown): void {
    this.counters.redisErrors += 1;
    if (this.degraded) return;
    this.degraded = true;
    this.logger.warn(
      `Redis unavailable (${what}: ${this.connection.scrub((err as Error).message)}); ` +
        'serving from loaders until it is back, reads are misses and writes are dropped',
    );
  }
}
