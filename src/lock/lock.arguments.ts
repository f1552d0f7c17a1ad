import { MAX_LOCK_DURATION_MS } from './lock.options.js';
import { MAX_RESOURCE_BYTES } from './lock.scripts.js';

// Argument checks of `LockService`: they run before anything is sent, and their errors name
// the method, the argument and the value.

export function checkResource(method: string, resource: unknown): asserts resource is string {
  if (typeof resource !== 'string' || resource.length === 0) {
    throw new TypeError(
      `LockService.${method}: resource must be a non-empty string, got ${show(resource)}`,
    );
  }
  // Only a name that might be too long is measured: most are far below the cap.
  if (resource.length * 3 <= MAX_RESOURCE_BYTES) return;
  const bytes = Buffer.byteLength(resource);
  if (bytes > MAX_RESOURCE_BYTES) {
    throw new RangeError(
      `LockService.${method}: resource must be at most ${MAX_RESOURCE_BYTES} bytes (UTF-8), got ` +
        `${bytes} bytes: ${show(resource)} (hash long names yourself)`,
    );
  }
}

/** Options must be an object (or left out). */
export function checkOptions(method: string, options: unknown): void {
  if (options !== undefined && (options === null || typeof options !== 'object')) {
    throw new TypeError(`LockService.${method}: options must be an object, got ${show(options)}`);
  }
}

/** A value for an error message: never throws (BigInt, cycles), never long. */
export function show(value: unknown): string {
  let text: string;
  try {
    text =
      typeof value === 'string'
        ? JSON.stringify(value)
        : typeof value === 'bigint'
          ? `${value}n`
          : typeof value === 'number'
            ? String(value)
            : (JSON.stringify(value) ?? String(value));
  } catch {
    text = Object.prototype.toString.call(value);
  }
  return text.length > 64 ? `${text.slice(0, 64)}…` : text;
}

/** Positive, finite, at most 24 h; rounded up to a whole ms (Redis takes integers only). */
export function checkDuration(method: string, name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new RangeError(
      `${method}: ${name} must be a positive finite number of milliseconds, got ${show(value)}`,
    );
  }
  if (value > MAX_LOCK_DURATION_MS) {
    throw new RangeError(
      `${method}: ${name} must be at most ${MAX_LOCK_DURATION_MS} ms (24 h), got ${show(value)}`,
    );
  }
  return Math.ceil(value);
}
