// Process control for local redis-server processes: finding the binaries, free loopback
// ports, and checking, signalling and stopping servers through their pidfiles (never by name).

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

import {
  DEFAULT_STOP_TIMEOUT_MS,
  EXTRA_BIN_DIRS,
  HOST,
  IS_LINUX,
  KILL_GRACE_MS,
  PID_FILE,
} from './constants.mjs';

// Binaries
// ---------------------------------------------------------------------------

function isExecutableFile(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function lookupBinary(name, envVar) {
  const fromEnv = process.env[envVar];
  if (fromEnv) {
    const abs = path.resolve(fromEnv);
    if (!isExecutableFile(abs)) {
      throw new Error(`${envVar}=${fromEnv} does not point to an executable file`);
    }
    return abs;
  }
  const dirs = (process.env.PATH ?? '').split(path.delimiter).filter(Boolean);
  for (const dir of [...dirs, ...EXTRA_BIN_DIRS]) {
    const candidate = path.resolve(dir, name);
    if (isExecutableFile(candidate)) return candidate;
  }
  return undefined;
}

/**
 * Locate `redis-server` and `redis-cli`: env REDIS_SERVER_BIN / REDIS_CLI_BIN, else PATH,
 * else /usr/bin, /usr/local/bin, /opt/homebrew/bin.
 * @returns {{ server: string, cli: string }}
 */
export function findRedisBinaries() {
  const server = lookupBinary('redis-server', 'REDIS_SERVER_BIN');
  const cli = lookupBinary('redis-cli', 'REDIS_CLI_BIN');
  if (server && cli) return { server, cli };
  const missing = [!server && 'redis-server', !cli && 'redis-cli'].filter(Boolean).join(' and ');
  throw new Error(
    `${missing} not found (looked in PATH and ${EXTRA_BIN_DIRS.join(', ')}). Install Redis:\n` +
      `  Debian/Ubuntu: apt-get update && apt-get install -y redis-server   (prefix with sudo if not root)\n` +
      `  macOS:         brew install redis\n` +
      `or run scripts/ensure-redis.sh, or point REDIS_SERVER_BIN / REDIS_CLI_BIN at the binaries.`,
  );
}

// ---------------------------------------------------------------------------
// Free ports
// ---------------------------------------------------------------------------

// Ports handed out by this process recently, so that topologies started in parallel in
// one process never get the same port even though each probe socket is closed again.
const issuedPorts = new Set();
const MAX_REMEMBERED_PORTS = 4096;

export function rememberPort(port) {
  issuedPorts.add(port);
  if (issuedPorts.size > MAX_REMEMBERED_PORTS) {
    issuedPorts.delete(issuedPorts.values().next().value);
  }
}

function listenOnEphemeralPort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ port: 0, host: HOST, exclusive: true }, () => resolve(server));
  });
}

function closeServer(server) {
  return new Promise((resolve) => server.close(() => resolve()));
}

/**
 * `n` distinct free TCP ports on 127.0.0.1 (all probe sockets are held open together).
 * @param {number} n
 * @returns {Promise<number[]>}
 */
export async function freePorts(n) {
  if (!Number.isInteger(n) || n < 0)
    throw new TypeError(`freePorts(n): n must be a non-negative integer, got ${n}`);
  const held = [];
  const ports = [];
  try {
    let attempts = 0;
    while (ports.length < n) {
      if (++attempts > n + 500) throw new Error(`could not find ${n} free ports on ${HOST}`);
      const server = await listenOnEphemeralPort();
      held.push(server);
      const { port } = /** @type {net.AddressInfo} */ (server.address());
      // Check and record synchronously, so concurrent callers never hand out the same port.
      if (!issuedPorts.has(port)) {
        rememberPort(port);
        ports.push(port);
      }
    }
  } finally {
    await Promise.all(held.map(closeServer));
  }
  return ports;
}

/** A free TCP port on 127.0.0.1. */
export async function freePort() {
  const [port] = await freePorts(1);
  return port;
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/**
 * Whether `pid` is a live process. Zombies count as gone: PID 1 may reap exited daemons only
 * seconds later. On Linux every thread of the process is checked (`/proc/<pid>/task/<tid>/status`,
 * `State: Z` = gone): after SIGKILL the main thread can turn into a zombie while other threads are
 * still exiting and the process's sockets are still open. Elsewhere `kill -0`.
 */
export function isAlive(pid) {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (IS_LINUX) {
    let tids;
    try {
      tids = fs.readdirSync(`/proc/${pid}/task`);
    } catch {
      return false;
    }
    return tids.some((tid) => {
      const state = readState(`/proc/${pid}/task/${tid}/status`);
      return state !== undefined && state !== 'Z' && state !== 'X' && state !== 'x';
    });
  }
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error.code === 'EPERM';
  }
}

