import type { Attributes, Meter } from '@opentelemetry/api';

import type { LockStats } from '../lock/lock-stats.js';

/** The six lock instruments: name, description, unit, gauge (up-down) or counter, figure. */
const INSTRUMENTS: ReadonlyArray<[string, string, string, boolean, keyof LockStats]> = [
  ['nestjs_redis.lock.held', 'Locks this process holds now.', '{lock}', true, 'held'],
  [
    'nestjs_redis.lock.waiting',
    'Callers of this process waiting to acquire a lock now.',
    '{caller}',
    true,
    'waiting',
  ],
  [
    'nestjs_redis.lock.acquired',
    'Locks acquired, hand-offs included.',
    '{lock}',
    false,
    'acquired',
  ],
  [
    'nestjs_redis.lock.handoffs',
    'Locks a caller got after queueing, handed over by a release or an expiry.',
    '{handoff}',
    false,
    'handoffs',
  ],
  [
    'nestjs_redis.lock.losses',
    'Locks lost while held (TTL passed unrenewed, or the key was gone or taken).',
    '{loss}',
    false,
    'losses',
  ],
  [
    'nestjs_redis.lock.timeouts',
    'Waits for a lock that ran out (LockNotAcquiredError).',
    '{timeout}',
    false,
    'timeouts',
  ],
];

/**
 * Registers the lock instruments of one connection's `LockService` on `meter` (`read` is its
 * `stats()`); returns what removes them. One `stats()` read per collection serves all six.
 */
export function instrumentLocks(
  meter: Meter,
  read: () => LockStats,
  attributes: Attributes,
): () => void {
  const instruments = INSTRUMENTS.map(([name, description, unit, gauge]) =>
    gauge
      ? meter.createObservableUpDownCounter(name, { description, unit })
      : meter.createObservableCounter(name, { description, unit }),
  );
  const callback = (observer: {
    observe(instrument: (typeof instruments)[number], value: number, attrs: Attributes): void;
  }): void => {
    let stats: LockStats;
    try {
      stats = read();
    } catch {
      return; // a figure that cannot be read this time is skipped, never an exporter failure
    }
    INSTRUMENTS.forEach(([, , , , figure], i) =>
      observer.observe(instruments[i], stats[figure], attributes),
    );
  };
  meter.addBatchObservableCallback(callback, instruments);
  return () => meter.removeBatchObservableCallback(callback, instruments);
}
