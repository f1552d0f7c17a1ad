// jest globalSetup of the failover pass: a directory for the servers the specs start themselves
// (`specDir()` reads REDIS_TEST_BASE_DIR). No shared topology: every spec kills its own.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export default async function globalSetup() {
  const parent = process.env.REDIS_INFRA_TEST_DIR;
  let baseDir;
  if (parent) {
    baseDir = path.join(path.resolve(parent), 'failover');
    await fs.mkdir(baseDir, { recursive: true });
  } else {
    baseDir = await fs.mkdtemp(path.join(os.tmpdir(), 'nestjs-redis-infra-failover-'));
  }
  process.env.REDIS_TEST_BASE_DIR = baseDir;
}
