import { Controller, Get } from '@nestjs/common';
import { HealthCheck, HealthCheckService, type HealthCheckResult } from '@nestjs/terminus';

import { RedisHealthIndicator } from '../src/index.js';

/**
 * `GET /health`: 200 with `info.redis.status === 'up'` (and the PING latency and memory
 * figures), or 503 with the reason in `error.redis.message`.
 */
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
      () => this.redis.isHealthy('redis', { timeout: 1000, maxMemoryRatio: 0.95 }),
    ]);
  }
}
