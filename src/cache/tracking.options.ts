import { describeValue } from '../common/describe.js';
import { RedisConfigError } from '../errors.js';

/**
 * How the server decides what to tell us about:
 * - `'bcast'`: every write to a key under the cache prefix, whoever read it (`BCAST PREFIX`).
 *   No server memory per key; one message per write under the prefix to every instance.
 * - `'default'`: only keys this instance read through its tracked connection. The server
 *   remembers them (bounded by `tracking-table-max-keys`), and every key read on the command
 *   connection is tracked, not only the cache's (the others are ignored here).
 */
export type CacheTrackingMode = 'bcast' | 'default';

/**
 * The `cache.l1.tracking` option: `false` (default) keeps L1 coherent through the module's
 * own invalidation messages only; `true` or `{ mode }` also lets Redis invalidate L1 when any
 * client writes a cached key (server-assisted client-side caching).
 *
 * @defaultValue `false`
 * @example `cache: { l1: { maxEntries: 10_000, tracking: true } }`
 */
export type CacheTrackingOption = boolean | { mode?: CacheTrackingMode };

/** The validated option: off, or on with its mode. */
export type ResolvedCacheTracking = false | { mode: CacheTrackingMode };

/**
 * The mode `tracking: true` selects. In bench/tracking.ts both modes gave the same L1 hit rate
 * and invalidation delay, and default mode did 0.67-0.84x the operations of BCAST. BCAST also
 * tracks a key however it was read (a cluster redirect included), and costs the server no
 * per-key memory. Default mode sends fewer messages when instances cache disjoint keys.
 */
export const DEFAULT_TRACKING_MODE: CacheTrackingMode = 'bcast';

/**
 * Validates `cache.l1.tracking`; throws a `RedisConfigError` naming the option and the value.
 *
 * @example `validateTrackingOption({ mode: 'default' })` → `{ mode: 'default' }`
 */
export function validateTrackingOption(value: unknown): ResolvedCacheTracking {
  if (value === undefined || value === false) return false;
  if (value === true) return { mode: DEFAULT_TRACKING_MODE };
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const extra = Object.keys(value).filter((k) => k !== 'mode');
    if (extra.length > 0) {
      throw new RedisConfigError(
        `cache.l1.tracking.${extra[0]}`,
        (value as Record<string, unknown>)[extra[0]],
        "no such option (cache.l1.tracking takes only { mode: 'bcast' | 'default' })",
      );
    }
    const mode = (value as { mode?: unknown }).mode ?? DEFAULT_TRACKING_MODE;
    if (mode !== 'bcast' && mode !== 'default') {
      throw new RedisConfigError('cache.l1.tracking.mode', mode, "'bcast' or 'default'");
    }
    return { mode };
  }
  throw new RedisConfigError(
    'cache.l1.tracking',
    value,
    `false, true or { mode: 'bcast' | 'default' } (got ${describeValue(value)})`,
  );
}
