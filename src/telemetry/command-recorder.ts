import type { RedisClient } from '../connection/client-factory.js';

/**
 * Told about every command the client sent, once it settled: its name in upper case, its
 * duration in seconds (from the call to the reply, queueing while reconnecting included) and,
 * for a failure, a low-cardinality error type (`WRONGTYPE`, `NOSCRIPT`, `Error`, ...).
 */
export type CommandListener = (operation: string, seconds: number, errorType?: string) => void;

/** What the hook reads of an ioredis `Command` (6.0 and 6.1 alike). */
interface CommandLike {
  name: string;
  promise?: Promise<unknown>;
  resolve?: Settle;
  reject?: Settle;
  isSettled?: boolean;
  [TIMING]?: Settle | true;
}

type SendCommand = (command: CommandLike, ...rest: unknown[]) => unknown;
type Settle = (this: unknown, value: unknown) => unknown;

/**
 * On a command already timed: the `resolve` we put on it (`true` when timed through its promise,
 * see `timeByPromise`). ioredis sends the same command again after a reconnect or a redirection,
 * and it still counts once; a command whose `resolve` is another one got a new promise.
 */
const TIMING = Symbol('nestjs-redis-infra:timing');

interface Installed {
  listeners: Set<CommandListener>;
  /** The client's own `sendCommand` before ours (its prototype's, unless someone else wrapped). */
  original: SendCommand;
  /** Whether `sendCommand` was an own property before ours (then it is put back, not deleted). */
  ownBefore: boolean;
}

const installed = new WeakMap<RedisClient, Installed>();
const upper = new Map<string, string>();

/**
 * Times every command sent through `client` (on a cluster, through the `Cluster` object, so
 * a redirected command counts once) and tells `listener`. The first listener wraps the
 * client's `sendCommand`; removing the last one puts it back, so an unobserved client pays
 * nothing. Returns the function that removes `listener`.
 */
export function recordCommands(client: RedisClient, listener: CommandListener): () => void {
  let entry = installed.get(client);
  if (!entry) {
    const target = client as unknown as { sendCommand: SendCommand };
    const ownBefore = Object.prototype.hasOwnProperty.call(client, 'sendCommand');
    const original = target.sendCommand;
    const listeners = new Set<CommandListener>();
    entry = { listeners, original, ownBefore };
    installed.set(client, entry);
    target.sendCommand = function timedSendCommand(
      this: unknown,
      command: CommandLike,
      ...rest: unknown[]
    ): unknown {
      // Before sending: ioredis may settle the command synchronously (a closed connection).
      if (command) time(command, listeners);
      return original.call(this, command, ...rest);
    };
  }
  entry.listeners.add(listener);
  const own = entry;
  return () => {
    own.listeners.delete(listener);
    if (own.listeners.size > 0 || installed.get(client) !== own) return;
    installed.delete(client);
    const target = client as unknown as { sendCommand: SendCommand };
    if (own.ownBefore) target.sendCommand = own.original;
    else delete (target as { sendCommand?: SendCommand }).sendCommand;
  };
}

/**
 * Times `command` from now to its settling: ioredis calls the command's `resolve` or `reject`
 * with the reply, so wrapping them costs two closures and no promise, and the duration is taken
 * when the reply is parsed, not a microtask later. A wrapper notifies only once the command is
 * settled: ioredis's own `reject` wrappers (a cluster's redirections, a script's NOSCRIPT, a
 * pipelined command's resend) may pass a reply on without settling the command.
 *
 * The state lives in the closures, not in an object kept on the command: measured, an object
 * literal per command that the command and its wrappers point to made V8 promote commands out
 * of the young generation (4-12 µs of garbage collection per command instead of none).
 */
function time(command: CommandLike, listeners: Set<CommandListener>): void {
  const found = command[TIMING];
  const resolve = command.resolve;
  const reject = command.reject;
  if (found === true || (found !== undefined && found === resolve)) return;
  if (
    typeof resolve !== 'function' ||
    typeof reject !== 'function' ||
    typeof command.isSettled !== 'boolean'
  ) {
    timeByPromise(command, listeners);
    return;
  }
  // A first send, or one whose promise ioredis made again (a pipeline retried as a whole): from
  // now. An earlier wrapper is no longer on the command: it cannot record this one again.
  const start = performance.now();
  const name = operationName(command.name);
  let done = false;
  const timedResolve = function (this: unknown, value: unknown): unknown {
    const out = resolve.call(this, value);
    if (!done && command.isSettled) {
      done = true;
      notify(listeners, name, (performance.now() - start) / 1000);
    }
    return out;
  };
  command.resolve = timedResolve;
  command.reject = function (this: unknown, err: unknown): unknown {
    const out = reject.call(this, err);
    if (!done && command.isSettled) {
      done = true;
      notify(listeners, name, (performance.now() - start) / 1000, err);
    }
    return out;
  };
  command[TIMING] = timedResolve;
}

/** For a command that is not an ioredis 6 `Command` (no `resolve`, `reject`, `isSettled`). */
function timeByPromise(command: CommandLike, listeners: Set<CommandListener>): void {
  if (command.promise === undefined) return;
  command[TIMING] = true;
  const start = performance.now();
  const name = operationName(command.name);
  command.promise.then(
    () => notify(listeners, name, (performance.now() - start) / 1000),
    (err: unknown) => notify(listeners, name, (performance.now() - start) / 1000, err),
  );
}

function notify(
  listeners: Set<CommandListener>,
  name: string,
  seconds: number,
  err?: unknown,
): void {
  const type = err === undefined ? undefined : errorType(err);
  for (const listener of listeners) {
    try {
      listener(name, seconds, type);
    } catch {
      // A metrics sink must never break the command's caller, nor the other sinks.
    }
  }
}

function operationName(name: string): string {
  let found = upper.get(name);
  if (found === undefined) {
    found = String(name).toUpperCase();
    // Command names are a small set; a flood of made-up ones must not grow this forever.
    if (upper.size < 1000) upper.set(name, found);
  }
  return found;
}

/**
 * The error's class for `error.type`: a Redis reply error's code (`WRONGTYPE`, `NOPERM`, the
 * first word of its message), else the error's `name`. Never the message: it may quote a key.
 */
export function errorType(err: unknown): string {
  const e = err as { name?: unknown; message?: unknown } | null;
  if (e && e.name === 'ReplyError' && typeof e.message === 'string') {
    const code = /^([A-Z][A-Z_-]{0,31})(?:\s|$)/.exec(e.message)?.[1];
    return code ?? 'ReplyError';
  }
  const name = e?.name;
  return typeof name === 'string' && /^[A-Za-z_][\w.-]{0,63}$/.test(name) ? name : '_OTHER';
}
