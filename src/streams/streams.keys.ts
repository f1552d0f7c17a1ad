import { hashTag } from '../toolkit/slots.js';

/** The keys of one stream, all in one cluster hash slot. */
export interface StreamKeys {
  /** The stream itself. */
  stream: string;
  /** Where messages that failed `maxAttempts` times go. */
  dead: string;
  /** The last error of each message that failed at least once (a hash, id → error). */
  errors: string;
}

/** Key names of a stream, tagged by `hashTag` so that they share one slot for any name. */
export function streamKeys(name: string): StreamKeys {
  const tag = hashTag(name);
  const stream = `stream:{${tag}}${tag === name ? '' : `:${name}`}`;
  return { stream, dead: `${stream}:dead`, errors: `${stream}:errors` };
}
