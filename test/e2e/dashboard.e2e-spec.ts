import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import {
  Injectable,
  type CanActivate,
  type ExecutionContext,
  type INestApplication,
} from '@nestjs/common';
import { chromium, type Browser } from 'playwright-core';
import { firstValueFrom } from 'rxjs';

import { RedisDashboardSampler } from '../../src/dashboard/dashboard.sampler.js';
import {
  CacheService,
  LockService,
  RedisDashboardModule,
  RedisModule,
  StreamsService,
  getRedisToken,
  type RedisClient,
} from '../../src/index.js';
import { streamKeys } from '../../src/streams/streams.keys.js';
import { startApp } from '../support/app.js';
import { standaloneUrl, uniqueConnectionName, uniquePrefix } from '../support/redis.js';

/** Debian's chromium, installed by scripts/ensure-chromium.sh when it is missing. */
function findChromium(): { path?: string; reason?: string } {
  for (const p of [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser']) {
    if (p && existsSync(p)) return { path: p };
  }
  const run = spawnSync('bash', ['scripts/ensure-chromium.sh'], {
    encoding: 'utf8',
    timeout: 300_000,
  });
  const path = run.stdout?.trim();
  if (run.status === 0 && path && existsSync(path)) return { path };
  return { reason: (run.stderr || run.error?.message || 'unknown').trim().slice(-500) };
}

const browserPath = findChromium();
if (!browserPath.path) {
  console.warn(`dashboard page test skipped: no chromium (${browserPath.reason})`);
}
const withBrowser = browserPath.path ? it : it.skip;

/** The app's own guard: the page and its events need a cookie. */
@Injectable()
class CookieGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const req = context.switchToHttp().getRequest<{ headers: { cookie?: string } }>();
    return /(?:^|;\s*)admin=yes(?:;|$)/.test(req.headers.cookie ?? '');
  }
}

