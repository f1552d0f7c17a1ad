import { describe, expect, it } from '@jest/globals';
import { DeadlineGroup } from '../../src/connection/deadlines.js';

describe('DeadlineGroup', () => {
  it('passes results and errors through, and rejects late promises near their bound', async () => {
    const group = new DeadlineGroup();
    expect(await group.run(Promise.resolve(1), 100, () => new Error('late'))).toBe(1);
    await expect(
      group.run(Promise.reject(new Error('boom')), 100, () => new Error('late')),
    ).rejects.toThrow('boom');
    const started = Date.now();
    const never = new Promise<number>(() => undefined);
    await expect(group.run(never, 80, () => new Error('late'))).rejects.toThrow('late');
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(75);
    expect(took).toBeLessThan(80 + 80 / 4 + 50);
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
