import type { Redis } from 'ioredis';

import type { RedisConnection } from '../connection/redis-connection.js';
import { withTimeout } from '../connection/wait.js';
import { parseInfo, type RedisInfo } from '../redis-info.js';

export type {
  DiagnosticsOptions,
  DiagnosticsProbeError,
  LatencyEvent,
  NodeDiagnostics,
  RedisDiagnostics,
  SlowlogEntry,
} from './diagnostics.types.js';
import type {
  DiagnosticsOptions,
  NodeDiagnostics,
  RedisDiagnostics,
  SlowlogEntry,
} from './diagnostics.types.js';

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
