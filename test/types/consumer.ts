/**
 * Compiled (never run) by `npm test` against the emitted `dist/*.d.ts`, the way an application
 * sees the package: through its own name and `exports` map, with `skipLibCheck: false`.
 */
import { Controller, Get, Injectable, Module } from '@nestjs/common';
import { ConfigModule, ConfigService } from '@nestjs/config';
import {
  HealthCheck,
  HealthCheckService,
  TerminusModule,
  type HealthCheckResult,
} from '@nestjs/terminus';
import type { Cluster, Redis } from 'ioredis';

import {
  getRedisToken,
  InjectRedis,
  LockLostError,
  LockNotAcquiredError,
  RedisConfigError,
  RedisConnectionError,
  RedisHealthIndicator,
  RedisModule,
  RedisService,
  StreamsService,
  type RedisCacheL1Options,
  type RedisConnectionOptions,
  type RedisConnectionTarget,
  type RedisHealthIndicatorResult,
  type RedisInfo,
  type RedisModuleOptions,
  type RedisRetryOnTimeoutOptions,
  type RedisStats,
  type StreamBacklog,
  type StreamCounters,
} from 'nestjs-redis-infra';

// The option groups a module of the application's own can build and pass on, piece by piece.
const target: RedisConnectionTarget = { url: 'redis://127.0.0.1:6379' };
const retryOnTimeout: RedisRetryOnTimeoutOptions = { attempts: 3, initialDelay: 50 };
const connection: RedisConnectionOptions = { commandTimeout: 500, retryOnTimeout };
const l1: RedisCacheL1Options = { maxEntries: 1_000 };
export const composed: RedisModuleOptions = { ...target, ...connection, cache: { l1 } };

@Injectable()
export class ProductService {
  constructor(
    @InjectRedis() private readonly redis: Redis | Cluster,
    @InjectRedis('analytics') private readonly analytics: Redis,
    private readonly service: RedisService,
  ) {}

  async read(): Promise<[string | null, number, RedisInfo, RedisStats]> {
    const value = await this.redis.get('k');
    const latency: number = await this.service.ping();
    const info = await this.service.info('memory');
    const used: number | undefined = info.memory?.used_memory;
    void used;
    await this.analytics.incr('visits');
    for await (const key of this.service.scan('p:*', { count: 10 })) {
      const k: string = key;
      void k;
    }
    const removed: number = await this.service.unlinkByPattern('p:*');
    void removed;
    return [value, latency, info, await this.service.stats()];
  }
}

@Controller('health')
export class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly redis: RedisHealthIndicator,
  ) {}

  @Get()
  @HealthCheck()
  check(): Promise<HealthCheckResult> {
    return this.health.check([
      () => this.redis.isHealthy('redis', { timeout: 500, maxLatency: 50, maxMemoryRatio: 0.9 }),
      () => this.redis.isHealthy('analytics', { connection: 'analytics' }),
    ]);
  }
}

export async function typed(indicator: RedisHealthIndicator): Promise<'up' | 'down'> {
  const result: RedisHealthIndicatorResult<'cache'> = await indicator.isHealthy('cache');
  return result.cache.status;
}

const options: RedisModuleOptions = {
  url: 'redis://localhost:6379',
  keyPrefix: 'shop:',
  retry: { initialDelay: 100, maxDelay: 2000, jitter: 0.5 },
  cache: { ttl: 1000 },
};

@Module({
  imports: [
    ConfigModule.forRoot(),
    RedisModule.forRoot(options),
    RedisModule.forRoot({ name: 'analytics', url: 'redis://localhost:6380', isGlobal: true }),
    RedisModule.forRootAsync({
      name: 'third',
      inject: [ConfigService],
      useFactory: (config: ConfigService): RedisModuleOptions => ({ url: config.get('REDIS_URL') }),
    }),
    TerminusModule,
  ],
  controllers: [HealthController],
  providers: [ProductService],
})
export class AppModule {}

export const tokens: symbol[] = [getRedisToken(), getRedisToken('analytics')];
export const codes = [
  new RedisConfigError('port', 'abc', 'a port').code,
  new RedisConnectionError('default', 'redis://x', 'down').code,
  new LockNotAcquiredError('r', 10).code,
  new LockLostError('r', 1, 'expired').code,
] as const;

// Stream telemetry an app can read itself: process counters and the backlog Redis keeps.
export async function streamFigures(
  streams: StreamsService,
): Promise<[StreamCounters, StreamBacklog | undefined]> {
  const counters = streams.counters();
  const handled: number = counters.acked + counters.failed;
  void handled;
  const backlog = await streams.backlog('emails', 'mailer');
  const waiting: number | undefined = backlog && backlog.pending + (backlog.lag ?? 0);
  void waiting;
  return [counters, backlog];
}
