import { Cluster, Command } from 'ioredis';

import { describeValue as shown } from '../common/describe.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import { RedisCrossSlotError } from '../errors.js';

/** One command of a batch: its name, then its arguments (`['set', 'k', 'v', 'PX', 1000]`). */
export type BatchCommand = [command: string, ...args: Array<string | number | Buffer>];

/** The outcome of one batch command, as ioredis's `pipeline().exec()` gives it. */
export type BatchResult = [error: Error | null, value: unknown];

/** The most commands one `batch` call takes. */
export const MAX_BATCH_COMMANDS = 100_000;

/**
 * Sends many independent commands at once: one pipeline for a standalone or Sentinel server;
 * on a cluster, one pipeline per node that owns some of their keys, all in parallel. Results
 * come back in input order, each with its own error (a command never fails its neighbours).
 * Unlike `MULTI`, nothing is atomic.
 */
export async function runBatch(
  connection: RedisConnection,
  commands: readonly BatchCommand[],
): Promise<BatchResult[]> {
  check(commands);
  const client = connection.client;
  if (commands.length === 0) return [];
  if (!(client instanceof Cluster)) return exec(client.pipeline(), commands);

  if (client.slots.length === 0) await client.ping(); // waits until the slot map is known
  const results: BatchResult[] = new Array<BatchResult>(commands.length);
  const groups = new Map<string, { indexes: number[]; commands: BatchCommand[] }>();
  commands.forEach((command, index) => {
    const [name, ...args] = command;
    const parsed = new Command(name.toLowerCase(), args, { keyPrefix: connection.keyPrefix });
    const keys = parsed.getKeys().map(String);
    const slots = new Set(keys.map((key) => new Command('get', [key]).getSlot()));
    if (slots.size > 1) {
      const bySlot = new Map<number, string[]>();
      for (const key of keys) {
        const slot = new Command('get', [key]).getSlot();
        bySlot.set(slot, [...(bySlot.get(slot) ?? []), key.slice(connection.keyPrefix.length)]);
      }
      results[index] = [new RedisCrossSlotError(`batch command ${index} (${name})`, bySlot), null];
      return;
    }
    const slot = parsed.getSlot();
    // Keyless commands go to whichever node gets the first group.
    const node = slot === null ? '' : (client.slots[slot] ?? []).join(';');
    const group = groups.get(node) ?? { indexes: [], commands: [] };
    group.indexes.push(index);
    group.commands.push(command);
    groups.set(node, group);
  });
  const keyless = groups.get('');
  if (keyless && groups.size > 1) {
    groups.delete('');
    const first = groups.values().next().value!;
    first.indexes.push(...keyless.indexes);
    first.commands.push(...keyless.commands);
  }
  await Promise.all(
    [...groups.values()].map(async (group) => {
      const replies = await exec(client.pipeline(), group.commands);
      group.indexes.forEach((index, i) => (results[index] = replies[i]));
    }),
  );
  return results;
}

async function exec(
  pipeline: ReturnType<Cluster['pipeline']>,
  commands: readonly BatchCommand[],
): Promise<BatchResult[]> {
  for (const [name, ...args] of commands) pipeline.call(name, ...args);
  try {
    return (await pipeline.exec()) ?? [];
  } catch (err) {
    // The whole pipeline failed (the node went away): every command of it failed alike.
    return commands.map(() => [err as Error, null]);
  }
}

function check(commands: unknown): asserts commands is BatchCommand[] {
  if (!Array.isArray(commands)) {
    throw new TypeError(
      `batch commands must be an array of [command, ...args], got ${shown(commands)}`,
    );
  }
  if (commands.length > MAX_BATCH_COMMANDS) {
    throw new RangeError(
      `batch commands must hold at most ${MAX_BATCH_COMMANDS} commands, got ${commands.length}`,
    );
  }
  commands.forEach((command: unknown, i) => {
    if (
      !Array.isArray(command) ||
      typeof command[0] !== 'string' ||
      !/^[a-zA-Z][\w.|-]*$/.test(command[0])
    ) {
      throw new TypeError(
        `batch commands[${i}] must be [command, ...args] with a command name first, got ${shown(command)}`,
      );
    }
    command.slice(1).forEach((arg: unknown, j) => {
      const ok =
        typeof arg === 'string' ||
        Buffer.isBuffer(arg) ||
        (typeof arg === 'number' && Number.isFinite(arg));
      if (!ok) {
        throw new TypeError(
          `batch commands[${i}][${j + 1}] must be a string, a finite number or a Buffer, got ${shown(arg)}`,
        );
      }
    });
  });
}
