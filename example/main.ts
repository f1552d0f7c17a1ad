import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';

import type { DemoTelemetry } from './telemetry.js';

/** The example only ever listens on loopback. */
const HOST = '127.0.0.1';
const logger = new Logger('Example');

function listenPort(): number {
  const raw = process.env.PORT?.trim() || '3000';
  const port = Number(raw);
  if (!/^\d+$/.test(raw) || port < 1 || port > 65535) {
    throw new Error(
      `PORT = ${JSON.stringify(raw)} is not a TCP port; use a number from 1 to 65535.`,
    );
  }
  return port;
}

/**
 * `OTEL_DEMO=1`: the OpenTelemetry SDK, started before the app module (and through it ioredis)
 * is imported, so that the ioredis instrumentation can patch it.
 */
async function startTelemetry(): Promise<DemoTelemetry | undefined> {
  if (process.env.OTEL_DEMO !== '1') return undefined;
  const { startTelemetry: start } = await import('./telemetry.js');
  return start();
}

/** Copy-paste commands for every endpoint of the example. */
function tryIt(base: string, otel: boolean): string {
  const json = `-H 'Content-Type: application/json'`;
  return [
    '',
    `Example app listening on ${base}.`,
    '',
    `  Live Redis page: ${base}/admin/redis   (open it in a browser)`,
    '',
    'Try:',
    '',
    `  curl ${base}/health`,
    `  curl -X PUT ${base}/kv/greeting ${json} -d '{"value":"hello","ttlMs":60000}'`,
    `  curl ${base}/kv/greeting`,
    `  curl -X DELETE -i ${base}/kv/greeting`,
    `  curl -X POST ${base}/visits`,
    `  curl ${base}/redis/stats`,
    `  curl ${base}/redis/info/memory`,
    `  curl ${base}/products/42            # 200 ms the first time, then cached`,
    `  curl -X POST ${base}/products/invalidate`,
    `  curl ${base}/cache/stats`,
    `  curl -X POST ${base}/jobs/report/run  # 409 while another run holds the lock`,
    `  curl -X POST ${base}/session/login ${json} -d '{"userId":"alice"}'  # answers {"id":...}`,
    `  curl ${base}/session/me -H 'Authorization: Bearer <id>'`,
    `  curl ${base}/session/devices -H 'Authorization: Bearer <id>'`,
    `  curl -X POST ${base}/session/logout-everywhere -H 'Authorization: Bearer <id>'`,
    ...(otel
      ? [
          `  curl ${base}/metrics                 # OpenTelemetry metrics, Prometheus text`,
          '  (spans are printed below, one "otel-span {...}" line each)',
        ]
      : []),
    '',
  ].join('\n');
}

async function bootstrap(): Promise<void> {
  const port = listenPort();
  const otel = await startTelemetry();
  const { AppModule } = await import('./app.module.js');
  // abortOnError: false, so that a startup failure (e.g. Redis unreachable) is an error we can
  // report and exit on, instead of process.abort().
  const app = await NestFactory.create(AppModule, { abortOnError: false });
  // SIGINT / SIGTERM close the app: the Redis connections are QUIT before the process exits.
  app.enableShutdownHooks();
  if (otel) {
    app.use(otel.requestSpans);
    app.use('/metrics', otel.metrics);
  }
  try {
    await app.listen(port, HOST);
  } catch (err) {
    await app.close().catch(() => undefined);
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      throw new Error(
        `Port ${port} on ${HOST} is already in use; start the example with another PORT, e.g. PORT=${port + 1}.`,
        { cause: err },
      );
    }
    throw err;
  }
  process.stdout.write(`${tryIt(`http://${HOST}:${port}`, otel !== undefined)}\n`);
}

bootstrap().catch((err: unknown) => {
  logger.error(err instanceof Error ? err.message : String(err));
  process.exitCode = 1;
});
