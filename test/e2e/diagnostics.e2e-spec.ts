import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';

import { RedisModule, RedisService } from '../../src/index.js';
import { startApp } from '../support/app.js';
import {
  sendCommand,
  specDir,
  startStandalone,
  topologies,
  uniqueConnectionName,
  type StandaloneServer,
  type TopologyCase,
} from '../support/redis.js';

describe.each(topologies().map((t) => [t.name, t] as const))(
  'RedisService.diagnostics on %s',
  (_name, topology: TopologyCase) => {
    let app: INestApplication;

    beforeAll(async () => {
      app = await startApp({
        imports: [
          RedisModule.forRoot({
            ...topology.options,
            connectionName: uniqueConnectionName('diag'),
          }),
        ],
      });
    });

    afterAll(async () => {
      await app.close();
    });

    it('reports every master, its replicas, memory, persistence and our connections', async () => {
      const report = await app.get(RedisService).diagnostics();
      const masters = topology.name === 'cluster' ? 3 : 1;
      expect(report.nodes).toHaveLength(masters);
      expect(report.connections.max).toBe(10);
      expect(report.connections.open).toBeGreaterThanOrEqual(1);
      expect(report.connections.usage).toBeCloseTo(report.connections.open / 10);
      for (const node of report.nodes) {
        expect(node.errors).toEqual([]);
        expect(node.version).toMatch(/^\d+\.\d+\.\d+$/);
        expect(node.role).toBe('master');
        expect(node.memory?.used).toBeGreaterThan(0);
        expect(node.memory?.policy).toBe('noeviction');
        expect(node.persistence?.aofEnabled).toBe(false);
        expect(node.clients?.connected).toBeGreaterThanOrEqual(1);
        if (topology.name !== 'standalone') {
          expect(node.replicas.length).toBeGreaterThanOrEqual(topology.name === 'cluster' ? 0 : 1);
          for (const r of node.replicas) expect(r.lagBytes).toBeGreaterThanOrEqual(0);
        }
      }
    });
  },
);

describe('RedisService.diagnostics against its own server', () => {
  let server: StandaloneServer;
  let app: INestApplication;
  let limited: INestApplication;
  const target = (): { host: string; port: number } => ({ host: server.host, port: server.port });

  beforeAll(async () => {
    server = await startStandalone({ baseDir: specDir('diagnostics') });
    await sendCommand(target(), ['CONFIG', 'SET', 'slowlog-log-slower-than', '0']);
    await sendCommand(target(), ['CONFIG', 'SET', 'latency-monitor-threshold', '1']);
    await sendCommand(target(), [
      'ACL',
      'SETUSER',
      'diag',
      'on',
      '>diag-secret',
      '~*',
      '+@all',
      '-info',
      '-slowlog',
    ]);
    app = await startApp({ imports: [RedisModule.forRoot({ url: server.url })] });
    limited = await startApp({
      imports: [
        RedisModule.forRoot({
          host: server.host,
          port: server.port,
          username: 'diag',
          password: 'diag-secret',
        }),
      ],
    });
  });

  afterAll(async () => {
    await app?.close();
    await limited?.close();
    await server?.stop();
  });

  it('gives the slow log and latency events, arguments cut to 100 characters', async () => {
    const redis = app.get(RedisService);
    // A script that keeps the server busy for a few ms: a latency event above 1 ms.
    await redis.client.eval(
      `local t = redis.call('TIME'); local start = t[1] * 1000000 + t[2]
       repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > 5000
       return 1`,
      0,
    );
    // After the script: each TIME it ran is a slow log entry of its own.
    await redis.client.set('diag:long', 'x'.repeat(500));
    const [node] = (await redis.diagnostics({ slowlogEntries: 50 })).nodes;
    expect(node.errors).toEqual([]);
    const set = node.slowlog.find((e) => e.command[0]?.toLowerCase() === 'set');
    expect(set?.command[2]).toHaveLength(101);
    expect(node.slowlog.every((e) => e.at instanceof Date && e.durationMicros >= 0)).toBe(true);
    expect(node.latency.map((e) => e.event)).toContain('command');
  });

  it('reports what the ACL denies, with the permission to grant, and the rest of the report', async () => {
    const [node] = (await limited.get(RedisService).diagnostics()).nodes;
    expect(node.errors.map((e) => [e.command, e.denied, e.permission])).toEqual([
      ['INFO', true, '+info'],
      ['SLOWLOG', true, '+slowlog|get'],
    ]);
    expect(node.latency.length).toBeGreaterThanOrEqual(1);
    expect(node.memory).toBeUndefined();
    expect(JSON.stringify(node)).not.toContain('diag-secret');
  });

  it('rejects bad options naming them', async () => {
    const redis = app.get(RedisService);
    await expect(redis.diagnostics({ timeout: 0 })).rejects.toThrow(/timeout/);
    await expect(redis.diagnostics({ slowlogEntries: 1.5 })).rejects.toThrow(/slowlogEntries/);
  });
});
