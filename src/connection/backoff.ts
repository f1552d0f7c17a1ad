import type { RedisRetryOptions } from './connection.options.js';

/**
 * Delay before reconnect attempt `attempt` (1-based): exponential from `initialDelay` by
 * `factor`, capped at `maxDelay`, with the last `jitter` fraction of it randomised so that a fleet of instances
 * does not reconnect in lock-step after an outage. `null` means stop retrying.
 */
export function backoffDelay(
  attempt: number,
  retry: Required<RedisRetryOptions>,
  random: () => number = Math.random,
): number | null {
  if (retry.maxAttempts !== null && attempt > retry.maxAttempts) return null;
  // Past the cap the exponent no longer matters; clamping it avoids Infinity.
  const exponential = retry.initialDelay * retry.factor ** Math.min(Math.max(attempt - 1, 0), 60);
  const capped = Math.min(retry.maxDelay, exponential);
  const fixed = capped * (1 - retry.jitter);
  return Math.round(fixed + random() * capped * retry.jitter);
}
