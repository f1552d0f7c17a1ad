import type { RedisConnection } from '../connection/redis-connection.js';
import { defineScript, type DefinedScript } from '../toolkit/script.js';

import {
  ABANDON,
  DELETE,
  LOCK,
  READ_OR_LOCK,
  TAG_BUMP,
  TAG_VERSION,
  WRITE,
  type CacheScriptSource,
} from './cache.scripts.js';

/** The cache's Lua scripts, defined once per connection through the module's `defineScript`. */
export class CacheScripts {
  /** Run directly on the read path (see L2Reader); here for its SHA and for `EVAL`. */
  readonly readOrLock = READ_OR_LOCK;
  readonly lock: DefinedScript<number>;
  readonly write: DefinedScript<[number, number]>;
  readonly delete: DefinedScript<number>;
  readonly abandon: DefinedScript<number>;
  readonly tagVersion: DefinedScript<string>;
  readonly tagBump: DefinedScript<string>;

  constructor(connection: RedisConnection) {
    const define = <T>(source: CacheScriptSource): DefinedScript<T> =>
      defineScript<T>(connection, source.name, source.lua, { keys: source.keys });
    this.lock = define(LOCK);
    this.write = define(WRITE);
    this.delete = define(DELETE);
    this.abandon = define(ABANDON);
    this.tagVersion = define(TAG_VERSION);
    this.tagBump = define(TAG_BUMP);
  }
}
