import type { RedisOptions } from 'ioredis';

import { booleanOption, durationOption, integerOption } from '../common/option-checks.js';
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

/**
 * How the module's connections behave, whatever their target: timeouts, reconnects, retries,
 * bounds and write strategy. Part of `RedisModuleOptions`.
 */
export interface RedisConnectionOptions {
  /**
   * Name our connections give themselves (`CLIENT SETNAME`), followed by `:command`,
   * `:subscriber` or `:dedicated`, so they can be told apart in `CLIENT LIST`.
   * @defaultValue 'nestjs-redis-infra:<name>'
   * @example 'checkout-api'
   */
  connectionName?: string;
  /**
   * How long startup waits for the connection to be ready, in ms. Also the TCP connect
   * timeout of each attempt.
   * @defaultValue 5000
   */
  connectTimeout?: number;
  /**
   * Rejects a command that has no reply after this long, in ms (unset: wait).
   * Our services bound their own calls regardless.
   * @defaultValue undefined
   */
  commandTimeout?: number;
  /**
   * Retry the command connection's idempotent commands (reads such as `GET`, `HGETALL`,
   * `MGET`; writes that give the same reply when repeated, such as plain `SET`, `PEXPIRE`)
   * that timed out (`commandTimeout`) or met a transient error (`LOADING`, `TRYAGAIN`,
   * `CLUSTERDOWN`, `MASTERDOWN`, a reset), with bounded attempts and jittered backoff. Other
   * commands (`INCR`, `LPUSH`, `EVAL`, `SET ... NX`) are never sent twice: with this on,
   * ioredis's own resend of unanswered commands after a reconnect is turned off too, so an
   * unanswered non-idempotent command fails with "Command timed out" instead of running again.
   * Needs `commandTimeout`. `true` means `{ attempts: 3, initialDelay: 50, maxDelay: 1000 }`.
   * @defaultValue false
   * @example { attempts: 4 }
   */
  retryOnTimeout?: boolean | RedisRetryOnTimeoutOptions;
  /**
   * `false`: startup waits for Redis and fails with a `RedisConnectionError` when it cannot
   * connect. `true`: the app boots at once and connects in the background.
   * @defaultValue false
   */
  lazyConnect?: boolean;
  /** Reconnect backoff with jitter and a cap. */
  retry?: RedisRetryOptions;
  /**
   * Upper bound on the connections this registration opens: the command connection, the
   * subscriber connection (opened on first subscribe) and dedicated connections for
   * blocking commands.
   * @defaultValue 10
   */
  maxConnections?: number;
  /**
   * How long shutdown waits for in-flight commands before closing sockets anyway, in ms.
   * @defaultValue 2000
   */
  shutdownTimeout?: number;
  /**
   * Batch commands issued in the same tick into one write. Off by default: measured on
   * loopback it is 1.4-1.7x faster at 64 commands in flight but 18-25% slower for awaited,
   * sequential commands, and pays off only from about 8 in flight (see bench/).
   * @defaultValue false
   */
  autoPipelining?: boolean;
  /**
   * Send the commands written in one tick in one system call (cork the socket, uncork on
   * `process.nextTick`). Unlike `autoPipelining` it costs sequential commands nothing
   * measurable, and with many commands in flight it is the larger gain (see bench/).
   * @defaultValue true
   */
  coalesceWrites?: boolean;
  /**
   * RESP protocol version (3 needs Redis 6+; use 2 behind proxies that do not speak it).
   * @defaultValue 3 (ioredis 6's own default; measured no faster or slower than 2, see bench/)
   */
  protocol?: 2 | 3;
  /** Passed through to ioredis; our settings above win where both are set. */
  redisOptions?: RedisOptions;
}

