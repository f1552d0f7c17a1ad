/**
 * Kept for one round so that code written against the old location still compiles.
 * @deprecated import from `../common/async.js`.
 */
export { Waiters, type Waiter } from '../common/async.js';
