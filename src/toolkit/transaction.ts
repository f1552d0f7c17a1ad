import type { ChainableCommander } from 'ioredis';

import { checkInteger, checkKeys } from '../common/checks.js';
import { describeValue as shown } from '../common/describe.js';
import type { RedisClient } from '../connection/client-factory.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import { RedisCrossSlotError, RedisTransactionConflictError } from '../errors.js';

import { slotGroups } from './slots.js';

/** Options of `RedisService.transaction`. */
export interface TransactionOptions {
  /**
   * How many times to run when a watched key changes before `EXEC`.
   * @defaultValue 10
   */
  attempts?: number;
}

/**
 * What the transaction's function gets: `client` reads (on the connection that watches the
 * keys, so a read sees what `EXEC` will be checked against), `multi` queues the writes.
 */
export type TransactionFn = (
  client: RedisClient,
  multi: ChainableCommander,
) => Promise<void> | void;

/**
 * Optimistic transaction: `WATCH keys`, run `fn` (reads through `client`, writes queued on
 * `multi`), `EXEC`; when a watched key changed in between, all of it runs again, up to
 * `attempts` times. Runs on a dedicated connection, so concurrent transactions never unwatch
 * each other. Resolves with `EXEC`'s replies (`[error, value]` per queued command).
 */
export async function runTransaction(
  connection: RedisConnection,
  keys: readonly string[],
  fn: TransactionFn,
  options: TransactionOptions = {},
): Promise<Array<[Error | null, unknown]>> {
  checkKeys(keys, 'transaction keys');
  if (typeof fn !== 'function')
    throw new TypeError(`transaction fn must be a function, got ${shown(fn)}`);
  const attempts = checkInteger(options.attempts ?? 10, 'transaction attempts', 1, 1000);
  if (connection.isCluster) {
    const groups = slotGroups(keys, connection.keyPrefix);
    if (groups) throw new RedisCrossSlotError('transaction', groups);
  }
  return connection.withDedicated(async (client) => {
    for (let attempt = 1; attempt <= attempts; attempt++) {
      await client.watch(...keys);
      let multi: ChainableCommander;
      try {
        multi = client.multi();
        await fn(client, multi);
      } catch (err) {
        await client.unwatch().catch(() => undefined);
        throw err;
      }
      // EXEC must reach the node that holds the WATCH to clear it: an empty transaction
      // carries one harmless read of a watched key, whose reply is not returned.
      const empty = multi.length === 0;
      if (empty) multi.exists(keys[0]);
      const replies = await multi.exec();
      if (replies) return empty ? [] : replies;
      // A watched key changed: back off a little, at random, so two writers stop colliding.
      await new Promise((resolve) =>
        setTimeout(resolve, Math.random() * Math.min(50, 2 ** attempt)),
      );
    }
    throw new RedisTransactionConflictError(keys, attempts);
  });
}
