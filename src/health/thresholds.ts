import type { NodeDiagnostics } from '../diagnostics/diagnostics.types.js';
import { RedisConfigError } from '../errors.js';

/** Eviction policies, and whether a mismatch fails the check or only warns. */
export interface RedisEvictionPolicyRequirement {
  /** The accepted `maxmemory-policy` value(s), e.g. `'noeviction'`. */
  policy: string | readonly string[];
  /**
   * `'down'`: a master with another policy fails the check. `'warn'`: the check stays `up`
   * and reports it in `warnings` (and raises an alert).
   * @defaultValue 'down'
   */
  mode?: 'warn' | 'down';
}

/** The thresholds a health check (and the periodic probe's alerts) compares against. */
export interface RedisHealthThresholds {
  /** `down` when the `PING` round trip (the slowest master's) exceeds this, in ms. */
  maxLatency?: number;
  /** `down` when `used_memory / maxmemory` exceeds this (0..1) on any master; no limit passes. */
  maxMemoryRatio?: number;
  /** `down` when `mem_fragmentation_ratio` exceeds this on any master, e.g. `1.5`. */
  maxFragmentation?: number;
  /** `down` when this registration's open connections / `maxConnections` exceeds this (0..1). */
  maxPoolUsage?: number;
  /** `down` when any master runs an older Redis than this, e.g. `'7.0.0'`. */
  minVersion?: string;
  /**
   * `down` (or a warning) when a master's `maxmemory-policy` is not one of these: `'noeviction'`
   * for locks, streams and queues, an evicting policy (`'allkeys-lru'`, ...) for a cache.
   */
  requireEvictionPolicy?: string | readonly string[] | RedisEvictionPolicyRequirement;
  /** `down` when a replica is more than this many bytes of replication stream behind its master. */
  maxReplicationLag?: number;
}

/** A check the thresholds name; `reachable` is the periodic probe's own (a `PING` came back). */
export type RedisHealthCheckName =
  | 'reachable'
  | 'permission'
  | 'clusterState'
  | 'latency'
  | 'memory'
  | 'fragmentation'
  | 'poolUsage'
  | 'version'
  | 'evictionPolicy'
  | 'replicationLag';

/** What one probe round learned; evaluated against any set of thresholds. */
export interface HealthSample {
  /** `Date.now()` when the round started. */
  at: number;
  latency: number;
  nodes: NodeDiagnostics[];
  clusterState?: string;
}

/** The verdict of one check. */
export interface CheckOutcome {
  check: RedisHealthCheckName;
  ok: boolean;
  /** A failed check that only warns. */
  warn?: boolean;
  value: number | string | null;
  threshold: number | string | readonly string[] | null;
  message?: string;
}

/** Pool usage is local state, read when the verdict is made. */
export interface PoolFigures {
  open: number;
  max: number;
}

const THRESHOLD_KEYS = [
  'maxLatency',
  'maxMemoryRatio',
  'maxFragmentation',
  'maxPoolUsage',
  'minVersion',
  'requireEvictionPolicy',
  'maxReplicationLag',
] as const;

/** The thresholds among `options` (other keys ignored), validated; throws naming the parameter. */
export function validateThresholds(
  options: Record<string, unknown>,
  where: string,
): RedisHealthThresholds {
  const out: Record<string, unknown> = {};
  const num = (key: string, min: number, max: number, expected: string): void => {
    const v = options[key];
    if (v === undefined) return;
    if (!(typeof v === 'number' && Number.isFinite(v) && v >= min && v <= max)) {
      throw new RedisConfigError(`${where}.${key}`, v, expected);
    }
    out[key] = v;
  };
  num('maxLatency', 0, 3_600_000, 'a number of ms >= 0');
  num('maxMemoryRatio', 0, 1, 'a number from 0 to 1');
  num('maxFragmentation', 0, 1_000_000, 'a number >= 0, e.g. 1.5');
  num('maxPoolUsage', 0, 1, 'a number from 0 to 1, e.g. 0.8');
  num('maxReplicationLag', 0, Number.MAX_SAFE_INTEGER, 'a number of bytes >= 0');
  const version = options.minVersion;
  if (version !== undefined) {
    if (typeof version !== 'string' || !/^\d+(\.\d+){0,2}$/.test(version)) {
      throw new RedisConfigError(`${where}.minVersion`, version, "a version such as '7.0.0'");
    }
    out.minVersion = version;
  }
  const policy = options.requireEvictionPolicy;
  if (policy !== undefined) {
    const expected =
      "a policy name, a list of them, or { policy, mode: 'warn' | 'down' }, e.g. 'noeviction'";
    const req = normalizePolicy(policy);
    if (!req) throw new RedisConfigError(`${where}.requireEvictionPolicy`, policy, expected);
    out.requireEvictionPolicy = policy;
  }
  return out;
}

