/** Every default of the module in one place; the option docs repeat them as `@defaultValue`. */
export const DEFAULTS = {
  host: '127.0.0.1',
  port: 6379,
  db: 0,
  keyPrefix: '',
  connectTimeout: 5_000,
  lazyConnect: false,
  maxConnections: 10,
  shutdownTimeout: 2_000,
  autoPipelining: false,
  coalesceWrites: true,
  protocol: 3 as 2 | 3,
  retry: {
    initialDelay: 50,
    factor: 1.5,
    maxDelay: 2_000,
    jitter: 0.5,
    maxAttempts: null as number | null,
  },
  sentinelFailoverDetector: true,
  session: {
    ttl: 30 * 60_000,
    absoluteTtl: 24 * 60 * 60_000,
    maxBytes: 64 * 1024,
    maxSessionsPerUser: null as number | null,
  },
  lock: {
    ttl: 30_000,
    wait: 10_000,
    retryInterval: 250,
    extendMargin: 200,
    replicas: 0,
    replicaTimeout: 500,
  },
  /** How long a dedicated connection may sit idle before it is closed. */
  dedicatedIdleMs: 30_000,
  healthTimeout: 1_000,
} as const;

/** The name of the connection registered without `name`. */
export const DEFAULT_CONNECTION_NAME = 'default';
