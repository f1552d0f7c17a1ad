import { describeKey } from './common/describe.js';

/**
 * Stable error codes. Match on `error.code`, never on the message text: messages are for
 * people and may be reworded, codes are part of the public surface.
 */
export type RedisInfraErrorCode =
  | 'REDIS_CONFIG_INVALID'
  | 'REDIS_CONNECTION_FAILED'
  | 'REDIS_LOCK_NOT_ACQUIRED'
  | 'REDIS_LOCK_LOST'
  | 'REDIS_CACHE_LOADER_TIMEOUT'
  | 'REDIS_CROSSSLOT'
  | 'REDIS_TRANSACTION_CONFLICT'
  | 'REDIS_SCRIPT_FAILED'
  | 'REDIS_PERMISSION_DENIED'
  | RedisSessionErrorCode;

/** Base class of every error this package throws on purpose. */
export abstract class RedisInfraError extends Error {
  /** A stable, machine-readable code for this failure mode. */
  abstract readonly code: RedisInfraErrorCode;

  protected constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * An option or environment variable has a value we cannot use. Thrown once, at startup,
 * before any connection is attempted. `option` names the option or variable exactly as the
 * user wrote it (`port`, `REDIS_PORT`, `sentinel.name`); `value` is what was given, with
 * passwords already replaced by `***`.
 */
export class RedisConfigError extends RedisInfraError {
  readonly code = 'REDIS_CONFIG_INVALID' as const;

  constructor(
    /** The option (`port`, `cluster.nodes[1]`) or environment variable (`REDIS_PORT`). */
    readonly option: string,
    /** The offending value, redacted when it carries a password. */
    readonly value: unknown,
    /** What a valid value looks like. */
    readonly expected: string,
  ) {
    super(
      `Invalid Redis configuration: ${option} = ${formatValue(value)}; expected ${expected}. ` +
        `Fix ${option} and restart.`,
    );
  }
}

/**
 * A connection could not be opened (at startup, or when a dedicated connection was
 * requested). `address` never contains a password.
 */
export class RedisConnectionError extends RedisInfraError {
  readonly code = 'REDIS_CONNECTION_FAILED' as const;

  constructor(
    /** The connection's name (`default` unless `forRoot({ name })` said otherwise). */
    readonly connectionName: string,
    /** Where we tried to connect, password redacted. */
    readonly address: string,
    reason: string,
    options?: { cause?: unknown; hint?: string },
  ) {
    super(
      `Redis connection "${connectionName}" to ${address} failed: ${reason}. ` +
        (options?.hint ??
          'Check that Redis is running and reachable from this host, and that the address, ' +
            'credentials and TLS settings are right (or set lazyConnect: true to boot without it).'),
      { cause: options?.cause },
    );
  }
}

/** `LockService.acquire` gave up: the resource stayed locked for the whole `wait`. */
export class LockNotAcquiredError extends RedisInfraError {
  readonly code = 'REDIS_LOCK_NOT_ACQUIRED' as const;

  constructor(
    /** The resource that stayed locked. */
    readonly resource: string,
    /** How long we waited, in milliseconds. */
    readonly waitedMs: number,
    options?: { cause?: unknown; reason?: string },
  ) {
    super(
      `Lock on "${resource}" not acquired after waiting ${Math.round(waitedMs)} ms` +
        (options?.reason ? ` (${options.reason})` : '') +
        '. Another owner holds it: raise `wait`, or use tryAcquire() to skip the work instead.',
      { cause: options?.cause },
    );
  }
}

/**
 * A lock was lost before the critical section ended (it expired, was deleted, or another
 * owner took it), so the work done under it was not exclusive.
 */
export class LockLostError extends RedisInfraError {
  readonly code = 'REDIS_LOCK_LOST' as const;

  constructor(
    /** The resource whose lock was lost. */
    readonly resource: string,
    /** The fencing token the lost lock carried. */
    readonly fencingToken: number,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(
      `Lock on "${resource}" (fencing token ${fencingToken}) was lost before the critical ` +
        `section finished: ${reason}. The work was not exclusive; make it idempotent or check ` +
        'the fencing token where it writes, and raise `ttl` if the work is slow.',
      { cause: options?.cause },
    );
  }
}

/**
 * `CacheService.getOrSet`: the loader ran past `hardTimeout` and there was no stale value to
 * fall back on. The loader's `signal` was aborted.
 */
export class CacheLoaderTimeoutError extends RedisInfraError {
  readonly code = 'REDIS_CACHE_LOADER_TIMEOUT' as const;

