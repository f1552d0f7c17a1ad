import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';

import type { RedisClient } from './connection/client-factory.js';
import { needsPermission } from './connection/permission.js';
import { RedisConnection } from './connection/redis-connection.js';
import { getRedisConnectionToken } from './connection/tokens.js';
import { withTimeout } from './connection/wait.js';
import {
  diagnose,
  type DiagnosticsOptions,
  type RedisDiagnostics,
} from './diagnostics/diagnostics.js';
import { parseInfo, type RedisInfo } from './redis-info.js';
import { MAX_TTL_MS, shown } from './toolkit/args.js';
import { runBatch, type BatchCommand, type BatchResult } from './toolkit/batch.js';
import { ShardedCounter, type CounterOptions } from './toolkit/counter.js';
import { RedisRecords, type RecordShape, type RecordsOptions } from './toolkit/records.js';
import { defineScript, type DefinedScript, type DefineScriptOptions } from './toolkit/script.js';
import {
  runTransaction,
  type TransactionFn,
  type TransactionOptions,
} from './toolkit/transaction.js';

/** Options of `RedisService.scan`. */
export interface RedisScanOptions {
  /**
   * `SCAN ... COUNT` hint: keys examined per round trip and node.
   * @defaultValue 250
   */
  count?: number;
}

/**
 * The monitoring figures of a server (on a cluster: summed over the masters, except where a
 * field says otherwise).
 */
export interface RedisStats {
  /** Client connections, ours included. */
  connectedClients: number;
  /** Clients blocked in BLPOP and friends. */
  blockedClients: number;
  /** Bytes used by the data set (`used_memory`). */
  usedMemory: number;
  /** `maxmemory` in bytes; 0 means no limit. */
  maxMemory: number;
  /** `usedMemory / maxMemory` (on a cluster the fullest master); `null` without a limit. */
  memoryRatio: number | null;
  /** `instantaneous_ops_per_sec`. */
  opsPerSec: number;
  keyspaceHits: number;
  keyspaceMisses: number;
  /** `hits / (hits + misses)`; `null` before the first lookup. */
  hitRate: number | null;
  /** Keys evicted because of `maxmemory`. */
  evictedKeys: number;
  /** Keys removed because their TTL passed. */
  expiredKeys: number;
  /** Keys in all databases. */
  keys: number;
  /** Seconds since the server started (on a cluster, the most recently started master). */
  uptimeSeconds: number;
  /** How many servers the figures cover (masters of a cluster, 1 otherwise). */
  nodes: number;
}

/**
 * What ioredis lacks, over the default connection: parsed `INFO`, a latency `PING`, `SCAN` as
 * an async iterator over every master, pattern deletion without `KEYS`, and monitoring figures.
 * Keys given and yielded are relative to `keyPrefix`, like every key of the injected client.
 */
@Injectable()
export class RedisService {
  constructor(@Inject(getRedisConnectionToken()) private readonly connection: RedisConnection) {}

  /** The injected client of the default connection. */
  get client(): RedisClient {
    return this.connection.client;
  }

  /**
   * `INFO [section]`, parsed. On a cluster, the first master's; see `infoAll` for every node.
   *
   * @example
   * ```ts
   * const { memory } = await redis.info('memory');
   * console.log(memory?.used_memory);
   * ```
   */
  async info(section?: string): Promise<RedisInfo> {
    const [first] = this.connection.masters();
    return parseInfo(await this.infoText(first ?? (this.client as Redis), section, 'info()'));
  }

  /** `INFO [section]` of every master, keyed by `host:port`. */
  async infoAll(section?: string): Promise<Record<string, RedisInfo>> {
    const masters = this.connection.masters();
    const texts = await Promise.all(
      masters.map((node) => this.infoText(node, section, 'infoAll()')),
    );
    return Object.fromEntries(masters.map((node, i) => [nodeAddress(node), parseInfo(texts[i])]));
  }

  /**
   * Round-trip time of a `PING`, in milliseconds (on a cluster, of the slowest master).
   * Rejects when Redis does not answer (bounded by `commandTimeout` when set).
   */
  async ping(): Promise<number> {
    return this.connection.pingLatency();
  }

