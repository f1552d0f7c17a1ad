// One standalone redis-server (optionally with TLS), and ACL helpers for it.

import fsp from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

import { DEFAULT_START_TIMEOUT_MS, HOST, IS_LINUX, LOG_FILE } from './constants.mjs';
import {
  commonArgs,
  execFileText,
  launch,
  launchWithFreshPorts,
  requireBaseDir,
} from './launch.mjs';
import {
  findRedisBinaries,
  freePort,
  isAlive,
  killPid,
  processState,
  rememberPort,
  runningPidInDir,
  signal,
  stopPid,
} from './process.mjs';
import { sendCommand } from './resp.mjs';

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
      {
        bin: this.#bin,
        argv: this.#argv,
        port: this.port,
        dir: this.dir,
        password: this.password,
        label: `redis-server ${HOST}:${this.port}`,
      },
      this.#timeoutMs,
    );
  }

  toJSON() {
    const { host, port, pid, url, dir, logFile, password } = this;
    return password !== undefined
      ? { host, port, pid, url, dir, logFile, password }
      : { host, port, pid, url, dir, logFile };
  }

  #requireAlive(op) {
    if (!isAlive(this.pid))
      throw new Error(
        `${op}(): redis-server ${HOST}:${this.port} (pid ${this.pid}) is not running`,
      );
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
export async function startStandalone({
  baseDir,
  port,
  password,
  args = [],
  timeoutMs = DEFAULT_START_TIMEOUT_MS,
} = {}) {
  const base = requireBaseDir(baseDir, 'startStandalone');
  if (port !== undefined && (!Number.isInteger(port) || port <= 0 || port > 65535)) {
    throw new TypeError(`startStandalone: invalid port ${port}`);
  }
  const { server: bin } = findRedisBinaries();
  const { pid, spec } = await launchWithFreshPorts(
    1,
    ([p]) => {
      const dir = path.join(base, String(p));
      const argv = [
        ...commonArgs(p, dir),
        ...(password !== undefined ? ['--requirepass', password] : []),
        ...args.map(String),
      ];
      return { bin, argv, port: p, dir, password, label: `redis-server ${HOST}:${p}` };
    },
    timeoutMs,
    port !== undefined ? [port] : undefined,
  );
  if (port !== undefined) rememberPort(port);
  return new StandaloneServerImpl({
    port: spec.port,
    pid,
    dir: spec.dir,
    password,
    bin,
    argv: spec.argv,
    timeoutMs,
  });
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
    await openssl([
      'req',
      '-x509',
      ...ec,
      '-keyout',
      file(`${ca}.key`),
      '-out',
      file(`${ca}.crt`),
      '-days',
      '2',
      '-subj',
      `/CN=nestjs-redis-infra test ${ca}`,
    ]);
  }
  await fsp.writeFile(file('server.ext'), `subjectAltName=IP:${HOST}\n`);
  await openssl([
    'req',
    ...ec,
    '-keyout',
    file('server.key'),
    '-out',
    file('server.csr'),
    '-subj',
    `/CN=${HOST}`,
  ]);
  await openssl([
    'x509',
    '-req',
    '-in',
    file('server.csr'),
    '-CA',
    file('ca.crt'),
    '-CAkey',
    file('ca.key'),
    '-CAcreateserial',
    '-out',
    file('server.crt'),
    '-days',
    '2',
    '-extfile',
    file('server.ext'),
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
export async function startTlsStandalone({
  baseDir,
  certificates,
  password,
  args = [],
  timeoutMs,
} = {}) {
  const base = requireBaseDir(baseDir, 'startTlsStandalone');
  const certs = certificates ?? (await makeTlsCertificates({ dir: path.join(base, 'tls') }));
  const tlsPort = await freePort();
  const server = await startStandalone({
    baseDir: base,
    password,
    timeoutMs,
    args: [
      '--tls-port',
      String(tlsPort),
      '--tls-cert-file',
      certs.certFile,
      '--tls-key-file',
      certs.keyFile,
      '--tls-ca-cert-file',
      certs.caFile,
      '--tls-auth-clients',
      'no',
      ...args,
    ],
  });
  return Object.assign(server, {
    tlsPort,
    tlsUrl: `rediss://${HOST}:${tlsPort}`,
    certificates: certs,
  });
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
