import { RedisConfigError } from '../errors.js';

/**
 * The longest lock TTL, wait or module lock duration the module accepts, in ms (24 h): a lock
 * meant to outlive a day is a configuration mistake, and the bound keeps every timer in range.
 */
export const MAX_LOCK_DURATION_MS = 24 * 60 * 60_000;

/** The most replicas `lock.replicas` may ask to acknowledge (`WAIT`'s count). */
export const MAX_LOCK_REPLICAS = 1_000;

/** Defaults for `LockService`. */
export interface RedisLockModuleOptions {
  /**
   * Lock time to live when a call gives none, in ms (at most 24 h).
   * @defaultValue 30000
   */
  ttl?: number;
  /**
   * How long `acquire` and `withLock` wait for a taken lock when a call gives no `wait`, in ms
   * (at most 24 h).
   * @defaultValue 10000
   */
  wait?: number;
  /**
   * While waiting, a release wakes waiters at once (pub/sub); this jittered poll is only the
   * fallback for a lost notification or a holder that died, in ms.
   * @defaultValue 250
   */
  retryInterval?: number;
  /**
   * Auto-extension renews a lock when this much of its TTL is left (or a third of it, if more),
   * in ms. A `withLock` TTL must be longer, or the lock would expire before it could be renewed.
   * @defaultValue 200
   */
  extendMargin?: number;
  /**
   * After acquiring, wait until this many replicas have the lock (`WAIT`), so a failover right
   * after acquisition does not hand the lock to a second owner. Costs a replication round trip
   * per acquisition; an acquisition that is not acknowledged in time is undone and retried.
   * A whole number from 0 to 1000.
   * @defaultValue 0
   */
  replicas?: number;
  /**
   * How long `WAIT` may take for `replicas` acknowledgements, in ms.
   * @defaultValue 500
   */
  replicaTimeout?: number;
  /**
   * This process's label as a lock holder, shown by `LockService.inspect` (1-256 characters).
   * @defaultValue `<hostname>:<pid>`
   * @example 'billing-worker-3'
   */
  holderId?: string;
}

/** Every default of `LockService`; the option docs repeat them as `@defaultValue`. */
export const LOCK_DEFAULTS = {
  ttl: 30_000,
  wait: 10_000,
  retryInterval: 250,
  extendMargin: 200,
  replicas: 0,
  replicaTimeout: 500,
} as const;

/** The `lock` options after defaults and validation. */
export interface ResolvedLockOptions {
  ttl: number;
  wait: number;
  retryInterval: number;
  extendMargin: number;
  replicas: number;
  replicaTimeout: number;
  /** Label of this process's lock holders (`LockService.inspect`); undefined: host:pid. */
  holderId?: string;
}

/**
 * Validates the module's `lock` option once, at startup. A `RedisConfigError` names the
 * option (`lock.ttl`), the value and what is expected, with its unit.
 */
export function validateLockOptions(value: unknown): ResolvedLockOptions {
  if (value !== undefined && (value === null || typeof value !== 'object')) {
    throw new RedisConfigError(
      'lock',
      value,
      '{ ttl?, wait?, retryInterval?, extendMargin?, replicas?, replicaTimeout?, holderId? }',
    );
  }
  const l = (value ?? {}) as RedisLockModuleOptions;
  const ttl = duration(l.ttl, 'lock.ttl', LOCK_DEFAULTS.ttl);
  const extendMargin = duration(l.extendMargin, 'lock.extendMargin', LOCK_DEFAULTS.extendMargin);
  if (ttl <= extendMargin) {
    throw new RedisConfigError(
      'lock.ttl',
      ttl,
      `more than lock.extendMargin (${extendMargin} milliseconds)`,
    );
  }
  const replicas = l.replicas ?? LOCK_DEFAULTS.replicas;
  if (
    typeof replicas !== 'number' ||
    !Number.isInteger(replicas) ||
    replicas < 0 ||
    replicas > MAX_LOCK_REPLICAS
  ) {
    throw new RedisConfigError(
      'lock.replicas',
      replicas,
      `a whole number of replicas from 0 to ${MAX_LOCK_REPLICAS}`,
    );
  }
  if (
    l.holderId !== undefined &&
    (typeof l.holderId !== 'string' || l.holderId.length === 0 || l.holderId.length > 256)
  ) {
    throw new RedisConfigError('lock.holderId', l.holderId, 'a string of 1-256 characters');
  }
  return {
    ...(l.holderId !== undefined ? { holderId: l.holderId } : {}),
    ttl,
    wait: duration(l.wait, 'lock.wait', LOCK_DEFAULTS.wait),
    retryInterval: duration(l.retryInterval, 'lock.retryInterval', LOCK_DEFAULTS.retryInterval),
    extendMargin,
    replicas,
    replicaTimeout: duration(l.replicaTimeout, 'lock.replicaTimeout', LOCK_DEFAULTS.replicaTimeout),
  };
}

/** A positive duration in ms up to `MAX_LOCK_DURATION_MS`, rounded up to a whole ms. */
function duration(value: unknown, label: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new RedisConfigError(label, value, 'a positive number of milliseconds');
  }
  if (value > MAX_LOCK_DURATION_MS) {
    throw new RedisConfigError(
      label,
      value,
      `at most ${MAX_LOCK_DURATION_MS} milliseconds (24 hours)`,
    );
  }
  return Math.ceil(value);
}
