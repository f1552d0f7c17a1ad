import { createHash } from 'node:crypto';

import { describe, expect, it } from '@jest/globals';

import { RedisConfigError } from '../../src/errors.js';
import {
  decodeData,
  encodeData,
  encodeLenient,
  encodePatch,
} from '../../src/session/session-data.js';
import {
  addressOfHandle,
  addressOfId,
  addressOfStoreId,
  DIGEST_LENGTH,
  handleOf,
  isHandle,
  isSessionId,
  mintId,
  TAG_LENGTH,
  userTag,
} from '../../src/session/session-id.js';
import { validateSessionOptions } from '../../src/session/session.options.js';
import {
  CREATE,
  DESTROY,
  DESTROY_ALL,
  EXPIRED_OWNER,
  LIST,
  LOAD_AND_TOUCH,
  RECORD_KEY_PATTERN,
  REPLY,
  RESAVE,
  ROTATE,
  SAVE,
  sessionKeys,
  TOUCH,
  UPDATE,
} from '../../src/session/session.scripts.js';

describe('session ids', () => {
  it('are 3 tag characters and 256 random bits, base64url, and differ every time', () => {
    const tag = userTag('alice');
    const ids = new Set(Array.from({ length: 1000 }, () => mintId(tag)));
    expect(ids.size).toBe(1000);
    for (const id of ids) {
      expect(id).toMatch(/^[A-Za-z0-9_-]{46}$/);
      expect(id.startsWith(tag)).toBe(true);
      expect(Buffer.from(id.slice(3), 'base64url')).toHaveLength(32);
      expect(isSessionId(id)).toBe(true);
    }
  });

  it('derive the tag from SHA-256 of the user id', () => {
    const digest = createHash('sha256').update('alice').digest('base64url');
    expect(userTag('alice')).toBe(digest.slice(0, 3));
    expect(sessionKeys.index('alice')).toBe(`sess:{${digest.slice(0, 3)}}:u:alice`);
  });

  it('are stored under their SHA-256 digest; a handle addresses the record but is not an id', () => {
    const id = mintId(userTag('bob'));
    const address = addressOfId(id);
    expect(address.digest).toBe(createHash('sha256').update(id).digest('base64url'));
    const handle = handleOf(address);
    expect(handle).toBe(`${id.slice(0, 3)}.${address.digest}`);
    expect(isHandle(handle)).toBe(true);
    expect(isSessionId(handle)).toBe(false);
    expect(isHandle(id)).toBe(false);
    expect(addressOfHandle(handle)).toEqual(address);
    const key = sessionKeys.record(address);
    expect(key).toMatch(RECORD_KEY_PATTERN);
    expect(key).not.toContain(id.slice(3));
  });

  it('reject malformed ids', () => {
    const id = mintId('abc');
    for (const bad of [
      '',
      'x',
      `${id}x`,
      id.slice(1),
      `${id.slice(0, 45)}=`,
      42,
      null,
      undefined,
    ]) {
      expect(isSessionId(bad)).toBe(false);
    }
  });

  it('give express-session ids of any shape a stable address; ours keep their tag', () => {
    const foreign = 'Zx3-aZ9kVqL0pT7yWm2nB4cD6eF8gH1j';
    expect(addressOfStoreId(foreign)).toEqual(addressOfStoreId(foreign));
    expect(addressOfStoreId(foreign)!.tag).toBe(addressOfStoreId(foreign)!.digest.slice(0, 3));
    const ours = mintId(userTag('carol'));
    expect(addressOfStoreId(ours)).toEqual(addressOfId(ours));
    expect(addressOfStoreId('')).toBeNull();
    expect(addressOfStoreId('x'.repeat(1025))).toBeNull();
  });
});

