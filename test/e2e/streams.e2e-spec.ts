import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Injectable, type INestApplication } from '@nestjs/common';

import {
  getRedisToken,
  OnStreamMessage,
  RedisModule,
  StreamsService,
  type RedisClient,
  type RedisModuleOptions,
  type StreamMessageContext,
} from '../../src/index.js';
import { streamKeys } from '../../src/streams/streams.keys.js';
import { keySlot } from '../../src/toolkit/slots.js';
import { startApp } from '../support/app.js';
import {
  topologies,
  uniqueConnectionName,
  uniquePrefix,
  waitFor,
  type TopologyCase,
} from '../support/redis.js';

const root = new URL('../../', import.meta.url).pathname;

/** Resolves/rejects from outside: a handler the test finishes when it decides. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

@Injectable()
class Mailer {
  static seen: string[] = [];
  @OnStreamMessage('decorated', 'mailer', { from: 'start' })
  send(message: { to: string }): void {
    Mailer.seen.push(message.to);
  }
}

describe.each(topologies().map((t) => [t.name, t] as const))(
  'StreamsService on %s',
  (_name, topology: TopologyCase) => {
    let app: INestApplication;
    let streams: StreamsService;
    let client: RedisClient;
    const prefix = uniquePrefix(`streams-${topology.name}`);
    const options: RedisModuleOptions = {
      ...topology.options,
      keyPrefix: prefix,
      connectionName: uniqueConnectionName('streams'),
      maxConnections: 20,
    };
    let n = 0;
    const name = (label: string): string => `${label}-${++n}`;

    beforeAll(async () => {
      Mailer.seen = [];
      app = await startApp({ imports: [RedisModule.forRoot(options)], providers: [Mailer] });
      streams = app.get(StreamsService);
      client = app.get<RedisClient>(getRedisToken());
    });

    afterAll(async () => {
      await app?.close();
      const cleaner = await startApp({ imports: [RedisModule.forRoot(options)] });
      const { RedisService } = await import('../../src/index.js');
      await cleaner.get(RedisService).unlinkByPattern('*');
      await cleaner.close();
    });

    it('delivers every message once to a group, acknowledged, with nothing pending', async () => {
      const stream = name('basic');
      const producer = streams.producer<{ n: number }>(stream);
      for (let i = 0; i < 30; i++) await producer.add({ n: i });
      const seen: number[] = [];
      const consumer = await streams.consumer<{ n: number }>(
        stream,
        'g',
        (m) => void seen.push(m.n),
        { concurrency: 4 },
      );
      await waitFor(() => consumer.counts.processed === 30, { what: '30 messages processed' });
      expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: 30 }, (_, i) => i));
      const stats = await streams.stats(stream);
      expect(stats.length).toBe(30);
      expect(stats.deadLetters).toBe(0);
      expect(stats.groups).toEqual([{ name: 'g', pending: 0, consumers: 1, lag: 0 }]);
    });

    it('redelivers a failed message until it succeeds, counting deliveries', async () => {
      const stream = name('retry');
      const deliveries: number[] = [];
      const consumer = await streams.consumer(
        stream,
        'g',
        (_m, ctx: StreamMessageContext) => {
          deliveries.push(ctx.deliveries);
          if (ctx.deliveries < 3) throw new Error(`attempt ${ctx.deliveries} fails`);
        },
        { visibilityTimeout: 100, maxAttempts: 3 },
      );
      await streams.producer(stream).add({ job: 1 });
      await waitFor(() => consumer.counts.processed === 1, {
        what: 'the third delivery to succeed',
      });
      expect(deliveries).toEqual([1, 2, 3]);
      expect(consumer.counts.failed).toBe(2);
      expect((await streams.stats(stream)).deadLetters).toBe(0);
      expect(await client.exists(streamKeys(stream).errors)).toBe(0);
    });

    it('dead-letters a poison message after maxAttempts, with its last error', async () => {
      const stream = name('poison');
      const consumer = await streams.consumer(
        stream,
        'g',
        (_m, ctx) => {
          throw new Error(`poison on delivery ${ctx.deliveries}`);
        },
        { visibilityTimeout: 100, maxAttempts: 2 },
      );
      const id = await streams.producer(stream).add({ bad: true });
      await waitFor(() => consumer.counts.deadLettered === 1, { what: 'a dead letter' });
      const dead = await client.xrange(streamKeys(stream).dead, '-', '+');
      expect(dead).toHaveLength(1);
      const fields = Object.fromEntries(
        dead[0][1].reduce<string[][]>(
          (acc, v, i) => (i % 2 ? acc : [...acc, [v, dead[0][1][i + 1]]]),
          [],
        ),
      ) as Record<string, string>;
      expect(fields).toMatchObject({
        d: '{"bad":true}',
        id,
        group: 'g',
        deliveries: '2',
        error: 'Error: poison on delivery 2',
      });
      const stats = await streams.stats(stream);
      expect(stats.groups[0].pending).toBe(0);
      expect(stats.deadLetters).toBe(1);
    });

    it('dead-letters an entry it cannot decode at once', async () => {
      const stream = name('raw');
      await client.xadd(streamKeys(stream).stream, '*', 'other', 'format');
      const consumer = await streams.consumer(stream, 'g', () => undefined);
      await waitFor(() => consumer.counts.deadLettered === 1, {
        what: 'the undecodable entry dead-lettered',
      });
      expect((await streams.stats(stream)).groups[0].pending).toBe(0);
    });

    it('shares a group between consumers: each message handled once', async () => {
      const stream = name('shared');
      const seen: number[] = [];
      const a = await streams.consumer<{ n: number }>(stream, 'g', (m) => void seen.push(m.n), {
        concurrency: 2,
      });
      const b = await streams.consumer<{ n: number }>(stream, 'g', (m) => void seen.push(m.n), {
        concurrency: 2,
      });
      const producer = streams.producer<{ n: number }>(stream);
      await Promise.all(Array.from({ length: 40 }, (_, i) => producer.add({ n: i })));
      await waitFor(() => a.counts.processed + b.counts.processed === 40, { what: '40 processed' });
      expect(seen.sort((x, y) => x - y)).toEqual(Array.from({ length: 40 }, (_, i) => i));
      expect((await streams.stats(stream)).groups[0]).toMatchObject({ pending: 0, consumers: 2 });
    });

    it('keeps a message claimed while its handler runs past visibilityTimeout', async () => {
      const stream = name('slow');
      const slow = gate();
      const started = gate();
      let aRuns = 0;
      const a = await streams.consumer(
        stream,
        'g',
        async () => {
          aRuns += 1;
          started.open();
          await slow.promise;
        },
        { visibilityTimeout: 150 },
      );
      await streams.producer(stream).add({ slow: true });
      await started.promise;
      let bRuns = 0;
      const b = await streams.consumer(stream, 'g', () => void (bRuns += 1), {
        visibilityTimeout: 150,
      });
      // Many scans by the second consumer, each past the first one's visibility timeout.
      await waitFor(() => b.counts.scans >= 8, { what: 'eight take-over scans' });
      expect(bRuns).toBe(0);
      slow.open();
      await waitFor(() => a.counts.processed === 1, { what: 'the slow message acknowledged' });
      expect(aRuns).toBe(1);
      expect(b.counts.reclaimed).toBe(0);
    });

    it('trims with maxLen and rejects bad input, naming it, before sending', async () => {
      const stream = name('trim');
      const producer = streams.producer(stream);
      for (let i = 0; i < 300; i++) await producer.add(i, { maxLen: 100 });
      expect((await streams.stats(stream)).length).toBeLessThan(300);
      await expect(producer.add(10n)).rejects.toThrow(/message cannot be sent as JSON/);
      await expect(producer.add(undefined)).rejects.toThrow(/message/);
      await expect(producer.add(1, { maxLen: 0 })).rejects.toThrow(/maxLen/);
      expect(() => streams.producer('')).toThrow(/stream name/);
      await expect(streams.consumer(stream, '', () => undefined)).rejects.toThrow(/consumer group/);
      await expect(
        streams.consumer(stream, 'g', () => undefined, { concurrency: 0 }),
      ).rejects.toThrow(/concurrency/);
      await expect(
        streams.consumer(stream, 'g', () => undefined, { visibilityTimeout: 1e20 }),
      ).rejects.toThrow(/visibilityTimeout/);
    });

    it('keeps every key of a stream in one slot, whatever braces its name has', async () => {
      for (const hostile of ['}x', '{', '}{', '{}', 'a}b', '{user}']) {
        const keys = streamKeys(hostile);
        const slots = new Set(
          [keys.stream, keys.dead, keys.errors].map((k) => keySlot(prefix + k)),
        );
        expect(slots.size).toBe(1);
        const consumer = await streams.consumer(
          hostile,
          'g',
          () => {
            throw new Error('to the dead letters');
          },
          { maxAttempts: 1 },
        );
        await streams.producer(hostile).add({ hostile });
        await waitFor(() => consumer.counts.deadLettered === 1, {
          what: `dead letter of ${hostile}`,
        });
      }
    });

    it('runs @OnStreamMessage methods of providers', async () => {
      await streams.producer('decorated').add({ to: 'ada@example.com' });
      await waitFor(() => Mailer.seen.length === 1, { what: 'the decorated consumer' });
      expect(Mailer.seen).toEqual(['ada@example.com']);
    });

    it('at shutdown lets a running handler finish and acknowledges it', async () => {
      const own = await startApp({ imports: [RedisModule.forRoot(options)] });
      const ownStreams = own.get(StreamsService);
      const stream = name('shutdown');
      const started = gate();
      const release = gate();
      let finished = false;
      const consumer = await ownStreams.consumer(stream, 'g', async () => {
        started.open();
        await release.promise;
        finished = true;
      });
      await ownStreams.producer(stream).add({ x: 1 });
      await started.promise;
      const closing = own.close();
      release.open();
      await closing;
      expect(finished).toBe(true);
      expect(consumer.counts.processed).toBe(1);
      expect((await streams.stats(stream)).groups[0].pending).toBe(0);
    });

    it('at shutdown leaves a handler that never finishes pending, for another consumer', async () => {
      const own = await startApp({
        imports: [RedisModule.forRoot({ ...options, shutdownTimeout: 200 })],
      });
      const stream = name('stuck');
      const started = gate();
      const ownStreams = own.get(StreamsService);
      let signalled = false;
      await ownStreams.consumer(stream, 'g', (_m, ctx) => {
        ctx.signal.addEventListener('abort', () => (signalled = true));
        started.open();
        return new Promise(() => {});
      });
      await ownStreams.producer(stream).add({ x: 1 });
      await started.promise;
      await own.close();
      expect(signalled).toBe(true);
      expect((await streams.stats(stream)).groups[0].pending).toBe(1);
      let taken = 0;
      const heir = await streams.consumer(stream, 'g', () => void (taken += 1), {
        visibilityTimeout: 100,
      });
      await waitFor(() => heir.counts.processed === 1, { what: 'the stuck message taken over' });
      expect(taken).toBe(1);
    });
  },
);

describe('a consumer process killed mid-message (standalone)', () => {
  const standalone = topologies().find((t) => t.name === 'standalone')!;
  let app: INestApplication;
  let worker: ChildProcess | undefined;
  const prefix = uniquePrefix('streams-kill');
  const options: RedisModuleOptions = {
    ...standalone.options,
    keyPrefix: prefix,
    connectionName: uniqueConnectionName('streams-kill'),
  };

  beforeAll(async () => {
    app = await startApp({ imports: [RedisModule.forRoot(options)] });
  });

  afterAll(async () => {
    worker?.kill('SIGKILL');
    const { RedisService } = await import('../../src/index.js');
    await app.get(RedisService).unlinkByPattern('*');
    await app.close();
  });

  it('redelivers its message to another consumer after visibilityTimeout: none lost, none handled twice', async () => {
    const streams = app.get(StreamsService);
    const stream = 'jobs';
    await streams.producer(stream).add({ job: 'resize-42' });
    worker = spawn(
      process.execPath,
      [
        `${root}test/support/stream-worker.mjs`,
        JSON.stringify({ options, stream, group: 'workers', consumer: { visibilityTimeout: 200 } }),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const lines = createInterface({ input: worker.stdout! });
    const got = await new Promise<string>((resolve, reject) => {
      lines.on('line', (line) => line.startsWith('got ') && resolve(line));
      worker!.once('exit', (code) => reject(new Error(`worker exited (${code}) before a message`)));
    });
    expect(got).toContain('"resize-42"');
    const exited = new Promise((resolve) => worker!.once('exit', resolve));
    worker.kill('SIGKILL');
    await exited;
    lines.close();

    const handled: string[] = [];
    const heir = await streams.consumer<{ job: string }>(
      stream,
      'workers',
      (m, ctx) => void handled.push(`${m.job}#${ctx.deliveries}`),
      { visibilityTimeout: 200 },
    );
    await waitFor(() => heir.counts.processed === 1, { what: 'the orphaned message redelivered' });
    expect(handled).toEqual(['resize-42#2']);
    const stats = await streams.stats(stream);
    expect(stats.groups[0].pending).toBe(0);
    expect(stats.deadLetters).toBe(0);
  });
});
