import { describe, expect, it } from '@jest/globals';

import { redactUrl, scrubSecrets } from '../../src/config/redact.js';
import { parseRedisUrl } from '../../src/config/resolve-options.js';
import { RedisConfigError } from '../../src/errors.js';
import type { RedisModuleOptions } from '../../src/index.js';
import { resolveRedisOptions } from '../../src/redis-module.options.js';

/** Resolves and returns the thrown error (failing the test when nothing is thrown). */
function configError(options: unknown, env: NodeJS.ProcessEnv = {}): RedisConfigError {
  try {
    resolveRedisOptions(options as RedisModuleOptions, env);
  } catch (err) {
    expect(err).toBeInstanceOf(RedisConfigError);
    return err as RedisConfigError;
  }
  throw new Error('expected a RedisConfigError');
}

describe('resolveRedisOptions', () => {
  it('defaults to 127.0.0.1:6379 with documented defaults', () => {
    const c = resolveRedisOptions({}, {});
    expect(c.target).toEqual({ kind: 'standalone', host: '127.0.0.1', port: 6379, db: 0 });
    expect(c).toMatchObject({
      name: 'default',
      keyPrefix: '',
      connectTimeout: 5000,
      lazyConnect: false,
      maxConnections: 10,
      autoPipelining: false,
      coalesceWrites: true,
      address: 'redis://127.0.0.1:6379',
    });
    expect(c.commandTimeout).toBeUndefined();
    expect(c.retry).toEqual({
      initialDelay: 50,
      factor: 1.5,
      maxDelay: 2000,
      jitter: 0.5,
      maxAttempts: null,
    });
  });

  it('parses a URL with user, password, db and TLS, and redacts the address', () => {
    const c = resolveRedisOptions({ url: 'rediss://app:s3cr%40t@cache.internal:6380/2' }, {});
    expect(c.target).toEqual({ kind: 'standalone', host: 'cache.internal', port: 6380, db: 2 });
    expect(c.username).toBe('app');
    expect(c.password).toBe('s3cr@t');
    expect(c.tls).toEqual({});
    expect(c.address).toBe('rediss://app:***@cache.internal:6380/2');
    expect(c.address).not.toContain('s3cr');
  });

  it('reads the environment when the options name no server', () => {
    const env = {
      REDIS_HOST: 'redis.local',
      REDIS_PORT: '6390',
      REDIS_DB: '3',
      REDIS_USERNAME: 'u',
      REDIS_PASSWORD: 'pw',
      REDIS_TLS: 'true',
      REDIS_KEY_PREFIX: 'shop:',
      REDIS_MAX_CONNECTIONS: '4',
      REDIS_CONNECT_TIMEOUT_MS: '1500',
      REDIS_COMMAND_TIMEOUT_MS: '250',
    };
    const c = resolveRedisOptions(undefined, env);
    expect(c.target).toEqual({ kind: 'standalone', host: 'redis.local', port: 6390, db: 3 });
    expect(c).toMatchObject({
      username: 'u',
      password: 'pw',
      tls: {},
      keyPrefix: 'shop:',
      maxConnections: 4,
      connectTimeout: 1500,
      commandTimeout: 250,
    });
    // Options that name no server are merged over the environment.
    expect(resolveRedisOptions({ keyPrefix: 'x:' }, env).keyPrefix).toBe('x:');
    // Options that name a server ignore the environment entirely.
    expect(resolveRedisOptions({ port: 7000 }, env).target).toMatchObject({
      host: '127.0.0.1',
      port: 7000,
    });
  });

  it('treats an empty url or host like an unset one, as an empty variable is', () => {
    const c = resolveRedisOptions(
      { url: '', keyPrefix: 'p:' },
      { REDIS_URL: 'redis://envhost:6400' },
    );
    expect(c.target).toMatchObject({ host: 'envhost', port: 6400 });
    expect(resolveRedisOptions({ url: '  ', host: '' }, {}).target).toMatchObject({
      host: '127.0.0.1',
    });
  });

  it('reads sentinel and cluster topologies from the environment', () => {
    const s = resolveRedisOptions(undefined, {
      REDIS_SENTINELS: '10.0.0.1:26379, 10.0.0.2:26379',
      REDIS_SENTINEL_NAME: 'mymaster',
    });
    expect(s.target).toMatchObject({
      kind: 'sentinel',
      name: 'mymaster',
      sentinels: [
        { host: '10.0.0.1', port: 26379 },
        { host: '10.0.0.2', port: 26379 },
      ],
    });
    const c = resolveRedisOptions(undefined, { REDIS_CLUSTER_NODES: '127.0.0.1:7000,[::1]:7001' });
    expect(c.target).toMatchObject({
      kind: 'cluster',
      nodes: [
        { host: '127.0.0.1', port: 7000 },
        { host: '::1', port: 7001 },
      ],
    });
    expect(c.address).toBe('cluster 127.0.0.1:7000,[::1]:7001');
  });

  describe('names the option or variable and the value', () => {
    it.each<[string, unknown, NodeJS.ProcessEnv, string]>([
      [
        'port abc (variable)',
        undefined,
        { REDIS_PORT: 'abc' },
        'REDIS_PORT = "abc"; expected an integer from 1 to 65535',
      ],
      [
        'port abc (option)',
        { port: 'abc' },
        {},
        'port = "abc"; expected an integer from 1 to 65535',
      ],
      [
        'port out of range',
        { port: 70000 },
        {},
        'port = 70000; expected an integer from 1 to 65535',
      ],
      [
        'negative connect timeout',
        { connectTimeout: -5 },
        {},
        'connectTimeout = -5; expected a positive number of milliseconds',
      ],
      [
        'negative command timeout',
        { commandTimeout: -1 },
        {},
        'commandTimeout = -1; expected a positive number of milliseconds',
      ],
      [
        'negative timeout (variable)',
        undefined,
        { REDIS_CONNECT_TIMEOUT_MS: '-100' },
        'REDIS_CONNECT_TIMEOUT_MS = "-100"; expected a positive integer (milliseconds)',
      ],
      [
        'cluster and sentinel',
        {
          cluster: { nodes: [{ host: 'a', port: 1 }] },
          sentinel: { sentinels: [{ host: 'b', port: 2 }], name: 'm' },
        },
        {},
        'sentinel + cluster = "sentinel + cluster"; expected only one of url, sentinel, cluster or client',
      ],
      [
        'cluster and sentinel (variables)',
        undefined,
        { REDIS_CLUSTER_NODES: 'a:1', REDIS_SENTINELS: 'b:2', REDIS_SENTINEL_NAME: 'm' },
        'REDIS_SENTINELS + REDIS_CLUSTER_NODES',
      ],
      [
        'unparsable URL',
        { url: 'redis://user:hunter2@exa mple:6379' },
        {},
        'url = "redis://user:***@exa mple:6379"; expected redis://',
      ],
      ['wrong scheme', { url: 'http://localhost:6379' }, {}, 'scheme http: is not supported'],
      [
        'unparsable URL (variable)',
        undefined,
        { REDIS_URL: 'not a url' },
        'REDIS_URL = "not a url"',
      ],
      [
        'unknown REDIS_TLS value',
        undefined,
        { REDIS_TLS: 'maybe' },
        'REDIS_TLS = "maybe"; expected one of true, false, 1, 0, yes, no, on, off',
      ],
      [
        'bad REDIS_MAX_CONNECTIONS',
        undefined,
        { REDIS_MAX_CONNECTIONS: '0' },
        'REDIS_MAX_CONNECTIONS = "0"',
      ],
      [
        'bad cluster node list',
        undefined,
        { REDIS_CLUSTER_NODES: 'localhost' },
        'REDIS_CLUSTER_NODES = "localhost"; expected a comma-separated list of host:port, not "localhost"',
      ],
      [
        'sentinels without a name',
        undefined,
        { REDIS_SENTINELS: 'a:1' },
        'REDIS_SENTINEL_NAME = undefined',
      ],
      [
        'empty sentinel name',
        { sentinel: { sentinels: [{ host: 'a', port: 1 }], name: '' } },
        {},
        'sentinel.name = ""',
      ],
      ['empty cluster nodes', { cluster: { nodes: [] } }, {}, 'cluster.nodes = []'],
      [
        'a bad node port',
        { cluster: { nodes: [{ host: 'a', port: 0 }] } },
        {},
        'cluster.nodes[0].port = 0',
      ],
      [
        'url and host',
        { url: 'redis://:pw@a:1', host: 'b' },
        {},
        'url + host = "redis://:***@a:1"; expected either url or host/port',
      ],
      [
        'db on a cluster',
        { cluster: { nodes: [{ host: 'a', port: 1 }] }, db: 2 },
        {},
        'db = 2; expected 0',
      ],
      [
        'retry jitter',
        { retry: { jitter: 2 } },
        {},
        'retry.jitter = 2; expected a number from 0 to 1',
      ],
      [
        'retry factor below 1',
        { retry: { factor: 0.5 } },
        {},
        'retry.factor = 0.5; expected a number from 1 to 10',
      ],
      [
        'retry cap below start',
        { retry: { initialDelay: 500, maxDelay: 100 } },
        {},
        'retry.maxDelay = 100; expected at least retry.initialDelay (500 milliseconds)',
      ],
      ['maxConnections zero', { maxConnections: 0 }, {}, 'maxConnections = 0'],
      ['cache ttl NaN', { cache: { ttl: Number.NaN } }, {}, 'cache.ttl = NaN'],
      [
        'session not an object',
        { session: 5 },
        {},
        'session = 5; expected { ttl?, absoluteTtl?, maxBytes?, maxSessionsPerUser? }',
      ],
      [
        'session ttl zero',
        { session: { ttl: 0 } },
        {},
        'session.ttl = 0; expected a positive number of milliseconds',
      ],
      [
        'session absoluteTtl negative',
        { session: { absoluteTtl: -1 } },
        {},
        'session.absoluteTtl = -1; expected a positive number of milliseconds',
      ],
      [
        'session maxBytes zero',
        { session: { maxBytes: 0 } },
        {},
        'session.maxBytes = 0; expected a positive integer (bytes)',
      ],
      [
        'session maxBytes fractional',
        { session: { maxBytes: 1.5 } },
        {},
        'session.maxBytes = 1.5; expected a positive integer (bytes)',
      ],
      [
        'session maxSessionsPerUser zero',
        { session: { maxSessionsPerUser: 0 } },
        {},
        'session.maxSessionsPerUser = 0; expected a positive integer, or null for no limit',
      ],
      [
        'session maxSessionsPerUser a string',
        { session: { maxSessionsPerUser: '5' } },
        {},
        'session.maxSessionsPerUser = "5"; expected a positive integer, or null for no limit',
      ],
      [
        'lazyConnect not a boolean',
        { lazyConnect: 'yes' },
        {},
        'lazyConnect = "yes"; expected true or false',
      ],
      [
        'coalesceWrites not a boolean',
        { coalesceWrites: 1 },
        {},
        'coalesceWrites = 1; expected true or false',
      ],
    ])('%s', (_case, options, env, text) => {
      const err = configError(options, env);
      expect(err.message).toContain(text);
      expect(err.code).toBe('REDIS_CONFIG_INVALID');
    });

    it('resolves session defaults and accepts explicit session limits', () => {
      expect(resolveRedisOptions({}, {}).session).toEqual({
        ttl: 1_800_000,
        absoluteTtl: 86_400_000,
        maxBytes: 65_536,
        maxSessionsPerUser: null,
      });
      expect(
        resolveRedisOptions(
          { session: { ttl: 1000, absoluteTtl: 5000, maxBytes: 1024, maxSessionsPerUser: 3 } },
          {},
        ).session,
      ).toEqual({ ttl: 1000, absoluteTtl: 5000, maxBytes: 1024, maxSessionsPerUser: 3 });
      expect(
        resolveRedisOptions({ session: { maxSessionsPerUser: null } }, {}).session
          .maxSessionsPerUser,
      ).toBeNull();
    });

    it('never prints a password, even a non-string one', () => {
      const err = configError({ password: 12345 as unknown as string });
      expect(err.message).toBe(
        'Invalid Redis configuration: password = "***"; expected a string. Fix password and restart.',
      );
      const fromUrl = configError(undefined, { REDIS_URL: 'redis://:topsecret@h:1/x' });
      expect(fromUrl.message).not.toContain('topsecret');
      expect(fromUrl.message).toContain('redis://:***@h:1/x');
    });
  });
});

describe('parseRedisUrl', () => {
  it('defaults the port and database', () => {
    expect(parseRedisUrl('redis://localhost')).toEqual({
      host: 'localhost',
      port: 6379,
      db: 0,
      username: undefined,
      password: undefined,
      tls: false,
    });
  });

  it('accepts IPv6 hosts', () => {
    expect(parseRedisUrl('redis://[::1]:7000/1')).toMatchObject({ host: '::1', port: 7000, db: 1 });
  });
});

describe('redaction', () => {
  it('redacts URL passwords, valid or not', () => {
    expect(redactUrl('redis://user:pw@host:1')).toBe('redis://user:***@host:1');
    expect(redactUrl('redis://:pw@host')).toBe('redis://:***@host');
    expect(redactUrl('redis://host:6379')).toBe('redis://host:6379');
    expect(redactUrl('rediss://u:p@ss@h/0')).toBe('rediss://u:***@h/0');
  });

  it('scrubs every occurrence of each secret', () => {
    expect(scrubSecrets('auth pw failed for pw', ['pw', undefined, ''])).toBe(
      'auth *** failed for ***',
    );
  });
});
