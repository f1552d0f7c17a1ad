/** What we print instead of a password. */
export const REDACTED = '***';

/**
 * Replaces the password of a `redis://user:password@host` URL with `***`. Works on strings that
 * are not valid URLs too, since those are exactly the ones that end up in error messages.
 */
export function redactUrl(url: string): string {
  // The password runs to the last `@` of the authority: passwords may contain `@`.
  return url.replace(/(\/\/[^/@:]*:)[^/]*@/, `$1${REDACTED}@`);
}

/**
 * Removes every occurrence of the given secrets from a text (an error message from a driver, a
 * log line) before it leaves the module.
 */
export function scrubSecrets(text: string, secrets: ReadonlyArray<string | undefined>): string {
  let out = text;
  for (const secret of secrets) {
    if (secret) out = out.split(secret).join(REDACTED);
  }
  return out;
}
