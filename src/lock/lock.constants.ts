/** Metadata key of `@WithLock`, read once at startup by the default connection's `LockService`. */
export const WITH_LOCK_METADATA = 'nestjs-redis-infra:with-lock';

/** Metadata key of `@Leader`, read once at startup (the default connection's elections). */
export const LEADER_METADATA = 'nestjs-redis-infra:leader';
