import type { Logger } from '@nestjs/common';

import type { RedisConnection } from '../connection/redis-connection.js';
import type { PubSubService } from '../pubsub/pubsub.service.js';
import type { KeyEventSubscription } from '../pubsub/pubsub.types.js';

import { describeValue } from './session-data.js';
import { handleOf, type SessionAddress } from './session-id.js';
import { RECORD_KEY_PATTERN, sessionKeys, type SessionScripts } from './session.scripts.js';
import type { SessionExpiredHandler } from './session.types.js';

/**
 * `SessionService.onExpired`: the `expired` keyspace notifications of session records, turned
 * into `{ handle, userId }`. The record is gone when Redis announces its expiry, so the user
 * comes from the session's owner key, which outlives the record (session.scripts.ts).
 */
export async function watchExpiredSessions(
  connection: RedisConnection,
  scripts: SessionScripts,
  pubsub: PubSubService | undefined,
  handler: SessionExpiredHandler,
  logger: Logger,
): Promise<KeyEventSubscription> {
  const method = 'SessionService.onExpired';
  if (typeof handler !== 'function') {
    throw new TypeError(`${method}: handler must be a function, got ${describeValue(handler)}`);
  }
  if (!pubsub) {
    throw new TypeError(
      `${method}: this SessionService was built without a PubSubService; construct it with the ` +
        "connection's PubSubService (RedisModule does) to receive expiry notifications",
    );
  }
  return pubsub.onKeyEvent('expired', sessionKeys.records, async ({ key }) => {
    const match = RECORD_KEY_PATTERN.exec(key);
    if (!match) return;
    const address: SessionAddress = { tag: match[1], digest: match[2] };
    let userId: string | null = null;
    try {
      userId = await scripts.expiredOwner.run([sessionKeys.owner(address)]);
    } catch (err) {
      // The handler still hears of the expiry; only the user is unknown.
      logger.warn(
        `${method}: could not read the user of expired session ${handleOf(address)} ` +
          `(${connection.scrub(String(err))}); the handler gets userId null`,
      );
    }
    await handler({ handle: handleOf(address), userId: userId ?? null });
  });
}
