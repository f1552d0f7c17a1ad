/**
 * Keyspace notifications: which `notify-keyspace-events` flags an event needs, what a server's
 * current flags lack, and Redis-style glob matching for the keys they name.
 */

/** The class flag of each event `onKeyEvent` accepts (Redis 7 `notify-keyspace-events`). */
export const KEY_EVENT_FLAGS = {
  del: 'g',
  expire: 'g',
  rename_from: 'g',
  rename_to: 'g',
  copy_to: 'g',
  move_from: 'g',
  move_to: 'g',
  restore: 'g',
  persist: 'g',
  set: '$',
  setrange: '$',
  incrby: '$',
  incrbyfloat: '$',
  append: '$',
  lpush: 'l',
  rpush: 'l',
  lpop: 'l',
  rpop: 'l',
  lset: 'l',
  lrem: 'l',
  ltrim: 'l',
  linsert: 'l',
  hset: 'h',
  hdel: 'h',
  hincrby: 'h',
  hincrbyfloat: 'h',
  sadd: 's',
  srem: 's',
  spop: 's',
  zadd: 'z',
  zincr: 'z',
  zrem: 'z',
  xadd: 't',
  xdel: 't',
  xtrim: 't',
  expired: 'x',
  evicted: 'e',
  new: 'n',
} as const;

/** An event `onKeyEvent` can listen to (the event names Redis publishes). */
export type KeyEventName = keyof typeof KEY_EVENT_FLAGS;

/** What `A` stands for in `notify-keyspace-events` (Redis 7; `n` and `m` are not part of it). */
const ALL = 'g$lshzxetd';

/** The flags (always `K` plus one class flag per event) that `events` need. */
export function flagsFor(events: readonly KeyEventName[]): string {
  const classes = new Set(events.map((e) => KEY_EVENT_FLAGS[e]));
  return `K${[...classes].sort().join('')}`;
}

/** The flags of `needed` that `current` (a `CONFIG GET notify-keyspace-events` value) lacks. */
export function missingFlags(current: string, needed: string): string {
  const have = new Set(current.replace('A', ALL));
  return [...needed].filter((f) => !have.has(f)).join('');
}

/** `current` with `needed` added, for `CONFIG SET`. */
export function mergeFlags(current: string, needed: string): string {
  return current + missingFlags(current, needed);
}

/** Escapes glob characters so that `text` matches itself literally in `PSUBSCRIBE`. */
export function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}
