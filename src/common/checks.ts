import { describeValue } from './describe.js';

/**
 * Shared argument checks. Each throws before anything is sent to Redis: a `TypeError` for a
 * value of the wrong type, a `RangeError` for a number out of its documented range; the
 * message names the method, the parameter and the value.
 */

/** One year, in ms: the longest TTL (cache entries, grace, sessions) the module accepts. */
export const MAX_TTL_MS = 365 * 24 * 60 * 60 * 1000;

/**
 * The longest timer the module accepts, in ms (about 24.8 days): Node's `setTimeout` fires
 * at once, with a warning, for anything longer.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Bounds of a duration: `min` 0 allows zero, 1 requires a positive value. */
export interface DurationBounds {
  min: 0 | 1;
  max: number;
}

/**
 * Checks a duration in ms and rounds it up to a whole ms (`0.2` is `1`, `1.5` is `2`): Redis
 * takes whole ms, and rounding up never makes an entry or a timeout shorter than asked.
 * `where` is the method (`CacheService.set`), `name` the parameter (`ttl`).
 */
export function checkDuration(
  where: string,
  name: string,
  value: unknown,
  bounds: DurationBounds,
): number {
  if (typeof value !== 'number') {
    throw new TypeError(
      `${where}: ${name} must be a number of milliseconds, got ${describeValue(value)}`,
    );
  }
  const ms = Math.ceil(value);
  const ok = bounds.min === 0 ? value >= 0 : value > 0;
  if (!ok || !(ms <= bounds.max)) {
    throw new RangeError(
      `${where}: ${name} must be ${bounds.min === 0 ? 'from 0' : 'more than 0 and at most'} ` +
        `${bounds.min === 0 ? 'to ' : ''}${bounds.max} milliseconds (${humanDuration(bounds.max)}), ` +
        `got ${describeValue(value)}`,
    );
  }
  return ms;
}

/** A plain-words reading of a bound, for messages. */
function humanDuration(ms: number): string {
  const day = 24 * 60 * 60 * 1000;
  const years = Math.floor(ms / (365 * day));
  if (years >= 1) return years === 1 ? '1 year' : `${years} years`;
  if (ms >= day) return `about ${Math.floor(ms / day)} days`;
  return `${Math.ceil(ms / 1000)} s`;
}

/** Checks an options argument: `undefined` or a plain object, never `null` or an array. */
export function checkOptionsObject(where: string, name: string, value: unknown): void {
  if (value === undefined) return;
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new TypeError(
      `${where}: ${name} must be an object such as { ttl: 60000 }, got ${describeValue(value)}`,
    );
  }
}
