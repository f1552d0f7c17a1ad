/**
 * Turns cached values into bytes and back. The default is JSON; replace it (e.g. with
 * MessagePack or superjson) through the module's `cache.serializer` option.
 */
export interface CacheSerializer {
  /** Must throw for a value it cannot represent faithfully: a wrong entry is worse than none. */
  serialize(value: unknown): string | Buffer;
  /** Receives the stored bytes; may throw for corrupted input (the entry is then a miss). */
  deserialize(raw: Buffer): unknown;
}

/**
 * JSON, strict: values that JSON would silently change or drop are refused at `set` time,
 * instead of being read back as something else (`BigInt`, `Map`, `Set`, functions, symbols,
 * circular structures, non-finite numbers). Dates are stored as ISO strings, as JSON does.
 */
export const jsonSerializer: CacheSerializer = {
  serialize(value: unknown): string {
    let text: string | undefined;
    try {
      text = JSON.stringify(value, strictReplacer);
    } catch (err) {
      // JSON's own wording names neither the value nor what to do.
      if (err instanceof TypeError && /circular/i.test(err.message)) {
        throw new TypeError('the value refers back to itself (a circular structure)', {
          cause: err,
        });
      }
      throw err;
    }
    if (text === undefined) throw new TypeError(`${describe(value)} cannot be represented in JSON`);
    return text;
  },
  deserialize(raw: Buffer): unknown {
    return JSON.parse(raw.toString('utf8'));
  },
};

function strictReplacer(this: unknown, key: string, value: unknown): unknown {
  switch (typeof value) {
    case 'bigint':
    case 'function':
    case 'symbol':
      throw new TypeError(`${where(key)}is a ${typeof value}, which JSON cannot represent`);
    case 'number':
      if (!Number.isFinite(value))
        throw new TypeError(`${where(key)}is ${value}, which JSON turns into null`);
      return value;
    case 'undefined':
      // Inside an object JSON drops the property, which is what a reader expects of undefined.
      return value;
    case 'object':
      if (value instanceof Map || value instanceof Set) {
        throw new TypeError(
          `${where(key)}is a ${value.constructor.name}, which JSON turns into {}`,
        );
      }
      return value;
    default:
      return value;
  }
}

function where(key: string): string {
  return key === '' ? 'the value ' : `property "${key}" `;
}

function describe(value: unknown): string {
  return value === undefined ? 'undefined' : `a ${typeof value}`;
}
