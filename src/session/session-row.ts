import { checkDuration, MAX_TTL_MS } from '../common/checks.js';

import { decodeData, describeValue } from './session-data.js';
import {
  addressOfHandle,
  addressOfId,
  DIGEST_LENGTH,
  handleOf,
  ID_LENGTH,
  isHandle,
  isSessionId,
  TAG_LENGTH,
  type SessionAddress,
} from './session-id.js';
import type { SessionRow } from './session.scripts.js';
import type { Session, SessionMeta, SessionSummary } from './session.types.js';

/**
 * From what Redis holds to what the API returns, and the argument checks the session
 * methods share.
 */

/** Longest user id accepted: it is part of the index key. */
const MAX_USER_ID_LENGTH = 512;

/** The summary fields of a session, as a row or a `LIST` entry holds them (strings). */
interface SummaryFields {
  readonly userId: string;
  readonly created: string | number;
  readonly lastSeen: string | number;
  readonly idle: string | number;
  readonly absolute: string | number;
  /** Meta as JSON; '' or null when there is none. */
  readonly meta: string | null;
}

/**
 * The one place a session's public shape is built: `listByUser` returns this, and every
 * `Session` is this plus its id and data. The idle expiry is computed as the scripts set it:
 * `min(lastSeenAt + idle, absoluteExpiresAt)`.
 */
export function toSummary(address: SessionAddress, fields: SummaryFields): SessionSummary {
  const lastSeenAt = Number(fields.lastSeen);
  const absoluteExpiresAt = Number(fields.absolute);
  return {
    handle: handleOf(address),
    userId: fields.userId,
    ...(fields.meta ? { meta: JSON.parse(fields.meta) as SessionMeta } : {}),
    createdAt: Number(fields.created),
    lastSeenAt,
    expiresAt: Math.min(lastSeenAt + Number(fields.idle), absoluteExpiresAt),
    absoluteExpiresAt,
  };
}

/**
 * The session a row (`HMGET ROW_FIELDS`, or a script's reply) describes; `null` when it is gone,
 * or is an express-session session without a user (not this API's business).
 */
export function toSession<T extends object>(
  id: string,
  address: SessionAddress,
  row: SessionRow | null | undefined,
): Session<T> | null {
  // Inside script replies a missing field may come back as false rather than null.
  if (!row || typeof row[0] !== 'string' || !row[1]) return null;
  const [json, userId, created, lastSeen, idle, absolute, meta] = row;
  const summary = toSummary(address, {
    userId,
    created: created ?? 0,
    lastSeen: lastSeen ?? 0,
    idle: idle ?? 0,
    absolute: absolute ?? 0,
    meta,
  });
  return { id, data: decodeData(json) as T, ...summary };
}

/** An id or a handle, as `destroy` takes them; `null` for anything else. */
export function parseReference(value: unknown): SessionAddress | null {
  if (isSessionId(value)) return addressOfId(value);
  if (isHandle(value)) return addressOfHandle(value);
  return null;
}

/** Never prints the value itself: a near-miss id is still a secret. */
export function describeReference(value: unknown): string {
  return typeof value === 'string'
    ? `a string of ${value.length} characters (ids have ${ID_LENGTH}, handles ${TAG_LENGTH + 1 + DIGEST_LENGTH})`
    : describeValue(value);
}

/** Throws unless `userId` is a usable user id. */
export function checkUserId(method: string, userId: unknown): asserts userId is string {
  if (typeof userId !== 'string' || userId.length === 0) {
    throw new TypeError(
      `${method}: userId must be a non-empty string, got ${describeValue(userId)}`,
    );
  }
  if (userId.length > MAX_USER_ID_LENGTH) {
    throw new RangeError(
      `${method}: userId is ${userId.length} characters long; use at most ${MAX_USER_ID_LENGTH} (e.g. the user's primary key)`,
    );
  }
}

/**
 * A session duration: more than 0 and at most a year, rounded up to a whole ms. Checked before
 * anything is sent: an expiry Redis refuses would fail a script halfway, after its writes.
 */
export function checkTtl(method: string, name: string, value: unknown): number {
  return checkDuration(method, name, value, { min: 1, max: MAX_TTL_MS });
}

/** Throws the `RangeError` of a session over `maxBytes` (data and meta as JSON). */
export function checkSize(method: string, verb: string, size: number, max: number): void {
  if (size > max) {
    throw new RangeError(
      `${method}: the session ${verb} ${size} bytes (data and meta as JSON), more than ` +
        `session.maxBytes (${max}); nothing was written. Keep large data elsewhere and store ` +
        'its key in the session, or raise session.maxBytes.',
    );
  }
}
