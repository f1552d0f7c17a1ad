/**
 * Resolves with `promise`'s value, or rejects with `onTimeout()` after `ms`. The timer is always
 * cleared, so a settled race never keeps the process alive; a late rejection of `promise` is
 * swallowed, since nobody is listening any more.
 */
export function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  onTimeout: () => Error,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  promise.catch(() => undefined);
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Milliseconds elapsed since `start` (a `performance.now()` reading), with sub-ms precision. */
export function elapsedMs(start: number): number {
  return Math.round((performance.now() - start) * 1000) / 1000;
}

/** Resolves after `ms`; the timer does not keep the process alive (a shutdown may come first). */
export function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
