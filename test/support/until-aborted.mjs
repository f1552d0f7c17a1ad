// Shared by the worker processes (plain Node, no TypeScript): the specs' own copy is
// `untilAborted` in test/support/redis.ts.

/**
 * Resolves once `signal` aborts, also when it was aborted already (no event comes then): a
 * lock's or lease's signal first read after its TTL passed is created aborted.
 * @param {AbortSignal} signal
 * @returns {Promise<void>}
 */
export const untilAborted = (signal) =>
  new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
