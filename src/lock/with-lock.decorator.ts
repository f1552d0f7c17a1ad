import { SetMetadata } from '@nestjs/common';

import { checkTemplate, type ArgumentTemplate } from '../discovery/decorated-methods.js';

import { WITH_LOCK_METADATA } from './lock.constants.js';
import type { WithLockMetadata, WithLockOptions } from './lock.service.js';

/**
 * How to name the locked resource from the method's arguments: a template in which `{0}`,
 * `{1.id}` stand for an argument or a property path of one, or a function of the arguments.
 */
export type LockResource = ArgumentTemplate;

/**
 * Runs the decorated method under `LockService.withLock`: the lock is taken before the call,
 * renewed while it runs and released after. The provider must be registered in a Nest module
 * (it is wrapped at startup through `DiscoveryService`, no global registry).
 *
 * @example
 * ```ts
 * @WithLock('invoice:{0}', { ttl: 10_000, wait: 2_000 })
 * async render(invoiceId: string) { ... }
 *
 * @WithLock((order: Order) => `order:${order.id}`)
 * async ship(order: Order) { ... }
 * ```
 */
export function WithLock(resource: LockResource, options: WithLockOptions = {}): MethodDecorator {
  checkTemplate('@WithLock', resource);
  return SetMetadata<string, WithLockMetadata>(WITH_LOCK_METADATA, { resource, options });
}
