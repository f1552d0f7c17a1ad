/** A value of `INFO`: numbers as numbers, `k=v,k=v` lists (keyspace, commandstats) as records. */
export type RedisInfoValue = string | number | Record<string, string | number>;

/** One section of `INFO`, keyed by field name. */
export type RedisInfoFields = Record<string, RedisInfoValue>;

/** `INFO keyspace` line, e.g. `db0:keys=12,expires=3,avg_ttl=0`. */
export interface RedisKeyspaceInfo {
  keys: number;
  expires: number;
  avg_ttl: number;
  [field: string]: string | number;
}

/**
 * The typed fields of the sections we rely on. Every other field is there too, typed as a
 * `RedisInfoValue`; a field missing on an older server is `undefined`.
 */
export interface RedisInfoSections {
  server: {
    redis_version: string;
    redis_mode: string;
    tcp_port: number;
    uptime_in_seconds: number;
  } & RedisInfoFields;
  clients: { connected_clients: number; blocked_clients: number } & RedisInfoFields;
  memory: {
    used_memory: number;
    used_memory_human: string;
    maxmemory: number;
    maxmemory_policy: string;
  } & RedisInfoFields;
  stats: {
    total_commands_processed: number;
    instantaneous_ops_per_sec: number;
    keyspace_hits: number;
    keyspace_misses: number;
    evicted_keys: number;
    expired_keys: number;
  } & RedisInfoFields;
  replication: { role: 'master' | 'slave'; connected_slaves: number } & RedisInfoFields;
  keyspace: Record<string, RedisKeyspaceInfo>;
  cluster: { cluster_enabled: number } & RedisInfoFields;
}

/** `INFO` parsed: section names in lower case (`server`, `memory`, `keyspace`, ...). */
export type RedisInfo = Partial<RedisInfoSections> & Record<string, RedisInfoFields | undefined>;

/**
 * Parses the text of `INFO [section]`. Decimal numbers become numbers (`00000000`, a git sha,
 * and `7.0.15` stay strings); `k=v,k=v` values become
 * records.
 */
export function parseInfo(text: string): RedisInfo {
  const info: Record<string, RedisInfoFields> = {};
  let section: RedisInfoFields | undefined;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '') continue;
    if (line.startsWith('#')) {
      const name = line.replace(/^#+\s*/, '').toLowerCase();
      section = info[name] ??= {};
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    section ??= info.default ??= {};
    section[line.slice(0, colon)] = parseValue(line.slice(colon + 1));
  }
  return info;
}

function parseValue(value: string): RedisInfoValue {
  if (/^[A-Za-z_][\w-]*=[^,]*(,[A-Za-z_][\w-]*=[^,]*)*$/.test(value)) {
    const record: Record<string, string | number> = {};
    for (const pair of value.split(',')) {
      const eq = pair.indexOf('=');
      record[pair.slice(0, eq)] = parseScalar(pair.slice(eq + 1));
    }
    return record;
  }
  return parseScalar(value);
}

function parseScalar(value: string): string | number {
  // Decimal numbers without leading zeros; `00000000` (a sha) and `7.0.15` stay strings.
  return /^-?(0|[1-9]\d*)(\.\d+)?$/.test(value) && value.length <= 17 ? Number(value) : value;
}
