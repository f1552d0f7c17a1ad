import { BadRequestException, Controller, Get, NotFoundException, Param } from '@nestjs/common';

import { RedisService, type RedisInfo, type RedisStats } from '../src/index.js';

/** Monitoring endpoints through `RedisService`. */
@Controller('redis')
export class RedisInfoController {
  constructor(private readonly redis: RedisService) {}

  /** `GET /redis/stats`: clients, memory, ops/s, hit rate, evictions, expirations, uptime. */
  @Get('stats')
  stats(): Promise<RedisStats> {
    return this.redis.stats();
  }

  /** `GET /redis/info/:section`: one `INFO` section (`server`, `memory`, `keyspace`, ...), parsed. */
  @Get('info/:section')
  async info(@Param('section') section: string): Promise<RedisInfo> {
    if (!/^[a-z_]{1,32}$/i.test(section)) {
      throw new BadRequestException(
        `"${section.slice(0, 40)}" is not an INFO section name; try server, clients, memory, stats, keyspace or all.`,
      );
    }
    const info = await this.redis.info(section.toLowerCase());
    if (Object.keys(info).length === 0) {
      throw new NotFoundException(
        `Redis has no INFO section "${section}"; try server, clients, memory, stats, keyspace or all.`,
      );
    }
    return info;
  }
}