function readState(statusFile) {
  try {
    return /^State:\s+(\S)/m.exec(fs.readFileSync(statusFile, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

export function processState(pid) {
  return IS_LINUX ? readState(`/proc/${pid}/status`) : undefined;
}

function sameDir(actual, dir) {
  let wanted;
  try {
    wanted = fs.realpathSync(dir);
  } catch {
    wanted = path.resolve(dir);
  }
  return actual === wanted || actual === `${wanted} (deleted)`;
}

/**
 * Whether `pid` is a live redis-server (or redis-sentinel) process, and, when `dir` is given,
 * one whose working directory is `dir` (checked on Linux; every server we start chdirs to its
 * own directory). Guards against signalling a recycled pid.
 */
export function isRedisProcess(pid, dir) {
  if (!isAlive(pid)) return false;
  if (IS_LINUX) {
    let comm;
    try {
      comm = fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    } catch {
      return false;
    }
    if (!isRedisCommandName(comm)) return false;
    if (dir !== undefined) {
      let cwd;
      try {
        cwd = fs.readlinkSync(`/proc/${pid}/cwd`);
      } catch {
        return true; // not readable (exiting right now): the comm check has to do
      }
      return sameDir(cwd, dir);
    }
    return true;
  }
  try {
    const comm = execFileSync('ps', ['-p', String(pid), '-o', 'comm='], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
    return isRedisCommandName(path.basename(comm));
  } catch {
    return false;
  }
}

// Process names we accept as "a redis server": redis-server/redis-sentinel (also valkey-*), or
// the name of the binary REDIS_SERVER_BIN points at (Linux truncates comm to 15 characters).
function isRedisCommandName(name) {
  if (/^(redis|valkey)-(server|sentinel)/.test(name)) return true;
  const custom = process.env.REDIS_SERVER_BIN ? path.basename(process.env.REDIS_SERVER_BIN) : '';
  return custom !== '' && (name === custom || (name.length === 15 && custom.startsWith(name)));
}

export function signal(pid, sig) {
  try {
    process.kill(pid, sig);
    return true;
  } catch (error) {
    if (error.code === 'ESRCH') return false;
    throw error;
  }
}

async function waitUntilGone(pid, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid)) {
    if (Date.now() >= deadline) return false;
    await delay(10);
  }
  return true;
}

/**
 * SIGTERM (plus SIGCONT, so a SIGSTOPped server can act on it), wait until the process is gone
 * (zombie = gone), SIGKILL after `timeoutMs`. Resolves true if the process was running.
 */
export async function stopPid(pid, { timeoutMs = DEFAULT_STOP_TIMEOUT_MS } = {}) {
  if (!Number.isInteger(pid) || pid <= 1) throw new TypeError(`stopPid: invalid pid ${pid}`);
  if (!isAlive(pid)) return false;
  signal(pid, 'SIGTERM');
  signal(pid, 'SIGCONT');
  if (await waitUntilGone(pid, timeoutMs)) return true;
  signal(pid, 'SIGKILL');
  if (await waitUntilGone(pid, KILL_GRACE_MS)) return true;
  throw new Error(`process ${pid} is still alive ${KILL_GRACE_MS} ms after SIGKILL`);
}

export async function killPid(pid) {
  if (!isAlive(pid)) return false;
  signal(pid, 'SIGKILL');
  if (await waitUntilGone(pid, KILL_GRACE_MS)) return true;
  throw new Error(`process ${pid} is still alive ${KILL_GRACE_MS} ms after SIGKILL`);
}

export function readPidFileSync(pidFile) {
  let text;
  try {
    text = fs.readFileSync(pidFile, 'utf8').trim();
  } catch {
    return undefined;
  }
  const pid = Number(text);
  return Number.isInteger(pid) && pid > 1 ? pid : undefined;
}

// The pid of the server living in `dir`, if it is running: the pidfile first, else `knownPid`.
export function runningPidInDir(dir, knownPid) {
  const fromFile = readPidFileSync(path.join(dir, PID_FILE));
  if (fromFile !== undefined && isRedisProcess(fromFile, dir)) return fromFile;
  if (knownPid !== undefined && knownPid !== fromFile && isRedisProcess(knownPid, dir))
    return knownPid;
  return undefined;
}

export async function stopServerInDir(dir, knownPid, options) {
  const pid = runningPidInDir(dir, knownPid);
  if (pid === undefined) return undefined;
  return (await stopPid(pid, options)) ? pid : undefined;
}

async function findPidFiles(root, depth = 8) {
  let entries;
  try {
    entries = await fsp.readdir(root, { withFileTypes: true });
  } catch (error) {
    if (error.code === 'ENOENT' || error.code === 'ENOTDIR') return [];
    throw error;
  }
  const found = [];
  for (const entry of entries) {
    const full = path.join(root, entry.name);
    if (entry.isDirectory() && depth > 0) found.push(...(await findPidFiles(full, depth - 1)));
    else if (entry.isFile() && entry.name.endsWith('.pid')) found.push(full);
  }
  return found;
}

/**
 * Live redis servers whose pidfile is under `baseDir` (and whose process runs in the pidfile's
 * directory).
 */
export async function runningServers(baseDir) {
  const result = [];
  for (const pidFile of await findPidFiles(path.resolve(baseDir))) {
    const pid = readPidFileSync(pidFile);
    const dir = path.dirname(pidFile);
    if (pid !== undefined && isRedisProcess(pid, dir)) result.push({ pid, dir, pidFile });
  }
  return result;
}

/**
 * Stop every server whose pidfile is under `baseDir` (crash cleanup). Stale pidfiles are
 * removed. Resolves with the pids that were stopped.
 */
export async function stopAll(baseDir, { timeoutMs = DEFAULT_STOP_TIMEOUT_MS } = {}) {
  const pidFiles = await findPidFiles(path.resolve(baseDir));
  const stopped = [];
  const errors = [];
  await Promise.all(
    pidFiles.map(async (pidFile) => {
      const pid = readPidFileSync(pidFile);
      const dir = path.dirname(pidFile);
      try {
        if (pid !== undefined && isRedisProcess(pid, dir)) {
          if (await stopPid(pid, { timeoutMs })) stopped.push(pid);
        }
        await fsp.rm(pidFile, { force: true });
      } catch (error) {
        errors.push(error);
      }
    }),
  );
  if (errors.length)
    throw new AggregateError(
      errors,
      `stopAll(${baseDir}): ${errors.map((e) => e.message).join('; ')}`,
    );
  return stopped.sort((a, b) => a - b);
}

// ---------------------------------------------------------------------------
