import type { Redis } from 'ioredis';

import type { RedisConnection } from '../connection/redis-connection.js';
import { withTimeout } from '../connection/wait.js';
import { parseInfo, type RedisInfo } from '../redis-info.js';

/** What one probe of `diagnostics()` could not learn, and why. */
export interface DiagnosticsProbeError {
  /** The command that failed (`INFO`, `SLOWLOG`, `LATENCY`). */
  command: string;
  /** The ACL refused it: grant `permission` to get this part. */
  denied: boolean;
  /** The ACL rule that would allow it, when denied. */
  permission?: string;
  /** What happened, without secrets. */
  message: string;
}

/** One slow log entry (`SLOWLOG GET`). */
export interface SlowlogEntry {
  id: number;
  at: Date;
  /** Execution time in microseconds. */
  durationMicros: number;
  /** The command and its arguments, each cut to 100 characters. */
  command: string[];
  /** The client's address and name, when Redis recorded them. */
  client?: string;
}

/** One latency event (`LATENCY LATEST`). */
export interface LatencyEvent {
  event: string;
  at: Date;
  latestMs: number;
  maxMs: number;
}

/** What `diagnostics()` learned about one master (the server, outside a cluster). */
export interface NodeDiagnostics {
  /** `host:port`. */
  address: string;
  version?: string;
  role?: string;
  /** Per replica: its offset and how many bytes it is behind this master. */
  replicas: Array<{ address: string; state: string; offset: number; lagBytes: number }>;
  memory?: {
    used: number;
    /** 0: no limit. */
    max: number;
    policy: string;
    fragmentationRatio: number | null;
  };
  keys?: { evicted: number; expired: number };
  persistence?: {
    rdbLastSaveAt: Date | null;
    rdbLastStatus: string;
    aofEnabled: boolean;
    aofLastWriteStatus: string | null;
  };
  clients?: { connected: number; blocked: number };
  slowlog: SlowlogEntry[];
  latency: LatencyEvent[];
  /** Probes that failed or were denied; the rest of the report stands. */
  errors: DiagnosticsProbeError[];
}

/** What `RedisService.diagnostics()` returns. */
export interface RedisDiagnostics {
  /** This registration's connections: open now, the `maxConnections` bound, and their ratio. */
  connections: { open: number; max: number; usage: number };
  nodes: NodeDiagnostics[];
}

/** Options of `RedisService.diagnostics()`. */
export interface DiagnosticsOptions {
  /** Bound of each probe, in ms. @defaultValue 1000 */
  timeout?: number;
  /** Slow log entries per node. @defaultValue 10 */
  slowlogEntries?: number;
}

/**
 * Every master's state in one report, each probe bounded by `timeout` and independent: a probe
 * the ACL denies, or one that times out, is reported in `errors` and the others still stand.
 */
export async function diagnose(
  connection: RedisConnection,
  options: DiagnosticsOptions = {},
): Promise<RedisDiagnostics> {
  const timeout = options.timeout ?? 1000;
  if (!(
    typeof timeout === 'number' &&
    Number.isFinite(timeout) &&
    timeout > 0 &&
    timeout <= 60_000
  )) {
    throw new TypeError(
      `diagnostics timeout must be a number of ms from 1 to 60000, got ${String(timeout)}`,
    );
  }
  const count = options.slowlogEntries ?? 10;
  if (!(Number.isInteger(count) && count >= 0 && count <= 1000)) {
    throw new TypeError(
      `diagnostics slowlogEntries must be an integer from 0 to 1000, got ${String(count)}`,
    );
  }
  const open = connection.openConnections;
  const max = connection.config.maxConnections;
  const nodes = await Promise.all(
    connection.masters().map((node) => diagnoseNode(connection, node, timeout, count)),
  );
  return { connections: { open, max, usage: max > 0 ? open / max : 0 }, nodes };
}

