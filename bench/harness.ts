/**
 * What every benchmark in bench/ shares: finding the repository's Redis scripts, package
 * versions and CPU pressure for the report, quantiles and tables, and a main() that cleans
 * up on errors, signals, a closed stdout or a watchdog, so no Redis or socket outlives a run.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** `scripts/redis/servers.mjs`, found by walking up from the compiled benchmark. */
export function locateServersLib(): string {
  const here = fileURLToPath(import.meta.url);
  let dir = path.dirname(here);
  for (;;) {
    const candidate = path.join(dir, 'scripts', 'redis', 'servers.mjs');
    if (fs.existsSync(candidate)) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`scripts/redis/servers.mjs not found above ${here}`);
    dir = parent;
  }
}

/** The installed version of a package, read from its own package.json. */
export async function packageVersion(name: string): Promise<string> {
  let dir = path.dirname(fileURLToPath(import.meta.resolve(name)));
  for (;;) {
    const file = path.join(dir, 'package.json');
    if (fs.existsSync(file)) {
      const pkg = JSON.parse(await fsp.readFile(file, 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === name) return (pkg.version ?? 'unknown').replace(/^v/, '');
    }
    const parent = path.dirname(dir);
    if (parent === dir) return 'unknown';
    dir = parent;
  }
}

/** Linux PSI: share of the last 60 s some task waited for a CPU (undefined elsewhere). */
export function cpuPressure(): number | undefined {
  try {
    const text = fs.readFileSync('/proc/pressure/cpu', 'utf8');
    const avg60 = /^some .*avg60=([\d.]+)/m.exec(text)?.[1];
    return avg60 === undefined ? undefined : Number(avg60);
  } catch {
    return undefined;
  }
}

/** Linear-interpolated quantile (`q` in 0..1); NaN for no values. */
export function quantile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo]! + (s[hi]! - s[lo]!) * (pos - lo);
}

/** A plain-text table: first column left-aligned, the others right-aligned. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/**
 * Runs a benchmark: settings from argv (exit code 2 on bad ones), `run`, then `cleanup`, also
 * after SIGINT/SIGTERM, a closed stdout (`| head`) or `timeoutMs`. `run` may return an exit
 * code (e.g. 1 for a missed target under `--check`).
 */
export async function runBenchmark<S extends object, State>(
  name: string,
  spec: {
    readSettings: (argv: string[]) => S;
    state: State;
    run: (settings: S, state: State) => Promise<number | void>;
    cleanup: (state: State) => Promise<void>;
  },
): Promise<void> {
  let settings: S;
  try {
    settings = spec.readSettings(process.argv.slice(2));
  } catch (err) {
    console.error(`${name} benchmark: ${(err as Error).message}`);
    process.exitCode = 2;
    return;
  }
  let stopping = false;
  const stop = async (reason: string, code: number): Promise<void> => {
    if (stopping) return;
    stopping = true;
    console.error(`${name} benchmark: ${reason}; cleaning up`);
    await spec.cleanup(spec.state);
    process.exit(code);
  };
  const onSigint = (): void => void stop('interrupted', 130);
  const onSigterm = (): void => void stop('terminated', 143);
  // `| head` closing the pipe must not skip the clean-up.
  const onStdoutError = (err: NodeJS.ErrnoException): void =>
    void stop(`stdout: ${err.code ?? err.message}`, 1);
  process.once('SIGINT', onSigint);
  process.once('SIGTERM', onSigterm);
  process.stdout.on('error', onStdoutError);
  const { timeoutMs } = settings as { timeoutMs?: number };
  const watchdog =
    timeoutMs === undefined
      ? undefined
      : setTimeout(() => void stop(`did not finish within ${timeoutMs} ms`, 1), timeoutMs).unref();
  try {
    const code = await spec.run(settings, spec.state);
    if (typeof code === 'number' && code !== 0) process.exitCode = code;
  } catch (err) {
    // After a signal, the clean-up closing the connections is what made the run fail.
    if (!stopping) {
      console.error(
        `${name} benchmark failed:`,
        err instanceof Error ? (err.stack ?? err.message) : err,
      );
      process.exitCode = 1;
    }
  } finally {
    if (!stopping) {
      await spec.cleanup(spec.state);
      clearTimeout(watchdog);
      process.off('SIGINT', onSigint);
      process.off('SIGTERM', onSigterm);
      process.stdout.off('error', onStdoutError);
    }
  }
}
