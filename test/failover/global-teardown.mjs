// jest globalTeardown of the failover pass: stop whatever a failed spec left running under the
// pass's directory (by pidfile), then remove it. Throws, failing the run, if a server survived.
import fs from 'node:fs/promises';

import { runningServers, stopAll } from '../../scripts/redis/servers.mjs';

export default async function globalTeardown() {
  const baseDir = process.env.REDIS_TEST_BASE_DIR;
  if (!baseDir) return;
  const stopped = await stopAll(baseDir);
  const left = await runningServers(baseDir);
  if (left.length) {
    throw new Error(
      `failover teardown: still running: ${left.map((s) => `${s.pid} (${s.dir})`).join(', ')}`,
    );
  }
  await fs.rm(baseDir, { recursive: true, force: true });
  if (stopped.length)
    console.warn(`[failover] stopped ${stopped.length} server(s) a spec left running`);
}
