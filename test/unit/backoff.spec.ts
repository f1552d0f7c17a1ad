import { describe, expect, it } from '@jest/globals';

import { backoffDelay } from '../../src/connection/backoff.js';

const retry = { initialDelay: 100, factor: 2, maxDelay: 2000, jitter: 0.5, maxAttempts: null };

describe('backoffDelay', () => {
  it('doubles from the initial delay up to the cap', () => {
    const noJitter = { ...retry, jitter: 0 };
    expect([1, 2, 3, 4, 5, 6, 50, 5000].map((a) => backoffDelay(a, noJitter))).toEqual([
      100, 200, 400, 800, 1600, 2000, 2000, 2000,
    ]);
  });

  it('randomises only the jitter fraction of the delay', () => {
    expect(backoffDelay(3, retry, () => 0)).toBe(200);
    expect(backoffDelay(3, retry, () => 0.999999)).toBe(400);
    expect(backoffDelay(10, { ...retry, jitter: 1 }, () => 0)).toBe(0);
  });

  it('grows by factor: the first attempts after a drop stay close together', () => {
    const gentle = { ...retry, initialDelay: 50, factor: 1.5, jitter: 0 };
    expect([1, 2, 3, 4, 5, 20].map((a) => backoffDelay(a, gentle))).toEqual([
      50, 75, 113, 169, 253, 2000,
    ]);
  });

  it('stops after maxAttempts', () => {
    const bounded = { ...retry, maxAttempts: 3 };
    expect(backoffDelay(3, bounded)).not.toBeNull();
    expect(backoffDelay(4, bounded)).toBeNull();
  });
});
