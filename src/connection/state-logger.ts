import type { LoggerService } from '@nestjs/common';

import type { RedisClient } from './client-factory.js';

type State = 'connecting' | 'ready' | 'down' | 'closed';

/**
 * Reports a client's connection state to Nest's logger once per change of state: a Redis that
 * stays down for an hour produces one "lost" line, one "reconnecting" line and one error line,
 * not one per retry. Returns a function that detaches every listener it added.
 */
export function watchConnectionState(
  client: RedisClient,
  logger: LoggerService,
  describe: { role: string; address: string; scrub: (text: string) => string },
  hooks: { isClosing: () => boolean },
): () => void {
  let state: State = 'connecting';
  let errorLogged = false;
  let attempts = 0;
  let downSince = 0;
  const what = `${describe.role} connection to ${describe.address}`;

  const onReady = (): void => {
    if (state === 'down') {
      logger.log(
        `${what} restored after ${attempts} attempt(s), ${Date.now() - downSince} ms down`,
      );
    } else if (state !== 'ready') {
      logger.log(
        attempts > 0
          ? `${what} ready after ${attempts} attempt(s), ${Date.now() - downSince} ms`
          : `${what} ready`,
      );
    }
    state = 'ready';
    errorLogged = false;
    attempts = 0;
  };
  const onError = (err: Error): void => {
    if (hooks.isClosing() || errorLogged) return;
    errorLogged = true;
    logger.error(`${what}: ${describe.scrub(err.message)}`);
  };
  const onClose = (): void => {
    if (hooks.isClosing()) return;
    if (state === 'ready') {
      state = 'down';
      downSince = Date.now();
      errorLogged = false;
      logger.warn(`${what} lost; commands are queued while it reconnects`);
    }
  };
  const onReconnecting = (delay: unknown): void => {
    if (hooks.isClosing()) return;
    attempts += 1;
    if (attempts === 1) {
      if (state === 'connecting') downSince = Date.now();
      logger.warn(
        `${what} reconnecting (first retry in ${Number(delay)} ms, exponential backoff with jitter)`,
      );
    }
  };
  const onEnd = (): void => {
    if (hooks.isClosing() || state === 'closed') return;
    state = 'closed';
    logger.error(`${what} ended: no more reconnection attempts will be made`);
  };

  client.on('ready', onReady);
  client.on('error', onError);
  client.on('close', onClose);
  client.on('reconnecting', onReconnecting);
  client.on('end', onEnd);
  return () => {
    client.off('ready', onReady);
    client.off('error', onError);
    client.off('close', onClose);
    client.off('reconnecting', onReconnecting);
    client.off('end', onEnd);
  };
}
