import { MAX_TTL_MS } from '../common/checks.js';
import { RedisConfigError } from '../errors.js';

/** Defaults for `SessionService`. */
export interface RedisSessionModuleOptions {
  /**
   * Idle timeout: a session not touched for this long expires, in ms.
   * @defaultValue 1800000 (30 minutes)
   */
  ttl?: number;
  /**
   * Absolute lifetime: no amount of activity keeps a session alive past this, in ms.
   * @defaultValue 86400000 (24 hours)
   */
  absoluteTtl?: number;
  /**
   * Largest session accepted, in bytes: its data (property names and JSON values) plus its
   * `meta` as JSON. A `create` or `update` that would exceed it throws and writes nothing.
   * @defaultValue 65536 (64 KiB)
   */
  maxBytes?: number;
  /**
   * At most this many live sessions per user: creating one more ends the user's oldest
   * (earliest created) sessions in the same step. `null`: no limit.
   * @defaultValue null
   * @example 5
   */
  maxSessionsPerUser?: number | null;
}

/** Every default of `SessionService`; the option docs repeat them as `@defaultValue`. */
export const SESSION_DEFAULTS = {
  ttl: 30 * 60_000,
  absoluteTtl: 24 * 60 * 60_000,
  maxBytes: 64 * 1024,
  maxSessionsPerUser: null as number | null,
} as const;

/** The `session` options after defaults and validation. */
export interface ResolvedSessionOptions {
  /** Idle timeout, in ms. */
  ttl: number;
  /** Absolute lifetime, in ms. */
  absoluteTtl: number;
  /** Largest session, in bytes. */
  maxBytes: number;
  /** Live sessions per user; `null`: no limit. */
  maxSessionsPerUser: number | null;
}

/**
 * Validates the module's `session` option once, at startup. A bad value is a
 * `RedisConfigError` naming the option (`session.ttl`), the value and the unit expected.
 */
export function validateSessionOptions(value: unknown): ResolvedSessionOptions {
  if (
    value !== undefined &&
    (value === null || typeof value !== 'object' || Array.isArray(value))
  ) {
    throw new RedisConfigError(
      'session',
      value,
      '{ ttl?, absoluteTtl?, maxBytes?, maxSessionsPerUser? }',
    );
  }
  const s = (value ?? {}) as RedisSessionModuleOptions;
  return {
    ttl: duration(s.ttl, 'session.ttl', SESSION_DEFAULTS.ttl),
    absoluteTtl: duration(s.absoluteTtl, 'session.absoluteTtl', SESSION_DEFAULTS.absoluteTtl),
    maxBytes: positiveInteger(
      s.maxBytes ?? SESSION_DEFAULTS.maxBytes,
      'session.maxBytes',
      'a positive integer (bytes)',
    ),
    maxSessionsPerUser:
      s.maxSessionsPerUser === null
        ? null
        : s.maxSessionsPerUser === undefined
          ? SESSION_DEFAULTS.maxSessionsPerUser
          : positiveInteger(
              s.maxSessionsPerUser,
              'session.maxSessionsPerUser',
              'a positive integer, or null for no limit',
            ),
  };
}

/** A duration in ms, rounded up to a whole ms, at most `MAX_TTL_MS`. */
function duration(value: unknown, label: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new RedisConfigError(label, value, 'a positive number of milliseconds');
  }
  const ms = Math.ceil(value);
  if (ms > MAX_TTL_MS) {
    throw new RedisConfigError(label, ms, `at most ${MAX_TTL_MS} milliseconds (1 year)`);
  }
  return ms;
}

function positiveInteger(value: unknown, label: string, expected: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new RedisConfigError(label, value, expected);
  }
  return value;
}
