import { jsonSerializer } from '../cache/serializer.js';

import { KEY_EVENT_FLAGS, type KeyEventName } from './keyspace.js';
import { MAX_CHANNEL_BYTES } from './pubsub.constants.js';
import type { ResolvedPubSubOptions } from './pubsub.options.js';
import type {
  KeyEventOptions,
  MessagesOptions,
  PubSubSource,
  SubscribeOptions,
} from './pubsub.types.js';

/*
 * Argument checks of `PubSubService`'s methods: each throws a `TypeError` or `RangeError` that
 * names the method, the argument and what was passed, before anything is sent to Redis.
 */

/** A channel or pattern: a non-empty string, at most `MAX_CHANNEL_BYTES` with the key prefix. */
export function checkName(prefix: string, method: string, argument: string, name: unknown): void {
  if (typeof name !== 'string' || name === '') {
    throw new TypeError(
      `PubSubService.${method}: ${argument} must be a non-empty string, got ${describe(name)}`,
    );
  }
  const bytes = Buffer.byteLength(prefix + name);
  if (bytes > MAX_CHANNEL_BYTES) {
    throw new RangeError(
      `PubSubService.${method}: ${argument} "${name.slice(0, 40)}..." is ${bytes} bytes with the key prefix; at most ${MAX_CHANNEL_BYTES} are accepted`,
    );
  }
}

export function checkHandler(method: string, handler: unknown): void {
  if (typeof handler !== 'function') {
    throw new TypeError(
      `PubSubService.${method}: handler must be a function, got ${describe(handler)}`,
    );
  }
}

/** The buffer size and handler timeout of one subscription, its own or the module's. */
export function checkDeliveryOptions(
  options: SubscribeOptions,
  defaults: ResolvedPubSubOptions,
): { bufferSize: number; handlerTimeout: number } {
  const bufferSize = options.bufferSize ?? defaults.bufferSize;
  if (!Number.isInteger(bufferSize) || bufferSize < 1 || bufferSize > 1_000_000) {
    throw new RangeError(
      `PubSubService: options.bufferSize must be an integer from 1 to 1000000 (messages), got ${String(options.bufferSize)}`,
    );
  }
  const handlerTimeout = options.handlerTimeout ?? defaults.handlerTimeout;
  if (
    typeof handlerTimeout !== 'number' ||
    !(handlerTimeout > 0) ||
    !Number.isFinite(handlerTimeout)
  ) {
    throw new RangeError(
      `PubSubService: options.handlerTimeout must be a positive number of milliseconds, got ${String(options.handlerTimeout)}`,
    );
  }
  if (options.onGap !== undefined && typeof options.onGap !== 'function') {
    throw new TypeError(`PubSubService: options.onGap must be a function`);
  }
  return { bufferSize, handlerTimeout };
}

/** The source of `messages()`: a channel, or the pattern of `{ pattern }`. */
export function checkMessagesArguments(
  prefix: string,
  source: PubSubSource,
  options: MessagesOptions,
): { name: string; pattern?: string } {
  const pattern = typeof source === 'object' && source !== null ? source.pattern : undefined;
  const name = pattern ?? source;
  if (pattern !== undefined) checkName(prefix, 'messages', 'source.pattern', pattern);
  else checkName(prefix, 'messages', 'source', name);
  if (pattern !== undefined && options.sharded) {
    throw new TypeError(`PubSubService.messages: sharded pub/sub has no patterns`);
  }
  const signal = options.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new TypeError(`PubSubService.messages: options.signal must be an AbortSignal`);
  }
  return { name: name as string, pattern };
}

/** The arguments of `onKeyEvent`; returns the events as a list. */
export function checkKeyEventArguments(
  prefix: string,
  events: KeyEventName | readonly KeyEventName[],
  keyPattern: string,
  handler: unknown,
  options: KeyEventOptions,
): KeyEventName[] {
  const list = (Array.isArray(events) ? events : [events]) as KeyEventName[];
  if (list.length === 0 || list.some((e) => !Object.hasOwn(KEY_EVENT_FLAGS, e))) {
    throw new TypeError(
      `PubSubService.onKeyEvent: events must be one or more of ${Object.keys(KEY_EVENT_FLAGS).join(', ')}; got ${JSON.stringify(events)}`,
    );
  }
  checkName(prefix, 'onKeyEvent', 'keyPattern', keyPattern);
  checkHandler('onKeyEvent', handler);
  if (options === null || typeof options !== 'object') {
    throw new TypeError(
      `PubSubService.onKeyEvent: options must be an object, got ${describe(options)}`,
    );
  }
  if (options.onGap !== undefined && typeof options.onGap !== 'function') {
    throw new TypeError(
      `PubSubService.onKeyEvent: options.onGap must be a function, got ${describe(options.onGap)}`,
    );
  }
  return list;
}

/** What `publish` sends: the message JSON-encoded, or as it is with `raw`. */
export function encodeMessage(channel: string, message: unknown, raw: boolean): string | Buffer {
  if (raw) {
    if (typeof message !== 'string' && !Buffer.isBuffer(message)) {
      throw new TypeError(
        `PubSubService.publish("${channel}"): with raw: true, message must be a string or a Buffer, got ${describe(message)}`,
      );
    }
    return message;
  }
  try {
    return jsonSerializer.serialize(message);
  } catch (err) {
    throw new TypeError(
      `PubSubService.publish("${channel}"): message cannot be sent as JSON: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/** JSON when it parses, the string itself otherwise (messages from other publishers). */
export function decodeMessage(payload: string): unknown {
  try {
    return JSON.parse(payload);
  } catch {
    return payload;
  }
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'string') return JSON.stringify(value.slice(0, 40));
  return typeof value;
}
