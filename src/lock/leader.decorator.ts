import { SetMetadata } from '@nestjs/common';

import type { LeaderOptions } from './leader.js';
import { LEADER_METADATA } from './lock.constants.js';

/** What `@Leader` records on a method. */
export interface LeaderMetadata {
  name: string;
  options: LeaderOptions;
}

/**
 * Runs the decorated method only while this process is the leader of the election `name`;
 * elsewhere the call is skipped and returns `undefined`. Made for jobs that every instance
 * schedules (a `@nestjs/schedule` cron) but only one should run. The process campaigns from
 * startup until shutdown (then it resigns); all methods with the same `name` share one
 * candidacy. The provider must be registered in a Nest module (it is wrapped at startup
 * through `DiscoveryService`).
 *
 * @example
 * ```ts
 * @Cron('0 * * * * *')
 * @Leader('billing-cron', { ttl: 10_000 })
 * async chargeDueInvoices() { ... }
 * ```
 */
export function Leader(name: string, options: LeaderOptions = {}): MethodDecorator {
  if (typeof name !== 'string' || name === '') {
    throw new TypeError(`@Leader: name must be a non-empty string, got ${String(name)}`);
  }
  return SetMetadata<string, LeaderMetadata>(LEADER_METADATA, { name, options });
}