  /**
   * Iterates the keys matching a glob pattern with `SCAN` (never `KEYS`), over every master of
   * a cluster. Keys are yielded without the `keyPrefix`, ready to pass to the client. Like
   * `SCAN`, it may yield a key twice if the keyspace is resized meanwhile.
   *
   * @example
   * ```ts
   * for await (const key of redis.scan('session:*')) console.log(key);
   * ```
   */
  async *scan(
    pattern = '*',
    options: RedisScanOptions = {},
  ): AsyncGenerator<string, void, undefined> {
    const count = options.count ?? 250;
    const prefix = this.connection.keyPrefix;
    for (const node of this.connection.masters()) {
      for await (const batch of scanNode(node, escapeGlob(prefix) + pattern, count)) {
        for (const key of batch) yield key.slice(prefix.length);
      }
    }
  }

  /**
   * Deletes every key matching a glob pattern: `SCAN` plus pipelined `UNLINK` (non-blocking
   * deletion) per batch, on every master. Returns how many keys were removed.
   */
  async unlinkByPattern(pattern: string, options: RedisScanOptions = {}): Promise<number> {
    const count = options.count ?? 250;
    const prefix = this.connection.keyPrefix;
    const perNode = await Promise.all(
      this.connection.masters().map(async (node) => {
        // A cluster's node connections carry no key prefix, the standalone client does:
        // hand each connection the key as it will prefix it.
        const ownPrefix = node.options.keyPrefix ?? '';
        let removed = 0;
        for await (const batch of scanNode(node, escapeGlob(prefix) + pattern, count)) {
          if (batch.length === 0) continue;
          const pipeline = node.pipeline();
          for (const key of batch) pipeline.unlink(key.slice(ownPrefix.length));
          for (const [err, n] of (await pipeline.exec()) ?? []) {
            if (!err) removed += Number(n);
          }
        }
        return removed;
      }),
    );
    return perNode.reduce((a, b) => a + b, 0);
  }

  /** Monitoring figures: clients, memory and its ratio to `maxmemory`, ops/s, hit rate, ... */
  async stats(): Promise<RedisStats> {
    const infos = await Promise.all(
      this.connection
        .masters()
        .map(async (node) => parseInfo(await this.infoText(node, undefined, 'stats()'))),
    );
    const sum = (pick: (i: RedisInfo) => unknown): number =>
      infos.reduce((acc, i) => acc + num(pick(i)), 0);
    const ratios = infos
      .map((i) => ({ used: num(i.memory?.used_memory), max: num(i.memory?.maxmemory) }))
      .filter((m) => m.max > 0)
      .map((m) => m.used / m.max);
    const hits = sum((i) => i.stats?.keyspace_hits);
    const misses = sum((i) => i.stats?.keyspace_misses);
    return {
      connectedClients: sum((i) => i.clients?.connected_clients),
      blockedClients: sum((i) => i.clients?.blocked_clients),
      usedMemory: sum((i) => i.memory?.used_memory),
      maxMemory: sum((i) => i.memory?.maxmemory),
      memoryRatio: ratios.length === infos.length && ratios.length > 0 ? Math.max(...ratios) : null,
      opsPerSec: sum((i) => i.stats?.instantaneous_ops_per_sec),
      keyspaceHits: hits,
      keyspaceMisses: misses,
      hitRate: hits + misses > 0 ? hits / (hits + misses) : null,
      evictedKeys: sum((i) => i.stats?.evicted_keys),
      expiredKeys: sum((i) => i.stats?.expired_keys),
      keys: sum((i) => Object.values(i.keyspace ?? {}).reduce((a, db) => a + num(db.keys), 0)),
      uptimeSeconds: Math.min(...infos.map((i) => num(i.server?.uptime_in_seconds))),
      nodes: infos.length,
    };
  }

  /**
   * Runs `fn` on a connection of its own, for blocking commands (`BLPOP`, `XREAD BLOCK`, ...)
   * that must not stall the shared command connection. Pooled, bounded by `maxConnections`.
   *
   * @example
   * ```ts
   * const job = await redis.withDedicatedConnection((c) => c.blpop('jobs', 5));
   * ```
   */
  withDedicatedConnection<T>(fn: (client: RedisClient) => Promise<T>): Promise<T> {
    return this.connection.withDedicated(fn);
  }

  /**
   * Every master's state in one report: version, role and replica lag, memory, `maxmemory` and
   * its policy, fragmentation, evicted and expired keys, persistence, clients, the latest slow
   * log entries and latency events, and this registration's connections against
   * `maxConnections`. Each probe is bounded by `timeout` (default 1000 ms); one the ACL denies
   * is reported in the node's `errors` (with the permission to grant), not as a failure.
   *
   * @example
   * ```ts
   * const { connections, nodes } = await redis.diagnostics();
   * for (const node of nodes) console.log(node.address, node.memory?.fragmentationRatio, node.slowlog.length);
   * ```
   */
  diagnostics(options?: DiagnosticsOptions): Promise<RedisDiagnostics> {
    return diagnose(this.connection, options);
  }

