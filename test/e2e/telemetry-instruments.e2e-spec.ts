import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';
import { metrics } from '@opentelemetry/api';
import { MeterProvider } from '@opentelemetry/sdk-metrics';

import { CacheService, RedisModule } from '../../src/index.js';
import { startApp } from '../support/app.js';
import { TestMetricReader, valueOf } from '../support/metrics.js';
import { standaloneUrl, uniqueConnectionName, uniquePrefix, waitFor } from '../support/redis.js';

// The instruments of each source, read through the OpenTelemetry SDK against a real server.
const reader = new TestMetricReader();
const meterProvider = new MeterProvider({ readers: [reader] });

beforeAll(() => {
  expect(metrics.setGlobalMeterProvider(meterProvider)).toBe(true);
});

afterAll(async () => {
  metrics.disable();
  await meterProvider.shutdown();
});

describe('L1 evictions', () => {
  let app: INestApplication;
  let cache: CacheService;

  beforeAll(async () => {
    app = await startApp({
      imports: [
        RedisModule.forRoot({
          url: standaloneUrl(),
          keyPrefix: uniquePrefix('l1ev'),
          connectionName: uniqueConnectionName('l1ev'),
          cache: { l1: { maxEntries: 3 } },
        }),
      ],
    });
    cache = app.get(CacheService);
    // L1 keeps values once the cache listens for invalidations.
    await waitFor(
      async () => {
        await cache.set('warm', 0);
        return cache.stats().l1.size === 1;
      },
      { what: 'L1 to keep a value' },
    );
  });

  afterAll(async () => {
    await app?.close();
  });

  it('counts entries pushed out by the bound, not replaced, deleted or cleared ones', async () => {
    expect(cache.stats().l1.evictions).toBe(0);
    // 'warm' plus five more in an L1 of three entries: three evicted.
    for (let i = 1; i <= 5; i++) await cache.set(`k${i}`, i);
    expect(cache.stats().l1).toMatchObject({ size: 3, evictions: 3 });

    await cache.set('k5', 'again'); // replaced in place
    await cache.del('k4'); // deleted
    expect(cache.stats().l1).toMatchObject({ size: 2, evictions: 3 });
    await cache.set('k6', 6); // room again: nothing evicted
    await cache.set('k7', 7); // one over
    expect(cache.stats().l1).toMatchObject({ size: 3, evictions: 4 });
    await cache.clear();
    expect(cache.stats().l1).toMatchObject({ size: 0, evictions: 4 });

    const all = await reader.metrics();
    const instrument = all.get('nestjs_redis.cache.l1.evictions');
    expect(instrument?.descriptor.unit).toBe('{entry}');
    expect(valueOf(instrument, { 'db.client.connection.pool.name': 'default' })).toBe(4);
    expect(valueOf(all.get('nestjs_redis.cache.l1.size'))).toBe(0);
  });
});
