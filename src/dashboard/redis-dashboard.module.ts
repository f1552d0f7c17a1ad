import {
  Controller,
  Get,
  Header,
  Inject,
  Module,
  Sse,
  UseGuards,
  type CanActivate,
  type DynamicModule,
  type MessageEvent,
  type Type,
} from '@nestjs/common';
import { map, type Observable } from 'rxjs';

import { RedisConfigError } from '../errors.js';

import { renderDashboardPage } from './dashboard.page.js';
import {
  DASHBOARD_OPTIONS,
  RedisDashboardSampler,
  type ResolvedDashboardOptions,
} from './dashboard.sampler.js';

/** Options of `RedisDashboardModule.register`. */
export interface RedisDashboardOptions {
  /**
   * Where the page is served, relative to the application's global prefix; its live data is
   * at `<path>/events` (server-sent events).
   * @example 'admin/redis'
   */
  path: string;
  /**
   * Guards for the page and its events, on top of the application's global guards (`APP_GUARD`
   * and `app.useGlobalGuards` apply here too). The page shows server figures and the slow log:
   * never leave it open to the public.
   * @defaultValue []
   */
  guards?: Array<Type<CanActivate> | CanActivate>;
  /**
   * How often the figures are sampled while a page is open, in ms (1 sample serves every open
   * page).
   * @defaultValue 1000
   */
  interval?: number;
  /**
   * Streams whose consumer groups' lag the page shows (stream names as given to
   * `StreamsService`; all of a stream's groups unless `group` is given).
   * @defaultValue []
   */
  streams?: ReadonlyArray<string | { stream: string; group?: string }>;
  /**
   * Slow log entries shown (the command name and argument count only, never arguments).
   * @defaultValue 5
   */
  slowlogEntries?: number;
}

function resolve(options: RedisDashboardOptions): ResolvedDashboardOptions {
  if (options === null || typeof options !== 'object') {
    throw new RedisConfigError('RedisDashboardModule options', options, '{ path: string, ... }');
  }
  const { path, interval = 1000, streams = [], slowlogEntries = 5, guards = [] } = options;
  if (typeof path !== 'string' || !/^\/?[\w.~-]+(\/[\w.~-]+)*\/?$/.test(path)) {
    throw new RedisConfigError('dashboard.path', path, "a URL path such as 'admin/redis'");
  }
  if (!(Number.isInteger(interval) && interval >= 100 && interval <= 60_000)) {
    throw new RedisConfigError(
      'dashboard.interval',
      interval,
      'an integer of ms from 100 to 60000',
    );
  }
  if (!(Number.isInteger(slowlogEntries) && slowlogEntries >= 0 && slowlogEntries <= 100)) {
    throw new RedisConfigError(
      'dashboard.slowlogEntries',
      slowlogEntries,
      'an integer from 0 to 100',
    );
  }
  if (!Array.isArray(guards) || guards.some((g) => typeof g !== 'function' && !isGuard(g))) {
    throw new RedisConfigError(
      'dashboard.guards',
      guards,
      'an array of guard classes or instances',
    );
  }
  if (!Array.isArray(streams)) {
    throw new RedisConfigError('dashboard.streams', streams, 'an array of stream names');
  }
  const list = (streams as readonly unknown[]).map((s, i) => {
    const entry = (typeof s === 'string' ? { stream: s } : s) as {
      stream?: unknown;
      group?: unknown;
    } | null;
    if (
      !entry ||
      typeof entry.stream !== 'string' ||
      entry.stream === '' ||
      (entry.group !== undefined && (typeof entry.group !== 'string' || entry.group === ''))
    ) {
      throw new RedisConfigError(
        `dashboard.streams[${i}]`,
        s,
        'a stream name or { stream, group? }',
      );
    }
    const stream = entry.stream;
    return typeof entry.group === 'string' ? { stream, group: entry.group } : { stream };
  });
  return { path: path.replace(/^\/+|\/+$/g, ''), interval, streams: list, slowlogEntries };
}

function isGuard(g: unknown): g is CanActivate {
  return !!g && typeof (g as CanActivate).canActivate === 'function';
}

/**
 * A live Redis page, off unless imported: one HTML page (inline script and styles, nothing
 * loaded from elsewhere) with charts fed by server-sent events: command latency, ops/s, memory,
 * hit rates per tier, connections, locks, sessions, stream lag and the latest slow log.
 * Needs `RedisModule` (the default connection) in the application.
 *
 * @example
 * ```ts
 * @Module({
 *   imports: [
 *     RedisModule.forRoot({ url: 'redis://127.0.0.1:6379' }),
 *     RedisDashboardModule.register({ path: 'admin/redis', guards: [AdminGuard] }),
 *   ],
 * })
 * export class AppModule {}
 * ```
 */
@Module({})
export class RedisDashboardModule {
  /** Mounts the page at `options.path`, behind `options.guards` and the app's global guards. */
  static register(options: RedisDashboardOptions): DynamicModule {
    const resolved = resolve(options);
    const guards = options.guards ?? [];

    @Controller(resolved.path)
    @UseGuards(...guards)
    class RedisDashboardController {
      constructor(@Inject(RedisDashboardSampler) private readonly sampler: RedisDashboardSampler) {}

      @Get()
      @Header('Content-Type', 'text/html; charset=utf-8')
      @Header('Cache-Control', 'no-store')
      // Everything is inline: no other origin may be reached from the page.
      @Header(
        'Content-Security-Policy',
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
      )
      page(): string {
        return renderDashboardPage({ interval: resolved.interval });
      }

      @Sse('events')
      events(): Observable<MessageEvent> {
        return this.sampler.samples.pipe(map((data) => ({ data })));
      }
    }

    return {
      module: RedisDashboardModule,
      controllers: [RedisDashboardController],
      providers: [{ provide: DASHBOARD_OPTIONS, useValue: resolved }, RedisDashboardSampler],
      exports: [RedisDashboardSampler],
    };
  }
}
