/**
 * Kept for one round so that code written against the old location still compiles: the
 * argument checks and the value describer live in `src/common/`.
 * @deprecated import from `../common/checks.js` and `../common/describe.js`.
 */
export {
  checkInteger,
  checkKeys,
  checkMs as checkDuration,
  checkName,
  MAX_TTL_MS,
} from '../common/checks.js';
export { describeValue as shown } from '../common/describe.js';
