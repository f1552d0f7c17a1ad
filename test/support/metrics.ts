import { AggregationTemporality, MetricReader, type MetricData } from '@opentelemetry/sdk-metrics';

/** Collects on demand: what an exporter would get at its next interval. */
export class TestMetricReader extends MetricReader {
  constructor() {
    super({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE });
  }
  protected async onForceFlush(): Promise<void> {}
  protected async onShutdown(): Promise<void> {}

  /** The module's instruments by name, from a fresh collection; throws on a collection error. */
  async metrics(): Promise<Map<string, MetricData>> {
    const { resourceMetrics, errors } = await this.collect();
    if (errors.length > 0) throw new AggregateError(errors, 'metric collection failed');
    const out = new Map<string, MetricData>();
    for (const scope of resourceMetrics.scopeMetrics) {
      if (scope.scope.name !== 'nestjs-redis-infra') continue;
      for (const m of scope.metrics) out.set(m.descriptor.name, m);
    }
    return out;
  }
}

/** One data point as the tests read it. */
export interface MetricPoint {
  attributes: Record<string, unknown>;
  value: unknown;
}

/** The data points of `metric` whose attributes include every one of `match`. */
export function pointsOf(
  metric: MetricData | undefined,
  match: Record<string, unknown> = {},
): MetricPoint[] {
  const all: MetricPoint[] = metric?.dataPoints ?? [];
  return all.filter((p) => Object.entries(match).every(([k, v]) => p.attributes[k] === v));
}

/** The value of the single point of `metric` matching `match` (`undefined` when none). */
export function valueOf(
  metric: MetricData | undefined,
  match: Record<string, unknown> = {},
): unknown {
  const found = pointsOf(metric, match);
  if (found.length > 1) throw new Error(`${found.length} points match ${JSON.stringify(match)}`);
  return found[0]?.value;
}
