import { describeKey } from '../common/describe.js';

/**
 * Session data as Redis stores it: one JSON text (the hash field `d`), exactly as
 * `JSON.stringify` writes it. Reads are a plain `HMGET`/`HGET` (one reply string, as cheap
 * for the client as connect-redis's `GET`); a patch is merged inside a script, property by
 * property, by splitting that compact text at its top level (session.scripts.ts), so that
 * concurrent patches of different properties all survive. The size of a session is the UTF-8
 * byte length of its data's JSON plus its meta's; `session.maxBytes` caps it.
 */

/** A patch for the merge script: property names and values, both as JSON. */
export interface EncodedPatch {
  /** `name, value, name, value, ...`; a `''` value deletes the property (JSON is never empty). */
  readonly pairs: string[];
  /** Bytes the properties that are set would add, at least. */
  readonly size: number;
}

/**
 * Encodes the data of `create` (or the result of an `update` function) strictly: every value
 * must survive a JSON round trip. Throws a `TypeError` naming the property path otherwise.
 */
export function encodeData(method: string, data: unknown): string {
  checkPlainObject(method, 'data', data);
  return strictJson(method, data, 'data');
}

/**
 * Encodes a patch for `update`: `undefined` deletes a property, anything else replaces it
 * (strictly, as `encodeData`).
 */
export function encodePatch(method: string, patch: unknown): EncodedPatch {
  checkPlainObject(method, 'patch', patch);
  const pairs: string[] = [];
  let size = 0;
  for (const name of Object.keys(patch)) {
    const value = patch[name];
    const key = JSON.stringify(name);
    if (value === undefined) {
      pairs.push(key, '');
      continue;
    }
    const json = strictJson(method, value, childPath('data', name));
    pairs.push(key, json);
    size += Buffer.byteLength(key) + 1 + Buffer.byteLength(json);
  }
  return { pairs, size };
}

/**
 * Encodes an express-session session as `JSON.stringify` does (functions and `undefined` are
 * dropped, `cookie` goes through its `toJSON`), for drop-in parity with other stores.
 */
export function encodeLenient(method: string, data: object): string {
  try {
    return JSON.stringify(data);
  } catch (err) {
    throw new TypeError(
      `${method}: the session cannot be stored as JSON: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/** Parses stored data. `JSON.parse` makes `__proto__` an own property, never the prototype. */
export function decodeData(json: string): Record<string, unknown> {
  return JSON.parse(json) as Record<string, unknown>;
}

/** Throws unless `value` is a plain object (not null, not an array). */
export function checkPlainObject(
  method: string,
  label: string,
  value: unknown,
): asserts value is Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new TypeError(
      `${method}: ${label} must be a plain object such as { cartId: 42 }, got ${describeValue(value)}`,
    );
  }
}

/** `JSON.stringify`, after checking that nothing would be lost or changed on the way. */
export function strictJson(method: string, value: unknown, path: string): string {
  checkJson(method, value, path, new Set());
  return JSON.stringify(value);
}

function checkJson(
  method: string,
  value: unknown,
  path: string,
  seen: Set<object>,
  inArray = false,
): void {
  const fail = (what: string): never => {
    throw new TypeError(`${method}: ${path} ${what}; store a JSON value (e.g. a string) instead`);
  };
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return;
    case 'undefined':
      // In an object JSON drops the property, as a reader expects; in an array it becomes null.
      if (inArray) fail('is undefined, which JSON turns into null');
      return;
    case 'number':
      if (!Number.isFinite(value)) fail(`is ${value}, which JSON turns into null`);
      return;
    case 'bigint':
    case 'function':
    case 'symbol':
      fail(`is a ${typeof value}, which JSON cannot represent`);
      return;
    default:
      break;
  }
  if (value === null) return;
  const object = value as Record<string, unknown> & { toJSON?: (key: string) => unknown };
  if (typeof object.toJSON === 'function') {
    // Dates and the like: what JSON stores is what toJSON returns.
    checkJson(method, object.toJSON(path), path, seen);
    return;
  }
  if (value instanceof Map || value instanceof Set) {
    fail(`is a ${value.constructor.name}, which JSON turns into {}`);
  }
  if (seen.has(object)) fail('refers back to itself (a circular structure)');
  seen.add(object);
  if (Array.isArray(value)) {
    value.forEach((item: unknown, i) => checkJson(method, item, `${path}[${i}]`, seen, true));
  } else {
    for (const key of Object.keys(object)) {
      checkJson(method, object[key], childPath(path, key), seen);
    }
  }
  seen.delete(object);
}

function childPath(path: string, key: string): string {
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`;
}

/** A value as an error message shows it (a long string cut, see src/common/describe.ts). */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return describeKey(value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (typeof value === 'object' || typeof value === 'function') return `a ${typeof value}`;
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'symbol') return value.toString();
  return 'undefined';
}
