// Start and stop real redis-server processes (standalone, cluster, sentinel) on free
// loopback ports for tests, jest globalSetup/globalTeardown and the demo script.
//
// Dependency-free: Node built-ins only. Works on Linux and macOS.
//
// Every server is daemonized (`--daemonize yes`), so the calling process holds no
// child-process handle once a start function returns. A server lives in its own
// directory `<baseDir>/<port>/` holding `redis.pid`, `redis.log` and (cluster) `nodes-<port>.conf`
// or (sentinel) `sentinel.conf`. Stopping is always done through those pidfiles, after
// checking that the pid still belongs to a redis-server running in that directory.

import { spawn, execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

const HOST = '127.0.0.1';
const IS_LINUX = process.platform === 'linux';
const PID_FILE = 'redis.pid';
const LOG_FILE = 'redis.log';
const POLL_MS = 25;
const DEFAULT_START_TIMEOUT_MS = 10_000;
const DEFAULT_CLUSTER_TIMEOUT_MS = 30_000;
const DEFAULT_STOP_TIMEOUT_MS = 5_000;
const KILL_GRACE_MS = 5_000;
const PROBE_TIMEOUT_MS = 1_000;
const CLUSTER_SLOTS = 16384;
const EXTRA_BIN_DIRS = ['/usr/bin', '/usr/local/bin', '/opt/homebrew/bin'];

// ---------------------------------------------------------------------------
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

function rememberPort(port) {
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
  if (!Number.isInteger(n) || n < 0) throw new TypeError(`freePorts(n): n must be a non-negative integer, got ${n}`);
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
// Tiny RESP2 client
// ---------------------------------------------------------------------------

/** An error reply (`-ERR ...`) from Redis. */
export class RespError extends Error {
  constructor(message) {
    super(message);
    this.name = 'RespError';
  }
}

const CRLF = Buffer.from('\r\n');

function encodeCommand(args) {
  const parts = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = Buffer.isBuffer(arg) ? arg : Buffer.from(String(arg), 'utf8');
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, CRLF);
  }
  return Buffer.concat(parts);
}

// Returns [value, nextOffset], or undefined when the buffer does not hold a whole reply yet.
function parseReply(buf, offset) {
  if (offset >= buf.length) return undefined;
  const lineEnd = buf.indexOf(CRLF, offset);
  if (lineEnd === -1) return undefined;
  const type = String.fromCharCode(buf[offset]);
  const line = buf.toString('utf8', offset + 1, lineEnd);
  const next = lineEnd + 2;
  switch (type) {
    case '+':
      return [line, next];
    case '-':
      return [new RespError(line), next];
    case ':':
      return [Number(line), next];
    case '$': {
      const len = Number.parseInt(line, 10);
      if (len < 0) return [null, next];
      if (buf.length < next + len + 2) return undefined;
      return [buf.toString('utf8', next, next + len), next + len + 2];
    }
    case '*': {
      const count = Number.parseInt(line, 10);
      if (count < 0) return [null, next];
      const items = [];
      let pos = next;
      for (let i = 0; i < count; i++) {
        const parsed = parseReply(buf, pos);
        if (!parsed) return undefined;
        items.push(parsed[0]);
        pos = parsed[1];
      }
      return [items, pos];
    }
    default:
      throw new Error(`RESP protocol error: unexpected type byte ${JSON.stringify(type)}`);
  }
}

