/**
 * Compiled (never run) by `npm test` against the emitted `dist/*.d.ts`: every service of a named
 * connection, injected by decorator and looked up by token, as an application writes it.
 */
import { Controller, Get, Injectable, Module, type INestApplicationContext } from '@nestjs/common';
import {
  HealthCheck,
  HealthCheckService,
  TerminusModule,
  type HealthCheckResult,
} from '@nestjs/terminus';

import {
  CacheService,
  getCacheServiceToken,
  getLockServiceToken,
  getPresenceServiceToken,
  getPubSubServiceToken,
  getRedisBullMqToken,
  getRedisHealthIndicatorToken,
  getRedisServiceToken,
  getSessionServiceToken,
  getStreamsServiceToken,
  InjectCacheService,
  InjectLockService,
  InjectPresenceService,
  InjectPubSubService,
  InjectRedisBullMq,
  InjectRedisHealthIndicator,
  InjectRedisService,
  InjectSessionService,
  InjectStreamsService,
  LockService,
  PresenceService,
  PubSubService,
  RedisBullMq,
  RedisHealthIndicator,
  RedisModule,
  RedisService,
  SessionService,
  StreamsService,
} from 'nestjs-redis-infra';

@Injectable()
export class ReportStore {
  constructor(
    // The default connection, by class.
    private readonly cache: CacheService,
    // The `analytics` connection, by name.
    @InjectCacheService('analytics') private readonly analyticsCache: CacheService,
    @InjectSessionService('analytics') private readonly sessions: SessionService,
    @InjectLockService('analytics') private readonly locks: LockService,
    @InjectRedisService('analytics') private readonly redis: RedisService,
    @InjectPubSubService('analytics') private readonly pubsub: PubSubService,
    @InjectStreamsService('analytics') private readonly streams: StreamsService,
    @InjectPresenceService('analytics') private readonly presence: PresenceService,
    @InjectRedisBullMq('analytics') private readonly queues: RedisBullMq,
  ) {}

  async refresh(id: string): Promise<number> {
    const report = await this.analyticsCache.getOrSet(`report:${id}`, () => ({ id }), {
      ttl: 60_000,
    });
    await this.cache.set(`latest`, report.id);
    await this.locks.withLock(`report:${id}`, async () => {
      await this.pubsub.publish('reports', { id });
      await this.streams.producer<{ id: string }>('reports').add({ id });
    });
    const session = await this.sessions.create('user-1', { report: id });
    await this.presence.space('readers').heartbeat(session.userId, { report: id }, { ttl: 15_000 });
    void this.queues;
    return this.redis.ping();
  }
}

@Controller('health')
export class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly main: RedisHealthIndicator,
    @InjectRedisHealthIndicator('analytics') private readonly analytics: RedisHealthIndicator,
  ) {}

  @Get()
  @HealthCheck()
  check(): Promise<HealthCheckResult> {
    return this.health.check([
      () => this.main.isHealthy('redis'),
      () => this.analytics.isHealthy('analytics'),
    ]);
  }
}

@Module({
  imports: [
    RedisModule.forRoot({ url: 'redis://127.0.0.1:6379' }),
    RedisModule.forRootAsync({
      name: 'analytics',
      useFactory: () => ({ url: 'redis://127.0.0.1:6380', keyPrefix: 'analytics:' }),
    }),
    TerminusModule,
  ],
  controllers: [HealthController],
  providers: [ReportStore],
})
export class AppModule {}

export function lookUp(app: INestApplicationContext): void {
  const tokens: symbol[] = [
    getRedisServiceToken('analytics'),
    getCacheServiceToken('analytics'),
    getSessionServiceToken('analytics'),
    getLockServiceToken('analytics'),
    getRedisHealthIndicatorToken('analytics'),
    getPubSubServiceToken('analytics'),
    getStreamsServiceToken('analytics'),
    getPresenceServiceToken('analytics'),
    getRedisBullMqToken('analytics'),
  ];
  const cache = app.get<CacheService>(getCacheServiceToken('analytics'));
  const sameAsByClass: boolean =
    app.get<CacheService>(getCacheServiceToken()) === app.get(CacheService);
  void tokens;
  void cache;
  void sameAsByClass;
}
