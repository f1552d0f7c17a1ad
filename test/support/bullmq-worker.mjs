// A BullMQ worker in its own process, built from the module's bridge (dist/), for the spec
// that SIGKILLs a worker mid-job. Prints "ready" once its worker runs, then "started <id>"
// when it takes a job, whose processor never finishes.
// Usage: node bullmq-worker.mjs '{ "options": {...}, "queue": "name", "lockDuration": 1000 }'
import 'reflect-metadata';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Worker } from 'bullmq';

const { RedisModule, RedisBullMq } = await import(
  new URL('../../dist/index.js', import.meta.url).href
);
const spec = JSON.parse(process.argv[2]);

class WorkerModule {}
Module({ imports: [RedisModule.forRoot(spec.options)] })(WorkerModule);

const app = await NestFactory.createApplicationContext(WorkerModule, {
  logger: false,
  abortOnError: false,
});
const bridge = app.get(RedisBullMq);
const worker = new Worker(
  spec.queue,
  async (job) => {
    process.stdout.write(`started ${job.id}\n`);
    // Never settles: the parent kills this process while the job is active.
    await new Promise(() => undefined);
  },
  bridge.workerOptions({ lockDuration: spec.lockDuration, stalledInterval: spec.lockDuration }),
);
await worker.waitUntilReady();
process.stdout.write('ready\n');
