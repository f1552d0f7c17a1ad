import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';
import type { Redis } from 'ioredis';

import type { RedisClient, RedisNodeAddress } from '../../src/index.js';
import type { CapturingLogger } from '../support/app.js';
import { FaultProxy } from '../support/fault-proxy.js';
import {
  sendCommand,
  specDir,
  startSentinel,
  waitFor,
  type SentinelTopology,
} from '../support/redis.js';

import {
  classify,
  describeError,
  figuresLine,
  leaksPassword,
  PASSWORD,
  requirePassword,
  ServiceLoop,
  servicesWorkAgain,
  sigkill,
  startFailoverApp,
  WriteProbe,
} from './harness.js';

interface SentinelCase {
  label: string;
  fault: (topology: SentinelTopology) => Promise<unknown>;
  /** Added latency on the way to the sentinels (the client reaches them through a proxy). */
  sentinelLatencyMs?: number;
}

const CASES: SentinelCase[] = [
  {
    label: 'SENTINEL FAILOVER',
    fault: (t) => sendCommand(t.sentinels[0], ['SENTINEL', 'FAILOVER', t.name]),
  },
  { label: 'SIGKILL of the master', fault: (t) => sigkill(t.master) },
  {
    // While the master is gone the client keeps asking the sentinels where it is; with slow
    // sentinels the switch announcement lands in the middle of such a question, which made
    // ioredis end the client for good.
    label: 'SIGKILL of the master, sentinels 600 ms away',
    fault: (t) => sigkill(t.master),
    sentinelLatencyMs: 600,
  },
];

/**
 * A master + replica + 3 sentinels of its own per case (a sentinel does not fail the same master
 * over twice within 2 × failover-timeout), data nodes behind a password, the module's client
 * found through the sentinels.
 */
describe.each(CASES)('Sentinel: $label', ({ label, fault, sentinelLatencyMs }) => {
  let topology: SentinelTopology;
  const proxies: FaultProxy[] = [];
  let app: INestApplication | undefined;
  let client: RedisClient;
  let logger: CapturingLogger;

  beforeAll(async () => {
    topology = await startSentinel({
      baseDir: specDir('failover-sentinel'),
      // How long a dead master goes unnoticed; Redis's default is 30 s.
      downAfterMilliseconds: 1_000,
    });
    for (const s of topology.sentinels) {
      await sendCommand(s, ['SENTINEL', 'SET', topology.name, 'auth-pass', PASSWORD]);
    }
    await requirePassword([topology.master, topology.replica], PASSWORD);
    let sentinels: RedisNodeAddress[] = topology.sentinels.map((s) => ({
      host: s.host,
      port: s.port,
    }));
    if (sentinelLatencyMs !== undefined) {
      for (const s of sentinels) {
        const proxy = await FaultProxy.start(s);
        proxy.setLatency(sentinelLatencyMs);
        proxies.push(proxy);
      }
      sentinels = proxies.map((p) => ({ host: p.host, port: p.port }));
    }
    ({ app, client, logger } = await startFailoverApp({
      sentinel: {
        sentinels,
        name: topology.name,
      },
      password: PASSWORD,
    }));
  });

  afterAll(async () => {
    await app?.close();
    await Promise.all(proxies.map((p) => p.close()));
    await topology?.stop();
  });

  it('moves to the promoted replica; the services work again; every error is known and redacted', async () => {
    const tag = '{fo}';
    const probe = new WriteProbe(client, `${tag}:probe`);
    const loop = new ServiceLoop(app!, tag);
    await waitFor(() => probe.successesSince(0) >= 50 && loop.ok >= 6, { what: 'warm-up' });

    const promoted = topology.replica;
    const faultAt = performance.now();

    // When the sentinels name the new master (Redis's part of the gap; the rest is the client's).
    const switchedAt = waitFor(
      async () => {
        const addr = (await sendCommand(topology.sentinels[0], [
          'SENTINEL',
          'GET-MASTER-ADDR-BY-NAME',
          topology.name,
        ])) as string[];
        return Number(addr[1]) === promoted.port ? performance.now() : 0;
      },
      { timeoutMs: 30_000, intervalMs: 10, what: 'the sentinels to switch' },
    );
    await fault(topology);
    let state = '';
    await waitFor(
      async () => {
        const named: number[] = [];
        for (const s of topology.sentinels) {
          const addr = (await sendCommand(s, [
            'SENTINEL',
            'GET-MASTER-ADDR-BY-NAME',
            topology.name,
          ])) as string[];
          named.push(Number(addr[1]));
        }
        const [role] = (await sendCommand({ ...promoted, password: PASSWORD }, ['ROLE'])) as [
          string,
        ];
        const on = (client as Redis).stream?.remotePort;
        state = `sentinels name ${named.join(',')}; ${promoted.port} is ${role}; client ${client.status} on ${on}`;
        return named.every((p) => p === promoted.port) && role === 'master' && on === promoted.port;
      },
      { timeoutMs: 30_000, what: `the client on the promoted master ${promoted.port}` },
    ).catch((error: Error) => {
      throw new Error(`${error.message} (${state})`);
    });
    const switched = performance.now();
    const sentinelSwitchMs = Math.round((await switchedAt) - faultAt);
    await waitFor(
      () => probe.successesSince(switched) >= 20 && loop.successesSince(switched) >= 3,
      { timeoutMs: 20_000, what: 'writes and service calls after the switch' },
    );
    await loop.stop();
    const figures = await probe.stop();
    console.log(
      figuresLine(`sentinel ${label}`, figures, loop, probe.errors) +
        `; sentinels switched ${sentinelSwitchMs} ms after the fault`,
    );

    expect(await servicesWorkAgain(app!, tag)).toEqual({
      loaded: 'loaded',
      cached: 'loaded',
      session: { after: true },
      underLock: 'locked',
    });
    const seen = [...probe.errors, ...loop.failures.map((f) => f.error)];
    expect(seen.filter((e) => classify(e) === 'unknown').map(describeError)).toEqual([]);
    expect(seen.filter((e) => leaksPassword(e, PASSWORD)).map(describeError)).toEqual([]);
    expect(logger.text).not.toContain(PASSWORD);
  });
});
