import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Cluster, type Command, type Redis } from 'ioredis';

import { sendCommand, type RespTarget } from '../../scripts/redis/servers.mjs';
import type { RedisModuleOptions } from '../../src/index.js';

export * from '../../scripts/redis/servers.mjs';

/** A topology the global setup started, and how our module reaches it. */
export interface TopologyCase {
  name: 'standalone' | 'sentinel' | 'cluster';
  options: RedisModuleOptions;
  /** Every data server (not sentinels), for CLIENT LIST checks. */
  servers: RespTarget[];
  /** The masters, where the keys live. */
  masters: RespTarget[];
}

function nodes(list: string): RespTarget[] {
  return list.split(',').map((hp) => {
    const [host, port] = hp.split(':');
    return { host, port: Number(port) };
  });
}

/** The topologies started by `test/setup/global-setup.mjs` for this run. */
export function topologies(): TopologyCase[] {
  const env = process.env;
  const cases: TopologyCase[] = [];
  if (env.REDIS_TEST_URL) {
    const url = new URL(env.REDIS_TEST_URL);
    const server = { host: url.hostname, port: Number(url.port) };
    cases.push({
      name: 'standalone',
      options: { url: env.REDIS_TEST_URL },
      servers: [server],
      masters: [server],
    });
  }
  if (env.REDIS_TEST_SENTINELS && env.REDIS_TEST_SENTINEL_NAME && env.REDIS_TEST_SENTINEL_MASTER) {
    const sentinels = nodes(env.REDIS_TEST_SENTINELS).map((n) => ({ host: n.host!, port: n.port }));
    const master = nodes(env.REDIS_TEST_SENTINEL_MASTER)[0];
    cases.push({
      name: 'sentinel',
      options: { sentinel: { sentinels, name: env.REDIS_TEST_SENTINEL_NAME } },
      servers: [
        master,
        ...(env.REDIS_TEST_SENTINEL_REPLICA ? nodes(env.REDIS_TEST_SENTINEL_REPLICA) : []),
      ],
      masters: [master],
    });
  }
  if (env.REDIS_TEST_CLUSTER_NODES) {
    const all = nodes(env.REDIS_TEST_CLUSTER_NODES);
    cases.push({
      name: 'cluster',
      options: { cluster: { nodes: all.map((n) => ({ host: n.host!, port: n.port })) } },
      servers: all,
      masters: all, // refined at run time with CLUSTER NODES where it matters
    });
  }
  return cases;
}

/** The standalone server of the global setup. */
export function standaloneUrl(): string {
  const url = process.env.REDIS_TEST_URL;
  if (!url) throw new Error('REDIS_TEST_URL is not set: run the tests through `npm test`');
  return url;
}

/** A fresh directory for the servers a spec starts itself (removed by the global teardown). */
export function specDir(label: string): string {
  const base = process.env.REDIS_TEST_BASE_DIR ?? tmpdir();
  return mkdtempSync(join(base, `${label}-`));
}

/** A key prefix no other test uses. */
export function uniquePrefix(label = 't'): string {
  return `${label}:${randomUUID().slice(0, 8)}:`;
}

/** Names of the connections `CLIENT LIST` shows on a server. */
export async function clientNames(target: RespTarget): Promise<string[]> {
  const list = String(await sendCommand(target, ['CLIENT', 'LIST']));
  return list
    .split('\n')
    .map((line) => /(?:^| )name=(\S*)/.exec(line)?.[1] ?? '')
    .filter((n) => n !== '');
}

/**
 * The connections on a server whose name starts with `connectionName:` (give each test app a
 * unique `connectionName`: jest workers share the servers).
 */
export async function ourConnections(
  target: RespTarget,
  connectionName: string,
): Promise<string[]> {
  return (await clientNames(target)).filter((n) => n.startsWith(`${connectionName}:`));
}

/** Kills the connections whose name is exactly `name`; returns how many. */
export async function killConnection(target: RespTarget, name: string): Promise<number> {
  const list = String(await sendCommand(target, ['CLIENT', 'LIST']));
  let killed = 0;
  for (const line of list.split('\n')) {
    if (!line.includes(` name=${name} `)) continue;
    const id = /(?:^|\s)id=(\d+)/.exec(line)?.[1];
    if (id)
      killed += Number(await sendCommand(target, ['CLIENT', 'KILL', 'ID', id]).catch(() => 0));
  }
  return killed;
}

/** A unique `connectionName` for one test app. */
export function uniqueConnectionName(label: string): string {
  return `test-${label}-${randomUUID().slice(0, 8)}`;
}

/**
 * Polls `check` until it returns a truthy value or `timeoutMs` passes: waiting on an observable
 * condition, never on a fixed sleep.
 */
export async function waitFor<T>(
  check: () => T | Promise<T>,
  { timeoutMs = 10_000, intervalMs = 25, what = 'condition' } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        // `last` is whatever the probe threw: its own String() is the useful text.
        // eslint-disable-next-line @typescript-eslint/no-base-to-string -- see above
        `timed out after ${timeoutMs} ms waiting for ${what}` + (last ? `: ${String(last)}` : ''),
      );
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * Resolves once `signal` aborts, also when it already had: a lock's or lease's signal first
 * read after its TTL passed is created aborted, and an 'abort' listener added to it never runs.
 * A test that reads it just after a short-TTL acquisition otherwise hangs when the reply (or
 * the test's process) was slower than the TTL.
 */
export function untilAborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}

/**
 * The commands `send` issues through `client` (the real server still runs them), as
 * `name` or, for `EVALSHA`, `evalsha <sha>`: which calls a code path makes.
 */
export async function recordCommands(
  client: Redis | Cluster,
  send: () => Promise<unknown>,
): Promise<string[]> {
  const sent: string[] = [];
  const target = client as unknown as {
    sendCommand: (command: Command, ...rest: unknown[]) => unknown;
  };
  const original = target.sendCommand;
  target.sendCommand = function (this: unknown, command: Command, ...rest: unknown[]) {
    sent.push(command.name === 'evalsha' ? `evalsha ${String(command.args[0])}` : command.name);
    return original.call(this, command, ...rest);
  };
  try {
    await send();
  } finally {
    delete (target as Partial<typeof target>).sendCommand;
  }
  return sent;
}

/**
 * Runs `send` and counts the system calls that write to the sockets of `client` (every node's
 * of a cluster): one `_write` or `_writev` each.
 */
export async function countSocketWrites(
  client: Redis | Cluster,
  send: () => Promise<unknown>,
): Promise<number> {
  const nodes = client instanceof Cluster ? client.nodes('all') : [client];
  let syscalls = 0;
  const restore: Array<() => void> = [];
  for (const node of nodes) {
    // A cluster node not connected yet (a replica nothing read from) has no socket to count.
    const socket = node.stream as unknown as Record<'_write' | '_writev', unknown> | undefined;
    if (!socket) continue;
    for (const method of ['_write', '_writev'] as const) {
      const original = socket[method] as ((...a: unknown[]) => unknown) | undefined;
      if (!original) continue;
      socket[method] = (...args: unknown[]) => {
        syscalls += 1;
        return original.apply(socket, args);
      };
      restore.push(() => delete socket[method]);
    }
  }
  try {
    await send();
  } finally {
    for (const undo of restore) undo();
  }
  return syscalls;
}
