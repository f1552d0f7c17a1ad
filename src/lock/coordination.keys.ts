/** The longest name a semaphore, read-write lock or election accepts (characters). */
export const MAX_COORDINATION_NAME_LENGTH = 512;

/**
 * The hash tag of a name: `{`, `}` and `%` are percent-encoded, so the tag always ends at our
 * own closing brace and is never empty. Without it a hostile name such as `}x` gives the keys
 * an empty tag (`sem:{}x}`), each key then hashes on its whole text, and a cluster rejects the
 * scripts with CROSSSLOT. The encoding is one-to-one: two names never share keys.
 */
export function hashTag(name: string): string {
  return `{${name.replace(/[%{}]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)}}`;
}

/**
 * Semaphore keys: the holders (sorted set: token → expiry, server ms), the queue (sorted set:
 * `token|processId|ttl|lease` → arrival, server µs) and the liveness of the processes with
 * waiters queued (hash: process id → deadline, server ms).
 */
export function semaphoreKeys(name: string): [holders: string, queue: string, alive: string] {
  const base = `sem:${hashTag(name)}`;
  return [base, `${base}:q`, `${base}:qe`];
}

/**
 * Read-write lock keys: the writer (`token:fence`, or `-token` once released), the readers
 * (sorted set: token → expiry), the writers waiting (sorted set: token → until when their
 * intent holds), the fencing counter and the waiting mark.
 */
export function readWriteKeys(
  name: string,
): [writer: string, readers: string, writersWaiting: string, fence: string, waiting: string] {
  const base = `rw:${hashTag(name)}`;
  return [base, `${base}:r`, `${base}:ww`, `${base}:f`, `${base}:w`];
}

/** Election keys: the leader (`token:term`) and the term counter. */
export function leaderKeys(name: string): [leader: string, term: string] {
  const base = `leader:${hashTag(name)}`;
  return [base, `${base}:f`];
}

/** Channel on which releases of read-write locks and leaderships are announced. */
export const COORDINATION_CHANNEL = 'coord:released';

/**
 * Channel prefix of semaphore grants: a release that hands permits to queued waiters of other
 * processes publishes their tokens (comma-separated) on `<prefix>coord:grant:<process id>`.
 */
export const GRANT_CHANNEL = 'coord:grant:';

/** Throws unless `name` is a usable name: a non-empty string of bounded length. */
export function checkName(method: string, name: unknown): asserts name is string {
  if (typeof name !== 'string' || name.length === 0) {
    throw new TypeError(
      `LockService.${method}: name must be a non-empty string, got ${JSON.stringify(name) ?? String(name)}`,
    );
  }
  if (name.length > MAX_COORDINATION_NAME_LENGTH) {
    throw new RangeError(
      `LockService.${method}: name must be at most ${MAX_COORDINATION_NAME_LENGTH} characters, ` +
        `got ${name.length} ("${name.slice(0, 40)}…")`,
    );
  }
}

/** Throws unless `value` is a positive finite number of milliseconds. */
export function checkMs(method: string, option: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new RangeError(
      `LockService.${method}: ${option} must be a positive finite number of milliseconds, got ${String(value)}`,
    );
  }
  return Math.ceil(value);
}

/** How long a tombstone of a release lives (ms): long enough for a re-sent release to find it. */
export function tombstoneMs(ttl: number): number {
  return Math.min(ttl, 10_000);
}

/** How long a fencing counter outlives the last acquisition that used it (ms). */
export const FENCE_IDLE_MS = 7 * 24 * 3_600_000;
