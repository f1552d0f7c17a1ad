/** Metadata key of `@OnStreamMessage`, read once at startup by the default connection's `StreamsService`. */
export const ON_STREAM_MESSAGE_METADATA = 'nestjs-redis-infra:on-stream-message';
