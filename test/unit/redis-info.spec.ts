import { describe, expect, it } from '@jest/globals';

import { parseInfo } from '../../src/redis-info.js';
import { escapeGlob } from '../../src/redis.service.js';

const sample = [
  '# Server',
  'redis_version:7.0.15',
  'redis_git_sha1:00000000',
  'redis_mode:standalone',
  'tcp_port:6379',
  'uptime_in_seconds:42',
  '',
  '# Memory',
  'used_memory:1048576',
  'maxmemory:0',
  'mem_fragmentation_ratio:1.50',
  'maxmemory_policy:noeviction',
  '',
  '# Keyspace',
  'db0:keys=12,expires=3,avg_ttl=1000',
  'db2:keys=1,expires=0,avg_ttl=0',
  '',
].join('\r\n');

describe('parseInfo', () => {
  it('parses sections, numbers and key=value lists', () => {
    const info = parseInfo(sample);
    expect(info.server).toEqual({
      redis_version: '7.0.15',
      redis_git_sha1: '00000000',
      redis_mode: 'standalone',
      tcp_port: 6379,
      uptime_in_seconds: 42,
    });
    expect(info.memory?.used_memory).toBe(1048576);
    expect(info.memory?.mem_fragmentation_ratio).toBe(1.5);
    expect(info.memory?.maxmemory_policy).toBe('noeviction');
    expect(info.keyspace?.db0).toEqual({ keys: 12, expires: 3, avg_ttl: 1000 });
    expect(info.keyspace?.db2.keys).toBe(1);
  });

  it('tolerates empty input', () => {
    expect(parseInfo('')).toEqual({});
  });
});

describe('escapeGlob', () => {
  it('makes a key prefix match literally', () => {
    expect(escapeGlob('app:*[x]?\\')).toBe('app:\\*\\[x\\]\\?\\\\');
  });
});
