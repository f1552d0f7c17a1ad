// Launching one daemonized redis-server and waiting until it answers; the helpers every
// topology shares (log tails in errors, deadlines, INFO parsing, running redis-cli).

import { spawn, execFile } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

import { HOST, LOG_FILE, PID_FILE, POLL_MS, PROBE_TIMEOUT_MS } from './constants.mjs';
import {
  freePorts,
  isAlive,
  isRedisProcess,
  readPidFileSync,
  stopPid,
  stopServerInDir,
} from './process.mjs';
import { sendCommands } from './resp.mjs';

// Launching one server and waiting for it
// ---------------------------------------------------------------------------

export function commonArgs(port, dir) {
  return [
    '--port',
    String(port),
    '--bind',
    HOST,
    '--daemonize',
    'yes',
    '--pidfile',
    path.join(dir, PID_FILE),
    '--logfile',
    path.join(dir, LOG_FILE),
    '--dir',
    dir,
    '--save',
    '',
    '--appendonly',
    'no',
    '--repl-diskless-sync-delay',
    '0',
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
      settle(
        new Error(
          `${path.basename(bin)} did not return within ${timeoutMs} ms (is --daemonize yes overridden?)`,
        ),
      );
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
        settle(
          new Error(`${displayCommand(bin, argv)} exited with ${code ?? sig}:\n${stderr.trim()}`),
        );
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

export async function logTails(nodes, lines = 12) {
  const parts = await Promise.all(
    nodes.map(
      async (n) =>
        `--- tail of ${path.join(n.dir, LOG_FILE)} ---\n${(await logTail(path.join(n.dir, LOG_FILE), lines)) || '(empty)'}`,
    ),
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
export async function launch(spec, timeoutMs) {
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
        if (!isAlive(pid))
          throw await errorWithLog(`${label} (pid ${pid}) exited during startup`, logFile);
        try {
          const [pong] = await sendCommands(
            {
              port,
              password,
              timeoutMs: Math.max(50, Math.min(PROBE_TIMEOUT_MS, deadline - Date.now())),
            },
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
        throw await errorWithLog(
          `${label} did not become ready within ${timeoutMs} ms (${lastProblem})`,
          logFile,
        );
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
export async function launchWithFreshPorts(portCount, makeSpec, timeoutMs, fixedPorts) {
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
  const quote = (a) =>
    a === '' ? "''" : /[^\w@%+=:,./-]/.test(a) ? `'${a.replace(/'/g, `'\\''`)}'` : a;
  return [bin, ...argv].map(quote).join(' ');
}

// eslint-disable-next-line no-control-regex
const stripAnsi = (text) => text.replace(/\u001b\[[0-9;]*m/g, '');

export function requireBaseDir(baseDir, fn) {
  if (typeof baseDir !== 'string' || baseDir === '')
    throw new TypeError(`${fn}: baseDir is required`);
  return path.resolve(baseDir);
}

export function remaining(deadline) {
  return Math.max(0, deadline - Date.now());
}

export async function waitFor(deadline, what, check, describeFailure) {
  let last;
  for (;;) {
    try {
      last = await check();
      if (last === true) return;
    } catch (error) {
      last = error.message;
    }
    if (Date.now() >= deadline) {
      throw new Error(
        `${what}: not ready before the deadline (${typeof last === 'string' ? last : 'condition false'})` +
          (describeFailure ? `\n${await describeFailure(last)}` : ''),
      );
    }
    await delay(POLL_MS);
  }
}

export function parseInfo(text) {
  const fields = {};
  for (const line of String(text ?? '').split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) fields[line.slice(0, i)] = line.slice(i + 1);
  }
  return fields;
}

// ---------------------------------------------------------------------------
export function execFileText(bin, argv, timeoutMs) {
  return new Promise((resolve, reject) => {
    execFile(
      bin,
      argv,
      { timeout: timeoutMs, maxBuffer: 4 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const output = stripAnsi(`${stdout}${stderr}`).trim();
        if (error) {
          const why = error.killed
            ? `did not finish within ${timeoutMs} ms`
            : `failed with exit code ${error.code}`;
          error.message = `${displayCommand(bin, argv)} ${why}:\n${output || '(no output)'}`;
          reject(error);
        } else resolve(output);
      },
    );
  });
}

export async function stopNodesByDir(nodes) {
  const errors = [];
  await Promise.all(
    nodes.map((n) => stopServerInDir(n.dir, n.pid).catch((error) => errors.push(error))),
  );
  if (errors.length) throw new AggregateError(errors, errors.map((e) => e.message).join('; '));
}
