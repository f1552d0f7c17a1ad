import { createHash } from 'node:crypto';

/** The keys of one stream, all in one cluster hash slot. */
export interface StreamKeys {
  /** The stream itself. */
  stream: string;
  /** Where messages that failed `maxAttempts` times go. */
  dead: string;
  /** The last error of each message that failed at least once (a hash, id → error). */
  errors: string;
}

/**
 * Key names of a stream. The hash tag is the name itself when it has no braces (readable in
 * `redis-cli`), and a digest of it otherwise: braces in a user's name must never split a
 * stream's keys over two slots.
 */
export function streamKeys(name: string): StreamKeys {
  const tag = /[{}]/.test(name)
    ? `h:${createHash('sha1').update(name).digest('hex').slice(0, 16)}`
    : name;
  const stream = `stream:{${tag}}${tag === name ? '' : `:${name}`}`;
  return { stream, dead: `${stream}:dead`, errors: `${stream}:errors` };
}
