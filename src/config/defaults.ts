/**
 * Defaults of the connection target (and of the health probe's timeout); the connection
 * options' defaults are in `connection/connection.options.ts`, each capability's beside it.
 * The option docs repeat them as `@defaultValue`.
 */
export const DEFAULTS = {
  host: '127.0.0.1',
  port: 6379,
  db: 0,
  keyPrefix: '',
  sentinelFailoverDetector: true,
  healthTimeout: 1_000,
} as const;

/** The name of the connection registered without `name`. */
export const DEFAULT_CONNECTION_NAME = 'default';
