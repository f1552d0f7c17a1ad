import { describe, expect, it } from '@jest/globals';

import { DeadlineGroup } from '../../src/connection/deadlines.js';

describe('DeadlineGroup', () => {
  it('passes results and errors through, and rejects late promises near their bound', async () => {
    const group = new DeadlineGroup();
    expect(await group.run(Promise.resolve(1), 100, () => new Error('late'))).toBe(1);
    await expect(
      group.run(Promise.reject(new Error('boom')), 100, () => new Error('late')),
    ).rejects.toThrow('boom');
    // Never early: a promise that settles within its bound is never rejected as late, and one
    // that never settles is. (How soon after the bound is a figure for bench/, not a test.)
    const order: string[] = [];
    const never = new Promise<number>(() => undefined);
    const late = group
      .run(never, 80, () => new Error('late'))
      .catch((e: Error) => {
        order.push(e.message);
      });
    const inTime = group
      .run(new Promise((r) => setTimeout(() => r('in time'), 20)), 80, () => new Error('x'))
      .then((v) => order.push(String(v)));
    await Promise.all([late, inTime]);
    expect(order).toEqual(['in time', 'late']);
  });

  it('bounds many calls with mixed bounds', async () => {
    const group = new DeadlineGroup();
    const never = () => new Promise<never>(() => undefined);
    const results = await Promise.allSettled([
      group.run(never(), 200, () => new Error('slow bound')),
      group.run(never(), 40, () => new Error('short bound')),
      group.run(new Promise((r) => setTimeout(() => r('ok'), 10)), 200, () => new Error('x')),
    ]);
    expect(
      results.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as Error).message)),
    ).toEqual(['slow bound', 'short bound', 'ok']);
  });
});
