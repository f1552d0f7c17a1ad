import { createHash } from 'node:crypto';

import type { RedisClient } from './client-factory.js';

type Arg = string | number | Buffer;

/**
 * A Lua script run by SHA (`EVALSHA`), loaded with `EVAL` on the first `NOSCRIPT` (a fresh or
 * restarted server, a failover, another cluster node). Unlike `defineCommand` it leaves the
 * client untouched, which matters for a client the application passed in. Keys go through the
 * client, so its `keyPrefix` applies to them; every script keeps its keys in one hash slot.
 */
export class RedisScript<T = unknown> {
  readonly sha: string;

  constructor(
    /** For error messages and logs. */
    readonly name: string,
    readonly lua: string,
  ) {
    this.sha = createHash('sha1').update(lua).digest('hex');
  }

  async run(client: RedisClient, keys: readonly string[], args: readonly Arg[] = []): Promise<T> {
    try {
      return (await client.evalsha(this.sha, keys.length, ...keys, ...args)) as T;
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      return (await client.eval(this.lua, keys.length, ...keys, ...args)) as T;
    }
  }
}
