/**
 * The measuring loops the queue benchmarks share (bench/streams.ts, bench/bullmq.ts): adding
 * messages with a fixed number in flight, and one BullMQ round of a trivial job.
 */
import { performance } from 'node:perf_hooks';

import { Queue, Worker, type ConnectionOptions } from 'bullmq';

/** Calls `add(0..count-1)` with `inFlight` calls outstanding at any time. */
export async function produce(
  add: (n: number) => Promise<unknown>,
  count: number,
  inFlight = 16,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < count) await add(next++);
    }),
  );
}

/**
 * One BullMQ round on `connection` / `prefix`: `jobs` trivial jobs (they return 1) added with
 * `addBulk` in batches of 100, processed by one Worker with `concurrency`; jobs per second
 * from the first add to the last `completed`. The queue is obliterated afterwards.
 */
export async function bullmqRound(
  name: string,
  connection: ConnectionOptions,
  prefix: string,
  { jobs, concurrency }: { jobs: number; concurrency: number },
): Promise<number> {
  const queue = new Queue(name, { connection, prefix });
  let completed = 0;
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  const worker = new Worker(name, () => Promise.resolve(1), {
    connection,
    prefix,
    concurrency,
    autorun: false,
  });
  worker.on('completed', () => {
    if (++completed === jobs) done();
  });
  try {
    await queue.waitUntilReady();
    await worker.waitUntilReady();
    const start = performance.now();
    void worker.run();
    for (let n = 0; n < jobs; n += 100) {
      const batch = Array.from({ length: Math.min(100, jobs - n) }, (_, i) => ({
        name: 'j',
        data: { n: n + i },
        opts: { removeOnComplete: true },
      }));
      await queue.addBulk(batch);
    }
    await finished;
    return jobs / ((performance.now() - start) / 1000);
  } finally {
    await worker.close();
    await queue.obliterate({ force: true });
    await queue.close();
  }
}
