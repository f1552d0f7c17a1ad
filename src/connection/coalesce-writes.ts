import { Logger } from '@nestjs/common';
import { Cluster, type Redis } from 'ioredis';

/**
 * Write coalescing (option `coalesceWrites`, on by default).
 *
 * ioredis writes every command to its socket as it is issued: one `write` system call per
 * command. With many commands in flight that is most of the client's CPU (measured here: 39% of
 * a session benchmark's profile in the socket write alone, 16 requests in flight). node-redis
 * avoids it by buffering; ioredis's `enableAutoPipelining` too, but through a pipeline object
 * per batch, which makes sequential commands 18-25% slower.
 *
 * This does what a pipeline does for the system calls and nothing else. The first command
 * written in a tick goes out at once, as before: a lone, awaited command pays nothing (corking
 * it measurably did, 2-5%). Any further command written in the same tick corks the socket, and a
 * `process.nextTick` uncorks it, so they all leave together in one `writev`. Each command is
 * still sent, queued and answered as ioredis does it, in order, and none waits past the tick
 * that wrote it.
 * Measured in bench/ (`overhead`).
 *
 * It leans on ioredis internals: a `stream` property holding the socket after `connect`, and a
 * socket with `write`, `cork` and `uncork`. Should a future ioredis change that shape, the
 * connection keeps ioredis's plain writes and says so once, at debug level: slower, never broken.
 */
const COALESCING = Symbol.for('nestjs-redis-infra:coalesce-writes');

/** The socket methods coalescing replaces or calls. */
interface CorkableStream {
  write: (...args: unknown[]) => boolean;
  cork: () => void;
  uncork: () => void;
  [COALESCING]?: true;
}

/** Where the one "falling back" line goes; Nest's logger unless a test passes its own. */
export type CoalesceLog = (message: string) => void;

const defaultLog: CoalesceLog = (message) => new Logger('Redis').debug(message);

/**
 * Coalesces the writes of `client`'s socket, on every (re)connect and, for a cluster, on every
 * node it discovers. A client or socket without the expected shape keeps plain writes.
 */
export function coalesceWrites(client: Redis | Cluster, log: CoalesceLog = defaultLog): void {
  let warned = false;
  const fallback = (why: string): void => {
    if (warned) return;
    warned = true;
    log(`coalesceWrites: ${why}; this connection keeps ioredis's plain writes`);
  };
  attach(client, fallback);
}

function attach(client: Redis | Cluster, fallback: (why: string) => void): void {
  if (client instanceof Cluster) {
    // One connection per node, made as the cluster discovers nodes.
    client.on('+node', (node: Redis) => attach(node, fallback));
    return;
  }
  // Every (re)connect makes a new socket; ioredis emits `connect` before it flushes the
  // commands queued meanwhile.
  client.on('connect', () => {
    const stream: unknown = (client as { stream?: unknown }).stream;
    if (!coalesceStream(stream)) fallback('the client has no corkable socket stream');
  });
}

/**
 * Makes `stream` coalesce the writes of one tick; `false` (and `stream` untouched) when it is
 * not a socket-like object with `write`, `cork` and `uncork`. Idempotent.
 */
export function coalesceStream(stream: unknown): boolean {
  if (!isCorkable(stream)) return false;
  if (stream[COALESCING]) return true;
  stream[COALESCING] = true;
  const write = stream.write;
  let wroteThisTick = false;
  let corked = false;
  const endOfTick = (): void => {
    wroteThisTick = false;
    if (corked) {
      corked = false;
      stream.uncork();
    }
  };
  stream.write = function coalescedWrite(...args: unknown[]): boolean {
    if (!wroteThisTick) {
      wroteThisTick = true;
      process.nextTick(endOfTick);
    } else if (!corked) {
      corked = true;
      stream.cork();
    }
    return write.apply(stream, args);
  };
  return true;
}

function isCorkable(stream: unknown): stream is CorkableStream {
  if (stream === null || typeof stream !== 'object') return false;
  const s = stream as Partial<Record<'write' | 'cork' | 'uncork', unknown>>;
  return (
    typeof s.write === 'function' && typeof s.cork === 'function' && typeof s.uncork === 'function'
  );
}
