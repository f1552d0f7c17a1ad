/** Argument checks of the toolkit: each error names the parameter and shows the value. */

/** How a value looks in an error message: short, and never a whole megabyte of key. */
export function shown(value: unknown, max = 100): string {
  let text: string;
  if (typeof value === 'string') text = JSON.stringify(value);
  else if (typeof value === 'bigint') text = `${value}n`;
  else if (typeof value === 'function') text = '[function]';
  else if (typeof value === 'symbol') text = value.toString();
  else {
    try {
      text = JSON.stringify(value) ?? String(value);
    } catch {
      text = Object.prototype.toString.call(value);
    }
  }
  return text.length > max ? `${text.slice(0, max)}… (${text.length} characters)` : text;
}

/** A non-empty string of at most `max` characters. */
export function checkName(value: unknown, parameter: string, max = 1024): string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new TypeError(`${parameter} must be a non-empty string, got ${shown(value)}`);
  }
  if (value.length > max) {
    throw new RangeError(`${parameter} must be at most ${max} characters, got ${value.length}`);
  }
  return value;
}

/** An integer within `[min, max]`. */
export function checkInteger(value: unknown, parameter: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw new TypeError(`${parameter} must be an integer, got ${shown(value)}`);
  }
  if (value < min || value > max) {
    throw new RangeError(`${parameter} must be between ${min} and ${max}, got ${value}`);
  }
  return value;
}

/** Redis's largest millisecond TTL is far larger; a year is a bound no cache or record needs. */
export const MAX_TTL_MS = 365 * 24 * 3600 * 1000;

/** A duration in milliseconds: a positive integer up to `max` (rounded up from a fraction). */
export function checkDuration(value: unknown, parameter: string, max = MAX_TTL_MS): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new TypeError(
      `${parameter} must be a positive number of milliseconds, got ${shown(value)}`,
    );
  }
  const ms = Math.ceil(value);
  if (ms > max) {
    throw new RangeError(`${parameter} must be at most ${max} ms, got ${shown(value)}`);
  }
  return ms;
}

/** A non-empty array of non-empty strings. */
export function checkKeys(value: unknown, parameter: string): string[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new TypeError(`${parameter} must be a non-empty array of key names, got ${shown(value)}`);
  }
  value.forEach((key, i) => checkName(key, `${parameter}[${i}]`, 64 * 1024));
  return value as string[];
}
