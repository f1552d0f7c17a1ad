import { Module } from '@nestjs/common';
import { ConfigModule, ConfigService } from '@nestjs/config';
import { TerminusModule } from '@nestjs/terminus';

import { RedisDashboardModule, RedisModule, type RedisModuleOptions } from '../src/index.js';

import { CatalogController } from './catalog.controller.js';
import { HealthController } from './health.controller.js';
import { JobsController } from './jobs.controller.js';
import { KvController } from './kv.controller.js';
import { LoopbackOnlyGuard } from './loopback.guard.js';
import { RedisInfoController } from './redis-info.controller.js';
import { SessionController } from './session.controller.js';

/**
 * The example application: one controller per feature, all sharing the one Redis connection
 * that `RedisModule` registers globally.
 *
 * Configuration comes from the environment (or a `.env` file) through `@nestjs/config`:
 * - `REDIS_URL`        where Redis is, e.g. `redis://127.0.0.1:6379` (unset: the library reads
 *                      `REDIS_HOST`, `REDIS_PORT`, ... and defaults to 127.0.0.1:6379)
 * - `REDIS_KEY_PREFIX` prepended to every key the app writes (default `demo:`)
 */
@Module({
  imports: [
    ConfigModule.forRoot({ isGlobal: true }),
    RedisModule.forRootAsync({
      inject: [ConfigService],
      useFactory: (config: ConfigService): RedisModuleOptions => ({
        // Unset or empty: the library reads REDIS_HOST, REDIS_PORT, ... (default 127.0.0.1:6379).
        url: config.get<string>('REDIS_URL'),
        keyPrefix: config.get<string>('REDIS_KEY_PREFIX') ?? 'demo:',
      }),
    }),
    TerminusModule,
    // The live Redis page at /admin/redis, behind a guard of the app's own.
    RedisDashboardModule.register({ path: 'admin/redis', guards: [LoopbackOnlyGuard] }),
  ],
  controllers: [
    HealthController,
    KvController,
    RedisInfoController,
    CatalogController,
    JobsController,
    SessionController,
  ],
})
export class AppModule {}
