import { isTransientRedisError, withRetry } from '../toolkit/retry.js';

import type { RedisClient } from './client-factory.js';
import type { RedisRetryOnTimeoutOptions } from './connection.options.js';

/**
 * Reads retried by `retryOnTimeout`: running one twice changes nothing and replies the same
 * (`PING` is left out on purpose: a health probe must see the timeout it hit).
 */
export const RETRIED_READS: readonly string[] = [
  'get',
  'mget',
  'getrange',
  'strlen',
  'exists',
  'type',
  'ttl',
  'pttl',
  'expiretime',
  'pexpiretime',
  'hget',
  'hmget',
  'hgetall',
  'hexists',
  'hlen',
  'hkeys',
  'hvals',
  'hstrlen',
  'lrange',
  'lindex',
  'llen',
  'smembers',
  'sismember',
  'smismember',
  'scard',
  'zrange',
  'zrangebyscore',
  'zrevrange',
  'zrevrangebyscore',
  'zscore',
  'zmscore',
  'zcard',
  'zcount',
  'zrank',
  'zrevrank',
  'xrange',
  'xrevrange',
  'xlen',
  'getbit',
  'bitcount',
  'pfcount',
  'scan',
  'sscan',
  'hscan',
  'zscan',
  'dbsize',
];

/**
 * Writes retried by `retryOnTimeout`: running one twice leaves the same data and gives the same
 * reply. `SET` only in its plain forms (with `EX`/`PX`/`EXAT`/`PXAT`/`KEEPTTL`): `NX`, `XX`
 * and `GET` reply differently the second time. The `EXPIRE` family only without a condition
 * flag. Counting writes (`INCR`, `LPUSH`, `SADD`, `DEL`, `HSET`, ...) and scripts are never
 * retried: a lost reply does not say whether they ran.
 */
export const RETRIED_WRITES: readonly string[] = [
  'set',
  'setex',
  'psetex',
  'mset',
  'hmset',
  'expire',
  'pexpire',
  'expireat',
  'pexpireat',
];

/** `SET` options that make the reply depend on what was there before. */
const CONDITIONAL_SET = new Set(['NX', 'XX', 'GET']);

/** Whether a call of `name` with `args` is safe to send again (see the lists above). */
export function isRetriedCall(name: string, args: readonly unknown[]): boolean {
  const lower = name.toLowerCase().replace(/buffer$/, '');
  if (RETRIED_READS.includes(lower)) return true;
  if (!RETRIED_WRITES.includes(lower)) return false;
  const flat = args.flat();
  if (lower === 'set') {
    return !flat.some((a) => typeof a === 'string' && CONDITIONAL_SET.has(a.toUpperCase()));
  }
  if (lower.endsWith('expire') || lower.endsWith('expireat')) return flat.length === 2;
  return true;
}

/** How many commands `retryOnTimeout` sent again, per connection. */
export interface RetryCounter {
  retries: number;
}

const PATCHED = Symbol.for('nestjs-redis-infra:retry-on-timeout');

type Method = (...args: unknown[]) => unknown;

/**
 * Makes the listed commands of `client` (and their `...Buffer` forms) retry transient failures:
 * each attempt is a new command through ioredis's public method, so a late reply of an
 * abandoned attempt settles nothing of ours. Calls with a callback, pipelines, transactions
 * and `call`/`sendCommand` are left as they are. `isClosing` stops retrying during shutdown.
 */
export function retryOnTimeout(
  client: RedisClient,
  options: Required<RedisRetryOnTimeoutOptions>,
  counter: RetryCounter,
  isClosing: () => boolean = () => false,
): void {
  const target = client as unknown as Record<string | symbol, unknown>;
  if (target[PATCHED]) return;
  target[PATCHED] = true;
  const retryIf = (err: unknown): boolean => {
    if (isClosing() || !isTransientRedisError(err)) return false;
    counter.retries += 1;
    return true;
  };
  for (const base of [...RETRIED_READS, ...RETRIED_WRITES]) {
    for (const name of [base, `${base}Buffer`]) {
      const original = target[name];
      if (typeof original !== 'function') continue;
      target[name] = function retried(this: unknown, ...args: unknown[]): unknown {
        if (typeof args[args.length - 1] === 'function' || !isRetriedCall(base, args)) {
          return (original as Method).apply(client, args);
        }
        return withRetry(() => (original as Method).apply(client, args) as Promise<unknown>, {
          attempts: options.attempts,
          initialDelay: options.initialDelay,
          maxDelay: options.maxDelay,
          retryIf,
        });
      };
    }
  }
}
