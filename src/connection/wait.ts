/**
 * Kept for one round so that code written against the old location still compiles: the async
 * helpers live in `src/common/async.ts`.
 * @deprecated import from `../common/async.js`.
 */
export { elapsedMs, pause, withTimeout } from '../common/async.js';
