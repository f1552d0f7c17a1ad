import { Controller, Get, HttpCode, Param, Post } from '@nestjs/common';

import { CacheService } from '../src/index.js';

/** A slow "database" the cache sits in front of. */
async function loadProductFromDatabase(
  id: string,
): Promise<{ id: string; name: string; loadedAt: string }> {
  await new Promise((resolve) => setTimeout(resolve, 200));
  return { id, name: `Product ${id}`, loadedAt: new Date().toISOString() };
}

/**
 * `CacheService` in front of a slow loader: the first request pays 200 ms, the next ones are
 * served from memory (L1) or Redis (L2); concurrent misses load once across every instance.
 */
@Controller()
export class CatalogController {
  constructor(private readonly cache: CacheService) {}

  /** `GET /products/:id`: cached for 30 s, served stale for 5 min if the database fails. */
  @Get('products/:id')
  async product(@Param('id') id: string) {
    const started = performance.now();
    const product = await this.cache.getOrSet(`product:${id}`, () => loadProductFromDatabase(id), {
      ttl: 30_000,
      grace: 300_000,
      timeout: 100,
      tags: ['products'],
    });
    return { product, servedInMs: Math.round((performance.now() - started) * 10) / 10 };
  }

  /** `POST /products/invalidate`: every cached product, in every instance. */
  @Post('products/invalidate')
  @HttpCode(204)
  async invalidate(): Promise<void> {
    await this.cache.invalidateTags(['products']);
  }

  /** `GET /cache/stats`: hits and misses per tier, loads, stampede waits. */
  @Get('cache/stats')
  stats() {
    return this.cache.stats();
  }
}
