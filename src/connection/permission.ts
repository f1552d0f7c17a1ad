import { RedisPermissionError } from '../errors.js';

/** `true` for Redis's ACL refusal (`NOPERM this user has no permissions to run ...`). */
export function isNoPermission(err: unknown): boolean {
  return err instanceof Error && /^NOPERM\b/.test(err.message);
}

/**
 * Runs `fn`; a `NOPERM` refusal of `command` becomes a `RedisPermissionError` naming the ACL
 * rule to grant, so an operator reads what to change instead of a raw server reply.
 */
export async function needsPermission<T>(
  connectionName: string,
  command: string,
  operation: string,
  fn: () => Promise<T>,
): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (!isNoPermission(err)) throw err;
    const upper = command.toUpperCase();
    throw new RedisPermissionError(connectionName, upper, `+${command.toLowerCase()}`, operation, {
      cause: new Error((err as Error).message),
    });
  }
}
