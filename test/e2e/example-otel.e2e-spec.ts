import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';

import { RedisModule, RedisService } from '../../src/index.js';
import { startApp } from '../support/app.js';
import { freePort, standaloneUrl, uniquePrefix, waitFor } from '../support/redis.js';

const root = new URL('../../', import.meta.url).pathname;

/** One line the example prints per finished span (example/telemetry.ts). */
interface PrintedSpan {
  name: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  scope: string;
  attributes: Record<string, unknown>;
}

// Compiling src/ and example/ (when out of date) takes 5-15 s on a loaded 2-core machine.
jest.setTimeout(120_000);

/** `OTEL_DEMO=1 npm run demo` against the test server: Prometheus metrics and spans, for real. */
describe('example app with OTEL_DEMO=1', () => {
  const prefix = uniquePrefix('otel-demo');
  let demo: ChildProcess;
  let base: string;
  const output: string[] = [];
  const spans: PrintedSpan[] = [];

  beforeAll(async () => {
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    // jest's own flags (--experimental-vm-modules) are not the demo's.
    const env: NodeJS.ProcessEnv = { ...process.env, NODE_OPTIONS: '' };
    Object.assign(env, {
      OTEL_DEMO: '1',
      PORT: String(port),
      REDIS_URL: standaloneUrl(),
      REDIS_KEY_PREFIX: prefix,
    });
    // Its own process group, as a CI job runs it: stopped below with one signal to the group.
    demo = spawn('npm', ['run', '--silent', 'demo'], {
      cwd: root,
      env,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines = createInterface({ input: demo.stdout! });
    lines.on('line', (line) => {
      output.push(line);
      if (line.startsWith('otel-span ')) spans.push(JSON.parse(line.slice(10)) as PrintedSpan);
    });
    demo.stderr!.on('data', (chunk: Buffer) => output.push(chunk.toString()));
    const exited = new Promise<never>((_, reject) =>
      demo.once('exit', (code) =>
        reject(new Error(`the demo exited (${code}):\n${output.join('\n')}`)),
      ),
    );
    const listening = waitFor(() => output.some((l) => l.includes('listening on')), {
      timeoutMs: 100_000,
      what: 'the demo to listen',
    });
    await Promise.race([listening, exited]);
  });

  afterAll(async () => {
    if (demo?.pid !== undefined && demo.exitCode === null) {
      const exited = new Promise((resolve) => demo.once('exit', resolve));
      process.kill(-demo.pid, 'SIGTERM');
      await exited;
    }
    const cleaner = await startApp({
      imports: [RedisModule.forRoot({ url: standaloneUrl(), keyPrefix: prefix })],
    });
    await cleaner.get(RedisService).unlinkByPattern('*');
    await cleaner.close();
  });

  it('serves the module metrics as Prometheus text at /metrics', async () => {
    const product = await fetch(`${base}/products/7`);
    expect(product.status).toBe(200);
    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    const text = await res.text();
    // The cache loaded product 7 once; the default connection names itself on every series.
    expect(text).toMatch(
      /^nestjs_redis_cache_loads_total\{db_client_connection_pool_name="default",otel_scope_name="nestjs-redis-infra"\} 1$/m,
    );
    expect(text).toMatch(
      /^db_client_operation_duration_count\{db_system_name="redis",db_operation_name="GET",db_namespace="0",db_client_connection_pool_name="default",otel_scope_name="nestjs-redis-infra"\} [1-9]\d*$/m,
    );
    expect(text).toMatch(/^# TYPE nestjs_redis_cache_l1_evictions_total counter$/m);
  });

  it('prints the request span with the module and ioredis spans under it, keys left out', async () => {
    await fetch(`${base}/products/8`);
    const getOrSet = await waitFor(
      () =>
        spans.find(
          (s) =>
            s.name === 'cache.getOrSet' &&
            spans.some(
              (r) => r.spanId === s.parentSpanId && r.attributes['url.path'] === '/products/8',
            ),
        ),
      { what: 'the cache.getOrSet span of GET /products/8' },
    );
    expect(getOrSet.scope).toBe('nestjs-redis-infra');
    expect(getOrSet.attributes).toMatchObject({
      'db.client.connection.pool.name': 'default',
      'nestjs_redis.outcome': 'loaded',
    });
    const children = spans.filter((s) => s.parentSpanId === getOrSet.spanId);
    expect(children.map((s) => s.name)).toContain('cache.load');
    // ioredis command spans, from @opentelemetry/instrumentation-ioredis through the ESM hook.
    const command = children.find((s) => s.scope === '@opentelemetry/instrumentation-ioredis');
    expect(command?.traceId).toBe(getOrSet.traceId);
    expect(command?.attributes['db.system.name']).toBe('redis');
    const texts = spans.flatMap((s) => Object.values(s.attributes).map(String));
    expect(texts.filter((t) => t.includes('product:') || t.includes(prefix))).toEqual([]);
  });
});