describe('RedisDashboardModule', () => {
  let app: INestApplication;
  let base: string;
  const prefix = uniquePrefix('dash');

  beforeAll(async () => {
    app = await startApp({
      imports: [
        RedisModule.forRoot({
          url: standaloneUrl(),
          keyPrefix: prefix,
          connectionName: uniqueConnectionName('dash'),
        }),
        RedisDashboardModule.register({
          path: 'admin/redis',
          guards: [CookieGuard],
          interval: 200,
          streams: ['orders'],
        }),
      ],
    });
    await app.listen(0, '127.0.0.1');
    const address = (app.getHttpServer() as Server).address() as AddressInfo;
    base = `http://127.0.0.1:${address.port}/admin/redis`;
  });

  afterAll(async () => {
    await app?.close();
  });

  it('is behind the guards the application gives it', async () => {
    expect((await fetch(base)).status).toBe(403);
    expect((await fetch(`${base}/events`)).status).toBe(403);
    const page = await fetch(base, { headers: { cookie: 'admin=yes' } });
    expect(page.status).toBe(200);
    const html = await page.text();
    // One self-contained page: nothing loaded from another origin.
    expect(html).not.toMatch(/<script[^>]+src=|<link[^>]+href=|https?:\/\//);
  });

  it('ends open event streams when the application shuts down', async () => {
    const own = await startApp({
      imports: [
        RedisModule.forRoot({ url: standaloneUrl(), connectionName: uniqueConnectionName('dash') }),
        RedisDashboardModule.register({ path: 'redis', interval: 100 }),
      ],
    });
    await own.listen(0, '127.0.0.1');
    const { port } = (own.getHttpServer() as Server).address() as AddressInfo;
    const res = await fetch(`http://127.0.0.1:${port}/redis/events`);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value as Uint8Array)).toMatch(/data: \{"at":/);
    // The page is still open: closing must end its stream instead of waiting for it.
    await own.close();
    for (;;) {
      const next = await reader.read();
      if (next.done) break;
    }
  });

  it('shows the locks this process holds, also those taken before the page opened', async () => {
    const sampler = app.get(RedisDashboardSampler);
    const locks = app.get(LockService);
    const lock = await locks.acquire('dash-held');
    const before = await firstValueFrom(sampler.samples);
    expect(before.locks).toMatchObject({ held: 1, waiting: 0 });
    expect(before.locks.acquired).toBeGreaterThanOrEqual(1);
    expect(await lock.release()).toBe(true);
    const after = await firstValueFrom(sampler.samples);
    expect(after.locks).toMatchObject({ held: 0, waiting: 0 });
    expect(after.locks.acquired).toBe(before.locks.acquired);
  });

  it('rejects bad options naming them', () => {
    expect(() => RedisDashboardModule.register({ path: 'a b' })).toThrow(/dashboard\.path/);
    expect(() => RedisDashboardModule.register({ path: 'x', interval: 5 })).toThrow(
      /dashboard\.interval = 5/,
    );
  });

  withBrowser(
    'draws live charts in a real Chromium while the app works',
    async () => {
      const client = app.get<RedisClient>(getRedisToken());
      const cache = app.get(CacheService);
      const producer = app.get(StreamsService).producer<{ n: number }>('orders');
      await client.del(streamKeys('orders').stream);
      await client.xgroup('CREATE', streamKeys('orders').stream, 'billing', '0', 'MKSTREAM');
      for (let n = 0; n < 3; n++) await producer.add({ n });

      let browser: Browser | undefined;
      let working = true;
      const traffic = (async () => {
        for (let i = 0; working && i < 5000; i++) {
          await cache.getOrSet(`p:${i % 20}`, () => Promise.resolve({ i }), { ttl: 60_000 });
          await client.incr('counter');
        }
      })();
      try {
        browser = await chromium.launch({
          executablePath: browserPath.path,
          headless: true,
          // Root in a container: Chromium's sandbox needs user namespaces it does not get.
          args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
          timeout: 15_000,
        });
        const context = await browser.newContext({
          viewport: { width: 1280, height: 900 },
          // The page's CSP forbids eval, which is how the checks below run in it.
          bypassCSP: true,
        });
        await context.addCookies([{ name: 'admin', value: 'yes', url: base }]);
        const page = await context.newPage();
        await page.goto(base, { waitUntil: 'domcontentloaded', timeout: 10_000 });
        // Browser code as text: this project's TypeScript has no DOM library.
        await page.waitForFunction('Number(document.body.dataset.samples) >= 4', null, {
          timeout: 10_000,
        });
        const state = await page.evaluate<{
          points: Record<string, number>;
          drawn: number[];
          connections?: string;
          streams?: string;
          hits?: string;
          status?: string;
        }>(`(() => {
          const canvases = [...document.querySelectorAll('canvas[data-chart]')];
          const text = (id) => document.getElementById(id)?.textContent;
          return {
            points: Object.fromEntries(canvases.map((c) => [c.dataset.chart, Number(c.dataset.points)])),
            // A drawn line leaves pixels that are not transparent.
            drawn: canvases.map((c) => {
              const { data } = c.getContext('2d').getImageData(0, 0, c.width, c.height);
              let painted = 0;
              for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
              return painted;
            }),
            connections: text('v-connections'),
            streams: text('v-streams'),
            hits: text('v-hits'),
            status: text('status'),
          };
        })()`);
        expect(Object.keys(state.points).sort()).toEqual(
          [
            'connections',
            'hits',
            'latency',
            'locks',
            'memory',
            'ops',
            'sessions',
            'streams',
          ].sort(),
        );
        for (const n of Object.values(state.points)) expect(n).toBeGreaterThanOrEqual(4);
        for (const painted of state.drawn) expect(painted).toBeGreaterThan(0);
        expect(state.connections).toMatch(/^\d+ of 10$/);
        expect(state.streams).toBe('3 entries behind');
        expect(state.hits).toMatch(/^L1 [1-9]\d*\//);
        expect(state.status).toMatch(/^live/);

        const out = join(process.cwd(), 'test-output', 'dashboard');
        mkdirSync(out, { recursive: true });
        await page.screenshot({ path: join(out, 'dashboard.png'), fullPage: true });
      } finally {
        working = false;
        await traffic;
        await browser?.close();
      }
    },
    30_000,
  );
});
