/** Metadata key of `@OnRedisMessage`, read once at startup by `PubSubService`. */
export const ON_REDIS_MESSAGE_METADATA = 'nestjs-redis-infra:on-redis-message';

/**
 * Longest channel or pattern accepted, in bytes (prefix included). Redis takes far longer
 * names, but every message repeats the name on the wire and in every subscriber's lookup: a
 * name this long is almost always a payload passed by mistake.
 */
export const MAX_CHANNEL_BYTES = 1_024;
