import { RedisConfigError } from '../errors.js';

/**
 * Reconnect backoff: `min(maxDelay, initialDelay * factor^(attempt-1))`, then jittered. The
 * attempt count restarts whenever the connection is ready again, so the first attempts after a
 * healthy connection drops are the fast ones: with the defaults a restart that keeps Redis
 * away for 0.4 s is noticed within about 0.1 s of its end.
 */
export interface RedisRetryOptions {
  /**
   * Delay before the first reconnect attempt, in ms.
   * @defaultValue 50
   */
  initialDelay?: number;
  /**
   * Each delay is this many times the previous one (1 to 10). Gentler than doubling, so that
   * the gap between Redis coming back and the next attempt stays a fraction of the outage.
   * @defaultValue 1.5
   */
  factor?: number;
  /**
   * Upper bound of any single delay, in ms: how long, at most, a long outage keeps an instance
   * away after Redis is back.
   * @defaultValue 2000
   */
  maxDelay?: number;
  /**
   * Fraction of each delay that is randomised (0 = none, 1 = anywhere between 0 and the
   * delay), so that many instances do not reconnect in lock-step after an outage.
   * @defaultValue 0.5
   */
  jitter?: number;
  /**
   * Give up reconnecting after this many attempts in a row (`null`: never give up).
   * @defaultValue null
   */
  maxAttempts?: number | null;
}

/**
 * Retrying the command connection's idempotent commands after a timeout or a transient error
 * (option `retryOnTimeout`). See docs/connections.md for the commands it covers.
 */
export interface RedisRetryOnTimeoutOptions {
  /**
   * How many times a command is sent at most, the first time included (2 to 10).
   * @defaultValue 3
   */
  attempts?: number;
  /**
   * Delay before the second attempt, in ms; each later delay doubles, jittered.
   * @defaultValue 50
   */
  initialDelay?: number;
  /**
   * Upper bound of any single delay, in ms.
   * @defaultValue 1000
   */
  maxDelay?: number;
}

/** Every default of the reconnect and retry options; the option docs repeat them. */
export const CONNECTION_RETRY_DEFAULTS = {
  retry: {
    initialDelay: 50,
    factor: 1.5,
    maxDelay: 2_000,
    jitter: 0.5,
    maxAttempts: null as number | null,
  },
  retryOnTimeout: { attempts: 3, initialDelay: 50, maxDelay: 1_000 },
} as const;

/** `retryOnTimeout` after defaults and validation; `false`: off. */
export type ResolvedRetryOnTimeout = false | Required<RedisRetryOnTimeoutOptions>;

/** Longest first retry delay accepted, in ms (1 minute). */
const MAX_INITIAL_DELAY_MS = 60_000;
/** Longest retry delay accepted, in ms (10 minutes). */
const MAX_DELAY_MS = 600_000;

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

/** The reconnect backoff (`retry`), validated; errors name the option, the value and the unit. */
export function validateRetry(value: RedisRetryOptions | undefined): Required<RedisRetryOptions> {
  if (value !== undefined && (value === null || typeof value !== 'object')) {
    throw new RedisConfigError(
      'retry',
      value,
      '{ initialDelay?, factor?, maxDelay?, jitter?, maxAttempts? }',
    );
  }
  const d = CONNECTION_RETRY_DEFAULTS.retry;
  const r = value ?? {};
  const initialDelay = durationOption(r.initialDelay, 'retry.initialDelay', d.initialDelay);
  const maxDelay = durationOption(r.maxDelay, 'retry.maxDelay', d.maxDelay);
  if (maxDelay < initialDelay) {
    throw new RedisConfigError(
      'retry.maxDelay',
      maxDelay,
      `at least retry.initialDelay (${initialDelay} milliseconds)`,
    );
  }
  const factor = r.factor ?? d.factor;
  if (typeof factor !== 'number' || !(factor >= 1 && factor <= 10)) {
    throw new RedisConfigError('retry.factor', factor, 'a number from 1 to 10 (a multiplier)');
  }
  const jitter = r.jitter ?? d.jitter;
  if (typeof jitter !== 'number' || !(jitter >= 0 && jitter <= 1)) {
    throw new RedisConfigError(
      'retry.jitter',
      jitter,
      'a number from 0 to 1 (the randomised fraction of each delay)',
    );
  }
  const maxAttempts = r.maxAttempts === undefined ? d.maxAttempts : r.maxAttempts;
  if (maxAttempts !== null && (!Number.isInteger(maxAttempts) || maxAttempts < 1)) {
    throw new RedisConfigError(
      'retry.maxAttempts',
      maxAttempts,
      'a positive integer (attempts), or null for no limit',
    );
  }
  return { initialDelay, factor, maxDelay, jitter, maxAttempts };
}

/**
 * `retryOnTimeout`, validated. It needs `commandTimeout`: it turns off ioredis's blind resend of
 * unanswered commands after a reconnect, and without a bound such a command would wait forever.
 */
export function validateRetryOnTimeout(
  value: unknown,
  label: string,
  commandTimeout: number | undefined,
  commandTimeoutLabel: string,
): ResolvedRetryOnTimeout {
  if (value === undefined || value === false) return false;
  if (value !== true && (value === null || typeof value !== 'object' || Array.isArray(value))) {
    throw new RedisConfigError(
      label,
      value,
      'true, false or { attempts?, initialDelay?, maxDelay? }',
    );
  }
  if (commandTimeout === undefined) {
    throw new RedisConfigError(
      commandTimeoutLabel,
      undefined,
      `a positive number of milliseconds: ${label} retries commands that time out, and needs a bound`,
    );
  }
  const d = CONNECTION_RETRY_DEFAULTS.retryOnTimeout;
  const o = (value === true ? {} : value) as RedisRetryOnTimeoutOptions;
  const path = (key: string): string => (label.startsWith('REDIS_') ? key : `${label}.${key}`);
  const initialDelay = durationOption(
    o.initialDelay,
    path('initialDelay'),
    d.initialDelay,
    MAX_INITIAL_DELAY_MS,
  );
  const maxDelay = durationOption(o.maxDelay, path('maxDelay'), d.maxDelay, MAX_DELAY_MS);
  if (maxDelay < initialDelay) {
    throw new RedisConfigError(
      path('maxDelay'),
      maxDelay,
      `at least ${path('initialDelay')} (${initialDelay} milliseconds)`,
    );
  }
  return {
    attempts: integerOption(o.attempts, path('attempts'), d.attempts, [2, 10], 'attempts'),
    initialDelay,
    maxDelay,
  };
}
