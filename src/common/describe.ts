/**
 * How error messages and logs show what a caller passed: short, never the whole of a long
 * string (a 1 MB key must not make a 1 MB message), never throwing (a `BigInt` or a circular
 * object must not turn into `JSON.stringify`'s own error).
 */

/** Characters of a key or string value shown in a message; the rest is counted, not shown. */
export const MAX_SHOWN_CHARACTERS = 100;

/**
 * A key as a message shows it: quoted, cut after `MAX_SHOWN_CHARACTERS` characters with the
 * full length appended (`"aaaa…" (1048576 characters)`). Anything that is not a string is
 * described by `describeValue`.
 */
export function describeKey(key: unknown): string {
  if (typeof key !== 'string') return describeValue(key);
  if (key.length <= MAX_SHOWN_CHARACTERS) return JSON.stringify(key);
  return `${JSON.stringify(key.slice(0, MAX_SHOWN_CHARACTERS))}… (${key.length} characters)`;
}

/** Any value as a message shows it, in a few words; strings are shown as `describeKey` does. */
export function describeValue(value: unknown): string {
  switch (typeof value) {
    case 'string':
      return describeKey(value);
    case 'number':
    case 'boolean':
    case 'undefined':
      return String(value);
    case 'bigint':
      return `${value}n (a bigint)`;
    case 'symbol':
      return 'a symbol';
    case 'function':
      return 'a function';
    default:
      break;
  }
  if (value === null) return 'null';
  if (Array.isArray(value)) return `an array of ${value.length} items`;
  const name = (value as object).constructor?.name;
  return name && name !== 'Object' ? `a ${name}` : 'an object';
}
