import { describe, expect, it, jest } from '@jest/globals';

import { Coalescer } from '../../src/common/async.js';
import {
  DeliveryQueue,
  type DeliverySink,
  type GapEntry,
} from '../../src/pubsub/delivery-queue.js';
import { escapeGlob, flagsFor, mergeFlags, missingFlags } from '../../src/pubsub/keyspace.js';
import { validatePubSubOptions } from '../../src/pubsub/pubsub.options.js';
import { keySlot as hashSlot } from '../../src/toolkit/slots.js';

function sink(deliver: (message: string) => unknown = () => undefined) {
  const log: string[] = [];
  const s: DeliverySink & { log: string[] } = {
    log,
    deliver: (message) => {
      log.push(message);
      return deliver(message);
    },
    gap: (gap: GapEntry) => void log.push(`gap:${gap.reason}:${gap.dropped ?? '?'}`),
    failed: (err) => void log.push(`failed:${(err as Error).message}`),
    timedOut: () => void log.push('timeout'),
    overflowed: () => undefined,
  };
  return s;
}

describe('DeliveryQueue', () => {
  it('delivers synchronously to synchronous handlers, and survives one that throws', () => {
    const s = sink((m) => {
      if (m === 'b') throw new Error('boom');
    });
    const q = new DeliveryQueue(s, 4, 1_000);
    for (const m of ['a', 'b', 'c']) q.push(m, 'ch');
    expect(s.log).toEqual(['a', 'b', 'failed:boom', 'c']);
    expect(q.pending).toBe(0);
  });

  it('drops the oldest when full and reports the loss before the survivors', async () => {
    let release: () => void = () => undefined;
    const held = new Promise<void>((r) => (release = r));
    const s = sink((m) => (m === '1' ? held : undefined));
    const q = new DeliveryQueue(s, 2, 10_000);
    for (let i = 1; i <= 6; i += 1) q.push(String(i), 'ch');
    expect(s.log).toEqual(['1']);
    release();
    await held;
    await Promise.resolve();
    expect(s.log).toEqual(['1', 'gap:overflow:3', '5', '6']);
  });

  it('keeps a reconnect gap in order with the messages around it', () => {
    const s = sink();
    const q = new DeliveryQueue(s, 8, 1_000);
    q.push('a', 'ch');
    q.pushGap({ reason: 'reconnect', since: 1, until: 2 });
    q.push('b', 'ch');
    expect(s.log).toEqual(['a', 'gap:reconnect:?', 'b']);
  });

  it('moves on after a handler that never settles, and clears its timer on close', () => {
    jest.useFakeTimers();
    try {
      const s = sink((m) => (m === 'stuck' ? new Promise(() => undefined) : undefined));
      const q = new DeliveryQueue(s, 8, 100);
      q.push('stuck', 'ch');
      q.push('next', 'ch');
      expect(s.log).toEqual(['stuck']);
      jest.advanceTimersByTime(100);
      expect(s.log).toEqual(['stuck', 'timeout', 'next']);
      q.push('stuck', 'ch');
      q.close();
      expect(jest.getTimerCount()).toBe(0);
    } finally {
      jest.useRealTimers();
    }
  });
});

describe('keyspace flags', () => {
  it('needs K plus one class flag per event', () => {
    expect(flagsFor(['expired'])).toBe('Kx');
    expect(flagsFor(['set', 'del', 'expire', 'evicted'])).toBe('K$eg');
  });

  it('reads A as every class flag, and merges what is missing', () => {
    expect(missingFlags('AK', 'K$egx')).toBe('');
    expect(missingFlags('AE', 'Kx')).toBe('K');
    expect(missingFlags('', 'Kx')).toBe('Kx');
    expect(mergeFlags('E$', 'Kx')).toBe('E$Kx');
  });

  it('escapes glob characters of a prefix', () => {
    expect(escapeGlob('a*b?[c]\\:')).toBe('a\\*b\\?\\[c\\]\\\\:');
  });
});

describe('hashSlot', () => {
  it('matches Redis (CLUSTER KEYSLOT)', () => {
    expect(hashSlot('foo')).toBe(12182);
    expect(hashSlot('{user1000}.following')).toBe(hashSlot('user1000'));
    expect(hashSlot('foo{}{bar}')).toBe(8363);
  });
});

describe('pubsub options', () => {
  it('name the option, the value and its unit', () => {
    expect(() => validatePubSubOptions({ bufferSize: 0 })).toThrow(
      'pubsub.bufferSize = 0; expected an integer from 1 to 1000000 (messages)',
    );
    expect(() => validatePubSubOptions({ handlerTimeout: -1 })).toThrow(
      'pubsub.handlerTimeout = -1; expected a positive number of milliseconds',
    );
    expect(() => validatePubSubOptions({ pingInterval: 'x' })).toThrow(
      'pubsub.pingInterval = "x"; expected a positive number of milliseconds',
    );
    expect(validatePubSubOptions({ pingInterval: 0, handlerTimeout: 1.5 })).toEqual({
      keyspaceEvents: 'check',
      bufferSize: 1000,
      handlerTimeout: 2,
      pingInterval: 0,
    });
  });
});

describe('Coalescer (follow passes)', () => {
  it('runs one pass per key at a time; calls meanwhile make one more pass, flags OR-ed', async () => {
    const passes: Array<[string, boolean]> = [];
    let release: (() => void) | undefined;
    const coalescer = new Coalescer<string>(
      async (key, flag) => {
        passes.push([key, flag]);
        if (passes.length === 1) await new Promise<void>((resolve) => (release = resolve));
      },
      { spacingMs: 1, proceed: () => true },
    );
    const first = coalescer.run('a');
    void coalescer.run('a', true);
    void coalescer.run('a');
    const other = coalescer.run('b');
    release!();
    await Promise.all([first, other, coalescer.idle()]);
    expect(passes).toEqual([
      ['a', false],
      ['b', false],
      ['a', true],
    ]);
  });

  it('stops asking for more once proceed() turns false', async () => {
    let passes = 0;
    let proceed = true;
    const coalescer = new Coalescer<null>(
      async () => {
        passes += 1;
        proceed = false;
        await Promise.resolve();
      },
      { spacingMs: 1, proceed: () => proceed },
    );
    const done = coalescer.run(null);
    void coalescer.run(null);
    await done;
    expect(passes).toBe(1);
  });
});
