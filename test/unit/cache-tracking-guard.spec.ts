import { describe, expect, it } from '@jest/globals';

import { TrackingReadGuard } from '../../src/cache/tracking-guard.js';

describe('TrackingReadGuard', () => {
  function guard(maxReadAge = 1_000) {
    let now = 0;
    const g = new TrackingReadGuard(maxReadAge, () => now);
    return { g, advance: (ms: number) => (now += ms) };
  }

  it('refuses a reply whose key was invalidated after the read began, and only that key', () => {
    const { g } = guard();
    g.invalidated('a'); // before the read: irrelevant
    const ticket = g.begin();
    g.invalidated('b');
    expect(g.mayStore('a', ticket)).toBe(true);
    expect(g.mayStore('b', ticket)).toBe(false);
    expect(g.mayStore('b', g.begin())).toBe(true);
  });

  it('refuses every reply of a read that began before a flush', () => {
    const { g } = guard();
    const before = g.begin();
    g.flushed();
    expect(g.mayStore('a', before)).toBe(false);
    expect(g.mayStore('a', g.begin())).toBe(true);
  });

  it('forgets invalidations older than maxReadAge, and refuses reads older than that', () => {
    const { g, advance } = guard(1_000);
    const old = g.begin();
    g.invalidated('a');
    advance(600);
    const recent = g.begin();
    g.invalidated('b');
    advance(600);
    g.invalidated('c'); // prunes 'a' (1,200 ms old), keeps 'b'
    expect(g.remembered).toBe(2);
    expect(g.mayStore('x', old)).toBe(false); // 1,200 ms old: its invalidations may be gone
    expect(g.mayStore('b', recent)).toBe(false);
    expect(g.mayStore('a', recent)).toBe(true);
  });
});
