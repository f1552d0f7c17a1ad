import { describeValue } from './describe.js';

/**
 * Shared argument checks, for the services and the toolkit alike. Each throws before anything
 * is sent to Redis: a `TypeError` for a value of the wrong type, a `RangeError` for a number
 * out of its documented range; the message names the parameter (and, where given, the method)
 * and shows the value.
 */

/** One year, in ms: the longest TTL (cache entries, grace, sessions, records) the module accepts. */
export const MAX_TTL_MS = 365 * 24 * 60 * 60 * 1000;

/**
 * The longest timer the module accepts, in ms (about 24.8 days): Node's `setTimeout` fires
 * at once, with a warning, for anything longer.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Where a check runs (`CacheService.set("k")`), for its message: a function when building the
 * text costs something (a key to describe), so that calls that pass never build it.
 */
export type Where = string | (() => string);

function whereText(where: Where): string {
  return typeof where === 'function' ? where() : where;
}

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
  where: Where,
  name: string,
  value: unknown,
  bounds: DurationBounds,
): number {
  return durationIn(() => `${whereText(where)}: ${name}`, value, bounds);
}

/**
 * A positive duration in ms up to `max`, rounded up to a whole ms, for a parameter named in
 * full (`withRetry initialDelay`): the toolkit's form of `checkDuration`.
 */
export function checkMs(value: unknown, parameter: string, max: number = MAX_TTL_MS): number {
  return durationIn(() => parameter, value, { min: 1, max });
}

function durationIn(label: () => string, value: unknown, bounds: DurationBounds): number {
  if (typeof value !== 'number') {
    throw new TypeError(`${label()} must be a number of milliseconds, got ${describeValue(value)}`);
  }
  const ms = Math.ceil(value);
  const ok = bounds.min === 0 ? value >= 0 : value > 0;
  if (!ok || !(ms <= bounds.max)) {
    throw new RangeError(
      `${label()} must be ${bounds.min === 0 ? 'from 0' : 'more than 0 and at most'} ` +
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
export function checkOptionsObject(where: Where, name: string, value: unknown): void {
  if (value === undefined) return;
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new TypeError(
      `${whereText(where)}: ${name} must be an object such as { ttl: 60000 }, got ${describeValue(value)}`,
    );
  }
}

/** A non-empty string of at most `max` characters. */
export function checkName(value: unknown, parameter: string, max = 1024): string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new TypeError(`${parameter} must be a non-empty string, got ${describeValue(value)}`);
  }
  if (value.length > max) {
    throw new RangeError(`${parameter} must be at most ${max} characters, got ${value.length}`);
  }
  return value;
}

/** An integer within `[min, max]`. */
export function checkInteger(value: unknown, parameter: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw new TypeError(`${parameter} must be an integer, got ${describeValue(value)}`);
  }
  if (value < min || value > max) {
    throw new RangeError(`${parameter} must be from ${min} to ${max}, got ${value}`);
  }
  return value;
}

/** A non-empty array of non-empty strings (key names of at most 64 KiB characters). */
export function checkKeys(value: unknown, parameter: string): string[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new TypeError(
      `${parameter} must be a non-empty array of key names, got ${describeValue(value)}`,
    );
  }
  value.forEach((key, i) => checkName(key, `${parameter}[${i}]`, 64 * 1024));
  return value as string[];
}