  constructor(
    /** The cache key being loaded. */
    readonly key: string,
    /** The `hardTimeout` that passed, in ms. */
    readonly timeoutMs: number,
  ) {
    super(
      `Cache loader for ${describeKey(key)} did not finish within hardTimeout (${timeoutMs} ms) and no stale ` +
        'value was available. Make the loader faster, raise hardTimeout, or set grace so a stale value can be served.',
    );
  }
}

/**
 * Keys that must share one cluster hash slot (a script's or a transaction's keys) do not.
 * Thrown before anything is sent, on a cluster only.
 */
export class RedisCrossSlotError extends RedisInfraError {
  readonly code = 'REDIS_CROSSSLOT' as const;

  constructor(
    /** What needed one slot (`script "transfer"`, `transaction`). */
    readonly operation: string,
    /** The keys, by slot. */
    readonly slots: ReadonlyMap<number, readonly string[]>,
  ) {
    const list = [...slots]
      .map(([slot, keys]) => `slot ${slot}: ${keys.map((k) => formatValue(k, 60)).join(', ')}`)
      .join('; ');
    super(
      `The keys of ${operation} hash to ${slots.size} cluster slots (${list.slice(0, 600)}). ` +
        'Tag them so they hash to one slot: put the part they share in braces, e.g. ' +
        '"{order:42}:items" and "{order:42}:total".',
    );
  }
}

/** `RedisService.transaction`: the watched keys kept changing for every attempt. */
export class RedisTransactionConflictError extends RedisInfraError {
  readonly code = 'REDIS_TRANSACTION_CONFLICT' as const;

  constructor(
    /** The watched keys. */
    readonly keys: readonly string[],
    /** How many times the transaction ran. */
    readonly attempts: number,
  ) {
    super(
      `Transaction on ${keys.map((k) => formatValue(k, 60)).join(', ')} was aborted by a ` +
        `concurrent change ${attempts} times in a row. Raise \`attempts\`, or make fewer ` +
        'writers touch the same keys.',
    );
  }
}

/** A script defined with `RedisService.defineScript` failed on the server. */
export class RedisScriptError extends RedisInfraError {
  readonly code = 'REDIS_SCRIPT_FAILED' as const;

  constructor(
    /** The script's name. */
    readonly script: string,
    options: { cause: unknown },
  ) {
    const reason = options.cause instanceof Error ? options.cause.message : String(options.cause);
    super(`Redis script "${script}" failed: ${reason.slice(0, 500)}`, options);
  }
}

/**
 * The Redis ACL user refused a command the module needed (`NOPERM`): e.g. `INFO`, which
 * `-@dangerous` removes, for `RedisService.info()`/`stats()`. Retrying cannot help; the user's
 * rights must change (see docs/acl.md).
 */
export class RedisPermissionError extends RedisInfraError {
  readonly code = 'REDIS_PERMISSION_DENIED' as const;

  constructor(
    /** The connection's name (`default` unless `forRoot({ name })` said otherwise). */
    readonly connectionName: string,
    /** The command refused, upper case (`INFO`). */
    readonly command: string,
    /** The ACL rule that would allow it (`+info`). */
    readonly permission: string,
    /** What needed it (`RedisService.stats()`). */
    readonly operation: string,
    options?: { cause?: unknown },
  ) {
    super(
      `${operation} needs the Redis ACL permission ${permission} (command ${command}), which the ` +
        `user of connection "${connectionName}" lacks. Grant it (ACL SETUSER <user> ${permission}) ` +
        'or do without this call.',
      { cause: options?.cause },
    );
  }
}

function formatValue(value: unknown, max = 200): string {
  const text = formatFull(value);
  return text.length > max ? `${text.slice(0, max)}… (${text.length} characters)` : text;
}

function formatFull(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) {
    return String(value);
  }
  try {
    // JSON.stringify gives undefined only for functions and symbols, whose String() is meaningful.
    // eslint-disable-next-line @typescript-eslint/no-base-to-string -- see above
    return JSON.stringify(value) ?? String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/** The failure modes of `SessionService` and `RedisSessionStore` (see `RedisSessionError`). */
export type RedisSessionErrorCode =
  /** A function `update` kept losing to concurrent writers of the same session. */
  | 'REDIS_SESSION_CONFLICT'
  /** Fresh session ids kept colliding with existing keys: something else writes under `sess:`. */
  | 'REDIS_SESSION_ID_COLLISION'
  /** `RedisSessionStore` is wired wrongly (no session middleware, no `genid`, two instances). */
  | 'REDIS_SESSION_STORE_SETUP';

/**
 * A session operation failed for a reason other than a bad argument (those are `TypeError` and
 * `RangeError`, as everywhere in this package). `code` says which; the message says what to do.
 */
export class RedisSessionError extends RedisInfraError {
  constructor(
    /** Which failure: see `RedisSessionErrorCode`. */
    readonly code: RedisSessionErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
