import type { RedisConnection } from '../connection/redis-connection.js';
import { RedisScriptError } from '../errors.js';
import { defineScript, type DefinedScript } from '../toolkit/script.js';

/**
 * One of the lock family's Lua scripts: its text once, and per connection the toolkit's
 * `defineScript` that runs it (`EVALSHA` with a `NOSCRIPT` fallback, the key count and, on a
 * cluster, the slot checked before sending). Defined lazily, so a connection that never locks
 * pays nothing.
 */
export class LockScript<T> {
  private readonly defined = new WeakMap<RedisConnection, DefinedScript<T>>();

  constructor(
    /** The name in errors (`RedisScriptError.script`). */
    readonly name: string,
    readonly lua: string,
    /** How many keys every call passes. */
    readonly keys: number,
  ) {}

  /** The script defined on `connection` (the same instance on every call). */
  on(connection: RedisConnection): DefinedScript<T> {
    let script = this.defined.get(connection);
    if (script === undefined) {
      script = defineScript<T>(connection, this.name, this.lua, { keys: this.keys });
      this.defined.set(connection, script);
    }
    return script;
  }
}

/**
 * The server's reply behind an error: `defineScript` wraps a script's `ReplyError` (`READONLY`
 * after a failover, `LOADING`, ...) in a `RedisScriptError`; retry decisions look at the reply.
 */
export function replyBehind(err: unknown): unknown {
  return err instanceof RedisScriptError ? err.cause : err;
}
