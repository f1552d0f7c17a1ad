import type { RedisConnectionOptions } from '../connection/connection.options.js';
import { RedisConfigError } from '../errors.js';

import type { RedisConnectionTarget, RedisNodeAddress } from './redis-options.interface.js';

/** What the environment can set: the target and the connection options. */
export type EnvironmentOptions = RedisConnectionTarget & RedisConnectionOptions;

/** Maps an option path to the environment variable it was read from, for error messages. */
export type Sources = Partial<Record<string, string>>;

/** One `REDIS_*` variable: the option it sets and how its text becomes the option's value. */
interface EnvironmentVariable {
  /** The variable's name. */
  readonly name: string;
  /** The top-level option it sets. */
  readonly option: Extract<keyof EnvironmentOptions, string>;
  /**
   * Turns the text into the option's value; throws a `RedisConfigError` naming the variable,
   * the text and the unit. Receives the value trimmed unless `verbatim`.
   */
  readonly parse: (text: string, name: string) => unknown;
  /** Take the text as it is (a password may have surrounding spaces). */
  readonly verbatim?: boolean;
  /** Report errors of the resulting option under this variable's name. */
  readonly isSource?: boolean;
}

const TRUE_WORDS = ['true', '1', 'yes', 'on'];
const FALSE_WORDS = ['false', '0', 'no', 'off'];
/** The words a boolean variable accepts, as messages list them. */
const BOOLEAN_WORDS = 'one of true, false, 1, 0, yes, no, on, off';

const asText = (text: string): string => text;

/** An integer row; `unit` is left out where the range says it all (a port). */
function asInteger(
  min: number,
  max: number,
  unit?: string,
): (text: string, name: string) => number {
  return (text, name) => {
    if (!/^-?\d+$/.test(text) || Number(text) < min || Number(text) > max) {
      throw new RedisConfigError(
        name,
        text,
        `${integerRange(min, max)}${unit ? ` (${unit})` : ''}`,
      );
    }
    return Number(text);
  };
}

/** `a positive integer`, `an integer from 1 to 10000`: how messages state an integer range. */
export function integerRange(min: number, max: number): string {
  if (max >= Number.MAX_SAFE_INTEGER) {
    if (min === 0) return 'a non-negative integer';
    if (min === 1) return 'a positive integer';
    return `an integer of at least ${min}`;
  }
  return `an integer from ${min} to ${max}`;
}

function asBoolean(text: string, name: string): boolean {
  const lower = text.toLowerCase();
  if (TRUE_WORDS.includes(lower)) return true;
  if (FALSE_WORDS.includes(lower)) return false;
  throw new RedisConfigError(name, text, BOOLEAN_WORDS);
}

/**
 * Every variable read when the options name no server, one row each. The Sentinel pair
 * (`REDIS_SENTINELS` + `REDIS_SENTINEL_NAME`) is read after the table: it sets one option from
 * two variables.
 */
export const ENVIRONMENT_VARIABLES: readonly EnvironmentVariable[] = [
  { name: 'REDIS_URL', option: 'url', parse: asText, isSource: true },
  { name: 'REDIS_HOST', option: 'host', parse: asText, isSource: true },
  { name: 'REDIS_PORT', option: 'port', parse: asInteger(1, 65535), isSource: true },
  {
    name: 'REDIS_DB',
    option: 'db',
    parse: asInteger(0, Number.MAX_SAFE_INTEGER, 'a database index'),
    isSource: true,
  },
  { name: 'REDIS_USERNAME', option: 'username', parse: asText },
  { name: 'REDIS_PASSWORD', option: 'password', parse: asText, verbatim: true },
  { name: 'REDIS_TLS', option: 'tls', parse: asBoolean, isSource: true },
  {
    name: 'REDIS_CLUSTER_NODES',
    option: 'cluster',
    parse: (text, name) => ({ nodes: parseNodeList(name, text) }),
    isSource: true,
  },
  { name: 'REDIS_KEY_PREFIX', option: 'keyPrefix', parse: asText, verbatim: true },
  {
    name: 'REDIS_MAX_CONNECTIONS',
    option: 'maxConnections',
    parse: asInteger(1, 10_000, 'connections'),
    isSource: true,
  },
  {
    name: 'REDIS_CONNECT_TIMEOUT_MS',
    option: 'connectTimeout',
    parse: asInteger(1, Number.MAX_SAFE_INTEGER, 'milliseconds'),
    isSource: true,
  },
  {
    name: 'REDIS_COMMAND_TIMEOUT_MS',
    option: 'commandTimeout',
    parse: asInteger(1, Number.MAX_SAFE_INTEGER, 'milliseconds'),
    isSource: true,
  },
  { name: 'REDIS_RETRY_ON_TIMEOUT', option: 'retryOnTimeout', parse: asBoolean, isSource: true },
];

/**
 * Reads the `REDIS_*` variables documented in docs/configuration.md. Values are parsed here so
 * that a bad one is reported under the variable's own name. An empty variable counts as unset
 * (blank too, except for the ones taken verbatim).
 */
export function readEnvironment(env: NodeJS.ProcessEnv): {
  options: EnvironmentOptions;
  sources: Sources;
} {
  const options: Record<string, unknown> = {};
  const sources: Sources = {};
  const text = (name: string, verbatim = false): string | undefined => {
    const raw = env[name];
    if (raw === undefined || raw === '') return undefined;
    if (verbatim) return raw;
    return raw.trim() === '' ? undefined : raw.trim();
  };
  for (const variable of ENVIRONMENT_VARIABLES) {
    const value = text(variable.name, variable.verbatim);
    if (value === undefined) continue;
    options[variable.option] = variable.parse(value, variable.name);
    if (variable.isSource) sources[variable.option] = variable.name;
  }
  const sentinels = text('REDIS_SENTINELS');
  const sentinelName = text('REDIS_SENTINEL_NAME');
  if (sentinels !== undefined || sentinelName !== undefined) {
    if (sentinels === undefined) {
      throw new RedisConfigError(
        'REDIS_SENTINELS',
        undefined,
        'a comma-separated list of host:port (REDIS_SENTINEL_NAME is set)',
      );
    }
    if (sentinelName === undefined) {
      throw new RedisConfigError(
        'REDIS_SENTINEL_NAME',
        undefined,
        'the monitored master name (REDIS_SENTINELS is set)',
      );
    }
    options.sentinel = {
      sentinels: parseNodeList('REDIS_SENTINELS', sentinels),
      name: sentinelName,
    };
    sources.sentinel = 'REDIS_SENTINELS';
  }
  return { options: options, sources };
}

/** `host:port,host:port` (IPv6 hosts in brackets), as the node-list variables take them. */
export function parseNodeList(variable: string, value: string): RedisNodeAddress[] {
  return value.split(',').map((entry) => {
    const trimmed = entry.trim();
    const m = /^(\[[^\]]+\]|[^:\s]+):(\d+)$/.exec(trimmed);
    const port = m ? Number(m[2]) : NaN;
    if (!m || port < 1 || port > 65535) {
      throw new RedisConfigError(
        variable,
        value,
        `a comma-separated list of host:port, not "${trimmed}"`,
      );
    }
    return { host: m[1].replace(/^\[|\]$/g, ''), port };
  });
}
