import { createHash, randomBytes } from 'node:crypto';

/**
 * Session ids, their digests and revocation handles.
 *
 * An id is `<tag><secret>`: a 3-character slot tag followed by 256 random bits
 * (`crypto.randomBytes(32)`, base64url, 43 characters), 46 characters in all, all base64url.
 * The tag is the start of SHA-256(userId), so it names the hash slot of the user's sessions:
 * `get(id)` finds a session from its id alone, in the same slot as the user's index, without a
 * pointer key in another slot (see session.scripts.ts). The tag carries 18 bits of a hash of
 * the user id; the secret carries all of the id's unpredictability.
 *
 * Redis never sees an id: records are stored under SHA-256(id) (the digest). A handle,
 * `<tag>.<digest>`, addresses a record for revocation ("log out that device") but cannot be
 * turned back into the id, so it cannot authenticate.
 */

/** Characters of the slot tag at the start of every id. */
export const TAG_LENGTH = 3;
/** Random bytes of an id: 256 bits. */
const SECRET_BYTES = 32;
/**
 * Length of a base64url SHA-256 digest, and of an id's secret part. The one source of that
 * number: the id and handle patterns, the record key pattern and the Lua scripts (which cut
 * the digest off a record key) are all built from it.
 */
export const DIGEST_LENGTH = 43;
/** Length of a session id. */
export const ID_LENGTH = TAG_LENGTH + DIGEST_LENGTH;

/** One base64url character, as a regular expression class. */
export const BASE64URL_CLASS = '[A-Za-z0-9_-]';

const ID_PATTERN = new RegExp(`^${BASE64URL_CLASS}{${ID_LENGTH}}$`);
const HANDLE_PATTERN = new RegExp(
  `^${BASE64URL_CLASS}{${TAG_LENGTH}}\\.${BASE64URL_CLASS}{${DIGEST_LENGTH}}$`,
);
/** Longest express-session id the store accepts (theirs are 32 characters by default). */
const MAX_FOREIGN_ID_LENGTH = 1024;

/** Where a session record lives: its slot tag and the digest of its id. */
export interface SessionAddress {
  readonly tag: string;
  readonly digest: string;
}

/** SHA-256 as base64url (43 characters). */
export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('base64url');
}

/** The slot tag of a user's sessions and index. */
export function userTag(userId: string): string {
  return sha256(userId).slice(0, TAG_LENGTH);
}

/** A slot tag for a session that belongs to no user (express-session before login). */
export function randomTag(): string {
  return randomBytes(3).toString('base64url').slice(0, TAG_LENGTH);
}

/** A new id in the slot of `tag`. */
export function mintId(tag: string): string {
  return tag + randomBytes(SECRET_BYTES).toString('base64url');
}

/** Whether `value` has the shape of an id we issue (anything else never reaches Redis). */
export function isSessionId(value: unknown): value is string {
  return typeof value === 'string' && value.length === ID_LENGTH && ID_PATTERN.test(value);
}

/** Whether `value` has the shape of a revocation handle. */
export function isHandle(value: unknown): value is string {
  return typeof value === 'string' && HANDLE_PATTERN.test(value);
}

/** The record address of one of our ids (checked with `isSessionId` first). */
export function addressOfId(id: string): SessionAddress {
  return { tag: id.slice(0, TAG_LENGTH), digest: sha256(id) };
}

/** The record address a handle names (checked with `isHandle` first). */
export function addressOfHandle(handle: string): SessionAddress {
  return { tag: handle.slice(0, TAG_LENGTH), digest: handle.slice(TAG_LENGTH + 1) };
}

/** The revocation handle of a record. */
export function handleOf(address: SessionAddress): string {
  return `${address.tag}.${address.digest}`;
}

/**
 * The address of any express-session id: ours (from `RedisSessionStore.genid`) carry their
 * tag; others (express-session's default 32-character ids) get one from their digest. `null`
 * for what cannot be an id (not a string, empty, absurdly long).
 */
export function addressOfStoreId(sid: unknown): SessionAddress | null {
  if (typeof sid !== 'string' || sid.length === 0 || sid.length > MAX_FOREIGN_ID_LENGTH) {
    return null;
  }
  if (isSessionId(sid)) return addressOfId(sid);
  const digest = sha256(sid);
  return { tag: digest.slice(0, TAG_LENGTH), digest };
}
