// jest globalTeardown: stop every Redis server of the run (the global topologies and any server a
// spec started under REDIS_TEST_BASE_DIR), verify they are all gone, remove the base directory if
// global-setup created it. Throws, failing the run, if a server survived.

import fs from 'node:fs/promises';
import path from 'node:path';

import { isRedisProcess, runningServers, stopAll } from '../../scripts/redis/servers.mjs';

const STATE_KEY = Symbol.for('nestjs-redis-infra.test-topology');
const STATE_FILE = 'topology.json';

async function loadState() {
  if (globalThis[STATE_KEY]) return globalThis[STATE_KEY];
  const baseDir = process.env.REDIS_TEST_BASE_DIR;
  if (!baseDir) return undefined;
  try {
    return JSON.parse(await fs.readFile(path.join(baseDir, STATE_FILE), 'utf8'));
  } catch {
    // No state file (setup failed early, or wrote nothing): still sweep the directory.
    return { baseDir, createdBaseDir: false, topologies: {}, pids: [] };
  }
}

// [pid, dir] of every server recorded at setup time.
function recordedServers(state) {
  const t = state.topologies ?? {};
  const nodes = [
    ...(t.standalone ? [t.standalone] : []),
    ...(t.cluster ? t.cluster.nodes : []),
    ...(t.sentinel ? [t.sentinel.master, t.sentinel.replica, ...t.sentinel.sentinels] : []),
  ];
  return nodes.map((n) => [n.pid, n.dir]);
}

export default async function globalTeardown() {
  const state = await loadState();
  if (!state) return;
  const t0 = Date.now();
  const problems = [];

  // Stop the topologies in order (replicas and sentinels before masters) when we still hold them,
  // then sweep every pidfile under the base directory (restarted servers, servers started by specs).
  if (state.live) {
    const results = await Promise.allSettled(Object.values(state.live).map((t) => t.stop()));
    for (const r of results)
      if (r.status === 'rejected') problems.push(r.reason?.message ?? String(r.reason));
  }
  try {
    await stopAll(state.baseDir);
  } catch (error) {
    problems.push(error.message);
  }

  const survivors = [
    ...(await runningServers(state.baseDir)).map((s) => `pid ${s.pid} (${s.dir})`),
    ...recordedServers(state)
      .filter(([pid, dir]) => isRedisProcess(pid, dir))
      .map(([pid, dir]) => `pid ${pid} (${dir})`),
  ];
  const unique = [...new Set(survivors)];

  if (unique.length === 0 && state.createdBaseDir) {
    await fs.rm(state.baseDir, { recursive: true, force: true });
  }
  delete globalThis[STATE_KEY];
  console.log(`[redis] stopped in ${((Date.now() - t0) / 1000).toFixed(1)}s`);

  if (unique.length) {
    throw new Error(
      `global-teardown: Redis servers survived: ${unique.join(', ')}. ` +
        `${state.baseDir} was kept for the logs; clean up with \`node scripts/redis/cli.mjs stop --dir ${state.baseDir}\`` +
        ` or kill -9 ${[...new Set(survivors.map((s) => s.split(' ')[1]))].join(' ')}` +
        (problems.length ? `\n${problems.join('\n')}` : ''),
    );
  }
  if (problems.length) {
    // Everything is gone in the end, but report what went wrong on the way.
    console.warn(`[redis] teardown warnings:\n${problems.join('\n')}`);
  }
}
