import type { RedisClient } from '../connection/client-factory.js';

/**
 * Told about every command the client sent, once it settled: its name in upper case, its
 * duration in seconds (from the call to the reply, queueing while reconnecting included) and,
 * for a failure, a low-cardinality error type (`WRONGTYPE`, `NOSCRIPT`, `Error`, ...).
 */
export type CommandListener = (operation: string, seconds: number, errorType?: string) => void;

interface CommandLike {
  name: string;
  promise?: Promise<unknown>;
  [RECORDED]?: true;
}

type SendCommand = (command: CommandLike, ...rest: unknown[]) => unknown;

/** Marks a command already timed: ioredis sends a command again after a reconnect or MOVED. */
const RECORDED = Symbol('nestjs-redis-infra:recorded');

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
      const result = original.call(this, command, ...rest);
      if (command && !command[RECORDED] && command.promise !== undefined) {
        command[RECORDED] = true;
        const start = performance.now();
        const name = operationName(command.name);
        command.promise.then(
          () => notify(listeners, name, (performance.now() - start) / 1000),
          (err: unknown) => notify(listeners, name, (performance.now() - start) / 1000, err),
        );
      }
      return result;
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
