import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';
import type { Redis } from 'ioredis';
import type { RedisClient } from '../../src/index.js';
import type { CapturingLogger } from '../support/app.js';
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
}

const CASES: SentinelCase[] = [
  {
    label: 'SENTINEL FAILOVER',
    fault: (t) => sendCommand(t.sentinels[0], ['SENTINEL', 'FAILOVER', t.name]),
  },
  { label: 'SIGKILL of the master', fault: (t) => sigkill(t.master) },
];

/**
 * A master + replica + 3 sentinels of its own per case (a sentinel does not fail the same master
 * over twice within 2 × failover-timeout), data nodes behind a password, the module's client
 * found through the sentinels.
 */
describe.each(CASES)('Sentinel: $label', ({ label, fault }) => {
  let topology: SentinelTopology;
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
    ({ app, client, logger } = await startFailoverApp({
      sentinel: {
        sentinels: topology.sentinels.map((s) => ({ host: s.host, port: s.port })),
        name: topology.name,
      },
      password: PASSWORD,
    }));
  });

  afterAll(async () => {
    await app?.close();
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
    await waitFor(
      async () => {
        for (const s of topology.sentinels) {
          const addr = (await sendCommand(s, [
            'SENTINEL',
            'GET-MASTER-ADDR-BY-NAME',
            topology.name,
          ])) as string[];
          if (Number(addr[1]) !== promoted.port) return false;
        }
        const role = (await sendCommand({ ...promoted, password: PASSWORD }, ['ROLE'])) as [string];
        return role[0] === 'master' && (client as Redis).stream?.remotePort === promoted.port;
      },
      { timeoutMs: 30_000, what: `the client on the promoted master ${promoted.port}` },
    );
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
