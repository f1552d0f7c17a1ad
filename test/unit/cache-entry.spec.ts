import { describe, expect, it } from '@jest/globals';

import { decodeEntry, decodeTextEntry, encodeEntry } from '../../src/cache/cache-entry.js';
import { jsonSerializer } from '../../src/cache/serializer.js';

describe('cache entry encoding', () => {
  it('round-trips the header and the value', () => {
    const raw = encodeEntry(
      { freshUntil: 1_000, staleUntil: 5_000, loadMs: 12.4, tags: { product: 3 } },
      jsonSerializer.serialize({ name: 'Ada', n: [1, 2] }),
    );
    expect(raw.toString()).toBe(
      '{"f":1000,"s":5000,"d":12,"t":{"product":3}}\n{"name":"Ada","n":[1,2]}',
    );
    expect(decodeEntry(raw, jsonSerializer, 3)).toMatchObject({
      value: { name: 'Ada', n: [1, 2] },
      freshUntil: 1_000,
      staleUntil: 5_000,
      loadMs: 12,
      tags: { product: 3 },
    });
  });

  it('keeps Buffer payloads byte for byte', () => {
    const bytes = Buffer.from([0, 10, 255, 10]);
    const serializer = {
      serialize: (v: unknown) => v as Buffer,
      deserialize: (b: Buffer) => Buffer.from(b),
    };
    const entry = decodeEntry<Buffer>(
      encodeEntry({ freshUntil: 1, staleUntil: 1, loadMs: 0 }, bytes),
      serializer,
      1,
    );
    expect([...entry.value]).toEqual([0, 10, 255, 10]);
  });

  it.each([
    ['no header', 'plain text'],
    ['a header that is not ours', '{"x":1}\n1'],
    ['a broken payload', '{"f":1,"s":2}\n{oops'],
    ['an empty value', ''],
  ])('refuses %s', (_case, text) => {
    expect(() => decodeEntry(Buffer.from(text), jsonSerializer, 1)).toThrow();
  });
});

describe('cache entry read as a string (decodeTextEntry)', () => {
  const text = (header: string, payload = '{"name":"Ada"}'): string => `${header}\n${payload}`;

  it.each([
    [
      'the usual header',
      { freshUntil: 1_764_000_000_000, staleUntil: 1_764_000_300_000, loadMs: 0 },
    ],
    ['a load time', { freshUntil: 10, staleUntil: 20, loadMs: 7.6 }],
    [
      'tags (read with JSON.parse)',
      { freshUntil: 10, staleUntil: 20, loadMs: 3, tags: { a: 1, d: 2 } },
    ],
  ])('agrees with decodeEntry on %s', (_case, header) => {
    const raw = encodeEntry(header, jsonSerializer.serialize({ name: 'Ada', n: [1, 2] }));
    const fromText = decodeTextEntry(raw.toString('utf8'), 3, true);
    expect(fromText).toEqual(decodeEntry(raw, jsonSerializer, 3));
    expect(fromText.value).toEqual({ name: 'Ada', n: [1, 2] });
  });

  it.each([
    ['an exponent', '{"f":1e3,"s":2e3}', 1_000, 2_000],
    ['spaces', '{ "f": 5, "s": 6 }', 5, 6],
    ['fields in another order', '{"s":6,"f":5}', 5, 6],
    ['a zero', '{"f":0,"s":0}', 0, 0],
    ['a negative number', '{"f":-1,"s":2}', -1, 2],
    [
      'a number too long to read by hand',
      '{"f":1234567890123456,"s":1234567890123457}',
      1234567890123456,
      1234567890123457,
    ],
  ])('reads a header with %s like JSON.parse does', (_case, header, f, s) => {
    const entry = decodeTextEntry(text(header), 1, false);
    expect(entry).toMatchObject({ freshUntil: f, staleUntil: s, value: { name: 'Ada' } });
    expect(decodeEntry(Buffer.from(text(header)), jsonSerializer, 1)).toMatchObject({
      freshUntil: f,
      staleUntil: s,
    });
  });

  it.each([
    ['no header', 'plain text'],
    ['a header that is not ours', '{"x":1}\n1'],
    ['a leading zero', '{"f":01,"s":2}\n1'],
    ['a broken header', '{"f":1,"s":2\n1'],
    ['a broken payload', '{"f":1,"s":2}\n{oops'],
    ['an empty value', ''],
  ])('refuses %s, as decodeEntry does', (_case, raw) => {
    expect(() => decodeTextEntry(raw, 1, true)).toThrow();
    expect(() => decodeEntry(Buffer.from(raw), jsonSerializer, 1)).toThrow();
  });

  it('estimates the size from UTF-8 bytes only when asked (for L1)', () => {
    const raw = text('{"f":1,"s":2}', '"€"');
    expect(decodeTextEntry(raw, 4, true).size).toBe(
      decodeEntry(Buffer.from(raw), jsonSerializer, 4).size,
    );
    expect(decodeTextEntry(raw, 4, false).size).toBe(0);
  });
});

describe('jsonSerializer', () => {
  it.each<[string, unknown, string]>([
    ['BigInt', { id: 1n }, 'property "id" is a bigint, which JSON cannot represent'],
    ['a function', () => 1, 'the value is a function, which JSON cannot represent'],
    ['NaN', { n: Number.NaN }, 'property "n" is NaN, which JSON turns into null'],
    ['a Map', { m: new Map() }, 'property "m" is a Map, which JSON turns into {}'],
    ['a Set', new Set([1]), 'the value is a Set, which JSON turns into {}'],
    ['a symbol', Symbol('s'), 'the value is a symbol, which JSON cannot represent'],
  ])('refuses %s', (_case, value, message) => {
    expect(() => jsonSerializer.serialize(value)).toThrow(message);
  });

  it('accepts null, nested values and dates (as ISO strings, like JSON)', () => {
    const date = new Date('2026-01-02T03:04:05.000Z');
    const text = jsonSerializer.serialize({
      a: null,
      d: date,
      list: [1, 'x', { y: true }],
      u: undefined,
    });
    expect(jsonSerializer.deserialize(Buffer.from(text))).toEqual({
      a: null,
      d: '2026-01-02T03:04:05.000Z',
      list: [1, 'x', { y: true }],
    });
  });
});