// One connection, pipelined commands (AUTH first when a password is given); resolves with the
// replies of `commands` (top-level error replies are returned as RespError values, not thrown).
function sendCommands({ host = HOST, port, password, timeoutMs = 2000 }, commands) {
  const all = password !== undefined && password !== null ? [['AUTH', password], ...commands] : commands;
  return new Promise((resolve, reject) => {
    const replies = [];
    let buffer = Buffer.alloc(0);
    let settled = false;
    const socket = net.connect({ host, port });
    const timer = setTimeout(
      () => finish(new Error(`no reply from ${host}:${port} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    function finish(error) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (error) return reject(error);
      if (all !== commands) {
        const auth = replies.shift();
        if (auth instanceof RespError) return reject(new RespError(`AUTH failed: ${auth.message}`));
      }
      resolve(replies);
    }
    socket.setNoDelay(true);
    socket.on('connect', () => socket.write(Buffer.concat(all.map(encodeCommand))));
    socket.on('data', (chunk) => {
      buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
      try {
        let parsed;
        while (replies.length < all.length && (parsed = parseReply(buffer, 0))) {
          replies.push(parsed[0]);
          buffer = buffer.subarray(parsed[1]);
        }
      } catch (error) {
        return finish(error);
      }
      if (replies.length === all.length) finish();
    });
    socket.on('error', (error) => finish(error));
    socket.on('close', () => finish(new Error(`connection to ${host}:${port} closed before all replies arrived`)));
  });
}

/**
 * Send one command over a fresh connection and return its reply. Error replies reject with
 * RespError. Bulk strings are decoded as UTF-8; nil is null; integers are numbers.
 */
export async function sendCommand(target, args) {
  if (!Array.isArray(args) || args.length === 0) throw new TypeError('sendCommand: args must be a non-empty array');
  const [reply] = await sendCommands(target, [args]);
  if (reply instanceof RespError) throw reply;
  return reply;
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

function processState(pid) {
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

function signal(pid, sig) {
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

async function killPid(pid) {
  if (!isAlive(pid)) return false;
  signal(pid, 'SIGKILL');
  if (await waitUntilGone(pid, KILL_GRACE_MS)) return true;
  throw new Error(`process ${pid} is still alive ${KILL_GRACE_MS} ms after SIGKILL`);
}

function readPidFileSync(pidFile) {
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
function runningPidInDir(dir, knownPid) {
  const fromFile = readPidFileSync(path.join(dir, PID_FILE));
  if (fromFile !== undefined && isRedisProcess(fromFile, dir)) return fromFile;
  if (knownPid !== undefined && knownPid !== fromFile && isRedisProcess(knownPid, dir)) return knownPid;
  return undefined;
}

async function stopServerInDir(dir, knownPid, options) {
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
  if (errors.length) throw new AggregateError(errors, `stopAll(${baseDir}): ${errors.map((e) => e.message).join('; ')}`);
  return stopped.sort((a, b) => a - b);
}

// ---------------------------------------------------------------------------
// Launching one server and waiting for it
// ---------------------------------------------------------------------------

function commonArgs(port, dir) {
  return [
    '--port', String(port),
    '--bind', HOST,
    '--daemonize', 'yes',
    '--pidfile', path.join(dir, PID_FILE),
    '--logfile', path.join(dir, LOG_FILE),
    '--dir', dir,
    '--save', '',
    '--appendonly', 'no',
    '--repl-diskless-sync-delay', '0',
  ];
}

// Runs the (daemonizing) redis-server command and waits for the foreground process to exit
// (it exits right after forking the daemon; configuration errors make it exit non-zero).
function runDaemonizingCommand(bin, argv, timeoutMs) {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    let settled = false;
    const settle = (error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (error) reject(error);
      else resolve();
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      child.stderr.destroy();
      settle(new Error(`${path.basename(bin)} did not return within ${timeoutMs} ms (is --daemonize yes overridden?)`));
    }, timeoutMs);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      if (stderr.length < 16_384) stderr += chunk;
    });
    child.once('error', (error) => settle(error));
    child.once('exit', (code) => {
      if (code !== 0) return; // reported on 'close', once stderr has been read completely
      child.stderr.destroy();
      settle();
    });
    child.once('close', (code, sig) => {
      if (code !== 0) {
        settle(new Error(`${displayCommand(bin, argv)} exited with ${code ?? sig}:\n${stderr.trim()}`));
      }
    });
  });
}

async function fileSize(file) {
  try {
    return (await fsp.stat(file)).size;
  } catch {
    return 0;
  }
}

async function readFrom(file, offset) {
  let handle;
  try {
    handle = await fsp.open(file, 'r');
    const { size } = await handle.stat();
    if (size <= offset) return '';
    const length = Math.min(size - offset, 1 << 20);
    const buf = Buffer.alloc(length);
    await handle.read(buf, 0, length, offset);
    return buf.toString('utf8');
  } catch {
    return '';
  } finally {
    await handle?.close();
  }
}

async function logTail(file, lines = 25) {
  const size = await fileSize(file);
  const text = await readFrom(file, Math.max(0, size - 64 * 1024));
  const all = text.split('\n').filter((l) => l.trim() !== '');
  return all.slice(-lines).join('\n');
}

async function logTails(nodes, lines = 12) {
  const parts = await Promise.all(
    nodes.map(async (n) => `--- tail of ${path.join(n.dir, LOG_FILE)} ---\n${(await logTail(path.join(n.dir, LOG_FILE), lines)) || '(empty)'}`),
  );
  return `${parts.join('\n')}\n---`;
}

async function errorWithLog(message, logFile, code) {
  const tail = await logTail(logFile);
  const error = new Error(`${message}\n--- tail of ${logFile} ---\n${tail || '(empty)'}\n---`);
  if (code) error.code = code;
  error.logFile = logFile;
  return error;
}

const FATAL_LOG = /Address already in use|Failed listening on port|FATAL|Fatal error|aborting/i;

/**
 * Launch one redis-server (or sentinel) described by `spec` and wait until it answers PING.
 * spec: { bin, argv, port, dir, password?, label }. Resolves with the daemon's pid.
 * On failure the (half-)started server is stopped again.
 */
async function launch(spec, timeoutMs) {
  const { bin, argv, port, dir, password, label } = spec;
  const pidFile = path.join(dir, PID_FILE);
  const logFile = path.join(dir, LOG_FILE);
  await fsp.mkdir(dir, { recursive: true });
  const previous = readPidFileSync(pidFile);
  if (previous !== undefined && isRedisProcess(previous, dir)) {
    throw new Error(`${label}: a server (pid ${previous}) is already running in ${dir}`);
  }
  await fsp.rm(pidFile, { force: true }); // a SIGKILLed server leaves a stale pidfile behind
  const logOffset = await fileSize(logFile);
  const deadline = Date.now() + timeoutMs;
  let daemonPid;
  try {
    await runDaemonizingCommand(bin, argv, Math.max(1000, timeoutMs));
    let lastProblem = 'no pidfile yet';
    for (;;) {
      const pid = readPidFileSync(pidFile);
      if (pid !== undefined) {
        daemonPid = pid;
        if (!isAlive(pid)) throw await errorWithLog(`${label} (pid ${pid}) exited during startup`, logFile);
        try {
          const [pong] = await sendCommands(
            { port, password, timeoutMs: Math.max(50, Math.min(PROBE_TIMEOUT_MS, deadline - Date.now())) },
            [['PING']],
          );
          if (pong === 'PONG') return pid;
          lastProblem = `PING answered ${pong instanceof Error ? pong.message : JSON.stringify(pong)}`;
        } catch (error) {
          lastProblem = `PING failed: ${error.message}`;
        }
      } else {
        // Everything in the log comes from the daemon itself (Redis forks before logging), so the
        // first line carries its pid even before the pidfile is written.
        const log = await readFrom(logFile, logOffset);
        const logPid = Number(/^(\d+):[A-Z] /m.exec(log)?.[1]);
        if (Number.isInteger(logPid) && logPid > 1) daemonPid = logPid;
        if (FATAL_LOG.test(log) || (daemonPid !== undefined && !isAlive(daemonPid))) {
          const inUse = /Address already in use/i.test(log);
          throw await errorWithLog(
            `${label} failed to start${inUse ? ' (address already in use)' : ''}`,
            logFile,
            inUse ? 'EADDRINUSE' : undefined,
          );
        }
      }
      if (Date.now() >= deadline) {
        throw await errorWithLog(`${label} did not become ready within ${timeoutMs} ms (${lastProblem})`, logFile);
      }
      await delay(POLL_MS);
    }
  } catch (error) {
    const pid = readPidFileSync(pidFile) ?? daemonPid;
    if (pid !== undefined && isRedisProcess(pid, dir)) await stopPid(pid).catch(() => {});
    throw error;
  }
}

// Launch with automatically chosen ports; on "address already in use" retry with fresh ports.
// makeSpec(ports) -> spec (may write files). Resolves with { pid, ports, spec }.
async function launchWithFreshPorts(portCount, makeSpec, timeoutMs, fixedPorts) {
  const attempts = fixedPorts ? 1 : 4;
  for (let attempt = 1; ; attempt++) {
    const ports = fixedPorts ?? (await freePorts(portCount));
    const spec = await makeSpec(ports);
    try {
      const pid = await launch(spec, timeoutMs);
      return { pid, ports, spec };
    } catch (error) {
      if (error.code !== 'EADDRINUSE' || attempt >= attempts) throw error;
      await fsp.rm(spec.dir, { recursive: true, force: true }).catch(() => {});
    }
  }
}

// For error messages: the command line as one would type it in a shell.
function displayCommand(bin, argv) {
  const quote = (a) => (a === '' ? "''" : /[^\w@%+=:,./-]/.test(a) ? `'${a.replace(/'/g, `'\\''`)}'` : a);
  return [bin, ...argv].map(quote).join(' ');
}

// eslint-disable-next-line no-control-regex
const stripAnsi = (text) => text.replace(/\u001b\[[0-9;]*m/g, '');

function requireBaseDir(baseDir, fn) {
  if (typeof baseDir !== 'string' || baseDir === '') throw new TypeError(`${fn}: baseDir is required`);
  return path.resolve(baseDir);
}

function remaining(deadline) {
  return Math.max(0, deadline - Date.now());
}

async function waitFor(deadline, what, check, describeFailure) {
  let last;
  for (;;) {
    try {
      last = await check();
      if (last === true) return;
    } catch (error) {
      last = error.message;
    }
    if (Date.now() >= deadline) {
      throw new Error(`${what}: not ready before the deadline (${typeof last === 'string' ? last : 'condition false'})` +
        (describeFailure ? `\n${await describeFailure(last)}` : ''));
    }
    await delay(POLL_MS);
  }
}

function parseInfo(text) {
  const fields = {};
  for (const line of String(text ?? '').split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) fields[line.slice(0, i)] = line.slice(i + 1);
  }
  return fields;
}

// ---------------------------------------------------------------------------
// Standalone
// ---------------------------------------------------------------------------

class StandaloneServerImpl {
  #bin;
  #argv;
  #timeoutMs;

  constructor({ port, pid, dir, password, bin, argv, timeoutMs }) {
    this.host = HOST;
    this.port = port;
    this.pid = pid;
    const auth = password !== undefined ? `:${encodeURIComponent(password)}@` : '';
    this.url = `redis://${auth}${HOST}:${port}`;
    this.dir = dir;
    this.logFile = path.join(dir, LOG_FILE);
    if (password !== undefined) this.password = password;
    this.#bin = bin;
    this.#argv = argv;
    this.#timeoutMs = timeoutMs;
  }

  /** SIGTERM and wait until gone (SIGKILL after 5 s). No-op when not running. */
  async stop() {
    const pid = runningPidInDir(this.dir, this.pid);
    if (pid !== undefined) await stopPid(pid);
  }

  /** SIGKILL and wait until gone. No-op when not running. */
  async kill() {
    const pid = runningPidInDir(this.dir, this.pid);
    if (pid !== undefined) await killPid(pid);
  }

  /** SIGSTOP: the server keeps its port but stops answering. */
  async pause() {
    this.#requireAlive('pause');
    signal(this.pid, 'SIGSTOP');
    await this.#waitState((s) => s === 'T' || s === 't');
  }

  /** SIGCONT after pause(). */
  async resume() {
    this.#requireAlive('resume');
    signal(this.pid, 'SIGCONT');
    await this.#waitState((s) => s !== 'T' && s !== 't');
  }

  /** Start again with identical options and port (stopping the current process first if it runs). */
  async restart() {
    await this.stop();
    this.pid = await launch(
      { bin: this.#bin, argv: this.#argv, port: this.port, dir: this.dir, password: this.password, label: `redis-server ${HOST}:${this.port}` },
      this.#timeoutMs,
    );
  }

  toJSON() {
    const { host, port, pid, url, dir, logFile, password } = this;
    return password !== undefined ? { host, port, pid, url, dir, logFile, password } : { host, port, pid, url, dir, logFile };
  }

  #requireAlive(op) {
    if (!isAlive(this.pid)) throw new Error(`${op}(): redis-server ${HOST}:${this.port} (pid ${this.pid}) is not running`);
  }

  async #waitState(ok) {
    if (!IS_LINUX) return;
    const deadline = Date.now() + 2000;
    while (Date.now() < deadline) {
      const state = processState(this.pid);
      if (state === undefined || ok(state)) return;
      await delay(5);
    }
  }
}

/**
 * Start a standalone redis-server in `<baseDir>/<port>/`.
 */
export async function startStandalone({ baseDir, port, password, args = [], timeoutMs = DEFAULT_START_TIMEOUT_MS } = {}) {
  const base = requireBaseDir(baseDir, 'startStandalone');
  if (port !== undefined && (!Number.isInteger(port) || port <= 0 || port > 65535)) {
    throw new TypeError(`startStandalone: invalid port ${port}`);
  }
  const { server: bin } = findRedisBinaries();
  const { pid, spec } = await launchWithFreshPorts(
    1,
    ([p]) => {
      const dir = path.join(base, String(p));
      const argv = [...commonArgs(p, dir), ...(password !== undefined ? ['--requirepass', password] : []), ...args.map(String)];
      return { bin, argv, port: p, dir, password, label: `redis-server ${HOST}:${p}` };
    },
    timeoutMs,
    port !== undefined ? [port] : undefined,
  );
  if (port !== undefined) rememberPort(port);
  return new StandaloneServerImpl({ port: spec.port, pid, dir: spec.dir, password, bin, argv: spec.argv, timeoutMs });
}

// ---------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------

function execFileText(bin, argv, timeoutMs) {
  return new Promise((resolve, reject) => {
    execFile(bin, argv, { timeout: timeoutMs, maxBuffer: 4 * 1024 * 1024 }, (error, stdout, stderr) => {
      const output = stripAnsi(`${stdout}${stderr}`).trim();
      if (error) {
        const why = error.killed ? `did not finish within ${timeoutMs} ms` : `failed with exit code ${error.code}`;
        error.message = `${displayCommand(bin, argv)} ${why}:\n${output || '(no output)'}`;
        reject(error);
      } else resolve(output);
    });
  });
}

function parseClusterNodes(text) {
  return String(text ?? '')
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .map((line) => {
      const [id, addr, flags, master, , , , link, ...slots] = line.split(' ');
      const flagList = flags.split(',');
      const port = Number(/:(\d+)@/.exec(addr)?.[1]);
      return {
        id,
        port,
        flags: flagList,
        myself: flagList.includes('myself'),
        role: flagList.includes('master') ? 'master' : flagList.includes('slave') ? 'replica' : 'unknown',
        masterId: master === '-' ? null : master,
        link,
        slots: slots.filter((s) => !s.startsWith('[')).join(' '),
      };
    });
}

const BAD_NODE_FLAGS = ['fail', 'fail?', 'handshake', 'noaddr'];

async function probeClusterNode(node, timeoutMs) {
  const [info, nodes, slots, replication] = await sendCommands({ port: node.port, timeoutMs }, [
    ['CLUSTER', 'INFO'],
    ['CLUSTER', 'NODES'],
    ['CLUSTER', 'SLOTS'],
    ['INFO', 'replication'],
  ]);
  for (const r of [info, nodes, slots, replication]) if (r instanceof RespError) throw r;
  return { info: parseInfo(info), nodes: parseClusterNodes(nodes), slots, replication: parseInfo(replication) };
}

// Returns a list of problems (empty when the cluster is ready and every node agrees).
function clusterProblems(probes, total, replicasPerMaster) {
  const problems = [];
  const truth = new Map(); // id -> own view of itself
  for (const p of probes) {
    const me = p.nodes.find((n) => n.myself);
    if (me) truth.set(me.id, me);
  }
  for (const p of probes) {
    const at = `node ${p.port}`;
    if (p.info.cluster_state !== 'ok') problems.push(`${at}: cluster_state:${p.info.cluster_state}`);
    if (p.info.cluster_slots_ok !== String(CLUSTER_SLOTS)) problems.push(`${at}: cluster_slots_ok:${p.info.cluster_slots_ok}`);
    if (p.info.cluster_known_nodes !== String(total)) problems.push(`${at}: cluster_known_nodes:${p.info.cluster_known_nodes}`);
    const me = p.nodes.find((n) => n.myself);
    if (me?.role === 'replica' && p.replication.master_link_status !== 'up') {
      problems.push(`${at}: master_link_status:${p.replication.master_link_status}`);
    }
    if (p.nodes.length !== total) problems.push(`${at}: CLUSTER NODES lists ${p.nodes.length}/${total}`);
    for (const n of p.nodes) {
      const bad = n.flags.filter((f) => BAD_NODE_FLAGS.includes(f));
      if (bad.length) problems.push(`${at}: sees ${n.port} as ${bad.join(',')}`);
      if (n.link !== 'connected') problems.push(`${at}: link to ${n.port} ${n.link}`);
      const t = truth.get(n.id);
      if (!t) problems.push(`${at}: knows unknown node ${n.id}`);
      else if (t.role !== n.role || t.masterId !== n.masterId || (t.role === 'master' && t.slots !== n.slots)) {
        problems.push(`${at}: stale view of ${n.port}`);
      }
    }
    // CLUSTER SLOTS is what clients use: every range must list its master and all its replicas
    // (replicas appear there only once their replication offset has been gossiped).
    let covered = 0;
    for (const range of Array.isArray(p.slots) ? p.slots : []) {
      covered += range[1] - range[0] + 1;
      if (range.length - 2 !== 1 + replicasPerMaster) {
        problems.push(`${at}: CLUSTER SLOTS ${range[0]}-${range[1]} lists ${range.length - 3} replicas`);
      }
    }
    if (covered !== CLUSTER_SLOTS) problems.push(`${at}: CLUSTER SLOTS covers ${covered} slots`);
  }
  return problems;
}

// A replica shows up in CLUSTER SLOTS only once the other nodes have heard (through gossip) a
// non-zero replication offset for it. On a fresh, empty master the offset stays 0 until the
// master's first replication PING (repl-ping-replica-period, 10 s). A FLUSHALL on the (empty)
// master is always propagated to its replicas, which makes their offsets non-zero right away.
async function nudgeReplicationOffsets(probes, replicasPerMaster, nudged) {
  if (replicasPerMaster === 0) return;
  await Promise.all(
    probes.map(async (p) => {
      const me = p.nodes.find((n) => n.myself);
      if (me?.role !== 'master' || nudged.has(p.port)) return;
      const online = Object.entries(p.replication).filter(([k, v]) => /^slave\d+$/.test(k) && v.includes('state=online'));
      if (online.length < replicasPerMaster || p.replication.master_repl_offset !== '0') return;
      nudged.add(p.port);
      await sendCommands({ port: p.port, timeoutMs: PROBE_TIMEOUT_MS }, [['FLUSHALL']]);
    }),
  );
}

async function stopNodesByDir(nodes) {
  const errors = [];
  await Promise.all(
    nodes.map((n) => stopServerInDir(n.dir, n.pid).catch((error) => errors.push(error))),
  );
  if (errors.length) throw new AggregateError(errors, errors.map((e) => e.message).join('; '));
}

/**
 * Start a Redis Cluster: masters * (1 + replicasPerMaster) nodes, each with its own free port and
 * its own free cluster bus port (`--cluster-port`), created with `redis-cli --cluster create`.
 */
export async function startCluster({
  baseDir,
  masters = 3,
  replicasPerMaster = 1,
  nodeTimeout = 5000,
  timeoutMs = DEFAULT_CLUSTER_TIMEOUT_MS,
} = {}) {
  const base = requireBaseDir(baseDir, 'startCluster');
  if (!Number.isInteger(masters) || masters < 3) throw new TypeError('startCluster: masters must be an integer >= 3');
  if (!Number.isInteger(replicasPerMaster) || replicasPerMaster < 0) {
    throw new TypeError('startCluster: replicasPerMaster must be a non-negative integer');
  }
  if (!Number.isInteger(nodeTimeout) || nodeTimeout < 100) throw new TypeError('startCluster: nodeTimeout must be an integer >= 100');
  const { server: bin, cli } = findRedisBinaries();
  const total = masters * (1 + replicasPerMaster);
  const deadline = Date.now() + timeoutMs;
  const started = []; // { host, port, busPort, pid, dir }

  try {
    const results = await Promise.allSettled(
      Array.from({ length: total }, () =>
        launchWithFreshPorts(
          2,
          async ([port, busPort]) => {
            const dir = path.join(base, String(port));
            await fsp.rm(path.join(dir, `nodes-${port}.conf`), { force: true });
            const argv = [
              ...commonArgs(port, dir),
              '--cluster-enabled', 'yes',
              '--cluster-config-file', `nodes-${port}.conf`,
              '--cluster-port', String(busPort),
              '--cluster-node-timeout', String(nodeTimeout),
            ];
            return { bin, argv, port, busPort, dir, label: `cluster node ${HOST}:${port} (bus ${busPort})` };
          },
          remaining(deadline),
        ).then(({ pid, spec }) => {
          started.push({ host: HOST, port: spec.port, busPort: spec.busPort, pid, dir: spec.dir });
        }),
      ),
    );
    const failed = results.filter((r) => r.status === 'rejected');
    if (failed.length) throw failed[0].reason;
    started.sort((a, b) => a.port - b.port);

    await execFileText(
      cli,
      ['--cluster', 'create', ...started.map((n) => `${HOST}:${n.port}`), '--cluster-replicas', String(replicasPerMaster), '--cluster-yes'],
      Math.max(1000, remaining(deadline)),
    );

    let probes = [];
    const nudged = new Set();
    await waitFor(
      deadline,
      `Redis Cluster on ports ${started.map((n) => n.port).join(',')}`,
      async () => {
        probes = await Promise.all(started.map(async (n) => ({ port: n.port, ...(await probeClusterNode(n, PROBE_TIMEOUT_MS)) })));
        await nudgeReplicationOffsets(probes, replicasPerMaster, nudged);
        const problems = clusterProblems(probes, total, replicasPerMaster);
        return problems.length === 0 ? true : problems.slice(0, 6).join('; ');
      },
      () => logTails(started.slice(0, 2)),
    );

    const nodes = started.map((n) => {
      const me = probes.find((p) => p.port === n.port).nodes.find((x) => x.myself);
      return { host: HOST, port: n.port, pid: n.pid, busPort: n.busPort, id: me.id, role: me.role, masterId: me.masterId, dir: n.dir };
    });
    const topology = {
      nodes,
      masters: nodes.filter((n) => n.role === 'master'),
      replicas: nodes.filter((n) => n.role === 'replica'),
      async stop() {
        await stopNodesByDir(topology.replicas);
        await stopNodesByDir(topology.masters);
      },
    };
    return topology;
  } catch (error) {
    await stopNodesByDir(started).catch(() => {});
    throw error;
  }
}

// ---------------------------------------------------------------------------
// Sentinel
// ---------------------------------------------------------------------------

function confQuote(value) {
  return `"${String(value).replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

function sentinelPairs(reply) {
  const out = {};
  if (Array.isArray(reply)) for (let i = 0; i + 1 < reply.length; i += 2) out[reply[i]] = reply[i + 1];
  return out;
}

/**
 * Start a master, one replica (`--replicaof`) and `sentinels` sentinels monitoring it as `name`.
 */
export async function startSentinel({
  baseDir,
  name = 'mymaster',
  sentinels = 3,
  quorum = Math.min(2, sentinels),
  downAfterMilliseconds = 2000,
  failoverTimeout = 10_000,
  timeoutMs = DEFAULT_START_TIMEOUT_MS,
} = {}) {
  const base = requireBaseDir(baseDir, 'startSentinel');
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new TypeError(`startSentinel: invalid master name ${JSON.stringify(name)}`);
  if (!Number.isInteger(sentinels) || sentinels < 1) throw new TypeError('startSentinel: sentinels must be an integer >= 1');
  if (!Number.isInteger(quorum) || quorum < 1 || quorum > sentinels) {
    throw new TypeError(`startSentinel: quorum must be an integer between 1 and ${sentinels}`);
  }
  const { server: bin } = findRedisBinaries();
  const deadline = Date.now() + timeoutMs;
  const started = []; // { host, port, pid, dir }

  const startData = async (replicaOf) => {
    const { pid, spec } = await launchWithFreshPorts(
      1,
      ([port]) => {
        const dir = path.join(base, String(port));
        const argv = [...commonArgs(port, dir), ...(replicaOf ? ['--replicaof', HOST, String(replicaOf)] : [])];
        return { bin, argv, port, dir, label: `${replicaOf ? 'replica' : 'master'} ${HOST}:${port}` };
      },
      remaining(deadline),
    );
    const node = { host: HOST, port: spec.port, pid, dir: spec.dir };
    started.push(node);
    return node;
  };

  const replicaLinkUp = async (replica) => {
    const [info] = await sendCommands({ port: replica.port, timeoutMs: PROBE_TIMEOUT_MS }, [['INFO', 'replication']]);
    const status = parseInfo(info).master_link_status;
    return status === 'up' ? true : `replica ${replica.port} master_link_status:${status}`;
  };

  try {
    const master = await startData(undefined);
    const replica = await startData(master.port);
    // Sentinels learn about replicas from the master's INFO (first one on connect, then every
    // 10 s), so the replica is linked before they start.
    await waitFor(deadline, `replica ${replica.port} of ${master.port}`, () => replicaLinkUp(replica), () =>
      logTails([replica, master]));

    const results = await Promise.allSettled(
      Array.from({ length: sentinels }, () =>
        launchWithFreshPorts(
          1,
          async ([port]) => {
            const dir = path.join(base, String(port));
            await fsp.mkdir(dir, { recursive: true });
            const confFile = path.join(dir, 'sentinel.conf');
            const conf = [
              `port ${port}`,
              `bind ${HOST}`,
              'daemonize yes',
              `pidfile ${confQuote(path.join(dir, PID_FILE))}`,
              `logfile ${confQuote(path.join(dir, LOG_FILE))}`,
              `dir ${confQuote(dir)}`,
              `sentinel monitor ${name} ${HOST} ${master.port} ${quorum}`,
              `sentinel down-after-milliseconds ${name} ${downAfterMilliseconds}`,
              `sentinel failover-timeout ${name} ${failoverTimeout}`,
              `sentinel parallel-syncs ${name} 1`,
              '',
            ].join('\n');
            await fsp.writeFile(confFile, conf, { mode: 0o644 });
            return { bin, argv: [confFile, '--sentinel'], port, dir, label: `sentinel ${HOST}:${port}` };
          },
          remaining(deadline),
        ).then(({ pid, spec }) => {
          const node = { host: HOST, port: spec.port, pid, dir: spec.dir };
          started.push(node);
          return node;
        }),
      ),
    );
    const failed = results.filter((r) => r.status === 'rejected');
    if (failed.length) throw failed[0].reason;
    const sentinelNodes = results.map((r) => r.value).sort((a, b) => a.port - b.port);

    await waitFor(
      deadline,
      `sentinels ${sentinelNodes.map((s) => s.port).join(',')} monitoring ${name}`,
      async () => {
        const problems = [];
        const link = await replicaLinkUp(replica);
        if (link !== true) problems.push(link);
        await Promise.all(
          sentinelNodes.map(async (s) => {
            const [masterReply, replicasReply] = await sendCommands({ port: s.port, timeoutMs: PROBE_TIMEOUT_MS }, [
              ['SENTINEL', 'MASTER', name],
              ['SENTINEL', 'REPLICAS', name],
            ]);
            if (masterReply instanceof RespError) return problems.push(`sentinel ${s.port}: ${masterReply.message}`);
            const m = sentinelPairs(masterReply);
            if (m['num-slaves'] !== '1') problems.push(`sentinel ${s.port}: num-slaves ${m['num-slaves']}`);
            if (m['num-other-sentinels'] !== String(sentinels - 1)) {
              problems.push(`sentinel ${s.port}: num-other-sentinels ${m['num-other-sentinels']}`);
            }
            if (m.flags !== 'master') problems.push(`sentinel ${s.port}: master flags ${m.flags}`);
            const reps = Array.isArray(replicasReply) ? replicasReply.map(sentinelPairs) : [];
            const r = reps.find((x) => Number(x.port) === replica.port);
            if (!r || r.flags !== 'slave' || r['master-link-status'] !== 'ok') {
              problems.push(`sentinel ${s.port}: replica ${r ? `flags ${r.flags} link ${r['master-link-status']}` : 'unknown'}`);
            }
          }),
        );
        return problems.length === 0 ? true : problems.join('; ');
      },
      () => logTails([sentinelNodes[0], replica]),
    );

    const topology = {
      name,
      quorum,
      master,
      replica,
      sentinels: sentinelNodes,
      async stop() {
        await stopNodesByDir([...topology.sentinels, topology.replica]);
        await stopNodesByDir([topology.master]);
      },
    };
    return topology;
  } catch (error) {
    await stopNodesByDir(started).catch(() => {});
    throw error;
  }
}

// ---------------------------------------------------------------------------
// TLS and ACL
// ---------------------------------------------------------------------------

async function openssl(argv) {
  await execFileText('openssl', argv, 30_000).catch((error) => {
    throw new Error(`openssl is needed for TLS tests (apt-get install openssl): ${error.message}`);
  });
}

/**
 * Make a throw-away CA and a server certificate it signs for `127.0.0.1` (subjectAltName
 * `IP:127.0.0.1`), plus a second, unrelated CA (to test a client that trusts the wrong one),
 * with `openssl` in `dir`. EC P-256 keys: quick to make.
 */
export async function makeTlsCertificates({ dir }) {
  const base = requireBaseDir(dir, 'makeTlsCertificates');
  await fsp.mkdir(base, { recursive: true });
  const file = (name) => path.join(base, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  for (const ca of ['ca', 'other-ca']) {
    await openssl(['req', '-x509', ...ec, '-keyout', file(`${ca}.key`), '-out', file(`${ca}.crt`), '-days', '2', '-subj', `/CN=nestjs-redis-infra test ${ca}`]);
  }
  await fsp.writeFile(file('server.ext'), `subjectAltName=IP:${HOST}\n`);
  await openssl(['req', ...ec, '-keyout', file('server.key'), '-out', file('server.csr'), '-subj', `/CN=${HOST}`]);
  await openssl([
    'x509', '-req', '-in', file('server.csr'), '-CA', file('ca.crt'), '-CAkey', file('ca.key'), '-CAcreateserial',
    '-out', file('server.crt'), '-days', '2', '-extfile', file('server.ext'),
  ]);
  return {
    dir: base,
    caFile: file('ca.crt'),
    certFile: file('server.crt'),
    keyFile: file('server.key'),
    otherCaFile: file('other-ca.crt'),
    ca: await fsp.readFile(file('ca.crt'), 'utf8'),
    otherCa: await fsp.readFile(file('other-ca.crt'), 'utf8'),
  };
}

/**
 * Start a standalone redis-server that also listens with TLS on `tlsPort` (client certificates
 * not required). Its plain port stays open on loopback for setup commands (`sendCommand`, ACL
 * helpers) and the readiness probe; clients under test use `tlsUrl`.
 */
export async function startTlsStandalone({ baseDir, certificates, password, args = [], timeoutMs } = {}) {
  const base = requireBaseDir(baseDir, 'startTlsStandalone');
  const certs = certificates ?? (await makeTlsCertificates({ dir: path.join(base, 'tls') }));
  const tlsPort = await freePort();
  const server = await startStandalone({
    baseDir: base,
    password,
    timeoutMs,
    args: [
      '--tls-port', String(tlsPort),
      '--tls-cert-file', certs.certFile,
      '--tls-key-file', certs.keyFile,
      '--tls-ca-cert-file', certs.caFile,
      '--tls-auth-clients', 'no',
      ...args,
    ],
  });
  return Object.assign(server, { tlsPort, tlsUrl: `rediss://${HOST}:${tlsPort}`, certificates: certs });
}

/**
 * `ACL SETUSER <username> reset <rules...>`: (re)creates an ACL user with exactly `rules`
 * (e.g. `['on', '>secret', '~app:*', '&app:*', '+@read']`).
 */
export async function setAclUser(target, username, rules) {
  if (!Array.isArray(rules)) throw new TypeError('setAclUser: rules must be an array of ACL rules');
  return sendCommand(target, ['ACL', 'SETUSER', username, 'reset', ...rules]);
}

/** `ACL LOG` entries (most recent first): what the server refused, to whom and why. */
export async function aclLog(target, count = 128) {
  const entries = await sendCommand(target, ['ACL', 'LOG', count]);
  return (Array.isArray(entries) ? entries : []).map((entry) => {
    const fields = {};
    for (let i = 0; i + 1 < entry.length; i += 2) fields[entry[i]] = entry[i + 1];
    return fields;
  });
}
