// jest globalSetup: start the Redis topologies the test run needs, on free loopback ports.
//
// Env in:  REDIS_INFRA_TEST_DIR   base directory (default: a fresh mkdtemp under os.tmpdir())
//          REDIS_TEST_TOPOLOGIES  comma list out of standalone,cluster,sentinel (default: all three)
// Env out (jest hands these to its workers):
//          REDIS_TEST_BASE_DIR, REDIS_TEST_URL, REDIS_TEST_CLUSTER_NODES, REDIS_TEST_SENTINELS,
//          REDIS_TEST_SENTINEL_NAME, REDIS_TEST_SENTINEL_MASTER, REDIS_TEST_SENTINEL_REPLICA
// State for global-teardown.mjs: globalThis[STATE_KEY] (same process) and <base>/topology.json.

import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import {
  startCluster,
  startSentinel,
  startStandalone,
  stopAll,
} from '../../scripts/redis/servers.mjs';

export const STATE_KEY = Symbol.for('nestjs-redis-infra.test-topology');
export const STATE_FILE = 'topology.json';

const STARTERS = {
  standalone: (baseDir) => startStandalone({ baseDir }),
  cluster: (baseDir) => startCluster({ baseDir }),
  sentinel: (baseDir) => startSentinel({ baseDir, name: 'mymaster' }),
};

const addr = (n) => `${n.host}:${n.port}`;

function describe(kind, t) {
  const node = ({ host, port, pid, dir }) => ({ host, port, pid, dir });
  switch (kind) {
    case 'standalone':
      return { ...node(t), url: t.url };
    case 'cluster':
      return {
        nodes: t.nodes.map((n) => ({ ...node(n), id: n.id, role: n.role, busPort: n.busPort })),
        masters: t.masters.map(addr),
        replicas: t.replicas.map(addr),
      };
    case 'sentinel':
      return {
        name: t.name,
        master: node(t.master),
        replica: node(t.replica),
        sentinels: t.sentinels.map(node),
      };
    default:
      throw new Error(`unknown topology ${kind}`);
  }
}

export default async function globalSetup() {
  const wanted = (process.env.REDIS_TEST_TOPOLOGIES ?? 'standalone,cluster,sentinel')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const unknown = wanted.filter((k) => !(k in STARTERS));
  if (unknown.length) {
    throw new Error(
      `REDIS_TEST_TOPOLOGIES: unknown topology ${unknown.join(', ')} (expected standalone, cluster, sentinel)`,
    );
  }
  const kinds = [...new Set(wanted)];

  let baseDir;
  let createdBaseDir = false;
  if (process.env.REDIS_INFRA_TEST_DIR) {
    baseDir = path.resolve(process.env.REDIS_INFRA_TEST_DIR);
    await fs.mkdir(baseDir, { recursive: true });
    // Leftovers of a crashed earlier run in the same directory: stop them, drop their files
    // (a stale nodes-<port>.conf would make a new cluster node join the old cluster).
    await stopAll(baseDir);
    await Promise.all(
      [...Object.keys(STARTERS), STATE_FILE].map((name) =>
        fs.rm(path.join(baseDir, name), { recursive: true, force: true }),
      ),
    );
  } else {
    baseDir = await fs.mkdtemp(path.join(os.tmpdir(), 'nestjs-redis-infra-test-'));
    createdBaseDir = true;
  }

  const t0 = Date.now();
  const results = await Promise.allSettled(
    kinds.map(async (kind) => {
      const started = Date.now();
      const topology = await STARTERS[kind](path.join(baseDir, kind));
      return { kind, topology, ms: Date.now() - started };
    }),
  );
  const failures = results.filter((r) => r.status === 'rejected').map((r) => r.reason);
  const ok = results.filter((r) => r.status === 'fulfilled').map((r) => r.value);

  if (failures.length) {
    await Promise.allSettled(ok.map(({ topology }) => topology.stop()));
    await stopAll(baseDir).catch(() => {});
    if (createdBaseDir) await fs.rm(baseDir, { recursive: true, force: true }).catch(() => {});
    const message = failures.map((e) => (e instanceof Error ? e.message : String(e))).join('\n\n');
    throw new Error(`global-setup: could not start the Redis test servers:\n${message}`);
  }

  const env = { REDIS_TEST_BASE_DIR: baseDir };
  const byKind = Object.fromEntries(ok.map((r) => [r.kind, r.topology]));
  if (byKind.standalone) env.REDIS_TEST_URL = byKind.standalone.url;
  if (byKind.cluster) env.REDIS_TEST_CLUSTER_NODES = byKind.cluster.nodes.map(addr).join(',');
  if (byKind.sentinel) {
    env.REDIS_TEST_SENTINELS = byKind.sentinel.sentinels.map(addr).join(',');
    env.REDIS_TEST_SENTINEL_NAME = byKind.sentinel.name;
    env.REDIS_TEST_SENTINEL_MASTER = addr(byKind.sentinel.master);
    env.REDIS_TEST_SENTINEL_REPLICA = addr(byKind.sentinel.replica);
  }
  Object.assign(process.env, env);

  const state = {
    baseDir,
    createdBaseDir,
    env,
    topologies: Object.fromEntries(ok.map((r) => [r.kind, describe(r.kind, r.topology)])),
    pids: ok.flatMap(({ kind, topology: t }) =>
      kind === 'standalone'
        ? [t.pid]
        : kind === 'cluster'
          ? t.nodes.map((n) => n.pid)
          : [t.master.pid, t.replica.pid, ...t.sentinels.map((s) => s.pid)],
    ),
  };
  await fs.writeFile(path.join(baseDir, STATE_FILE), `${JSON.stringify(state, null, 2)}\n`);
  globalThis[STATE_KEY] = { ...state, live: byKind };

  const timings = ok.map((r) => `${r.kind} ${(r.ms / 1000).toFixed(1)}s`).join(', ');
  console.log(
    `\n[redis] ${timings || 'no topologies'} (total ${((Date.now() - t0) / 1000).toFixed(1)}s) in ${baseDir}`,
  );
}