function normalizePolicy(
  value: unknown,
): { policies: readonly string[]; mode: 'warn' | 'down' } | undefined {
  const list = (v: unknown): readonly string[] | undefined =>
    typeof v === 'string' && v !== ''
      ? [v]
      : Array.isArray(v) && v.length > 0 && v.every((p) => typeof p === 'string' && p !== '')
        ? (v as string[])
        : undefined;
  const direct = list(value);
  if (direct) return { policies: direct, mode: 'down' };
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    const { policy, mode = 'down' } = value as { policy?: unknown; mode?: unknown };
    const policies = list(policy);
    if (policies && (mode === 'warn' || mode === 'down')) return { policies, mode };
  }
  return undefined;
}

/** Whether any threshold needs `INFO`. */
export function needsInfo(t: RedisHealthThresholds): boolean {
  return (
    t.maxMemoryRatio !== undefined ||
    t.maxFragmentation !== undefined ||
    t.minVersion !== undefined ||
    t.requireEvictionPolicy !== undefined ||
    t.maxReplicationLag !== undefined
  );
}

/** `-1`, `0` or `1` as `a` is older, equal or newer than `b` (numeric dotted versions). */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map((p) => Number.parseInt(p, 10) || 0);
  const pb = b.split('.').map((p) => Number.parseInt(p, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return 0;
}

/** The oldest version among the masters that reported one. */
export function lowestVersion(nodes: readonly NodeDiagnostics[]): string | undefined {
  let lowest: string | undefined;
  for (const n of nodes) {
    if (n.version && (lowest === undefined || compareVersions(n.version, lowest) < 0))
      lowest = n.version;
  }
  return lowest;
}

/** Whether the ACL refused `INFO` on any master. */
export function infoDenied(nodes: readonly NodeDiagnostics[]): boolean {
  return nodes.some((n) => n.errors.some((e) => e.command === 'INFO' && e.denied));
}

/** An `INFO` that failed for another reason than the ACL (a timeout, a dropped connection). */
export function infoFailure(nodes: readonly NodeDiagnostics[]): string | undefined {
  for (const n of nodes) {
    const e = n.errors.find((x) => x.command === 'INFO' && !x.denied);
    if (e) return `INFO failed on ${n.address}: ${e.message}`;
  }
  return undefined;
}

const pct = (r: number): string => `${(r * 100).toFixed(1)}%`;

/**
 * Every check the thresholds ask for, in a fixed order. Checks whose figure is unknown (no
 * `maxmemory`, no replicas, `INFO` denied) pass; a denied `INFO` is its own `permission` check.
 */
export function evaluate(
  sample: HealthSample,
  t: RedisHealthThresholds,
  pool: PoolFigures,
): CheckOutcome[] {
  const out: CheckOutcome[] = [];
  const nodes = sample.nodes;
  if (needsInfo(t)) out.push(checkPermission(nodes));
  if (sample.clusterState !== undefined) out.push(checkClusterState(sample.clusterState));
  if (t.maxLatency !== undefined) out.push(checkLatency(sample.latency, t.maxLatency));
  if (t.maxMemoryRatio !== undefined) out.push(checkMemory(nodes, t.maxMemoryRatio));
  if (t.maxFragmentation !== undefined) out.push(checkFragmentation(nodes, t.maxFragmentation));
  if (t.maxPoolUsage !== undefined) out.push(checkPoolUsage(pool, t.maxPoolUsage));
  if (t.minVersion !== undefined) out.push(checkVersion(nodes, t.minVersion));
  if (t.requireEvictionPolicy !== undefined)
    out.push(checkEvictionPolicy(nodes, t.requireEvictionPolicy));
  if (t.maxReplicationLag !== undefined) out.push(checkReplicationLag(nodes, t.maxReplicationLag));
  return out;
}

function checkPermission(nodes: readonly NodeDiagnostics[]): CheckOutcome {
  const denied = infoDenied(nodes);
  return {
    check: 'permission',
    ok: !denied,
    value: denied ? 'INFO' : null,
    threshold: null,
    ...(denied ? { message: NOPERM_INFO } : {}),
  };
}

function checkClusterState(clusterState: string): CheckOutcome {
  const ok = clusterState === 'ok';
  return {
    check: 'clusterState',
    ok,
    value: clusterState,
    threshold: 'ok',
    ...(ok ? {} : { message: `cluster_state is ${clusterState}` }),
  };
}

function checkLatency(latency: number, maxLatency: number): CheckOutcome {
  const ok = latency <= maxLatency;
  return {
    check: 'latency',
    ok,
    value: latency,
    threshold: maxLatency,
    ...(ok ? {} : { message: `PING took ${latency} ms, more than maxLatency (${maxLatency} ms)` }),
  };
}

function checkMemory(nodes: readonly NodeDiagnostics[], maxMemoryRatio: number): CheckOutcome {
  let used = 0;
  let max = 0;
  let worst: number | null = null;
  for (const n of nodes) {
    if (!n.memory) continue;
    used += n.memory.used;
    max += n.memory.max;
    if (n.memory.max > 0) worst = Math.max(worst ?? 0, n.memory.used / n.memory.max);
  }
  const ok = worst === null || worst <= maxMemoryRatio;
  return {
    check: 'memory',
    ok,
    value: worst === null ? null : Math.round(worst * 10_000) / 10_000,
    threshold: maxMemoryRatio,
    ...(ok
      ? {}
      : {
          message:
            `memory use ${pct(worst ?? 0)} exceeds maxMemoryRatio ${pct(maxMemoryRatio)} ` +
            `(used_memory ${used} of maxmemory ${max} bytes)`,
        }),
  };
}

function checkFragmentation(
  nodes: readonly NodeDiagnostics[],
  maxFragmentation: number,
): CheckOutcome {
  const ratios = nodes
    .map((n) => n.memory?.fragmentationRatio)
    .filter((r): r is number => typeof r === 'number');
  const worst = ratios.length ? Math.max(...ratios) : null;
  const ok = worst === null || worst <= maxFragmentation;
  return {
    check: 'fragmentation',
    ok,
    value: worst,
    threshold: maxFragmentation,
    ...(ok
      ? {}
      : {
          message: `mem_fragmentation_ratio ${worst} exceeds maxFragmentation ${maxFragmentation}`,
        }),
  };
}

function checkPoolUsage(pool: PoolFigures, maxPoolUsage: number): CheckOutcome {
  const usage = pool.max > 0 ? Math.round((pool.open / pool.max) * 10_000) / 10_000 : 0;
  const ok = usage <= maxPoolUsage;
  return {
    check: 'poolUsage',
    ok,
    value: usage,
    threshold: maxPoolUsage,
    ...(ok
      ? {}
      : {
          message:
            `${pool.open} of maxConnections ${pool.max} connections open (${pct(usage)}), ` +
            `more than maxPoolUsage ${pct(maxPoolUsage)}`,
        }),
  };
}

function checkVersion(nodes: readonly NodeDiagnostics[], minVersion: string): CheckOutcome {
  const version = lowestVersion(nodes);
  const ok = version === undefined || compareVersions(version, minVersion) >= 0;
  return {
    check: 'version',
    ok,
    value: version ?? null,
    threshold: minVersion,
    ...(ok ? {} : { message: `redis_version ${version} is older than minVersion ${minVersion}` }),
  };
}

function checkEvictionPolicy(
  nodes: readonly NodeDiagnostics[],
  requirement: NonNullable<RedisHealthThresholds['requireEvictionPolicy']>,
): CheckOutcome {
  const req = normalizePolicy(requirement);
  const policies = req?.policies ?? [];
  const bad = nodes.find((n) => n.memory && !policies.includes(n.memory.policy));
  const value = bad?.memory?.policy ?? nodes.find((n) => n.memory)?.memory?.policy ?? null;
  return {
    check: 'evictionPolicy',
    ok: !bad,
    ...(bad && req?.mode === 'warn' ? { warn: true } : {}),
    value,
    threshold: policies,
    ...(bad
      ? {
          message:
            `maxmemory-policy is ${bad.memory?.policy} on ${bad.address}, ` +
            `expected ${policies.join(' or ')}`,
        }
      : {}),
  };
}

function checkReplicationLag(
  nodes: readonly NodeDiagnostics[],
  maxReplicationLag: number,
): CheckOutcome {
  const lags = nodes.flatMap((n) => n.replicas.map((r) => r.lagBytes));
  const worst = lags.length ? Math.max(...lags) : null;
  const ok = worst === null || worst <= maxReplicationLag;
  return {
    check: 'replicationLag',
    ok,
    value: worst,
    threshold: maxReplicationLag,
    ...(ok
      ? {}
      : {
          message: `a replica is ${worst} bytes behind, more than maxReplicationLag ${maxReplicationLag}`,
        }),
  };
}

const NOPERM_INFO =
  'the ACL user may not run INFO (grant +info, or the whole @dangerous category, which also ' +
  'holds commands the module does not need)';

/** Validates the module options `healthCheckInterval` and `alerts`. */
export function validateHealthModuleOptions(
  interval: unknown,
  alerts: unknown,
): {
  healthCheckInterval: number;
  alerts: (RedisHealthThresholds & { timeout?: number }) | undefined;
} {
  let resolvedAlerts: (RedisHealthThresholds & { timeout?: number }) | undefined;
  if (alerts !== undefined) {
    if (alerts === null || typeof alerts !== 'object' || Array.isArray(alerts)) {
      throw new RedisConfigError('alerts', alerts, 'an object of thresholds');
    }
    const a = alerts as Record<string, unknown>;
    resolvedAlerts = validateThresholds(a, 'alerts');
    if (a.timeout !== undefined) {
      if (!(
        typeof a.timeout === 'number' &&
        Number.isInteger(a.timeout) &&
        a.timeout >= 1 &&
        a.timeout <= 60_000
      )) {
        throw new RedisConfigError('alerts.timeout', a.timeout, 'an integer of ms from 1 to 60000');
      }
      resolvedAlerts.timeout = a.timeout;
    }
  }
  if (interval === undefined) {
    return {
      healthCheckInterval: resolvedAlerts ? DEFAULT_ALERT_INTERVAL : 0,
      alerts: resolvedAlerts,
    };
  }
  if (!(
    typeof interval === 'number' &&
    Number.isInteger(interval) &&
    (interval === 0 || (interval >= 50 && interval <= 86_400_000))
  )) {
    throw new RedisConfigError(
      'healthCheckInterval',
      interval,
      'an integer of ms from 50 to 86400000, or 0 (off)',
    );
  }
  if (interval === 0 && resolvedAlerts) {
    throw new RedisConfigError(
      'healthCheckInterval',
      interval,
      'a positive interval when alerts are set',
    );
  }
  return { healthCheckInterval: interval, alerts: resolvedAlerts };
}

/** The periodic probe's interval when `alerts` are set without `healthCheckInterval`. */
export const DEFAULT_ALERT_INTERVAL = 10_000;

export { THRESHOLD_KEYS };
