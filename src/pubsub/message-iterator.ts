import type { PubSubEvent, PubSubGap, PubSubMessageContext, Unsubscribe } from './pubsub.types.js';

/** Where a subscription's messages and gap notices go; a promise holds the next one back. */
export interface DeliveryHandlers {
  message: (message: unknown, context: PubSubMessageContext) => unknown;
  gap?: (gap: PubSubGap) => unknown;
}

/**
 * The async iterator of `messages()`: subscribes at once through `open`, hands each event to
 * the loop one at a time (the subscription's queue waits until the loop takes it), and ends
 * (unsubscribing) when the loop breaks, `signal` aborts or `finishers` are run at shutdown.
 */
export function messageIterator<T>(
  open: (handlers: DeliveryHandlers) => Promise<Unsubscribe>,
  signal: AbortSignal | undefined,
  finishers: Set<() => Promise<void>>,
): AsyncIterableIterator<PubSubEvent<T>> {
  type Result = IteratorResult<PubSubEvent<T>>;
  let waiting: ((result: Result) => void) | undefined;
  let offered: { event: PubSubEvent<T>; take: () => void } | undefined;
  let done = false;
  let failure: unknown;
  const offer = (event: PubSubEvent<T>): Promise<void> | undefined => {
    if (done) return undefined;
    if (waiting) {
      const resolve = waiting;
      waiting = undefined;
      resolve({ value: event, done: false });
      return undefined;
    }
    return new Promise<void>((take) => (offered = { event, take }));
  };
  const finish = async (): Promise<void> => {
    if (done) return;
    done = true;
    finishers.delete(finish);
    signal?.removeEventListener('abort', onAbort);
    offered?.take();
    offered = undefined;
    waiting?.({ value: undefined, done: true });
    waiting = undefined;
    await (
      await subscribed.catch(() => undefined)
    )?.();
  };
  const onAbort = (): void => void finish();
  const subscribed = open({
    message: (message, context) => offer({ type: 'message', message: message as T, ...context }),
    gap: (gap) => offer(gap),
  }).then(
    (off) => off,
    (err: unknown) => {
      failure = err;
      void finish();
      return undefined;
    },
  );
  finishers.add(finish);
  if (signal?.aborted) void finish();
  else signal?.addEventListener('abort', onAbort, { once: true });

  const iterator: AsyncIterableIterator<PubSubEvent<T>> = {
    next: async (): Promise<Result> => {
      await subscribed;
      if (failure !== undefined) {
        const err = failure;
        failure = undefined;
        throw err as Error;
      }
      if (offered) {
        const { event, take } = offered;
        offered = undefined;
        take();
        return { value: event, done: false };
      }
      if (done) return { value: undefined, done: true };
      return new Promise<Result>((resolve) => (waiting = resolve));
    },
    return: async (): Promise<Result> => {
      await finish();
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return iterator;
    },
  };
  return iterator;
}