/** Every default of the connection options; the option docs repeat them as `@defaultValue`. */
export const CONNECTION_DEFAULTS = {
  connectTimeout: 5_000,
  lazyConnect: false,
  maxConnections: 10,
  shutdownTimeout: 2_000,
  autoPipelining: false,
  coalesceWrites: true,
  protocol: 3 as 2 | 3,
  /** How long a dedicated connection may sit idle before it is closed, in ms. */
  dedicatedIdleMs: 30_000,
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

/** The reconnect backoff (`retry`), validated; errors name the option, the value and the unit. */
export function validateRetry(value: RedisRetryOptions | undefined): Required<RedisRetryOptions> {
  if (value !== undefined && (value === null || typeof value !== 'object')) {
    throw new RedisConfigError(
      'retry',
      value,
      '{ initialDelay?, factor?, maxDelay?, jitter?, maxAttempts? }',
    );
  }
  const d = CONNECTION_DEFAULTS.retry;
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
  const d = CONNECTION_DEFAULTS.retryOnTimeout;
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

/** The connection options after defaults and validation. */
export interface ResolvedConnectionOptions {
  /** `CLIENT SETNAME` prefix of our connections. */
  connectionName: string;
  connectTimeout: number;
  commandTimeout?: number;
  /** Retrying idempotent commands of the command connection; `false`: off. */
  retryOnTimeout: ResolvedRetryOnTimeout;
  lazyConnect: boolean;
  retry: Required<RedisRetryOptions>;
  maxConnections: number;
  shutdownTimeout: number;
  autoPipelining: boolean;
  coalesceWrites: boolean;
  protocol: 2 | 3;
  redisOptions: RedisOptions;
}

/**
 * Validates the connection options of one registration (`name`), once, at startup. `label`
 * turns an option path into what the user set: the option, or the `REDIS_*` variable it came
 * from. Every error names it, the value and the unit.
 */
export function validateConnectionOptions(
  o: RedisConnectionOptions,
  name: string,
  label: (path: string) => string = (path) => path,
  commandTimeoutVariable?: string,
): ResolvedConnectionOptions {
  const connectionName = o.connectionName ?? `nestjs-redis-infra:${name}`;
  if (typeof connectionName !== 'string' || !/^\S+$/.test(connectionName)) {
    throw new RedisConfigError(
      label('connectionName'),
      connectionName,
      'a non-empty string without spaces',
    );
  }
  const commandTimeout =
    o.commandTimeout === undefined
      ? undefined
      : durationOption(o.commandTimeout, label('commandTimeout'), 0);
  if (
    o.redisOptions !== undefined &&
    (o.redisOptions === null || typeof o.redisOptions !== 'object')
  ) {
    throw new RedisConfigError('redisOptions', o.redisOptions, 'an ioredis options object');
  }
  const protocol = o.protocol ?? CONNECTION_DEFAULTS.protocol;
  if (protocol !== 2 && protocol !== 3) {
    throw new RedisConfigError('protocol', protocol, '2 or 3 (the RESP protocol version)');
  }
  return {
    connectionName,
    connectTimeout: durationOption(
      o.connectTimeout,
      label('connectTimeout'),
      CONNECTION_DEFAULTS.connectTimeout,
    ),
    commandTimeout,
    retryOnTimeout: validateRetryOnTimeout(
      o.retryOnTimeout,
      label('retryOnTimeout'),
      commandTimeout,
      commandTimeoutVariable ?? label('commandTimeout'),
    ),
    lazyConnect: booleanOption(o.lazyConnect, 'lazyConnect', CONNECTION_DEFAULTS.lazyConnect),
    retry: validateRetry(o.retry),
    maxConnections: integerOption(
      o.maxConnections,
      label('maxConnections'),
      CONNECTION_DEFAULTS.maxConnections,
      [1, 10_000],
      'connections',
    ),
    shutdownTimeout: durationOption(
      o.shutdownTimeout,
      label('shutdownTimeout'),
      CONNECTION_DEFAULTS.shutdownTimeout,
    ),
    autoPipelining: booleanOption(
      o.autoPipelining,
      'autoPipelining',
      CONNECTION_DEFAULTS.autoPipelining,
    ),
    coalesceWrites: booleanOption(
      o.coalesceWrites,
      'coalesceWrites',
      CONNECTION_DEFAULTS.coalesceWrites,
    ),
    protocol,
    redisOptions: o.redisOptions ?? {},
  };
}
