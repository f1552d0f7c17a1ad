import type { Logger } from '@nestjs/common';
import type { Redis } from 'ioredis';

import type { RedisConnection } from '../connection/redis-connection.js';

import { mergeFlags, missingFlags } from './keyspace.js';
import { addressOf } from './shard-routing.js';

/** What a master lacks of the flags an `onKeyEvent` call needs, and why ('' when nothing). */
export interface NodeCheck {
  missing: string;
  problem?: string;
}

/**
 * Whether the masters publish the keyspace notifications asked for: reads each master's
 * `notify-keyspace-events` once, sets the missing flags with `CONFIG SET` in `'configure'`
 * mode, and logs each distinct problem once, naming the flags to set.
 */
export class KeyspaceCheck {
  /** `notify-keyspace-events` per master (`host:port`), read once. */
  private readonly flags = new Map<string, Promise<string>>();
  private readonly logged = new Set<string>();

  constructor(
    private readonly connection: RedisConnection,
    private readonly logger: Logger,
  ) {}

  private get configure(): boolean {
    return this.connection.config.pubsub.keyspaceEvents === 'configure';
  }

  /**
   * Whether every master publishes the events `needed` stands for, enabling them with
   * `CONFIG SET` when allowed.
   */
  async all(needed: string): Promise<{ active: boolean; missing: string; reason?: string }> {
    const nodes = this.connection.masters();
    if (nodes.length === 0) {
      return { active: false, missing: needed, reason: 'no master is connected' };
    }
    const problems: string[] = [];
    let missingAll = '';
    for (const node of nodes) {
      const where = this.connection.isCluster ? addressOf(node) : this.connection.address;
      const result = await this.node(node, where, needed);
      if (!result.missing) continue;
      missingAll = unionFlags(missingAll, result.missing);
      problems.push(result.problem ?? '');
    }
    if (problems.length === 0) return { active: true, missing: '' };
    const reason = this.connection.scrub(this.advice(missingAll, problems));
    this.log(reason);
    return { active: false, missing: missingAll, reason };
  }

  /**
   * What `node` lacks of `needed` (set there in `'configure'` mode), with why; its flags are
   * read once and remembered under `where` (`forget` them to read again).
   */
  async node(node: Redis, where: string, needed: string): Promise<NodeCheck> {
    let flags = this.flags.get(where);
    if (!flags) {
      flags = readFlags(node);
      this.flags.set(where, flags);
    }
    let current: string;
    try {
      current = await flags;
    } catch (err) {
      // Not cached as a failure forever: the next check may find CONFIG allowed.
      this.flags.delete(where);
      return {
        missing: needed,
        problem: this.connection.scrub(`${where}: CONFIG GET failed (${(err as Error).message})`),
      };
    }
    const missing = missingFlags(current, needed);
    if (!missing) return { missing: '' };
    if (!this.configure) {
      return { missing, problem: `${where} has "${current}"` };
    }
    const merged = mergeFlags(current, needed);
    try {
      await node.config('SET', 'notify-keyspace-events', merged);
      this.flags.set(where, Promise.resolve(merged));
      this.logger.log(
        `${where}: notify-keyspace-events set to "${merged}" (pubsub.keyspaceEvents: 'configure')`,
      );
      return { missing: '' };
    } catch (err) {
      return {
        missing,
        problem: this.connection.scrub(`${where}: CONFIG SET failed (${(err as Error).message})`),
      };
    }
  }

  /** Forgets the flags read from `where` (the server may have changed). */
  forget(where: string): void {
    this.flags.delete(where);
  }

  /** The one message saying which flags to set where, and how. */
  advice(missing: string, problems: string[]): string {
    return (
      `keyspace notifications are off: notify-keyspace-events must include "${missing}" ` +
      `(${problems.join('; ')}). Add these flags on every master (redis.conf, or CONFIG SET ` +
      `notify-keyspace-events keeping the flags already there)` +
      (this.configure ? '' : `, or set the module option pubsub.keyspaceEvents: 'configure'`)
    );
  }

  /** Logs a keyspace problem once per distinct message. */
  log(text: string): void {
    const scrubbed = this.connection.scrub(text);
    if (this.logged.has(scrubbed)) return;
    this.logged.add(scrubbed);
    this.logger.warn(scrubbed);
  }
}

/** The flags of `a`, then those of `b` that `a` lacks. */
export function unionFlags(a: string, b: string): string {
  return a + [...b].filter((f) => !a.includes(f)).join('');
}

async function readFlags(node: Redis): Promise<string> {
  const reply = (await node.config('GET', 'notify-keyspace-events')) as unknown;
  // RESP2: ['notify-keyspace-events', 'flags']; RESP3: a map, which ioredis gives as an object.
  if (Array.isArray(reply)) return String(reply[1] ?? '');
  if (reply && typeof reply === 'object') {
    return String(
      ((reply as Record<string, unknown>)['notify-keyspace-events'] as string | undefined) ?? '',
    );
  }
  throw new Error(`unexpected reply ${JSON.stringify(reply)}`);
}
