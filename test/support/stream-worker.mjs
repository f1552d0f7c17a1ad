// A consumer process for the streams spec: boots the built module (dist/) and consumes one stream
// in one group with a handler that prints "got <id> <message json>" and never settles, so the
// spec can SIGKILL it mid-message. Prints "ready" once consuming.
// Usage: node stream-worker.mjs '<json: { options, stream, group, consumer }>'
// It exits by itself after 60 s if nobody killed it (a failed spec must not leave it running).
import 'reflect-metadata';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';

const { RedisModule, StreamsService } = await import(
  new URL('../../dist/index.js', import.meta.url).href
);
const spec = JSON.parse(process.argv[2]);
setTimeout(() => process.exit(3), 60_000).unref();

class WorkerModule {}
Module({ imports: [RedisModule.forRoot(spec.options)] })(WorkerModule);
const app = await NestFactory.createApplicationContext(WorkerModule, { logger: false });
const streams = app.get(StreamsService);
await streams.consumer(
  spec.stream,
  spec.group,
  (message, { id }) => {
    process.stdout.write(`got ${id} ${JSON.stringify(message)}\n`);
    return new Promise(() => {});
  },
  { ...spec.consumer },
);
process.stdout.write('ready\n');
setInterval(() => {}, 1000);
