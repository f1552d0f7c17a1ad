import { durationOption, integerOption } from '../common/option-checks.js';
import { RedisConfigError } from '../errors.js';

/** Defaults for `PubSubService`. */
export interface RedisPubSubModuleOptions {
  /**
   * What `onKeyEvent` does when the server's `notify-keyspace-events` lacks the flags it
   * needs: `'check'` logs one message naming the flags to set and returns an inactive
   * handle; `'configure'` sets them with `CONFIG SET` (on every master of a cluster), and
   * falls back to `'check'` when `CONFIG` is renamed or denied.
   * @defaultValue 'check'
   */
  keyspaceEvents?: 'check' | 'configure';
  /**
   * Messages buffered per subscription while its handler is busy. When full, the oldest is
   * dropped (counted in `stats().dropped`) and the handler later gets a gap notice.
   * @defaultValue 1000
   */
  bufferSize?: number;
  /**
   * How long a handler's promise may stay pending before the subscription stops waiting for
   * it and moves on to the next message (counted in `stats().handlerTimeouts`), in ms.
   * @defaultValue 30000
   */
  handlerTimeout?: number;
  /**
   * How often the subscriber connections are probed with `PING`, in ms (0: never). A
   * half-open connection raises no error; after two intervals without an answer it is
   * reconnected, and subscribers get a gap notice.
   * @defaultValue 5000
   */
  pingInterval?: number;
}

/** Every default of `PubSubService`; the option docs repeat them as `@defaultValue`. */
export const PUBSUB_DEFAULTS = {
  keyspaceEvents: 'check' as 'check' | 'configure',
  bufferSize: 1_000,
  handlerTimeout: 30_000,
  pingInterval: 5_000,
};

/** The `pubsub` options after defaults and validation. */
export interface ResolvedPubSubOptions {
  keyspaceEvents: 'check' | 'configure';
  bufferSize: number;
  handlerTimeout: number;
  pingInterval: number;
}

/** Validates the module's `pubsub` option once, at startup; errors name the option and value. */
export function validatePubSubOptions(value: unknown): ResolvedPubSubOptions {
  if (value !== undefined && (value === null || typeof value !== 'object')) {
    throw new RedisConfigError(
      'pubsub',
      value,
      '{ keyspaceEvents?, bufferSize?, handlerTimeout?, pingInterval? }',
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
    pingInterval:
      o.pingInterval === 0
        ? 0
        : durationOption(o.pingInterval, 'pubsub.pingInterval', PUBSUB_DEFAULTS.pingInterval),
    handlerTimeout: durationOption(
      o.handlerTimeout,
      'pubsub.handlerTimeout',
      PUBSUB_DEFAULTS.handlerTimeout,
    ),
  };
}

/** `undefined` stays undefined; anything else must be an integer in [1, 1e6] (messages). */
export function checkBufferSize(value: unknown, label: string): number | undefined {
  if (value === undefined) return undefined;
  return integerOption(value, label, 0, [1, 1_000_000], 'messages');
}
