import { Logger } from '@nestjs/common';

import { checkInteger, checkName } from '../common/checks.js';
import { describeValue as shown } from '../common/describe.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import { RedisScript } from '../connection/script.js';
import { RedisCrossSlotError, RedisScriptError } from '../errors.js';

import { slotGroups } from './slots.js';

/** An argument of a script: what `ARGV` receives. */
export type ScriptArg = string | number | Buffer;

/** Options of `RedisService.defineScript`. */
export interface DefineScriptOptions {
  /** How many key names every call passes (`KEYS[1..n]`); a call with another count throws. */
  keys: number;
  /**
   * Load the script on every master right away (`SCRIPT LOAD`), so the first call is already
   * an `EVALSHA`. Without it the first call on each server falls back to `EVAL` once.
   * @defaultValue false
   */
  preload?: boolean;
}

/**
 * A Lua script defined once and run by SHA (`EVALSHA`), falling back to `EVAL` when the server
 * does not know it (`NOSCRIPT`: a fresh server, a restart, a failover, another node). Keys
 * get the connection's `keyPrefix`; on a cluster they are checked to share one hash slot before
 * anything is sent.
 *
 * @example
 * ```ts
 * const transfer = redis.defineScript<number>(
 *   'transfer',
 *   `local from = tonumber(redis.call('GET', KEYS[1]) or '0')
 *    if from < tonumber(ARGV[1]) then return 0 end
 *    redis.call('DECRBY', KEYS[1], ARGV[1]); redis.call('INCRBY', KEYS[2], ARGV[1])
 *    return 1`,
 *   { keys: 2 },
 * );
 * const moved = await transfer.run(['{acct:1}:balance', '{acct:1}:savings'], [10]);
 * ```
 */
export class DefinedScript<T = unknown> {
  /** The script's SHA1, as `EVALSHA` and `SCRIPT EXISTS` use it. */
  readonly sha: string;
  private readonly script: RedisScript<T>;

  constructor(
    private readonly connection: RedisConnection,
    /** The name used in errors and logs. */
    readonly name: string,
    lua: string,
    /** The number of keys every call passes. */
    readonly keys: number,
  ) {
    this.script = new RedisScript<T>(name, lua);
    this.sha = this.script.sha;
  }

  /**
   * Runs the script with exactly `keys` key names (relative to `keyPrefix`) and `args`. A
   * wrong key count or, on a cluster, keys in several slots throw before anything is sent; an
   * error raised by the script is a `RedisScriptError` naming it.
   */
  async run(keys: readonly string[], args: readonly ScriptArg[] = []): Promise<T> {
    this.check(keys, args);
    try {
      return await this.script.run(this.connection.client, keys, args);
    } catch (err) {
      throw isServerReply(err) ? new RedisScriptError(this.name, { cause: err }) : err;
    }
  }

  /** Loads the script on every master (`SCRIPT LOAD`); resolves when all have it. */
  async load(): Promise<void> {
    const lua = this.script.lua;
    await Promise.all(this.connection.masters().map((node) => node.script('LOAD', lua)));
  }

  private check(keys: readonly string[], args: readonly ScriptArg[]): void {
    if (!Array.isArray(keys) || keys.length !== this.keys) {
      throw new TypeError(
        `script "${this.name}" takes ${this.keys} key(s), got ${shown(keys)}: pass exactly ` +
          `${this.keys} key name(s) as the first argument of run()`,
      );
    }
    keys.forEach((key, i) => checkName(key, `script "${this.name}" keys[${i}]`, 64 * 1024));
    if (!Array.isArray(args)) {
      throw new TypeError(`script "${this.name}" args must be an array, got ${shown(args)}`);
    }
    args.forEach((arg, i) => {
      const ok =
        typeof arg === 'string' ||
        Buffer.isBuffer(arg) ||
        (typeof arg === 'number' && Number.isFinite(arg));
      if (!ok) {
        throw new TypeError(
          `script "${this.name}" args[${i}] must be a string, a finite number or a Buffer, got ${shown(arg)}`,
        );
      }
    });
    if (this.connection.isCluster && keys.length > 1) {
      const groups = slotGroups(keys, this.connection.keyPrefix);
      if (groups) throw new RedisCrossSlotError(`script "${this.name}"`, groups);
    }
  }
}

/** Builds a script after checking its definition; `preload` starts loading it now. */
export function defineScript<T>(
  connection: RedisConnection,
  name: string,
  lua: string,
  options: DefineScriptOptions,
): DefinedScript<T> {
  checkName(name, 'defineScript name', 200);
  checkName(lua, `defineScript "${name}" lua`, 1024 * 1024);
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`defineScript "${name}" options must be an object like { keys: 1 }`);
  }
  const keys = checkInteger(options.keys, `defineScript "${name}" options.keys`, 0, 1000);
  const script = new DefinedScript<T>(connection, name, lua, keys);
  if (options.preload) {
    script.load().catch((err: unknown) => {
      // Not fatal: the first call falls back to EVAL. Said once, at definition.
      new Logger(`Redis:${connection.name}`).warn(
        `script "${name}" could not be preloaded (${connection.scrub(String(err))}); ` +
          'its first call on each server will send the whole script',
      );
    });
  }
  return script;
}

/** A reply error from the server (the script ran and failed), not a connection problem. */
function isServerReply(err: unknown): boolean {
  return err instanceof Error && err.name === 'ReplyError';
}
