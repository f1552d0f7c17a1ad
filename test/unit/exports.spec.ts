import { readFileSync } from 'node:fs';

import { describe, expect, it } from '@jest/globals';

import * as api from '../../src/index.js';

describe('package root', () => {
  it('exports the public surface of DESIGN.md and nothing else at run time', () => {
    expect(Object.keys(api).sort()).toEqual(
      [
        'CacheEvict',
        'CacheLoaderTimeoutError',
        'CacheService',
        'Cacheable',
        'InjectRedis',
        'Leader',
        'LockLostError',
        'LockNotAcquiredError',
        'LockService',
        'OnRedisMessage',
        'PubSubService',
        'RedisBullMq',
        'RedisConfigError',
        'RedisConnectionError',
        'RedisDashboardModule',
        'RedisCrossSlotError',
        'RedisAlerts',
        'REDIS_ALERT_RAISED',
        'REDIS_ALERT_RESOLVED',
        'RedisHealthIndicator',
        'RedisInfraError',
        'RedisRecords',
        'RedisScriptError',
        'RedisTransactionConflictError',
        'DefinedScript',
        'ShardedCounter',
        'OnStreamMessage',
        'StreamConsumer',
        'StreamProducer',
        'StreamsService',
        'PresenceService',
        'PresenceSpace',
        'isTransientRedisError',
        'withRetry',
        'RedisModule',
        'RedisPermissionError',
        'RedisService',
        'RedisSessionError',
        'SessionService',
        'WithLock',
        'getRedisToken',
        'getRedisServiceToken',
        'getCacheServiceToken',
        'getSessionServiceToken',
        'getLockServiceToken',
        'getRedisHealthIndicatorToken',
        'getPubSubServiceToken',
        'getStreamsServiceToken',
        'getPresenceServiceToken',
        'getRedisBullMqToken',
        'InjectRedisService',
        'InjectCacheService',
        'InjectSessionService',
        'InjectLockService',
        'InjectRedisHealthIndicator',
        'InjectPubSubService',
        'InjectStreamsService',
        'InjectPresenceService',
        'InjectRedisBullMq',
      ].sort(),
    );
  });

  it('gives every error a stable code and a message that says what to do', () => {
    const errors = [
      new api.RedisConfigError('port', 'abc', 'an integer from 1 to 65535'),
      new api.RedisConnectionError('default', 'redis://:***@h:1', 'connect ECONNREFUSED'),
      new api.LockNotAcquiredError('orders:42', 5000),
      new api.LockLostError('orders:42', 7, 'the key expired'),
    ];
    expect(errors.map((e) => [e.name, e.code])).toEqual([
      ['RedisConfigError', 'REDIS_CONFIG_INVALID'],
      ['RedisConnectionError', 'REDIS_CONNECTION_FAILED'],
      ['LockNotAcquiredError', 'REDIS_LOCK_NOT_ACQUIRED'],
      ['LockLostError', 'REDIS_LOCK_LOST'],
    ]);
    for (const e of errors) {
      expect(e).toBeInstanceOf(api.RedisInfraError);
      expect(e).toBeInstanceOf(Error);
    }
    expect(errors[2].message).toBe(
      'Lock on "orders:42" not acquired after waiting 5000 ms. Another owner holds it: raise `wait`, or use tryAcquire() to skip the work instead.',
    );
  });

  it('names injection tokens after their connection', () => {
    expect(api.getRedisToken().description).toBe('nestjs-redis-infra:client:default');
    expect(api.getRedisToken('analytics').description).toBe('nestjs-redis-infra:client:analytics');
    expect(api.getRedisToken('analytics')).toBe(api.getRedisToken('analytics'));
  });
});

describe('package.json', () => {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    exports: Record<string, string | { types: string; default: string }>;
    typesVersions: Record<string, Record<string, string[]>>;
    sideEffects: boolean;
    files: string[];
  };

  it('maps every subpath for node10 resolution too, to the same declarations', () => {
    // Under moduleResolution node10 TypeScript ignores `exports`: only `typesVersions` finds them.
    const subpaths = Object.entries(pkg.exports).filter(
      ([subpath, target]) => subpath !== '.' && typeof target === 'object',
    );
    expect(subpaths.length).toBeGreaterThan(0);
    for (const [subpath, target] of subpaths) {
      expect(pkg.typesVersions['*'][subpath.slice(2)]).toEqual([
        (target as { types: string }).types,
      ]);
    }
  });

  it('ships no source maps and declares no side effects', () => {
    // Maps would point at src/, which the tarball does not contain.
    const build = readFileSync(new URL('../../tsconfig.build.json', import.meta.url), 'utf8');
    expect(build).toMatch(/"sourceMap": false/);
    expect(build).toMatch(/"declarationMap": false/);
    expect(pkg.files).toEqual(['dist']);
    expect(pkg.sideEffects).toBe(false);
  });
});
