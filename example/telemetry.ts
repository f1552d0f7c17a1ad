/**
 * OpenTelemetry for the example app, loaded by main.ts when `OTEL_DEMO=1`, before anything
 * imports ioredis:
 * - metrics: the OpenTelemetry SDK with the Prometheus exporter, served by the app at `/metrics`;
 * - traces: one span per HTTP request, the module's own spans (`cache.getOrSet`, `cache.load`,
 *   `lock.acquire`, ...) and ioredis command spans under it, printed as one JSON line each
 *   (`otel-span {...}`) on standard output.
 *
 * An ESM application needs the loader hook of `@opentelemetry/instrumentation` for the ioredis
 * instrumentation to patch a module loaded by `import`: registered here with `module.register`,
 * which only reaches modules imported afterwards (hence main.ts imports the app module later).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { register } from 'node:module';

import { context, metrics, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { IORedisInstrumentation } from '@opentelemetry/instrumentation-ioredis';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import {
  SimpleSpanProcessor,
  TracerProvider,
  type ReadableSpan,
  type SpanExporter,
} from '@opentelemetry/sdk-trace';

/** What main.ts mounts on the app. */
export interface DemoTelemetry {
  /** Express-style middleware: a server span around each request (not `/metrics` scrapes). */
  requestSpans: (req: IncomingMessage, res: ServerResponse, next: () => void) => void;
  /** The Prometheus text of every metric, for `GET /metrics`. */
  metrics: (req: IncomingMessage, res: ServerResponse) => void;
  /** Flushes and stops the SDK. */
  shutdown: () => Promise<void>;
}

/** Prints each finished span as one JSON line: what a collector would receive, readable. */
class JsonLineSpanExporter implements SpanExporter {
  export(spans: ReadableSpan[], done: Parameters<SpanExporter['export']>[1]): void {
    for (const span of spans) {
      const line = {
        name: span.name,
        kind: span.kind,
        traceId: span.spanContext().traceId,
        spanId: span.spanContext().spanId,
        parentSpanId: span.parentSpanContext?.spanId,
        scope: span.instrumentationScope.name,
        durationMs: span.duration[0] * 1e3 + span.duration[1] / 1e6,
        status: span.status.code,
        attributes: span.attributes,
      };
      process.stdout.write(`otel-span ${JSON.stringify(line)}\n`);
    }
    done({ code: 0 }); // ExportResultCode.SUCCESS
  }
  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}

export function startTelemetry(): DemoTelemetry {
  // Only ioredis needs wrapping: every other module loads untouched.
  register('@opentelemetry/instrumentation/hook.mjs', import.meta.url, {
    data: { include: ['ioredis'] },
  });

  const prometheus = new PrometheusExporter({ preventServerStart: true });
  const meterProvider = new MeterProvider({ readers: [prometheus] });
  metrics.setGlobalMeterProvider(meterProvider);

  const tracerProvider = new TracerProvider({
    spanProcessors: [new SimpleSpanProcessor({ exporter: new JsonLineSpanExporter() })],
  });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  trace.setGlobalTracerProvider(tracerProvider);

  registerInstrumentations({
    tracerProvider,
    meterProvider,
    instrumentations: [
      new IORedisInstrumentation({
        requireParentSpan: true,
        // The command name only: the default statement quotes the key.
        dbStatementSerializer: (command) => command,
      }),
    ],
  });

  const tracer = trace.getTracer('nestjs-redis-infra-example');
  return {
    requestSpans: (req, res, next) => {
      const path = (req.url ?? '/').split('?')[0];
      if (path === '/metrics') return next();
      const span = tracer.startSpan(req.method ?? 'HTTP', {
        kind: SpanKind.SERVER,
        attributes: { 'http.request.method': req.method ?? '', 'url.path': path },
      });
      res.once('finish', () => {
        span.setAttribute('http.response.status_code', res.statusCode);
        if (res.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
        span.end();
      });
      context.with(trace.setSpan(context.active(), span), next);
    },
    metrics: (req, res) => prometheus.getMetricsRequestHandler(req, res),
    shutdown: async () => {
      await Promise.allSettled([meterProvider.shutdown(), tracerProvider.shutdown()]);
    },
  };
}
