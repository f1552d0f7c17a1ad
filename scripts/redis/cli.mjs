#!/usr/bin/env node
// Start and stop daemonized redis-server topologies from the shell (demo script, manual runs).
//
//   node scripts/redis/cli.mjs start standalone --dir D [--port P] [--password PW]
//   node scripts/redis/cli.mjs start cluster    --dir D [--masters 3] [--replicas 1]
//   node scripts/redis/cli.mjs start sentinel   --dir D [--name mymaster] [--sentinels 3]
//   node scripts/redis/cli.mjs stop  --dir D
//
// `start` prints one line of JSON and exits; the servers keep running. `stop` stops every
// server whose pidfile is under D and removes D (only if `start` created it: marker file);
// it ignores SIGINT, SIGTERM and SIGHUP and always ends by itself (SIGKILL after a bounded wait).
// Exit codes: 0 ok, 1 failure, 2 usage error.

import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

import {
  runningServers,
  startCluster,
  startSentinel,
  startStandalone,
  stopAll,
} from './servers.mjs';

const MARKER = '.nestjs-redis-infra';

const USAGE = `Usage:
  node scripts/redis/cli.mjs start standalone --dir DIR [--port PORT] [--password PASSWORD]
  node scripts/redis/cli.mjs start cluster --dir DIR [--masters N] [--replicas N]
  node scripts/redis/cli.mjs start sentinel --dir DIR [--name NAME] [--sentinels N]
  node scripts/redis/cli.mjs stop --dir DIR`;

class UsageError extends Error {}

function intOption(values, name) {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0)
    throw new UsageError(`--${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
  return n;
}

function describe(type, topology, ms) {
  const node = ({ host, port, pid }) => ({ host, port, pid, url: `redis://${host}:${port}` });
  switch (type) {
    case 'standalone':
      return { type, ...topology.toJSON(), startedInMs: ms };
    case 'cluster':
      return {
        type,
        nodes: topology.nodes.map(({ host, port, pid, busPort, id, role, masterId }) => ({
          host,
          port,
          pid,
          busPort,
          id,
          role,
          masterId,
        })),
        masters: topology.masters.map(node),
        replicas: topology.replicas.map(node),
        startedInMs: ms,
      };
    case 'sentinel':
      return {
        type,
        name: topology.name,
        quorum: topology.quorum,
        master: node(topology.master),
        replica: node(topology.replica),
        sentinels: topology.sentinels.map(node),
        startedInMs: ms,
      };
    default:
      throw new UsageError(`unknown topology ${type}`);
  }
}

function isDangerousDir(dir) {
  const resolved = path.resolve(dir);
  return [path.parse(resolved).root, os.homedir(), process.cwd()].some(
    (d) => path.resolve(d) === resolved,
  );
}

async function start(type, values) {
  if (!['standalone', 'cluster', 'sentinel'].includes(type)) {
    throw new UsageError(
      `unknown topology ${JSON.stringify(type)} (expected standalone, cluster or sentinel)`,
    );
  }
  if (!values.dir) throw new UsageError('--dir is required');
  const port = intOption(values, 'port');
  const masters = intOption(values, 'masters') ?? 3;
  const replicasPerMaster = intOption(values, 'replicas') ?? 1;
  const sentinels = intOption(values, 'sentinels') ?? 3;
  const baseDir = path.resolve(values.dir);
  // Mark the directory as ours (so that `stop` may remove it) only if it is new or empty.
  let entries;
  try {
    entries = await fs.readdir(baseDir);
  } catch (error) {
    if (error.code !== 'ENOENT') throw error;
    entries = [];
  }
  await fs.mkdir(baseDir, { recursive: true });
  if (entries.length === 0 && !isDangerousDir(baseDir)) {
    await fs.writeFile(
      path.join(baseDir, MARKER),
      'created by scripts/redis/cli.mjs start; `stop` removes this directory\n',
    );
  }
  const t0 = Date.now();
  let topology;
  if (type === 'standalone')
    topology = await startStandalone({ baseDir, port, password: values.password });
  else if (type === 'cluster')
    topology = await startCluster({ baseDir, masters, replicasPerMaster });
  else topology = await startSentinel({ baseDir, name: values.name ?? 'mymaster', sentinels });
  process.stdout.write(`${JSON.stringify(describe(type, topology, Date.now() - t0))}\n`);
}

// A stop that is cut short leaves a server running and its directory behind, and it is usually
// run from a clean-up that is itself answering a signal (Ctrl-C, a second Ctrl-C, a runner's
// SIGTERM to the whole process group). Node resets signals its parent ignored, so `stop` ignores
// them here; it ends by itself: each server gets SIGTERM, then SIGKILL after a bounded wait.
// Output that nobody reads any more (a closed pipe) must not fail it either.
function shieldStop() {
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => {});
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => {});
}

async function stop(values) {
  if (!values.dir) throw new UsageError('--dir is required');
  shieldStop();
  const baseDir = path.resolve(values.dir);
  const t0 = Date.now();
  const stopped = await stopAll(baseDir);
  const left = await runningServers(baseDir);
  if (left.length) {
    throw new Error(
      `servers still running after stop: ${left.map((s) => `pid ${s.pid} (${s.dir})`).join(', ')}`,
    );
  }
  let removed = false;
  let exists = true;
  try {
    await fs.access(baseDir);
  } catch {
    exists = false;
  }
  if (exists) {
    let marked = true;
    try {
      await fs.access(path.join(baseDir, MARKER));
    } catch {
      marked = false;
    }
    if (!marked || isDangerousDir(baseDir)) {
      process.stderr.write(
        `cli.mjs: servers stopped, but not removing ${baseDir}: it was not empty when "start" first used it (no ${MARKER} marker)\n`,
      );
    } else {
      await fs.rm(baseDir, { recursive: true, force: true });
      removed = true;
    }
  }
  process.stdout.write(
    `${JSON.stringify({ stopped, removed, dir: baseDir, stoppedInMs: Date.now() - t0 })}\n`,
  );
}

async function main(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        dir: { type: 'string' },
        port: { type: 'string' },
        password: { type: 'string' },
        masters: { type: 'string' },
        replicas: { type: 'string' },
        name: { type: 'string' },
        sentinels: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (error) {
    throw new UsageError(error.message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const [command, type, ...rest] = positionals;
  if (command === 'start') {
    if (!type) throw new UsageError('start: which topology? (standalone, cluster or sentinel)');
    if (rest.length) throw new UsageError(`unexpected arguments: ${rest.join(' ')}`);
    return start(type, values);
  }
  if (command === 'stop') {
    if (type !== undefined)
      throw new UsageError(`unexpected arguments: ${positionals.slice(1).join(' ')}`);
    return stop(values);
  }
  throw new UsageError(command ? `unknown command ${JSON.stringify(command)}` : 'missing command');
}

main(process.argv.slice(2)).catch((error) => {
  if (error instanceof UsageError) {
    process.stderr.write(`cli.mjs: ${error.message}\n${USAGE}\n`);
    process.exitCode = 2;
  } else {
    process.stderr.write(`cli.mjs: ${error.message}\n`);
    process.exitCode = 1;
  }
});
