import type { CacheSerializer } from './serializer.js';

/**
 * One cached value with what the cache needs to judge it. In Redis: a one-line JSON header,
 * `\n`, then the serialized value, so a read is a single `GET` and the value bytes are handed
 * to the serializer untouched.
 */
export interface CacheEntry<T = unknown> {
  value: T;
  /** Fresh until (epoch ms). */
  freshUntil: number;
  /** Served as stale (grace) until (epoch ms); equals `freshUntil` without grace. */
  staleUntil: number;
  /** How long the loader took (ms), for probabilistic early refresh. */
  loadMs: number;
  /** Versions of its tags when it was written; a bumped tag makes it invalid. */
  tags?: Record<string, number>;
  /** Approximate in-memory size, for the L1 byte bound. */
  size: number;
}

interface Header {
  /** freshUntil */
  f: number;
  /** staleUntil */
  s: number;
  /** loadMs */
  d?: number;
  /** tag versions */
  t?: Record<string, number>;
}

const NEWLINE = 0x0a;

export function encodeEntry(
  header: { freshUntil: number; staleUntil: number; loadMs: number; tags?: Record<string, number> },
  payload: string | Buffer,
): Buffer {
  const h: Header = { f: header.freshUntil, s: header.staleUntil };
  if (header.loadMs > 0) h.d = Math.round(header.loadMs);
  if (header.tags && Object.keys(header.tags).length) h.t = header.tags;
  const head = JSON.stringify(h) + '\n';
  return typeof payload === 'string'
    ? Buffer.from(head + payload, 'utf8')
    : Buffer.concat([Buffer.from(head, 'utf8'), payload]);
}

/**
 * Decodes what `encodeEntry` wrote. Throws on anything else (a foreign or corrupted value), so
 * the caller can treat it as a miss and remove it.
 */
export function decodeEntry<T>(
  raw: Buffer,
  serializer: CacheSerializer,
  keyLength: number,
): CacheEntry<T> {
  const nl = raw.indexOf(NEWLINE);
  if (nl <= 0) throw new Error('no entry header');
  const h = JSON.parse(raw.toString('utf8', 0, nl)) as Partial<Header> | null;
  if (!h || typeof h.f !== 'number' || typeof h.s !== 'number')
    throw new Error('malformed entry header');
  const value = serializer.deserialize(raw.subarray(nl + 1)) as T;
  return {
    value,
    freshUntil: h.f,
    staleUntil: h.s,
    loadMs: typeof h.d === 'number' ? h.d : 0,
    tags: h.t && typeof h.t === 'object' ? h.t : undefined,
    size: estimateSize(raw.length, keyLength),
  };
}

/**
 * What an entry costs in the heap once deserialized: V8 objects take roughly twice their JSON
 * size, plus the key and the entry's own bookkeeping (measured in bench/cache).
 */
export function estimateSize(serializedBytes: number, keyLength: number): number {
  return serializedBytes * 2 + keyLength * 2 + 160;
}
