/**
 * `nestjs-redis-infra/express-session`: the `express-session` store. A separate entry because
 * `express-session` is an optional peer: the package root never loads it, so applications
 * without it import the root as before.
 */
export { RedisSessionStore } from './session/session-store.js';
export type { RedisSessionStoreOptions } from './session/session-store.js';
