import {
  BadRequestException,
  Body,
  Controller,
  Delete,
  Get,
  HttpCode,
  NotFoundException,
  Param,
  Post,
  Put,
} from '@nestjs/common';

import { InjectRedis, type RedisClient } from '../src/index.js';

/** Longest key the example accepts, in characters. */
const MAX_KEY_LENGTH = 256;

/** What `GET` and `PUT /kv/:key` answer. */
export interface KvEntry {
  key: string;
  value: string;
  /** Time left before the key expires, in ms; `null` when it never expires. */
  ttlMs: number | null;
}

/** The validated body of `PUT /kv/:key`. */
interface KvWrite {
  value: string;
  ttlMs?: number;
}

/**
 * Plain reads and writes through the injected ioredis client (`@InjectRedis()`). Keys are
 * stored as `kv:<key>` under the module's `keyPrefix`, which the client adds by itself.
 */
@Controller()
export class KvController {
  constructor(@InjectRedis() private readonly redis: RedisClient) {}

  /** `PUT /kv/:key` with `{ "value": "...", "ttlMs": 60000 }`: SET, with PX when `ttlMs` is given. */
  @Put('kv/:key')
  async put(@Param('key') key: string, @Body() body: unknown): Promise<KvEntry> {
    const id = storageKey(key);
    const { value, ttlMs } = parseWrite(body);
    if (ttlMs === undefined) await this.redis.set(id, value);
    else await this.redis.set(id, value, 'PX', ttlMs);
    return { key, value, ttlMs: ttlMs ?? null };
  }

  /** `GET /kv/:key`: the value and its remaining TTL, or 404. */
  @Get('kv/:key')
  async get(@Param('key') key: string): Promise<KvEntry> {
    const id = storageKey(key);
    const [value, pttl] = await Promise.all([this.redis.get(id), this.redis.pttl(id)]);
    if (value === null) throw new NotFoundException(`No value stored under key "${key}".`);
    return { key, value, ttlMs: pttl >= 0 ? pttl : null };
  }

  /** `DELETE /kv/:key`: 204 when it was deleted, 404 when there was nothing to delete. */
  @Delete('kv/:key')
  @HttpCode(204)
  async remove(@Param('key') key: string): Promise<void> {
    const removed = await this.redis.del(storageKey(key));
    if (removed === 0) throw new NotFoundException(`No value stored under key "${key}".`);
  }

  /** `POST /visits`: INCR a counter and answer its new value. */
  @Post('visits')
  @HttpCode(200)
  async visit(): Promise<{ visits: number }> {
    return { visits: await this.redis.incr('visits') };
  }
}

function storageKey(key: string): string {
  if (key.length > MAX_KEY_LENGTH) {
    throw new BadRequestException(
      `The key is ${key.length} characters long; use at most ${MAX_KEY_LENGTH}.`,
    );
  }
  return `kv:${key}`;
}

function parseWrite(body: unknown): KvWrite {
  const example = 'Send a JSON body like {"value":"hello","ttlMs":60000} ';
  const hint = `${example}with the header "Content-Type: application/json".`;
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new BadRequestException(`The body must be a JSON object. ${hint}`);
  }
  const { value, ttlMs } = body as Record<string, unknown>;
  if (typeof value !== 'string') {
    throw new BadRequestException(
      value === undefined
        ? `"value" is missing. ${hint}`
        : `"value" must be a string, got ${describe(value)}. ${hint}`,
    );
  }
  if (ttlMs === undefined || ttlMs === null) return { value };
  if (typeof ttlMs !== 'number' || !Number.isSafeInteger(ttlMs) || ttlMs <= 0) {
    throw new BadRequestException(
      `"ttlMs" must be a positive whole number of milliseconds, got ${describe(ttlMs)}. ` +
        'Leave it out for a key that never expires.',
    );
  }
  return { value, ttlMs };
}

function describe(value: unknown): string {
  return `${JSON.stringify(value) ?? String(value)} (${Array.isArray(value) ? 'array' : typeof value})`;
}
