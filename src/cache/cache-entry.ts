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
  /** Approximate in-memory size, for the L1 byte bound (0 for an entry L1 will not keep). */
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
 * This is the L2 hit path, so the usual header is read without `JSON.parse` (`fastHeader`), and
 * the entry's size (a pass over the text to count its UTF-8 bytes) is estimated only when the
 * caller may keep it in L1: otherwise it is 0.
 */
export function decodeTextEntry<T>(
  text: string,
  keyLength: number,
  sizeNeeded: boolean,
): CacheEntry<T> {
  const nl = text.indexOf('\n');
  if (nl <= 0) throw new Error('no entry header');
  const h = fastHeader(text, nl) ?? parseHeader(text.slice(0, nl));
  const value = JSON.parse(text.slice(nl + 1)) as T;
  return toEntry(h, value, sizeNeeded ? Buffer.byteLength(text, 'utf8') : -1, keyLength);
}

function parseHeader(text: string): Header {
  const h = JSON.parse(text) as Partial<Header> | null;
  if (!h || typeof h.f !== 'number' || typeof h.s !== 'number')
    throw new Error('malformed entry header');
  return h as Header;
}

/**
 * The header `encodeEntry` writes for an untagged entry, `{"f":<digits>,"s":<digits>}` with an
 * optional `,"d":<digits>`, read by hand: about half the cost of `JSON.parse`. Anything else
 * (tags, a number JSON wrote with an exponent, a foreign header) returns undefined and goes
 * through `JSON.parse`, so both readers accept exactly the same entries.
 */
function fastHeader(text: string, end: number): Header | undefined {
  if (!text.startsWith('{"f":') || text.charCodeAt(end - 1) !== CLOSE_BRACE) return undefined;
  const sAt = text.indexOf(',"s":', 5);
  if (sAt < 0 || sAt > end) return undefined;
  const f = integer(text, 5, sAt);
  // Whatever lies between two fields must be digits, so a ',"d":' found elsewhere (inside
  // tags) fails below and the header goes to JSON.parse.
  const dAt = text.indexOf(',"d":', sAt + 5);
  const hasD = dAt >= 0 && dAt < end;
  const s = integer(text, sAt + 5, hasD ? dAt : end - 1);
  const d = hasD ? integer(text, dAt + 5, end - 1) : 0;
  if (f < 0 || s < 0 || d < 0) return undefined;
  return { f, s, d };
}

const DIGIT_0 = 0x30;
const CLOSE_BRACE = 0x7d;
/** More digits than this could lose precision in `value * 10 + digit`: left to JSON.parse. */
const MAX_DIGITS = 15;

/** The non-negative integer written in JSON from `start` to `end`, or -1 if it is not one. */
function integer(text: string, start: number, end: number): number {
  const length = end - start;
  // JSON allows no leading zero ("007"): such a header is not ours, let JSON.parse refuse it.
  if (length <= 0 || length > MAX_DIGITS || (length > 1 && text.charCodeAt(start) === DIGIT_0))
    return -1;
  let value = 0;
  for (let at = start; at < end; at += 1) {
    const digit = text.charCodeAt(at) - DIGIT_0;
    if (!(digit >= 0 && digit <= 9)) return -1;
    value = value * 10 + digit;
  }
  return value;
}

/** `rawBytes` -1: the size was not needed (the entry will not be kept in L1), 0 is recorded. */
function toEntry<T>(h: Header, value: T, rawBytes: number, keyLength: number): CacheEntry<T> {
  return {
    value,
    freshUntil: h.f,
    staleUntil: h.s,
    loadMs: typeof h.d === 'number' ? h.d : 0,
    tags: h.t && typeof h.t === 'object' ? h.t : undefined,
    size: rawBytes < 0 ? 0 : estimateSize(rawBytes, keyLength),
  };
}

/**
 * What an entry costs in the heap once deserialized: V8 objects take roughly twice their JSON
 * size, plus the key and the entry's own bookkeeping (measured in bench/cache).
 */
export function estimateSize(serializedBytes: number, keyLength: number): number {
  return serializedBytes * 2 + keyLength * 2 + 160;
}
