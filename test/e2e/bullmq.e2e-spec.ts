import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { BullModule, InjectQueue, Processor, WorkerHost } from '@nestjs/bullmq';
import { Injectable, Module, type INestApplicationContext } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { Queue, Worker, type Job } from 'bullmq';

import { toBullMqPrefix } from '../../src/bullmq/bullmq-prefix.js';
import { RedisBullMq, RedisModule, type RedisModuleOptions } from '../../src/index.js';
import { keySlot } from '../../src/toolkit/slots.js';
import { ensureBuilt } from '../support/coord-workers.js';
import {
  clientNames,
  sendCommand,
  standaloneUrl,
  topologies,
  uniqueConnectionName,
  waitFor,
  type TopologyCase,
} from '../support/redis.js';

const root = new URL('../../', import.meta.url).pathname;

/** Every key of a queue on every master (the test's own prefix keeps others' keys out). */
async function queueKeys(topology: TopologyCase, pattern: string): Promise<string[]> {
  const keys: string[] = [];
  for (const server of topology.masters) {
    const reply = await sendCommand(server, ['KEYS', pattern]).catch(() => []);
    keys.push(...(reply as unknown[]).map(String));
  }
  return keys;
}

/** CLIENT LIST names left on the servers by the app (module name) or by BullMQ (prefix). */
async function leftovers(topology: TopologyCase, connectionName: string, bullPrefix: string) {
  const names: string[] = [];
  for (const server of topology.servers) names.push(...(await clientNames(server)));
  return names.filter((n) => n.startsWith(`${connectionName}:`) || n.startsWith(`${bullPrefix}:`));
}

