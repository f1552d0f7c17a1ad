import { EventEmitter } from 'node:events';

import { afterEach, describe, expect, it } from '@jest/globals';
import { Redis } from 'ioredis';

import { coalesceStream, coalesceWrites } from '../../src/connection/coalesce-writes.js';
import { countSocketWrites, standaloneUrl, uniquePrefix, waitFor } from '../support/redis.js';

/**
 * Write coalescing patches ioredis's socket at run time: both paths are shown, the patched one
 * against a real server, the fallback with a client whose stream lacks the shape it needs.
 */
describe('coalesceWrites', () => {
  const clients: Redis[] = [];
  afterEach(() => {
    for (const c of clients.splice(0)) c.disconnect();
  });

  it('sends the commands of one tick in fewer system calls, every reply in order', async () => {
    const prefix = uniquePrefix('coalesce');
    const plain = new Redis(standaloneUrl());
    const coalesced = new Redis(standaloneUrl(), { lazyConnect: true });
    clients.push(plain, coalesced);
    const logs: string[] = [];
    coalesceWrites(coalesced, (m) => logs.push(m));
    await coalesced.connect();
    await plain.ping();

    const burst = (c: Redis): Promise<unknown> =>
      Promise.all(Array.from({ length: 50 }, (_, i) => c.set(`${prefix}${i}`, String(i))));
    const plainWrites = await countSocketWrites(plain, () => burst(plain));
    const coalescedWrites = await countSocketWrites(coalesced, () => burst(coalesced));
    expect(plainWrites).toBe(50);
    // The first write of the tick goes out alone; the other 49 leave together.
    expect(coalescedWrites).toBe(2);
    const values = await Promise.all(
      Array.from({ length: 50 }, (_, i) => coalesced.get(`${prefix}${i}`)),
    );
    expect(values).toEqual(Array.from({ length: 50 }, (_, i) => String(i)));
    expect(logs).toEqual([]);
    await plain.unlink(...Array.from({ length: 50 }, (_, i) => `${prefix}${i}`));
  });

  it('patches the new socket after a reconnect', async () => {
    const c = new Redis(standaloneUrl(), { lazyConnect: true });
    clients.push(c);
    coalesceWrites(c, () => undefined);
    await c.connect();
    const first = c.stream;
    c.stream.destroy();
    await waitFor(() => c.status === 'ready' && c.stream !== first, { what: 'reconnected' });
    const writes = await countSocketWrites(c, () => Promise.all([c.ping(), c.ping(), c.ping()]));
    expect(writes).toBe(2);
  });

  it('keeps plain writes and logs once when the client has no corkable stream', () => {
    const fake = new EventEmitter() as EventEmitter & { stream?: unknown };
    const written: unknown[] = [];
    const write = (chunk: unknown): boolean => written.push(chunk) > 0;
    fake.stream = { write };
    const logs: string[] = [];
    coalesceWrites(fake as unknown as Redis, (m) => logs.push(m));
    fake.emit('connect');
    fake.emit('connect');
    expect(logs).toHaveLength(1);
    expect(logs[0]).toMatch(/coalesceWrites: .*plain writes/);
    // Untouched: the same function, writing straight through.
    expect((fake.stream as { write: unknown }).write).toBe(write);
    fake.emit('connect');
    fake.stream = undefined;
    fake.emit('connect');
    expect(logs).toHaveLength(1);
  });

  it('refuses anything that is not socket-shaped, and patches a stream once', () => {
    expect(coalesceStream(undefined)).toBe(false);
    expect(coalesceStream({ write: () => true, cork: () => undefined })).toBe(false);
    const stream = { write: () => true, cork: () => undefined, uncork: () => undefined };
    expect(coalesceStream(stream)).toBe(true);
    const patched = stream.write;
    expect(coalesceStream(stream)).toBe(true);
    expect(stream.write).toBe(patched);
  });
});
