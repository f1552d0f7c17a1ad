import { checkDuration, MAX_TIMER_MS, MAX_TTL_MS } from '../common/checks.js';
import { describeKey, describeValue } from '../common/describe.js';

import type { ResolvedCacheOptions } from './cache.options.js';
import { MAX_REPLICAS } from './cache.scripts.js';
import type { CacheSetOptions } from './cache.types.js';
import { jsonSerializer } from './serializer.js';

/*
 * Argument checks of CacheService: each throws before anything is sent, naming the method,
 * the key, the parameter and the value.
 */

export function checkKey(method: string, key: unknown): asserts key is string {
  if (typeof key !== 'string' || key.length === 0) {
    throw new TypeError(
      `CacheService.${method}: key must be a non-empty string, got ${describeValue(key)}`,
    );
  }
}

export function checkLoaderTimeout(key: string, name: string, ms: unknown): void {
  if (ms === undefined) return;
  checkDuration(() => `CacheService.getOrSet(${describeKey(key)})`, name, ms, {
    min: 1,
    max: MAX_TIMER_MS,
  });
}

export function checkEarlyRefresh(key: string, value: unknown): void {
  if (value === undefined || typeof value === 'boolean') return;
  if (typeof value !== 'number' || !(value >= 0) || value === Infinity) {
    const error = typeof value === 'number' ? RangeError : TypeError;
    throw new error(
      `CacheService.getOrSet(${describeKey(key)}): earlyRefresh must be a boolean or a finite ` +
        `number from 0 (beta), got ${describeValue(value)}`,
    );
  }
}

/** `replicas`: an integer from 1 to MAX_REPLICAS (1 when not given). */
export function checkReplicas(method: string, key: string, value: unknown): number {
  if (value === undefined) return 1;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_REPLICAS) {
    const error = typeof value === 'number' ? RangeError : TypeError;
    throw new error(
      `CacheService.${method}(${describeKey(key)}): replicas must be an integer from 1 to ` +
        `${MAX_REPLICAS} (copies of the entry), got ${describeValue(value)}`,
    );
  }
  return value;
}

export function checkTags(
  method: string,
  key: string | undefined,
  tags: unknown,
): string[] | undefined {
  if (tags === undefined) return undefined;
  if (!Array.isArray(tags) || !tags.every((t) => typeof t === 'string' && t.length > 0)) {
    const where = key === undefined ? '' : `(${describeKey(key)})`;
    const bad = Array.isArray(tags)
      ? `item ${describeValue(tags.find((t) => typeof t !== 'string' || t.length === 0))}`
      : describeValue(tags);
    throw new TypeError(
      `CacheService.${method}${where}: tags must be an array of non-empty strings, got ${bad}`,
    );
  }
  return tags as string[];
}

/** An entry's TTL and grace: the call's, else the module's, checked and rounded up. */
export function durations(
  defaults: ResolvedCacheOptions,
  method: string,
  key: string,
  options: CacheSetOptions,
): { ttl: number; grace: number } {
  // Built only for a message: this runs on every getOrSet, L1 hits included.
  const where = (): string => `CacheService.${method}(${describeKey(key)})`;
  const ttl = checkDuration(where, 'ttl', options.ttl ?? defaults.ttl, {
    min: 1,
    max: MAX_TTL_MS,
  });
  const grace = checkDuration(where, 'grace', options.grace ?? defaults.grace, {
    min: 0,
    max: MAX_TTL_MS,
  });
  return { ttl, grace };
}

/** The value as bytes (or JSON text), within `cache.maxValueBytes`. */
export function serialize(
  options: ResolvedCacheOptions,
  method: string,
  key: string,
  value: unknown,
): string | Buffer {
  const where = (): string => `CacheService.${method}(${describeKey(key)})`;
  if (value === undefined) {
    throw new TypeError(
      `${where()}: value undefined cannot be cached (use null, or del() the key)`,
    );
  }
  let payload: string | Buffer;
  try {
    payload = options.serializer.serialize(value);
  } catch (err) {
    throw new TypeError(`${where()}: value cannot be serialized: ${describeError(err)}`, {
      cause: err,
    });
  }
  // JSON text is ASCII-sized at most 3 bytes a character: measure only when it could be over.
  const bytes =
    typeof payload !== 'string'
      ? payload.length
      : payload.length * 3 <= options.maxValueBytes
        ? 0
        : Buffer.byteLength(payload);
  const max = options.maxValueBytes;
  if (bytes > max) {
    throw new RangeError(
      `${where()}: value is ${bytes} bytes serialized, more than cache.maxValueBytes (${max}); ` +
        'nothing was written. Cache a smaller value, or raise cache.maxValueBytes.',
    );
  }
  return payload;
}

/** Whether entries are read as text: JSON (the default serializer) decodes once from a string. */
export function readsText(options: ResolvedCacheOptions): boolean {
  return options.serializer === jsonSerializer;
}

/** An error's message for a message of ours, whatever was thrown. */
export function describeError(err: unknown): string {
  return err instanceof Error ? err.message : describeValue(err);
}
