import type { ConnectionOptions as TlsConnectionOptions } from 'node:tls';

import type { Cluster, Redis } from 'ioredis';

import { booleanOption } from '../common/option-checks.js';
import {
  validateConnectionOptions,
  type RedisConnectionOptions,
  type ResolvedConnectionOptions,
} from '../connection/connection.options.js';
import { RedisConfigError } from '../errors.js';

import { DEFAULTS, DEFAULT_CONNECTION_NAME } from './defaults.js';
import { readEnvironment, type Sources } from './environment.js';
import { redactUrl, REDACTED } from './redact.js';
import type {
  RedisClusterOptions,
  RedisConnectionTarget,
  RedisNodeAddress,
} from './redis-options.interface.js';

export { readEnvironment } from './environment.js';

/** Where the connection goes, after validation. */
export type ResolvedTarget =
  | { kind: 'standalone'; host: string; port: number; db: number }
  | {
      kind: 'sentinel';
      sentinels: RedisNodeAddress[];
      name: string;
      role: 'master' | 'slave';
      db: number;
      sentinelUsername?: string;
      sentinelPassword?: string;
      failoverDetector: boolean;
    }
  | {
      kind: 'cluster';
      nodes: RedisNodeAddress[];
      scaleReads: 'master' | 'slave' | 'all';
      clusterOptions: NonNullable<RedisClusterOptions['clusterOptions']>;
    }
  | { kind: 'client'; client: Redis | Cluster };

/** The connection target and connection options after defaults, environment and validation. */
export interface ResolvedConnectionConfig extends ResolvedConnectionOptions {
  name: string;
  target: ResolvedTarget;
  username?: string;
  password?: string;
  tls?: TlsConnectionOptions;
  keyPrefix: string;
  /** Human-readable address for logs and errors, password redacted. */
  address: string;
}

/** What `resolveConnectionConfig` reads: the target and the connection options. */
type ConnectionInput = RedisConnectionTarget & RedisConnectionOptions;

const TARGET_KEYS = ['url', 'host', 'port', 'sentinel', 'cluster', 'client'] as const;

/**
 * Validates the connection target and the connection options of `options` (and, when they name
 * no target, reads the environment under them). Returns the resolved connection and the options
 * merged with the environment, whose other parts (capability options) the caller validates.
 * Throws `RedisConfigError` naming the option or variable, the value and the unit.
 */
