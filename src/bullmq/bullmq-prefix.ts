/** BullMQ's own default `prefix`, used when the module has no `keyPrefix`. */
export const BULLMQ_DEFAULT_PREFIX = 'bull';

/**
 * Translates the module's ioredis `keyPrefix` into BullMQ's `prefix`. BullMQ joins its parts
 * with `:` itself (`<prefix>:<queue>:<suffix>`), so a trailing `:` is dropped. On a cluster
 * every key one BullMQ script touches must share a slot: the prefix becomes a hash tag
 * (`{shop}`) unless it already carries one.
 */
export function toBullMqPrefix(keyPrefix: string, cluster: boolean): string {
  const base = keyPrefix.replace(/:+$/, '') || BULLMQ_DEFAULT_PREFIX;
  if (!cluster || /\{[^{}]+\}/.test(base)) return base;
  return `{${base}}`;
}