async function diagnoseNode(
  connection: RedisConnection,
  node: Redis,
  timeout: number,
  slowlogEntries: number,
): Promise<NodeDiagnostics> {
  const { host, port } = node.options as { host?: string; port?: number };
  const report: NodeDiagnostics = {
    address: `${host ?? 'localhost'}:${port ?? 6379}`,
    replicas: [],
    slowlog: [],
    latency: [],
    errors: [],
  };
  const probe = async <T>(
    command: string,
    permission: string,
    run: () => Promise<T>,
  ): Promise<T | undefined> => {
    try {
      return await withTimeout(run(), timeout, () => new Error(`no answer within ${timeout} ms`));
    } catch (err) {
      const message = connection.scrub(err instanceof Error ? err.message : String(err));
      const denied = /NOPERM|no permissions/i.test(message);
      report.errors.push({
        command,
        denied,
        ...(denied ? { permission } : {}),
        message: message.slice(0, 300),
      });
      return undefined;
    }
  };
  const [infoText, slowlog, latency] = await Promise.all([
    probe('INFO', '+info', () => node.info()),
    probe(
      'SLOWLOG',
      '+slowlog|get',
      () => node.call('SLOWLOG', 'GET', slowlogEntries) as Promise<unknown[]>,
    ),
    probe('LATENCY', '+latency|latest', () => node.call('LATENCY', 'LATEST') as Promise<unknown[]>),
  ]);
  if (infoText !== undefined) fromInfo(report, parseInfo(infoText));
  report.slowlog = (slowlog ?? []).map(toSlowlogEntry);
  report.latency = (latency ?? []).map((row) => {
    const [event, at, latest, maxMs] = row as [string, number, number, number];
    return {
      event: String(event),
      at: new Date(Number(at) * 1000),
      latestMs: Number(latest),
      maxMs: Number(maxMs),
    };
  });
  return report;
}

function fromInfo(report: NodeDiagnostics, info: RedisInfo): void {
  const n = (v: unknown): number => (typeof v === 'number' ? v : Number(v ?? 0) || 0);
  report.version =
    info.server?.redis_version !== undefined ? String(info.server.redis_version) : undefined;
  const replication: Record<string, unknown> = info.replication ?? {};
  // eslint-disable-next-line @typescript-eslint/no-base-to-string -- INFO fields are strings or numbers
  report.role = replication.role !== undefined ? String(replication.role) : undefined;
  const masterOffset = n(replication.master_repl_offset);
  for (const [field, value] of Object.entries(replication)) {
    if (!/^slave\d+$/.test(field) || typeof value !== 'object') continue;
    const r = value as Record<string, string | number>;
    const offset = n(r.offset);
    report.replicas.push({
      address: `${String(r.ip)}:${String(r.port)}`,
      state: String(r.state ?? ''),
      offset,
      lagBytes: Math.max(0, masterOffset - offset),
    });
  }
  if (info.memory) {
    const ratio = info.memory.mem_fragmentation_ratio;
    report.memory = {
      used: n(info.memory.used_memory),
      max: n(info.memory.maxmemory),
      policy: String(info.memory.maxmemory_policy ?? ''),
      fragmentationRatio: typeof ratio === 'number' ? ratio : null,
    };
  }
  if (info.stats)
    report.keys = { evicted: n(info.stats.evicted_keys), expired: n(info.stats.expired_keys) };
  const p = info.persistence;
  if (p) {
    const lastSave = n(p.rdb_last_save_time);
    report.persistence = {
      rdbLastSaveAt: lastSave > 0 ? new Date(lastSave * 1000) : null,
      rdbLastStatus: String((p.rdb_last_bgsave_status as string | undefined) ?? ''),
      aofEnabled: n(p.aof_enabled) === 1,
      aofLastWriteStatus:
        p.aof_last_write_status !== undefined
          ? // eslint-disable-next-line @typescript-eslint/no-base-to-string -- INFO fields are strings or numbers
            String(p.aof_last_write_status)
          : null,
    };
  }
  if (info.clients) {
    report.clients = {
      connected: n(info.clients.connected_clients),
      blocked: n(info.clients.blocked_clients),
    };
  }
}

function toSlowlogEntry(row: unknown): SlowlogEntry {
  const [id, at, micros, args, address, name] = row as [
    number,
    number,
    number,
    unknown[],
    string?,
    string?,
  ];
  const client = [address, name].filter((s) => typeof s === 'string' && s !== '').join(' ');
  return {
    id: Number(id),
    at: new Date(Number(at) * 1000),
    durationMicros: Number(micros),
    command: (Array.isArray(args) ? args : []).map((a) => {
      const text = String(a);
      return text.length > 100 ? `${text.slice(0, 100)}…` : text;
    }),
    ...(client ? { client } : {}),
  };
}