  // ------------------------------------------------------------------------------- toolkit

  /**
   * Whether Redis answers a `PING` within `timeout` ms (default 1000). Never throws and never
   * waits in the offline queue: a connection that is not ready is `false` at once.
   *
   * @example
   * ```ts
   * if (!(await redis.isAlive())) console.warn('Redis is down');
   * ```
   */
  async isAlive(options: { timeout?: number } = {}): Promise<boolean> {
    const timeout = options.timeout ?? 1000;
    if (!(typeof timeout === 'number' && timeout > 0 && timeout <= MAX_TTL_MS)) {
      throw new TypeError(`isAlive timeout must be a positive number of ms, got ${shown(timeout)}`);
    }
    if (this.client.status !== 'ready') return false;
    try {
      await withTimeout(this.connection.pingLatency(), timeout, () => new Error('timeout'));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Defines a Lua script run by `EVALSHA` (falling back to `EVAL` on `NOSCRIPT`), with a
   * fixed number of keys checked on every call and, on a cluster, checked to share one hash
   * slot before anything is sent. See {@link DefinedScript}.
   */
  defineScript<T = unknown>(
    name: string,
    lua: string,
    options: DefineScriptOptions,
  ): DefinedScript<T> {
    return defineScript<T>(this.connection, name, lua, options);
  }

  /**
   * Optimistic transaction: `WATCH keys`, `fn` reads through `client` and queues writes on
   * `multi`, then `EXEC`; runs again (up to `attempts`, default 10) when a watched key changed
   * meanwhile, then throws `RedisTransactionConflictError`. On a cluster the keys must share
   * a hash slot (`RedisCrossSlotError` otherwise, before anything is sent).
   *
   * @example
   * ```ts
   * await redis.transaction(['{acct:1}:balance'], async (client, multi) => {
   *   const balance = Number(await client.get('{acct:1}:balance'));
   *   multi.set('{acct:1}:balance', balance + 10);
   * });
   * ```
   */
  transaction(
    keys: readonly string[],
    fn: TransactionFn,
    options?: TransactionOptions,
  ): Promise<Array<[Error | null, unknown]>> {
    return runTransaction(this.connection, keys, fn, options);
  }

  /**
   * Sends independent commands together: one pipeline, or on a cluster one pipeline per node,
   * in parallel. Results in input order, each `[error, value]`; one command's error never
   * fails the others, and nothing is atomic.
   *
   * @example
   * ```ts
   * const replies = await redis.batch([
   *   ['pexpire', 'task:1', 60_000],
   *   ['pexpire', 'task:2', 60_000],
   *   ['get', 'config'],
   * ]);
   * ```
   */
  batch(commands: readonly BatchCommand[]): Promise<BatchResult[]> {
    return runBatch(this.connection, commands);
  }

  /** Hash records with a lifetime, refreshed atomically by every write. See {@link RedisRecords}. */
  records<T extends RecordShape = RecordShape>(
    namespace: string,
    options: RecordsOptions,
  ): RedisRecords<T> {
    return new RedisRecords<T>(this.connection, namespace, options);
  }

  /** A hot-key counter spread over `shards` keys in different slots. See {@link ShardedCounter}. */
  counter(name: string, options?: CounterOptions): ShardedCounter {
    return new ShardedCounter(this.connection, name, options);
  }

  /** `INFO` is in `@dangerous`: an ACL user without it gets a `RedisPermissionError`. */
  private infoText(node: Redis, section: string | undefined, operation: string): Promise<string> {
    return needsPermission(this.connection.name, 'INFO', `RedisService.${operation}`, () =>
      section === undefined ? node.info() : node.info(section),
    );
  }
}

async function* scanNode(node: Redis, match: string, count: number): AsyncGenerator<string[]> {
  let cursor = '0';
  do {
    const [next, keys] = await node.scan(cursor, 'MATCH', match, 'COUNT', count);
    cursor = next;
    yield keys;
  } while (cursor !== '0');
}

/** Escapes glob metacharacters so a key prefix matches literally in `SCAN MATCH`. */
export function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}

function nodeAddress(node: Redis): string {
  const { host, port } = node.options as { host?: string; port?: number };
  return `${host ?? 'localhost'}:${port ?? 6379}`;
}

function num(value: unknown): number {
  return typeof value === 'number' ? value : 0;
}
