import { RedisConfigError } from '../errors.js';

/*
 * Checks of module options at startup, shared by every capability's options file: each throws
 * a `RedisConfigError` that names the option (or the variable it came from), the value and
 * the unit of a valid value.
 */

/**
 * A duration option in ms: a positive finite number, rounded up to a whole ms, at most `max`.
 * `label` is the option path or the variable it came from.
 */
export function durationOption(
  value: unknown,
  label: string,
  fallback: number,
  max: number = Number.MAX_SAFE_INTEGER,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new RedisConfigError(label, value, 'a positive number of milliseconds');
  }
  const ms = Math.ceil(value);
  if (ms > max) throw new RedisConfigError(label, value, `at most ${max} milliseconds`);
  return ms;
}

/** An integer option within `[min, max]`, counted in `unit` (`connections`, `attempts`). */
export function integerOption(
  value: unknown,
  label: string,
  fallback: number,
  [min, max]: readonly [number, number],
  unit: string,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new RedisConfigError(label, value, `an integer from ${min} to ${max} (${unit})`);
  }
  return value;
}

/** A boolean option: `true` or `false`, nothing that merely looks like one. */
export function booleanOption(value: unknown, label: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new RedisConfigError(label, value, 'true or false');
  return value;
}