function startChildWorker(
  options: RedisModuleOptions,
  queue: string,
  lockDuration: number,
): { child: ChildProcess; ready: Promise<void>; started: Promise<string> } {
  const child = spawn(
    process.execPath,
    [`${root}test/support/bullmq-worker.mjs`, JSON.stringify({ options, queue, lockDuration })],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let onReady: () => void = () => undefined;
  let onStarted: (id: string) => void = () => undefined;
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  const started = new Promise<string>((resolve) => (onStarted = resolve));
  createInterface({ input: child.stdout }).on('line', (line) => {
    if (line === 'ready') onReady();
    const m = /^started (\S+)$/.exec(line);
    if (m) onStarted(m[1]);
  });
  return { child, ready, started };
}

describe.each(topologies().map((t) => [t.name, t] as const))(
  'BullMQ through RedisBullMq on %s',
  (_name, topology: TopologyCase) => {
    const tag = Math.random().toString(36).slice(2, 8);
    const options: RedisModuleOptions = {
      ...topology.options,
      keyPrefix: `bq-${tag}:`,
      connectionName: uniqueConnectionName('bullmq'),
    };
    const bullPrefix = toBullMqPrefix(options.keyPrefix!, topology.name === 'cluster');
    let app: INestApplicationContext;
    let bridge: RedisBullMq;

    beforeAll(async () => {
      ensureBuilt();
      const moduleRef = await Test.createTestingModule({
        imports: [RedisModule.forRoot(options)],
      }).compile();
      app = await moduleRef.init();
      bridge = app.get(RedisBullMq);
      // ensureBuilt() may compile dist/ for the child worker first.
    }, 120_000);

    afterAll(async () => {
      await app?.close();
    });

    it('translates the keyPrefix into BullMQ options', () => {
      expect(bridge.prefix).toBe(topology.name === 'cluster' ? `{bq-${tag}}` : `bq-${tag}`);
      const opts = bridge.workerOptions({ concurrency: 2 });
      expect(opts.concurrency).toBe(2);
      expect(opts.prefix).toBe(bridge.prefix);
      expect(opts.connection).toBe(bridge.queueOptions().connection);
      expect(opts.connection.options.keyPrefix).toBeFalsy();
    });

    it('processes jobs end to end, keys under the prefix (one slot per queue on a cluster)', async () => {
      const name = 'e2e';
      const queue = new Queue(name, bridge.queueOptions());
      const done = new Map<string, unknown>();
      const worker = new Worker(name, async (job: Job<{ n: number }>) => job.data.n * 2, {
        ...bridge.workerOptions(),
      });
      worker.on('completed', (job, value) => done.set(job.id!, value));
      try {
        const jobs = await queue.addBulk(
          Array.from({ length: 5 }, (_, n) => ({ name: 'double', data: { n } })),
        );
        await waitFor(() => done.size === 5, { what: 'five completed jobs' });
        expect(jobs.map((j) => done.get(j.id!))).toEqual([0, 2, 4, 6, 8]);
        const keys = await queueKeys(topology, `${bullPrefix}:${name}:*`);
        expect(keys.length).toBeGreaterThan(0);
        if (topology.name === 'cluster') expect(new Set(keys.map(keySlot)).size).toBe(1);
        // Nothing of BullMQ's went under the ioredis prefix or BullMQ's default prefix.
        expect(await queueKeys(topology, `bull:${name}:*`)).toEqual([]);
      } finally {
        await worker.close();
        await queue.obliterate({ force: true });
        await queue.close();
      }
    });

    it('hands a job of a SIGKILLed worker to another worker: none lost', async () => {
      const name = 'killed';
      const lockDuration = 1000;
      const queue = new Queue(name, bridge.queueOptions());
      const { child, ready, started } = startChildWorker(options, name, lockDuration);
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      let worker: Worker | undefined;
      try {
        await ready;
        const jobs = await queue.addBulk([
          { name: 'a', data: { n: 1 } },
          { name: 'b', data: { n: 2 } },
        ]);
        const takenByChild = await started;
        child.kill('SIGKILL');
        await exited;
        const done = new Map<string, number>();
        worker = new Worker(name, async (job: Job<{ n: number }>) => job.data.n, {
          ...bridge.workerOptions({ lockDuration, stalledInterval: lockDuration }),
        });
        worker.on('completed', (job, value: number) => done.set(job.id!, value));
        await waitFor(() => done.size === 2, { timeoutMs: 15_000, what: 'both jobs completed' });
        expect(jobs.map((j) => done.get(j.id!))).toEqual([1, 2]);
        const stalled = await queue.getJob(takenByChild);
        expect(stalled?.attemptsStarted).toBeGreaterThanOrEqual(2);
        expect(await queue.getFailedCount()).toBe(0);
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        await exited;
        await worker?.close();
        await queue.obliterate({ force: true });
        await queue.close();
      }
    }, 30_000);

    it('app.close() after the queues leaves no connection of ours in CLIENT LIST', async () => {
      const second = await Test.createTestingModule({
        imports: [
          RedisModule.forRoot({ ...options, connectionName: `${options.connectionName}-b` }),
        ],
      }).compile();
      const ctx = await second.init();
      const b = ctx.get(RedisBullMq);
      const queue = new Queue('closing', b.queueOptions());
      const worker = new Worker('closing', async () => 'ok', b.workerOptions());
      await worker.waitUntilReady();
      await queue.add('x', {});
      await waitFor(async () => (await queue.getCompletedCount()) === 1, { what: 'a job done' });
      await worker.close();
      await queue.obliterate({ force: true });
      await queue.close();
      await ctx.close();
      await waitFor(
        async () =>
          (await leftovers(topology, `${options.connectionName}-b`, bullPrefix)).length === 0,
        { what: 'no connection of ours left' },
      );
    });
  },
);

@Processor('nest')
class NestProcessor extends WorkerHost {
  static done: Array<{ id: string; value: number }> = [];
  async process(job: Job<{ n: number }>): Promise<number> {
    NestProcessor.done.push({ id: job.id!, value: job.data.n + 1 });
    return job.data.n + 1;
  }
}

@Injectable()
class Producer {
  constructor(@InjectQueue('nest') readonly queue: Queue) {}
}

describe('@nestjs/bullmq on the bridge (standalone)', () => {
  it('BullModule.forRootAsync + registerQueue + @Processor process a job; close leaves nothing', async () => {
    const connectionName = uniqueConnectionName('nestbull');
    const tag = Math.random().toString(36).slice(2, 8);
    @Module({
      imports: [
        RedisModule.forRoot({ url: standaloneUrl(), keyPrefix: `nb-${tag}:`, connectionName }),
        BullModule.forRootAsync({
          inject: [RedisBullMq],
          useFactory: (b: RedisBullMq) => b.rootOptions(),
        }),
        BullModule.registerQueue({ name: 'nest' }),
      ],
      providers: [NestProcessor, Producer],
    })
    class AppModule {}
    const ctx = await (await Test.createTestingModule({ imports: [AppModule] }).compile()).init();
    let closed = false;
    try {
      const queue = ctx.get(Producer).queue;
      const job = await queue.add('inc', { n: 41 });
      await waitFor(() => NestProcessor.done.some((d) => d.id === job.id), { what: 'processed' });
      expect(NestProcessor.done.find((d) => d.id === job.id)?.value).toBe(42);
      const keys = await sendCommand(
        { host: new URL(standaloneUrl()).hostname, port: Number(new URL(standaloneUrl()).port) },
        ['KEYS', `nb-${tag}:nest:*`],
      );
      expect((keys as unknown[]).length).toBeGreaterThan(0);
      await queue.obliterate({ force: true });
      await ctx.close();
      closed = true;
      const server = {
        host: new URL(standaloneUrl()).hostname,
        port: Number(new URL(standaloneUrl()).port),
      };
      await waitFor(
        async () =>
          (await clientNames(server)).filter(
            (n) => n.startsWith(`${connectionName}:`) || n.startsWith(`nb-${tag}:`),
          ).length === 0,
        { what: 'no connection of ours left' },
      );
    } finally {
      if (!closed) await ctx.close();
    }
  });
});