describe('session data', () => {
  const method = 'SessionService.create';

  it('is the JSON text of the data; Dates become strings, undefined properties are dropped', () => {
    expect(encodeData(method, { a: 1, name: 'Zoë', skip: undefined, at: new Date(0) })).toBe(
      '{"a":1,"name":"Zoë","at":"1970-01-01T00:00:00.000Z"}',
    );
  });

  it('names the property JSON cannot represent', () => {
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    const cases: Array<[unknown, string]> = [
      [{ n: 10n }, 'data.n is a bigint, which JSON cannot represent'],
      [
        { user: { greet: () => 'hi' } },
        'data.user.greet is a function, which JSON cannot represent',
      ],
      [{ s: Symbol('x') }, 'data.s is a symbol, which JSON cannot represent'],
      [{ 'odd key': { m: new Map() } }, 'data["odd key"].m is a Map, which JSON turns into {}'],
      [{ tags: new Set(['a']) }, 'data.tags is a Set, which JSON turns into {}'],
      [{ list: [1, Number.NaN] }, 'data.list[1] is NaN, which JSON turns into null'],
      [{ list: [undefined] }, 'data.list[0] is undefined, which JSON turns into null'],
      [{ circular }, 'data.circular.self refers back to itself (a circular structure)'],
    ];
    for (const [data, message] of cases) {
      expect(() => encodeData(method, data)).toThrow(
        new TypeError(`${method}: ${message}; store a JSON value (e.g. a string) instead`),
      );
    }
    expect(() => encodeData(method, [1])).toThrow(
      `${method}: data must be a plain object such as { cartId: 42 }, got an array`,
    );
    expect(() => encodeData(method, null)).toThrow('got null');
  });

  it('accepts shared (non-circular) references', () => {
    const shared = { x: 1 };
    expect(encodeData(method, { a: shared, b: [shared, shared] })).toBe(
      '{"a":{"x":1},"b":[{"x":1},{"x":1}]}',
    );
  });

  it('patches are JSON names and values; undefined deletes a property', () => {
    expect(encodePatch('SessionService.update', { a: undefined, 'b"c': 2 })).toEqual({
      pairs: ['"a"', '', '"b\\"c"', '2'],
      size: 8,
    });
    expect(() => encodePatch('SessionService.update', { x: { y: 1n } })).toThrow(
      'SessionService.update: data.x.y is a bigint',
    );
  });

  it('express-session data is encoded as JSON.stringify would, dropping functions', () => {
    expect(
      encodeLenient('RedisSessionStore.set', {
        cookie: { toJSON: () => ({ maxAge: 5 }) },
        fn: () => 1,
        views: 3,
      }),
    ).toBe('{"cookie":{"maxAge":5},"views":3}');
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    expect(() => encodeLenient('RedisSessionStore.set', circular)).toThrow(
      'RedisSessionStore.set: the session cannot be stored as JSON: Converting circular structure',
    );
  });

  it('decodes __proto__ as a plain property, never as the prototype', () => {
    const data = decodeData('{"a":1,"__proto__":{"polluted":true}}');
    expect(data.a).toBe(1);
    expect(Object.getPrototypeOf(data)).toBe(Object.prototype);
    expect(Object.keys(data)).toEqual(['a', '__proto__']);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe('session scripts and constants', () => {
  it('declare every reply code to the Lua from the one map TypeScript compares with', () => {
    const declaration = `local ${Object.keys(REPLY).join(', ')} = ${Object.values(REPLY).join(', ')}`;
    const scripts = [CREATE, TOUCH, UPDATE, ROTATE, DESTROY, LIST, DESTROY_ALL, RESAVE];
    for (const script of [...scripts, LOAD_AND_TOUCH, SAVE, EXPIRED_OWNER]) {
      expect(script.lua).toContain(declaration);
      // No bare numeric reply left: every code a script returns is a name.
      expect(script.lua).not.toMatch(/return \{?-?\d/);
    }
    expect(new Set(Object.values(REPLY)).size).toBe(Object.keys(REPLY).length);
  });

  it('take the digest length from one constant: TypeScript, the Lua and the key pattern agree', () => {
    const address = addressOfId(mintId(userTag('bob')));
    expect(address.digest).toHaveLength(DIGEST_LENGTH);
    expect(CREATE.lua).toContain(`local DIGEST = ${DIGEST_LENGTH}`);
    const key = sessionKeys.record(address);
    expect(RECORD_KEY_PATTERN.exec(key)?.slice(1)).toEqual([address.tag, address.digest]);
    expect(RECORD_KEY_PATTERN.test(`${key}x`)).toBe(false);
    expect(RECORD_KEY_PATTERN.test(sessionKeys.owner(address))).toBe(false);
    expect(isHandle(handleOf(address))).toBe(true);
    expect(handleOf(address)).toHaveLength(TAG_LENGTH + 1 + DIGEST_LENGTH);
  });
});

describe('session options', () => {
  it('fill in the defaults and name the option, the value and the unit when one is wrong', () => {
    expect(validateSessionOptions(undefined)).toEqual({
      ttl: 1_800_000,
      absoluteTtl: 86_400_000,
      maxBytes: 65_536,
      maxSessionsPerUser: null,
    });
    expect(validateSessionOptions({ ttl: 0.5 }).ttl).toBe(1);
    const message = (value: unknown): string => {
      try {
        validateSessionOptions(value);
      } catch (err) {
        expect(err).toBeInstanceOf(RedisConfigError);
        return (err as Error).message;
      }
      throw new Error('no error');
    };
    expect(message({ ttl: '5' })).toContain(
      'session.ttl = "5"; expected a positive number of milliseconds',
    );
    expect(message({ absoluteTtl: 4e10 })).toContain(
      'session.absoluteTtl = 40000000000; expected at most 31536000000 milliseconds (1 year)',
    );
    expect(message({ maxBytes: -1 })).toContain(
      'session.maxBytes = -1; expected a positive integer (bytes)',
    );
    expect(message([])).toContain('session = []; expected { ttl?, absoluteTtl?');
  });
});
