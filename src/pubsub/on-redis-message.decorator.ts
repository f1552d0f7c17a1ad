import { SetMetadata } from '@nestjs/common';

import { ON_REDIS_MESSAGE_METADATA } from './pubsub.constants.js';
import type {
  OnRedisMessageMetadata,
  OnRedisMessageOptions,
  PubSubSource,
} from './pubsub.types.js';

export type { OnRedisMessageOptions } from './pubsub.types.js';

/**
 * Calls the decorated method with every message published on a channel, or on every channel
 * matching `{ pattern }`: `(message, context)` as a `subscribe` handler. The provider must be
 * registered in a Nest module; `PubSubService` subscribes it while the application boots (the
 * boot fails when it cannot), and unsubscribes it at shutdown. A lost stretch (reconnect,
 * overflow) is logged and counted in `stats()`; use `subscribe` with `onGap` to react to it.
 *
 * @example
 * ```ts
 * @Injectable()
 * export class OrderEvents {
 *   @OnRedisMessage('orders')
 *   onOrder(order: { id: string }) { ... }
 *
 *   @OnRedisMessage({ pattern: 'orders.*' })
 *   onAnyOrderEvent(event: unknown, { channel }: PubSubMessageContext) { ... }
 * }
 * ```
 */
export function OnRedisMessage(
  source: PubSubSource,
  options: OnRedisMessageOptions = {},
): MethodDecorator {
  const valid =
    (typeof source === 'string' && source !== '') ||
    (source !== null &&
      typeof source === 'object' &&
      typeof source.pattern === 'string' &&
      source.pattern !== '');
  if (!valid) {
    throw new TypeError(
      `@OnRedisMessage: the channel must be a non-empty string or { pattern: string }, got ${JSON.stringify(source)}`,
    );
  }
  return SetMetadata<string, OnRedisMessageMetadata>(ON_REDIS_MESSAGE_METADATA, {
    source,
    options,
  });
}
