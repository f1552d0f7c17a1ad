export { RedisModule } from './redis.module.js';
export type {
  RedisModuleAsyncOptions,
  RedisModuleForRootOptions,
  RedisOptionsFactory,
} from './redis.module.js';
export type {
  RedisCacheModuleOptions,
  RedisCacheL1Options,
  RedisClusterOptions,
  RedisConnectionOptions,
  RedisConnectionTarget,
  RedisLockModuleOptions,
  RedisModuleExtras,
  RedisModuleOptions,
  RedisNodeAddress,
  RedisPubSubModuleOptions,
  RedisRetryOnTimeoutOptions,
  RedisRetryOptions,
  RedisSentinelOptions,
  RedisSessionModuleOptions,
} from './redis-module.options.js';
export {
  getCacheServiceToken,
  getLockServiceToken,
  getPresenceServiceToken,
  getPubSubServiceToken,
  getRedisBullMqToken,
  getRedisHealthIndicatorToken,
  getRedisServiceToken,
  getRedisToken,
  getSessionServiceToken,
  getStreamsServiceToken,
  InjectCacheService,
  InjectLockService,
  InjectPresenceService,
  InjectPubSubService,
  InjectRedis,
  InjectRedisBullMq,
  InjectRedisHealthIndicator,
  InjectRedisService,
  InjectSessionService,
  InjectStreamsService,
} from './connection/tokens.js';
export type { RedisClient } from './connection/client-factory.js';
export { RedisService } from './redis.service.js';
export type { RedisScanOptions, RedisStats } from './redis.service.js';
export type {
  RedisInfo,
  RedisInfoFields,
  RedisInfoSections,
  RedisInfoValue,
  RedisKeyspaceInfo,
} from './redis-info.js';
export { RedisHealthIndicator } from './health/redis-health.indicator.js';
export type {
  RedisHealthCheckOptions,
  RedisHealthDetails,
  RedisHealthIndicatorResult,
} from './health/redis-health.indicator.js';
export { RedisAlerts, REDIS_ALERT_RAISED, REDIS_ALERT_RESOLVED } from './health/redis-alerts.js';
export type { RedisAlert, RedisAlertListener } from './health/redis-alerts.js';
export type {
  RedisEvictionPolicyRequirement,
  RedisHealthCheckName,
  RedisHealthThresholds,
} from './health/thresholds.js';
export { CacheService } from './cache/cache.service.js';
export type {
  CacheEvictedEvent,
  CacheEvictedHandler,
  CacheEvictedOptions,
  CacheGetOrSetOptions,
  CacheLoader,
  CacheLoaderContext,
  CacheSetOptions,
  CacheStats,
} from './cache/cache.service.js';
export { Cacheable, CacheEvict } from './cache/cache.decorators.js';
export type { CacheTags } from './cache/cache.decorators.js';
export type { CacheSerializer } from './cache/serializer.js';
export { SessionService } from './session/session.service.js';
export type {
  CreateSessionOptions,
  DestroyAllSessionsOptions,
  DestroySessionOptions,
  Session,
  SessionData,
  SessionMeta,
  SessionSummary,
  SessionUpdate,
} from './session/session.service.js';
export type { ExpiredSession, SessionExpiredHandler } from './session/session.service.js';
export { LockService } from './lock/lock.service.js';
export type {
  AcquireLockOptions,
  LockInfo,
  TryAcquireLockOptions,
  WithLockOptions,
} from './lock/lock.service.js';
export type { Lock } from './lock/lock.js';
export type { LockStats } from './lock/lock-stats.js';
export { WithLock } from './lock/with-lock.decorator.js';
export type { LockResource } from './lock/with-lock.decorator.js';
export type { Lease, Permit, ReadLock, WriteLock } from './lock/lease.js';
export type {
  AcquirePermitOptions,
  Semaphore,
  SemaphoreOptions,
  TryAcquirePermitOptions,
  WithPermitOptions,
} from './lock/semaphore.js';
export type {
  AcquireReadWriteOptions,
  ReadWriteLock,
  ReadWriteLockOptions,
  TryAcquireReadWriteOptions,
  WithReadWriteOptions,
} from './lock/read-write-lock.js';
export type { LeaderElection, LeaderOptions, LeadershipChange } from './lock/leader.js';
export { Leader } from './lock/leader.decorator.js';
export { PubSubService } from './pubsub/pubsub.service.js';
export type {
  KeyEvent,
  KeyEventHandler,
  KeyEventOptions,
  KeyEventSubscription,
  MessagesOptions,
  PublishOptions,
  PubSubEvent,
  PubSubGap,
  PubSubHandler,
  PubSubMessage,
  PubSubMessageContext,
  PubSubSource,
  PubSubStats,
  SubscribeOptions,
  Unsubscribe,
} from './pubsub/pubsub.types.js';
export type { KeyEventName } from './pubsub/keyspace.js';
export { OnRedisMessage } from './pubsub/on-redis-message.decorator.js';
export type { OnRedisMessageOptions } from './pubsub/on-redis-message.decorator.js';
export type {
  DiagnosticsOptions,
  DiagnosticsProbeError,
  LatencyEvent,
  NodeDiagnostics,
  RedisDiagnostics,
  SlowlogEntry,
} from './diagnostics/diagnostics.js';
export { PresenceService, PresenceSpace } from './presence/presence.service.js';
export type {
  HeartbeatOptions,
  PresenceChange,
  PresenceEntry,
  PresenceFields,
  PresenceListOptions,
  PresenceWatchOptions,
} from './presence/presence.service.js';
export { OnStreamMessage, StreamProducer, StreamsService } from './streams/streams.service.js';
export type { StreamAddOptions } from './streams/streams.service.js';
export { StreamConsumer } from './streams/stream-consumer.js';
export type {
  StreamBacklog,
  StreamConsumerOptions,
  StreamCounters,
  StreamHandler,
  StreamMessageContext,
  StreamStats,
} from './streams/stream-consumer.js';
export { withRetry, isTransientRedisError } from './toolkit/retry.js';
export type { RetryOptions } from './toolkit/retry.js';
export { DefinedScript } from './toolkit/script.js';
export type { DefineScriptOptions, ScriptArg } from './toolkit/script.js';
export type { TransactionFn, TransactionOptions } from './toolkit/transaction.js';
export type { BatchCommand, BatchResult } from './toolkit/batch.js';
export { RedisRecords } from './toolkit/records.js';
export type { RecordShape, RecordValue, RecordsOptions } from './toolkit/records.js';
export { ShardedCounter } from './toolkit/counter.js';
export type { CounterOptions } from './toolkit/counter.js';
export { RedisBullMq } from './bullmq/redis-bullmq.js';
export type { RedisBullMqOptions } from './bullmq/redis-bullmq.js';
export {
  CacheLoaderTimeoutError,
  LockLostError,
  LockNotAcquiredError,
  RedisConfigError,
  RedisConnectionError,
  RedisCrossSlotError,
  RedisInfraError,
  RedisPermissionError,
  RedisScriptError,
  RedisTransactionConflictError,
} from './errors.js';
export type { RedisInfraErrorCode } from './errors.js';
export { RedisSessionError } from './errors.js';
export type { RedisSessionErrorCode } from './errors.js';
export { RedisDashboardModule } from './dashboard/redis-dashboard.module.js';
export type { RedisDashboardOptions } from './dashboard/redis-dashboard.module.js';
export type { RedisTraceContext, RedisTraceName } from './telemetry/tracing.js';
