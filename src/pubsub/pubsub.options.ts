import type { RedisPubSubModuleOptions } from '../config/redis-options.interface.js';
import { RedisConfigError } from '../errors.js';

/** Every default of `PubSubService`; the option docs repeat them as `@defaultValue`. */
export const PUBSUB_DEFAULTS = {
  keyspaceEvents: 'check' as 'check' | 'configure',
  bufferSize: 1_000,
  handlerTimeout: 30_000,
};

/** The `pubsub` options after defaults and validation. */
export interface ResolvedPubSubOptions {
  keyspaceEvents: 'check' | 'configure';
  bufferSize: number;
  handlerTimeout: number;
}

/** Validates the module's `pubsub` option once, at startup; errors name the option and value. */
export function validatePubSubOptions(value: unknown): ResolvedPubSubOptions {
  if (value !== undefined && (value === null || typeof value !== 'object')) {
    throw new RedisConfigError(
      'pubsub',
      value,
      '{ keyspaceEvents?, bufferSize?, handlerTimeout? }',
    );
  }
  const o = (value ?? {}) as RedisPubSubModuleOptions;
  const keyspaceEvents = o.keyspaceEvents ?? PUBSUB_DEFAULTS.keyspaceEvents;
  if (keyspaceEvents !== 'check' && keyspaceEvents !== 'configure') {
    throw new RedisConfigError('pubsub.keyspaceEvents', keyspaceEvents, "'check' or 'configure'");
  }
  return {
    keyspaceEvents,
    bufferSize: checkBufferSize(o.bufferSize, 'pubsub.bufferSize') ?? PUBSUB_DEFAULTS.bufferSize,
    handlerTimeout: positive(
      o.handlerTimeout,
      'pubsub.handlerTimeout',
      PUBSUB_DEFAULTS.handlerTimeout,
    ),
  };
}

function positive(value: unknown, label: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new RedisConfigError(label, value, 'a positive number of milliseconds');
  }
  return Math.ceil(value);
}

/** `undefined` stays undefined; anything else must be an integer in [1, 1e6]. */
export function checkBufferSize(value: unknown, label: string): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 1_000_000) {
    throw new RedisConfigError(label, value, 'an integer from 1 to 1000000');
  }
  return value;
}
