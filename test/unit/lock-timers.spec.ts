import { afterEach, beforeEach, describe, expect, it, jest } from '@jest/globals';

import { Deadlines } from '../../src/lock/deadlines.js';
import { Renewals } from '../../src/lock/renewals.js';

// The shared timers of the lock family, on Jest's fake clock: what runs when, and that one
// timer serves every hold or attempt.

const never = <T>(): Promise<T> => new Promise<T>(() => undefined);

describe('Deadlines (the waits of acquisition attempts)', () => {
  beforeEach(() => {
    jest.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    jest.useRealTimers();
  });

  it('passes the reply through when it comes in time', async () => {
    const deadlines = new Deadlines();
    await expect(
      deadlines.within(Promise.resolve('ok'), Date.now() + 100, () => new Error('late'), undefined),
    ).resolves.toBe('ok');
    const failure = new Error('refused');
    await expect(
      deadlines.within(
        Promise.reject(failure),
        Date.now() + 100,
        () => new Error('late'),
        undefined,
      ),
    ).rejects.toBe(failure);
    deadlines.stopAll();
  });

  it('rejects each unanswered command at its own deadline, with one timer for all of them', async () => {
    const deadlines = new Deadlines();
    const now = Date.now();
    const late = deadlines.within(never(), now + 300, () => new Error('late'), undefined);
    const early = deadlines.within(never(), now + 100, () => new Error('early'), undefined);
    const answered = deadlines.within(
      Promise.resolve(1),
      now + 50,
      () => new Error('x'),
      undefined,
    );
    await expect(answered).resolves.toBe(1);
    expect(jest.getTimerCount()).toBe(1);
    let lateDone = false;
    void late.catch(() => (lateDone = true));
    await jest.advanceTimersByTimeAsync(100);
    await expect(early).rejects.toThrow('early');
    expect(lateDone).toBe(false);
    await jest.advanceTimersByTimeAsync(200);
    await expect(late).rejects.toThrow('late');
    expect(jest.getTimerCount()).toBe(0);
  });

  it('stops a wait when its signal aborts, and every wait at stopAll (timer cleared)', async () => {
    const deadlines = new Deadlines();
    const controller = new AbortController();
    const aborted = deadlines.within(
      never(),
      Date.now() + 10_000,
      () => new Error('stopped'),
      controller.signal,
    );
    const other = deadlines.within(
      never(),
      Date.now() + 10_000,
      () => new Error('shutdown'),
      undefined,
    );
    controller.abort();
    await expect(aborted).rejects.toThrow('stopped');
    deadlines.stopAll();
    await expect(other).rejects.toThrow('shutdown');
    expect(jest.getTimerCount()).toBe(0);
  });
});

describe('Renewals (auto-extension of held locks and leases)', () => {
  beforeEach(() => {
    jest.useFakeTimers({ now: 2_000_000 });
  });
  afterEach(() => {
    jest.useRealTimers();
  });

  it('runs each renewal when due, in order, with one timer; a cancelled one never runs', async () => {
    const renewals = new Renewals();
    const ran: string[] = [];
    const a = {};
    const b = {};
    const c = {};
    renewals.schedule(a, Date.now() + 200, () => ran.push('a'));
    renewals.schedule(b, Date.now() + 100, () => ran.push('b'));
    renewals.schedule(c, Date.now() + 150, () => ran.push('c'));
    renewals.cancel(c);
    expect(jest.getTimerCount()).toBe(1);
    await jest.advanceTimersByTimeAsync(100);
    expect(ran).toEqual(['b']);
    await jest.advanceTimersByTimeAsync(100);
    expect(ran).toEqual(['b', 'a']);
    expect(jest.getTimerCount()).toBe(0);
  });

  it('a renewal may schedule the next one of its hold; rescheduling replaces the earlier one', async () => {
    const renewals = new Renewals();
    const hold = {};
    let runs = 0;
    const renew = (): void => {
      runs += 1;
      if (runs < 3) renewals.schedule(hold, Date.now() + 50, renew);
    };
    renewals.schedule(hold, Date.now() + 500, () => (runs = 100));
    renewals.schedule(hold, Date.now() + 50, renew);
    await jest.advanceTimersByTimeAsync(1_000);
    expect(runs).toBe(3);
  });

  it('a released hold leaves the timer armed until it fires and finds nothing due; stopAll clears it', async () => {
    const renewals = new Renewals();
    let ran = false;
    const hold = {};
    renewals.schedule(hold, Date.now() + 100, () => (ran = true));
    renewals.cancel(hold);
    expect(jest.getTimerCount()).toBe(1);
    await jest.advanceTimersByTimeAsync(100);
    expect(ran).toBe(false);
    expect(jest.getTimerCount()).toBe(0);
    renewals.schedule(hold, Date.now() + 100, () => (ran = true));
    renewals.stopAll();
    expect(jest.getTimerCount()).toBe(0);
    await jest.advanceTimersByTimeAsync(200);
    expect(ran).toBe(false);
  });
});
