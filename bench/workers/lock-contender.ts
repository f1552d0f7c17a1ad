/**
 * One contending process of `bench/lock.ts --processes`: loops acquire → one event-loop turn →
 * release on one resource until told to stop, printing one `s <waitStart> <acquiredAt>
 * <releaseAt>` line per section (epoch ms) and `done <commands sent> <sections>` at the end.
 *
 * Its own small entry, so that a peer's process loads ioredis and its Redlock only, and ours
 * loads Nest and the module only when it is ours: twenty processes starting at once on a loaded
 * two-core machine took minutes when each one loaded everything.
 *
 * Protocol on stdin/stdout: prints `ready` once warm (scripts loaded, connections up), starts
 * on `go`, stops after the section in progress on `stop`. Exits by itself if its parent goes
 * away (stdin closes) or after `maxMs`.
 */
import 'reflect-metadata';
import { performance } from 'node:perf_hooks';

import { Redis } from 'ioredis';

/** What the parent passes as the one argument (JSON). */
export interface ContenderSpec {
  lib: 'ours' | 'sesame' | 'redlock5';
  url: string;
  keyPrefix: string;
  resource: string;
  ttl: number;
  /** The peers' constructor settings and their per-call retry settings. */
  peerSettings: Record<string, number>;
  peerRetry: Record<string, number>;
  /** Hard bound on the process's life, in ms. */
  maxMs: number;
}

interface Held {
  release(): Promise<unknown>;
}

interface PeerRedlock {
  acquire(resources: string[], duration: number, settings?: object): Promise<Held>;
  on(event: 'error', listener: (err: unknown) => void): unknown;
}

const epochNow = (): number => performance.timeOrigin + performance.now();
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Counts every command any ioredis client of this process sends. */
function countCommands(): () => number {
  let commands = 0;
  const proto = Redis.prototype as unknown as { sendCommand: (...a: unknown[]) => unknown };
  const original = proto.sendCommand;
  proto.sendCommand = function (this: unknown, ...a: unknown[]) {
    commands += 1;
    return original.apply(this, a);
  };
  return () => commands;
}

async function oursContender(
  spec: ContenderSpec,
): Promise<{ acquire: () => Promise<Held>; close: () => Promise<void> }> {
  const [{ Module }, { NestFactory }, { LockService, RedisModule }] = await Promise.all([
    import('@nestjs/common'),
    import('@nestjs/core'),
    import('../../src/index.js'),
  ]);
  class WorkerModule {}
  // Twenty processes starting at once on a loaded machine can take longer than the default
  // connectTimeout (5 s) to get their connections ready: a slow start is not what is measured.
  Module({
    imports: [
      RedisModule.forRoot({ url: spec.url, keyPrefix: spec.keyPrefix, connectTimeout: 60_000 }),
    ],
  })(WorkerModule);
  const app = await NestFactory.createApplicationContext(WorkerModule, {
    logger: false,
    abortOnError: false,
  });
  const locks = app.get(LockService);
  return {
    acquire: () => locks.acquire(spec.resource, { ttl: spec.ttl, wait: 60_000 }),
    close: () => app.close(),
  };
}

async function peerContender(
  spec: ContenderSpec,
): Promise<{ acquire: () => Promise<Held>; close: () => Promise<void> }> {
  const client = new Redis(spec.url, { lazyConnect: true, keyPrefix: spec.keyPrefix });
  client.on('error', () => undefined);
  await client.connect();
  // Specifiers in variables: both packages are optional devDependencies of the benchmark.
  const name = spec.lib === 'sesame' ? '@sesamecare-oss/redlock' : 'redlock';
  const mod = (await import(name)) as {
    default?: new (clients: Redis[], settings: object) => PeerRedlock;
    Redlock?: new (clients: Redis[], settings: object) => PeerRedlock;
  };
  const Ctor = spec.lib === 'sesame' ? mod.Redlock! : mod.default!;
  const redlock = new Ctor([client], spec.peerSettings);
  redlock.on('error', () => undefined);
  return {
    acquire: async () => {
      for (;;) {
        try {
          return await redlock.acquire([spec.resource], spec.ttl, spec.peerRetry);
        } catch {
          // gave up after its retries: ask again
        }
      }
    },
    close: async () => {
      await client.quit().catch(() => client.disconnect());
    },
  };
}

async function main(spec: ContenderSpec): Promise<void> {
  const life = setTimeout(() => process.exit(3), spec.maxMs);
  life.unref();
  const sent = countCommands();
  const { acquire, close } =
    spec.lib === 'ours' ? await oursContender(spec) : await peerContender(spec);
  // Warm: the scripts are loaded and the connections up before "go".
  await (await acquire()).release();
  let stop = false;
  let go: () => void = () => undefined;
  const started = new Promise<void>((resolve) => (go = resolve));
  process.stdin.on('data', (chunk: Buffer) => {
    const text = chunk.toString();
    if (text.includes('go')) go();
    if (text.includes('stop')) stop = true;
  });
  // The parent went away: stop after the section in progress (or at once, if not started).
  process.stdin.on('end', () => {
    stop = true;
    go();
  });
  process.stdout.write('ready\n');
  await started;
  const before = sent();
  let sections = 0;
  while (!stop) {
    const waitStart = epochNow();
    const lock = await acquire();
    const acquiredAt = epochNow();
    await turn();
    const releaseAt = epochNow();
    await lock.release();
    sections += 1;
    process.stdout.write(`s ${waitStart} ${acquiredAt} ${releaseAt}\n`);
  }
  const commands = sent() - before;
  await close();
  process.stdout.write(`done ${commands} ${sections}\n`);
  process.stdin.destroy();
}

await main(JSON.parse(process.argv[2]) as ContenderSpec);
process.exit(0);
