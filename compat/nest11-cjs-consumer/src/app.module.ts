import { Controller, Get, Module, Req, type OnApplicationShutdown } from '@nestjs/common';
import {
  HealthCheck,
  HealthCheckService,
  TerminusModule,
  type HealthCheckResult,
} from '@nestjs/terminus';
import type { Request } from 'express';
import { RedisHealthIndicator, RedisModule } from 'nestjs-redis-infra';

declare module 'express-session' {
  interface SessionData {
    visits: number;
  }
}

@Controller()
export class AppController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly redis: RedisHealthIndicator,
  ) {}

  @Get('health')
  @HealthCheck()
  check(): Promise<HealthCheckResult> {
    return this.health.check([() => this.redis.isHealthy('redis', { timeout: 1000 })]);
  }

  @Get('visits')
  visits(@Req() req: Request): { visits: number } {
    req.session.visits = (req.session.visits ?? 0) + 1;
    return { visits: req.session.visits };
  }
}

@Module({
  imports: [RedisModule.forRoot({ url: process.env.REDIS_URL, keyPrefix: 'cjs:' }), TerminusModule],
  controllers: [AppController],
})
export class AppModule implements OnApplicationShutdown {
  onApplicationShutdown(signal?: string): void {
    // The checker expects this line: Nest ran the shutdown hooks (and closed Redis) on SIGTERM.
    console.log(`shutdown ${signal}`);
  }
}
