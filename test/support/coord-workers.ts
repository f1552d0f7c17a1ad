import { spawn, spawnSync, type ChildProcess, type ChildProcessByStdio } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = `${dir}/${entry.name}`;
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(path) : statSync(path).mtimeMs);
  }
  return newest;
}

/** Whether dist/ is at least as new as every file of src/. */
function distIsFresh(): boolean {
  const dist = `${root}dist/index.js`;
  return existsSync(dist) && statSync(dist).mtimeMs >= newestMtime(`${root}src`);
}

/** Blocks the calling thread for `ms` (the build it waits for runs in another process). */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * The workers import dist/: build it when missing or older than any file of src/. Spec files
 * run in parallel jest workers, and two builds writing dist/ at once broke each other's
 * workers: the first to create the lock directory builds, the others wait for it and then find
 * dist/ fresh. (`npm test` builds dist/ before jest starts; this is for runs of single specs.)
 */
export function ensureBuilt(): void {
  if (distIsFresh()) return;
  const lock = `${root}.dist-build.lock`;
  const giveUpAt = Date.now() + 180_000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    if (Date.now() > giveUpAt) {
      throw new Error(
        `ensureBuilt: ${lock} exists for 3 minutes; remove it if no build is running`,
      );
    }
    sleepSync(250);
    if (distIsFresh()) return;
  }
  try {
    if (distIsFresh()) return;
    const result = spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json'], {
      cwd: root,
      stdio: 'inherit',
    });
    if (result.status !== 0) throw new Error('npx tsc -p tsconfig.build.json failed');
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

/** Worker processes started by the current spec file that have not exited yet. */
const running = new Set<ChildProcess>();

/** Counts `child` as running until it exits (see `killWorkersLeftRunning`). */
export function trackWorker(child: ChildProcess): void {
  running.add(child);
  child.once('exit', () => running.delete(child));
}

/**
 * SIGKILLs every worker that is still running: for `afterEach`. A test that times out is
 * abandoned where it waited, before the line that would have resumed (SIGCONT) or stopped its
 * worker, and a stopped worker cannot even act on SIGTERM; left running, it kept the jest
 * worker process from exiting ("A worker process has failed to exit gracefully").
 */
export function killWorkersLeftRunning(): void {
  for (const child of running) child.kill('SIGKILL');
}

/** A running `coord-worker.mjs`. */
export interface CoordWorker<R> {
  /**
   * Resolves once the worker is connected and waits for its start line; rejects, with its exit
   * code or signal and what it printed, if it exits (or cannot be spawned) before that.
   */
  started: Promise<void>;
  /** Sends a line on its stdin (the first one starts it). */
  send(line?: string): void;
  /** Its last output line, parsed, once it exited by itself. */
  finished: Promise<R>;
  /** Everything it printed so far. */
  output(): string;
  child: ChildProcessByStdio<Writable, Readable, Readable>;
}

/** Starts `test/support/coord-worker.mjs` with `spec` in a process of its own. */
export function startCoordWorker<R = { done: number }>(spec: object): CoordWorker<R> {
  return startWorker<R>('coord-worker.mjs', spec);
}

/** Starts `test/support/lock-worker.mjs` (same protocol: "ready", a start line, JSON last). */
export function startLockWorker<R = { done: number }>(spec: object): CoordWorker<R> {
  return startWorker<R>('lock-worker.mjs', spec);
}

function startWorker<R>(script: string, spec: object): CoordWorker<R> {
  const child = spawn(process.execPath, [`${root}test/support/${script}`, JSON.stringify(spec)], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  trackWorker(child);
  let out = '';
  let err = '';
  let onReady: () => void = () => undefined;
  let onNotReady: (err: Error) => void = () => undefined;
  // A worker that died at start-up (its module failed to connect, dist/ was broken) left the
  // test waiting for "ready" until jest's timeout, the cause lost: now its end rejects this.
  const started = new Promise<void>((resolve, reject) => {
    onReady = resolve;
    onNotReady = reject;
  });
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
    if (out.startsWith('ready\n')) onReady();
  });
  // Still shown as it comes, and also kept for the errors below: a worker that failed says why
  // on stderr (an uncaught error), and that was not in the test's failure.
  child.stderr.on('data', (chunk: Buffer) => {
    process.stderr.write(chunk);
    err += chunk.toString();
  });
  const printed = (): string => `${out}${err ? `\nstderr: ${err}` : ''}`;
  const finished = new Promise<R>((resolve, reject) => {
    child.on('error', (e) => {
      onNotReady(e);
      reject(e);
    });
    // 'close', not 'exit': 'exit' may come before the last of its output was read (see Node's
    // child_process docs), and the result is its last line.
    child.on('close', (code, signal) => {
      const how = `${script} exited with ${code ?? signal}`;
      onNotReady(new Error(`${how} before it was ready: ${printed()}`)); // no-op after "ready"
      const last = out.trim().split('\n').pop() ?? '';
      if (code !== 0) reject(new Error(`${how}: ${printed()}`));
      else {
        try {
          resolve(JSON.parse(last) as R);
        } catch {
          reject(new Error(`${how} without a JSON last line: ${printed()}`));
        }
      }
    });
  });
  // Nobody may be awaiting `started` or `finished` of a worker that is killed on purpose.
  started.catch(() => undefined);
  finished.catch(() => undefined);
  return {
    started,
    send: (line = 'go') => child.stdin.write(`${line}\n`),
    finished,
    output: () => out,
    child,
  };
}
