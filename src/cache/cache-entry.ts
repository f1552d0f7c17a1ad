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
  const h = parseHeader(raw.toString('utf8', 0, nl));
  const value = serializer.deserialize(raw.subarray(nl + 1)) as T;
  return toEntry(h, value, raw.length, keyLength);
}

/**
 * `decodeEntry` for an entry read as a string, when the value is JSON (the default serializer):
 * one string from the reply, the payload parsed in place — no Buffer, no second UTF-8 decode.
 * This is the L2 hit path, so the usual header is read without `JSON.parse` (`fastHeader`).
 */
export function decodeTextEntry<T>(text: string, keyLength: number): CacheEntry<T> {
  const nl = text.indexOf('\n');
  if (nl <= 0) throw new Error('no entry header');
  const h = fastHeader(text, nl) ?? parseHeader(text.slice(0, nl));
  const value = JSON.parse(text.slice(nl + 1)) as T;
  return toEntry(h, value, Buffer.byteLength(text, 'utf8'), keyLength);
}

function parseHeader(text: string): Header {
  const h = JSON.parse(text) as Partial<Header> | null;
  if (!h || typeof h.f !== 'number' || typeof h.s !== 'number')
    throw new Error('malformed entry header');
  return h as Header;
}

/**
 * The header `encodeEntry` writes for an untagged entry, `{"f":<digits>,"s":<digits>}` with an
 * optional `,"d":<digits>`, read by hand: it costs half what `JSON.parse` does. Anything else
 * (tags, a number JSON wrote with an exponent, a foreign header) returns undefined and goes
 * through `JSON.parse`, so both readers accept exactly the same entries.
 */
function fastHeader(text: string, end: number): Header | undefined {
  if (!text.startsWith('{"f":')) return undefined;
  let at = 5;
  const f = digitsAt(text, at);
  if (f === undefined || !text.startsWith(',"s":', (at = f.next))) return undefined;
  const s = digitsAt(text, at + 5);
  if (s === undefined) return undefined;
  at = s.next;
  let d: number | undefined;
  if (text.startsWith(',"d":', at)) {
    const loadMs = digitsAt(text, at + 5);
    if (loadMs === undefined) return undefined;
    d = loadMs.value;
    at = loadMs.next;
  }
  if (at !== end - 1 || text.charCodeAt(at) !== CLOSE_BRACE) return undefined;
  return { f: f.value, s: s.value, d };
}

const DIGIT_0 = 0x30;
const CLOSE_BRACE = 0x7d;
/** More digits than this could lose precision in `value * 10 + digit`: left to JSON.parse. */
const MAX_DIGITS = 15;

/** A non-negative integer written in decimal at `start`, and the index after it. */
function digitsAt(text: string, start: number): { value: number; next: number } | undefined {
  let value = 0;
  let at = start;
  for (;;) {
    const digit = text.charCodeAt(at) - DIGIT_0;
    if (!(digit >= 0 && digit <= 9)) break;
    value = value * 10 + digit;
    at += 1;
  }
  const length = at - start;
  if (length === 0 || length > MAX_DIGITS) return undefined;
  // JSON allows no leading zero ("007"): such a header is not ours, let JSON.parse refuse it.
  if (length > 1 && text.charCodeAt(start) === DIGIT_0) return undefined;
  return { value, next: at };
}

function toEntry<T>(h: Header, value: T, rawLength: number, keyLength: number): CacheEntry<T> {
  return {
    value,
    freshUntil: h.f,
    staleUntil: h.s,
    loadMs: typeof h.d === 'number' ? h.d : 0,
    tags: h.t && typeof h.t === 'object' ? h.t : undefined,
    size: estimateSize(rawLength, keyLength),
  };
}

/**
 * What an entry costs in the heap once deserialized: V8 objects take roughly twice their JSON
 * size, plus the key and the entry's own bookkeeping (measured in bench/cache).
 */
export function estimateSize(serializedBytes: number, keyLength: number): number {
  return serializedBytes * 2 + keyLength * 2 + 160;
}