export function resolveConnectionConfig<O extends ConnectionInput>(
  options: O | undefined,
  env: NodeJS.ProcessEnv = process.env,
  name: string = DEFAULT_CONNECTION_NAME,
): { config: ResolvedConnectionConfig; options: O } {
  if (options !== undefined && (options === null || typeof options !== 'object')) {
    throw new RedisConfigError('options', options, 'an options object or nothing');
  }
  // `url: config.get('REDIS_URL')` yields '' when the variable is set but empty: that means
  // "not configured", exactly as an empty variable does when we read the environment.
  let opts = { ...(options ?? {}) } as O;
  for (const key of ['url', 'host'] as const) {
    const v = opts[key];
    if (typeof v === 'string' && v.trim() === '') delete opts[key];
  }
  let sources: Sources = {};
  if (!TARGET_KEYS.some((k) => opts[k] !== undefined)) {
    const fromEnv = readEnvironment(env);
    opts = { ...fromEnv.options, ...stripUndefined(opts) } as O;
    sources = fromEnv.sources;
  }
  return { config: validate(opts, sources, name), options: opts };
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Maps an option path to what the user set: the option itself or the environment variable. */
type Label = (path: string) => string;

/** The credentials and TLS options of a connection, which a URL may complete. */
interface Credentials {
  username: string | undefined;
  password: string | undefined;
  tls: TlsConnectionOptions | undefined;
}

/** A validated target and its human-readable address. */
interface TargetWithAddress {
  target: ResolvedTarget;
  address: string;
}

function validate(o: ConnectionInput, sources: Sources, name: string): ResolvedConnectionConfig {
  const label = (path: string): string => sources[path] ?? path;

  if (typeof name !== 'string' || name.trim() === '') {
    throw new RedisConfigError('name', name, 'a non-empty string');
  }
  checkSingleTarget(o, label);

  const keyPrefix = o.keyPrefix ?? DEFAULTS.keyPrefix;
  if (typeof keyPrefix !== 'string') {
    throw new RedisConfigError(label('keyPrefix'), keyPrefix, 'a string such as "app:"');
  }
  const connection = validateConnectionOptions(
    o,
    name,
    label,
    // Set from the environment: the variable to add is the command timeout's.
    sources.retryOnTimeout ? 'REDIS_COMMAND_TIMEOUT_MS' : undefined,
  );

  const given: Credentials = {
    username: optionalString(o.username, 'username'),
    password: optionalString(o.password, 'password', true),
    tls: validateTls(o.tls, label('tls')),
  };
  const { target, address, credentials } = resolveTarget(o, sources, label, given);
  const { username, password, tls } = credentials;

  return {
    name,
    target,
    username,
    password,
    tls,
    keyPrefix,
    ...connection,
    address,
  };
}

/** Throws when `o` names more than one target, or a URL together with a host or port. */
function checkSingleTarget(o: ConnectionInput, label: Label): void {
  const targets = (['url', 'sentinel', 'cluster', 'client'] as const).filter(
    (k) => o[k] !== undefined,
  );
  if (targets.length > 1) {
    throw new RedisConfigError(
      targets.map(label).join(' + '),
      targets.map((t) => (t === 'url' ? redactUrl(String(o.url)) : t)).join(' + '),
      'only one of url, sentinel, cluster or client',
    );
  }
  if (o.url !== undefined && (o.host !== undefined || o.port !== undefined)) {
    throw new RedisConfigError(
      `${label('url')} + ${o.host !== undefined ? label('host') : label('port')}`,
      redactUrl(String(o.url)),
      'either url or host/port, not both',
    );
  }
}

/** The one target `o` names (a host and port by default), with the credentials it completes. */
function resolveTarget(
  o: ConnectionInput,
  sources: Sources,
  label: Label,
  credentials: Credentials,
): TargetWithAddress & { credentials: Credentials } {
  if (o.client !== undefined) return { ...clientTarget(o.client), credentials };
  if (o.cluster !== undefined) return { ...clusterTarget(o, sources, label), credentials };
  if (o.sentinel !== undefined) return { ...sentinelTarget(o, sources, label), credentials };
  if (o.url !== undefined) return urlTarget(o, label, credentials);
  return { ...hostTarget(o, label, credentials), credentials };
}

function clientTarget(client: NonNullable<ConnectionInput['client']>): TargetWithAddress {
  const c = client as unknown as { status?: unknown; sendCommand?: unknown };
  if (c === null || typeof c !== 'object' || typeof c.sendCommand !== 'function') {
    throw new RedisConfigError(
      'client',
      Object.prototype.toString.call(client),
      'an ioredis Redis or Cluster instance',
    );
  }
  return {
    target: { kind: 'client', client },
    address: 'a client passed in by the application',
  };
}

function clusterTarget(o: ConnectionInput, sources: Sources, label: Label): TargetWithAddress {
  const c = o.cluster;
  if (c === null || typeof c !== 'object') {
    throw new RedisConfigError(label('cluster'), c, 'an object { nodes: [{ host, port }, ...] }');
  }
  const nodes = validateNodes(c.nodes, sources.cluster ?? 'cluster.nodes');
  const scaleReads = c.scaleReads ?? 'master';
  if (!['master', 'slave', 'all'].includes(scaleReads)) {
    throw new RedisConfigError('cluster.scaleReads', scaleReads, "'master', 'slave' or 'all'");
  }
  if (o.db !== undefined && o.db !== 0) {
    throw new RedisConfigError(label('db'), o.db, '0 (a cluster has a single database)');
  }
  return {
    target: { kind: 'cluster', nodes, scaleReads, clusterOptions: c.clusterOptions ?? {} },
    address: `cluster ${nodes.map(formatNode).join(',')}`,
  };
}

function sentinelTarget(o: ConnectionInput, sources: Sources, label: Label): TargetWithAddress {
  const s = o.sentinel;
  if (s === null || typeof s !== 'object') {
    throw new RedisConfigError(
      label('sentinel'),
      s,
      'an object { sentinels: [{ host, port }], name }',
    );
  }
  const sentinels = validateNodes(s.sentinels, sources.sentinel ?? 'sentinel.sentinels');
  if (typeof s.name !== 'string' || s.name.trim() === '') {
    throw new RedisConfigError(
      sources.sentinel ? 'REDIS_SENTINEL_NAME' : 'sentinel.name',
      s.name,
      'the monitored master name, e.g. "mymaster"',
    );
  }
  const role = s.role ?? 'master';
  if (role !== 'master' && role !== 'slave') {
    throw new RedisConfigError('sentinel.role', role, "'master' or 'slave'");
  }
  return {
    target: {
      kind: 'sentinel',
      sentinels,
      name: s.name,
      role,
      db: dbIndex(o.db, label('db')),
      sentinelUsername: optionalString(s.sentinelUsername, 'sentinel.sentinelUsername'),
      sentinelPassword: optionalString(s.sentinelPassword, 'sentinel.sentinelPassword', true),
      failoverDetector: booleanOption(
        s.failoverDetector,
        'sentinel.failoverDetector',
        DEFAULTS.sentinelFailoverDetector,
      ),
    },
    address: `sentinel master "${s.name}" via ${sentinels.map(formatNode).join(',')}`,
  };
}

/** A `url` target; the URL's user, password and scheme fill what the options leave unset. */
function urlTarget(
  o: ConnectionInput,
  label: Label,
  given: Credentials,
): TargetWithAddress & { credentials: Credentials } {
  const parsed = parseRedisUrl(o.url, label('url'));
  const credentials: Credentials = {
    username: given.username ?? parsed.username,
    password: given.password ?? parsed.password,
    tls: parsed.tls && given.tls === undefined ? {} : given.tls,
  };
  const target = {
    kind: 'standalone' as const,
    host: parsed.host,
    port: parsed.port,
    db: o.db === undefined ? parsed.db : dbIndex(o.db, label('db')),
  };
  const { username, password, tls } = credentials;
  return { target, address: describeStandalone(target, username, password, tls), credentials };
}

function hostTarget(o: ConnectionInput, label: Label, credentials: Credentials): TargetWithAddress {
  const host = o.host ?? DEFAULTS.host;
  if (typeof host !== 'string' || host.trim() === '') {
    throw new RedisConfigError(label('host'), host, 'a host name or IP address');
  }
  const port = portNumber(o.port ?? DEFAULTS.port, label('port'));
  const target = { kind: 'standalone' as const, host, port, db: dbIndex(o.db, label('db')) };
  const { username, password, tls } = credentials;
  return { target, address: describeStandalone(target, username, password, tls) };
}

/** Parses `redis://` / `rediss://` URLs; the error shows the URL with its password redacted. */
export function parseRedisUrl(
  url: unknown,
  label = 'url',
): { host: string; port: number; db: number; username?: string; password?: string; tls: boolean } {
  const expected = 'redis://[[user]:password@]host[:port][/db] or rediss://...';
  if (typeof url !== 'string') throw new RedisConfigError(label, url, expected);
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new RedisConfigError(label, redactUrl(url), expected);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw new RedisConfigError(
      label,
      redactUrl(url),
      `${expected} (scheme ${u.protocol} is not supported)`,
    );
  }
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (host === '')
    throw new RedisConfigError(label, redactUrl(url), `${expected} (the host is missing)`);
  const port = u.port === '' ? DEFAULTS.port : Number(u.port);
  const path = u.pathname.replace(/^\//, '');
  if (path !== '' && !/^\d+$/.test(path)) {
    throw new RedisConfigError(
      label,
      redactUrl(url),
      `${expected} (the path must be a database number)`,
    );
  }
  return {
    host,
    port,
    db: path === '' ? 0 : Number(path),
    username: u.username ? decodeURIComponent(u.username) : undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
    tls: u.protocol === 'rediss:',
  };
}

function describeStandalone(
  t: { host: string; port: number; db: number },
  username: string | undefined,
  password: string | undefined,
  tls: TlsConnectionOptions | undefined,
): string {
  const auth = password ? `${username ?? ''}:${REDACTED}@` : username ? `${username}@` : '';
  const host = t.host.includes(':') ? `[${t.host}]` : t.host;
  return `${tls ? 'rediss' : 'redis'}://${auth}${host}:${t.port}${t.db ? `/${t.db}` : ''}`;
}

function formatNode(n: RedisNodeAddress): string {
  return `${n.host.includes(':') ? `[${n.host}]` : n.host}:${n.port}`;
}

function validateNodes(nodes: unknown, label: string): RedisNodeAddress[] {
  if (!Array.isArray(nodes) || nodes.length === 0) {
    throw new RedisConfigError(label, nodes, 'a non-empty array of { host, port }');
  }
  return nodes.map((n: unknown, i) => {
    const node = n as Partial<RedisNodeAddress> | null;
    if (
      node === null ||
      typeof node !== 'object' ||
      typeof node.host !== 'string' ||
      node.host === ''
    ) {
      throw new RedisConfigError(`${label}[${i}]`, n, '{ host: string, port: number }');
    }
    return { host: node.host, port: portNumber(node.port, `${label}[${i}].port`) };
  });
}

function portNumber(value: unknown, label: string): number {
  const n = typeof value === 'string' && /^\d+$/.test(value.trim()) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 65535) {
    throw new RedisConfigError(label, value, 'an integer from 1 to 65535');
  }
  return n;
}

function dbIndex(value: unknown, label: string): number {
  if (value === undefined) return DEFAULTS.db;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw new RedisConfigError(label, value, 'a non-negative integer (a database index)');
  }
  return value;
}

function optionalString(value: unknown, label: string, secret = false): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string') {
    throw new RedisConfigError(label, secret ? REDACTED : value, 'a string');
  }
  return value === '' ? undefined : value;
}

function validateTls(value: unknown, label: string): TlsConnectionOptions | undefined {
  if (value === undefined || value === false) return undefined;
  if (value === true) return {};
  if (value !== null && typeof value === 'object') return value;
  throw new RedisConfigError(label, value, 'true, false or Node TLS options');
}
