import { SetMetadata } from '@nestjs/common';
import type { WithLockOptions } from './lock.service.js';

/** Metadata key of `@WithLock`, read once at startup by `LockService`. */
export const WITH_LOCK_METADATA = 'nestjs-redis-infra:with-lock';

/**
 * How to name the locked resource from the method's arguments: a template in which `{0}`,
 * `{1.id}` stand for an argument or a property path of one, or a function of the arguments.
 */
export type LockResource = string | ((...args: never[]) => string);

export interface WithLockMetadata {
  resource: LockResource;
  options: WithLockOptions;
}

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
  if (typeof resource !== 'function' && (typeof resource !== 'string' || resource === '')) {
    throw new TypeError(
      `@WithLock: resource must be a non-empty template string or a function, got ${String(resource)}`,
    );
  }
  return SetMetadata<string, WithLockMetadata>(WITH_LOCK_METADATA, { resource, options });
}

/** Builds the resource name of one call. */
export function resolveLockResource(
  resource: LockResource,
  args: unknown[],
  label: string,
): string {
  if (typeof resource === 'function') {
    const name = (resource as (...a: unknown[]) => unknown)(...args);
    if (typeof name !== 'string' || name === '') {
      throw new TypeError(
        `@WithLock on ${label}: the resource function returned ${String(name)}, not a non-empty string`,
      );
    }
    return name;
  }
  return resource.replace(/\{(\d+)((?:\.[\w$]+)*)\}/g, (_, index: string, path: string) => {
    let value: unknown = args[Number(index)];
    for (const part of path.split('.').filter(Boolean)) {
      value = value == null ? undefined : (value as Record<string, unknown>)[part];
    }
    if (value === undefined || value === null || value === '') {
      throw new TypeError(
        `@WithLock on ${label}: "{${index}${path}}" in "${resource}" is ${String(value)} for this call`,
      );
    }
    return String(value);
  });
}
