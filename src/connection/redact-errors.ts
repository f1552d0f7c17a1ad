import { Cluster, type Redis } from 'ioredis';

import { REDACTED } from '../config/redact.js';

/**
 * Keeps credentials out of every error a client of ours hands to the application.
 *
 * When authentication fails during a (re)connect (a rotated password, a wrong one with
 * `lazyConnect`), ioredis 6.0 rejects every queued application command with the error of its
 * own `HELLO 3 AUTH <user> <password>` (or `AUTH`), whose `command.args` carry the credentials:
 * Nest's exception handler then prints them. ioredis 6.1 redacts these arguments itself; the
 * peer range allows 6.0, so we do it at the source: in `flushQueue`, the one place where a
 * handshake error is handed to application commands, before any of their handlers can run,
 * and in the `error` event that carries the same object. Any other command's arguments that
 * equal a configured secret are redacted too. Costs nothing per command.
 */
export function redactClientErrors(
  client: Redis | Cluster,
  secrets: ReadonlyArray<string | undefined>,
): void {
  const known = secrets.filter((s): s is string => typeof s === 'string' && s !== '');
  if (client instanceof Cluster) {
    patchFlush(client, known);
    // Node connections are made as the cluster discovers them, before they connect.
    client.on('+node', (node: Redis) => redactClientErrors(node, known));
    client.on('node error', (err: unknown) => safely(err, known));
    return;
  }
  patchFlush(client, known);
  // Listeners run in order of registration; ours comes first, before the module's logger.
  client.prependListener('error', (err: unknown) => safely(err, known));
}

/** An `error` listener must never throw: that would crash the process from inside ioredis. */
function safely(err: unknown, secrets: string[]): void {
  try {
    redactError(err, secrets);
  } catch {
    // Left as it is: logging scrubs messages again.
  }
}

const PATCHED = Symbol.for('nestjs-redis-infra:redact-errors');

interface Flushable {
  flushQueue?: (error: unknown, ...rest: unknown[]) => unknown;
  [PATCHED]?: true;
}

function patchFlush(target: Redis | Cluster, secrets: string[]): void {
  const flushable = target as unknown as Flushable;
  const original = flushable.flushQueue;
  if (typeof original !== 'function' || flushable[PATCHED]) return;
  flushable[PATCHED] = true;
  flushable.flushQueue = function (this: unknown, error: unknown, ...rest: unknown[]) {
    // A frozen or exotic error object must not keep the queue from being flushed.
    safely(error, secrets);
    return original.call(this, error, ...rest);
  };
}

/** Commands whose arguments are credentials, wherever they stand. */
const CREDENTIAL_COMMANDS = new Set(['auth', 'hello', 'migrate']);

/**
 * Replaces credentials in an ioredis error's `command.args` (and in its message, should a
 * secret appear there) with `***`, in place: every holder of the object sees the redacted one.
 */
export function redactError(err: unknown, secrets: ReadonlyArray<string>): void {
  if (!(err instanceof Error)) return;
  const command = (err as { command?: { name?: unknown; args?: unknown } }).command;
  if (command && Array.isArray(command.args)) {
    const name = typeof command.name === 'string' ? command.name.toLowerCase() : '';
    const args = command.args as unknown[];
    (err as Error & { command?: unknown }).command = {
      ...command,
      args: CREDENTIAL_COMMANDS.has(name)
        ? redactCredentialArgs(name, args)
        : args.map((a) => (isSecret(a, secrets) ? REDACTED : a)),
    };
  }
  for (const secret of secrets) {
    if (err.message.includes(secret)) err.message = err.message.split(secret).join(REDACTED);
  }
}

function isSecret(arg: unknown, secrets: ReadonlyArray<string>): boolean {
  const text = typeof arg === 'string' ? arg : Buffer.isBuffer(arg) ? arg.toString() : undefined;
  return text !== undefined && secrets.includes(text);
}

/**
 * `AUTH [user] pass`: everything. `HELLO ver AUTH user pass [SETNAME n]`: the pair after AUTH.
 * `MIGRATE ... AUTH pass | AUTH2 user pass`: what follows the keyword.
 */
function redactCredentialArgs(name: string, args: unknown[]): unknown[] {
  if (name === 'auth') return args.map(() => REDACTED);
  const out = [...args];
  for (let i = 0; i < out.length; i += 1) {
    const word = String(out[i]).toUpperCase();
    if (word === 'AUTH') {
      const count = name === 'hello' ? 2 : 1;
      for (let j = 1; j <= count && i + j < out.length; j += 1) out[i + j] = REDACTED;
    } else if (word === 'AUTH2') {
      for (let j = 1; j <= 2 && i + j < out.length; j += 1) out[i + j] = REDACTED;
    }
  }
  return out;
}
