/* eslint-disable @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-argument, @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-call --
   The example app's routes answer about thirty JSON shapes, read here through supertest's
   `res.body` (typed `any`); each assertion checks the shape it reads. */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';
import request from 'supertest';

import { RedisService } from '../../src/index.js';
import { startApp } from '../support/app.js';
import { sendCommand, standaloneUrl, uniquePrefix, waitFor } from '../support/redis.js';

/** The example app (example/app.module.ts) against the test server, driven over HTTP. */
describe('example app', () => {
  const saved = {
    REDIS_URL: process.env.REDIS_URL,
    REDIS_KEY_PREFIX: process.env.REDIS_KEY_PREFIX,
  };
  const prefix = uniquePrefix('example');
  let app: INestApplication;
  let server: { host: string; port: number };
  const http = () => request(app.getHttpServer());
  /** The key as Redis stores it: keyPrefix + the example's own `kv:` namespace. */
  const raw = (key: string) => `${prefix}kv:${key}`;

  beforeAll(async () => {
    const url = standaloneUrl();
    server = { host: new URL(url).hostname, port: Number(new URL(url).port) };
    // The app reads its configuration from the environment through ConfigService.
    process.env.REDIS_URL = url;
    process.env.REDIS_KEY_PREFIX = prefix;
    const { AppModule } = await import('../../example/app.module.js');
    app = await startApp({ imports: [AppModule] });
  });

  afterAll(async () => {
    try {
      if (app) {
        await app.get(RedisService).unlinkByPattern('*');
        await app.close();
      }
    } finally {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });

  it('GET /health is 200 with redis up, through Terminus and RedisHealthIndicator', async () => {
    const res = await http().get('/health').expect(200);
    expect(res.body.status).toBe('ok');
    expect(res.body.info.redis.status).toBe('up');
    expect(typeof res.body.info.redis.latency).toBe('number');
    // maxMemoryRatio is set, so the memory figures are reported too.
    expect(res.body.info.redis.usedMemory).toBeGreaterThan(0);
  });

  it('PUT, GET and DELETE /kv/:key go through the injected client, under the key prefix', async () => {
    const put = await http()
      .put('/kv/greeting')
      .send({ value: 'hello', ttlMs: 60_000 })
      .expect(200);
    expect(put.body).toEqual({ key: 'greeting', value: 'hello', ttlMs: 60_000 });
    expect(await sendCommand(server, ['GET', raw('greeting')])).toBe('hello');
    const pttl = Number(await sendCommand(server, ['PTTL', raw('greeting')]));
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(60_000);

    const got = await http().get('/kv/greeting').expect(200);
    expect(got.body.key).toBe('greeting');
    expect(got.body.value).toBe('hello');
    expect(got.body.ttlMs).toBeGreaterThan(0);
    expect(got.body.ttlMs).toBeLessThanOrEqual(60_000);

    await http().delete('/kv/greeting').expect(204);
    expect(await sendCommand(server, ['EXISTS', raw('greeting')])).toBe(0);
    const gone = await http().get('/kv/greeting').expect(404);
    expect(gone.body.message).toContain('greeting');
    await http().delete('/kv/greeting').expect(404);
  });

  it('a value without ttlMs never expires; keys are taken verbatim from the URL', async () => {
    await http().put('/kv/a%20b%2Fc').send({ value: 'spaced' }).expect(200);
    expect(await sendCommand(server, ['PTTL', raw('a b/c')])).toBe(-1);
    const got = await http().get('/kv/a%20b%2Fc').expect(200);
    expect(got.body).toEqual({ key: 'a b/c', value: 'spaced', ttlMs: null });
    // PUT overwrites, and may add a TTL.
    await http().put('/kv/a%20b%2Fc').send({ value: 'again', ttlMs: 5_000 }).expect(200);
    expect((await http().get('/kv/a%20b%2Fc').expect(200)).body.value).toBe('again');
  });

  it('ttlMs is SET ... PX: the key expires', async () => {
    await http().put('/kv/short').send({ value: 'soon gone', ttlMs: 50 }).expect(200);
    await waitFor(async () => (await http().get('/kv/short')).status === 404, {
      what: 'the key to expire',
    });
  });

  it('invalid writes are 400 with a message that says what to send, and write nothing', async () => {
    const cases: Array<{ body?: unknown; raw?: string; message: string }> = [
      { message: 'The body must be a JSON object' },
      { body: { ttlMs: 1000 }, message: '"value" is missing' },
      { body: { value: 42 }, message: '"value" must be a string, got 42 (number)' },
      { body: { value: null }, message: '"value" must be a string, got null' },
      { body: [1, 2], message: 'The body must be a JSON object' },
      { body: { value: 'x', ttlMs: 0 }, message: '"ttlMs" must be a positive whole number' },
      { body: { value: 'x', ttlMs: -5 }, message: '"ttlMs" must be a positive whole number' },
      { body: { value: 'x', ttlMs: 1.5 }, message: '"ttlMs" must be a positive whole number' },
      { body: { value: 'x', ttlMs: '1000' }, message: 'got "1000" (string)' },
      { raw: '{"value": ', message: '' },
    ];
    for (const c of cases) {
      let req = http().put('/kv/invalid');
      if (c.raw !== undefined) req = req.set('Content-Type', 'application/json').send(c.raw);
      else if (c.body !== undefined) req = req.send(c.body as object);
      const res = await req;
      expect({ case: c, status: res.status }).toEqual({ case: c, status: 400 });
      expect(String(res.body.message)).toContain(c.message);
    }
    const long = 'k'.repeat(257);
    const res = await http().put(`/kv/${long}`).send({ value: 'x' }).expect(400);
    expect(res.body.message).toContain('at most 256');
    await http().get(`/kv/${long}`).expect(400);
    expect(await sendCommand(server, ['EXISTS', raw('invalid'), raw(long)])).toBe(0);
  });

  it('POST /visits increments a counter', async () => {
    const first = await http().post('/visits').expect(200);
    const second = await http().post('/visits').expect(200);
    expect(second.body.visits).toBe(first.body.visits + 1);
    expect(await sendCommand(server, ['GET', `${prefix}visits`])).toBe(String(second.body.visits));
  });

  it('GET /redis/stats answers the monitoring figures as numbers', async () => {
    const { body } = await http().get('/redis/stats').expect(200);
    for (const field of [
      'connectedClients',
      'blockedClients',
      'usedMemory',
      'maxMemory',
      'opsPerSec',
      'keyspaceHits',
      'keyspaceMisses',
      'evictedKeys',
      'expiredKeys',
      'keys',
      'uptimeSeconds',
      'nodes',
    ]) {
      expect({ field, type: typeof body[field] }).toEqual({ field, type: 'number' });
    }
    expect(body.connectedClients).toBeGreaterThanOrEqual(1);
    expect(body.usedMemory).toBeGreaterThan(0);
    expect(body.nodes).toBe(1);
  });

  it('GET /redis/info/:section answers one parsed INFO section; 404 and 400 otherwise', async () => {
    const memory = await http().get('/redis/info/memory').expect(200);
    expect(typeof memory.body.memory.used_memory).toBe('number');
    const serverInfo = await http().get('/redis/info/Server').expect(200);
    expect(serverInfo.body.server.redis_version).toMatch(/^\d+\.\d+/);
    await http().get('/redis/info/nosuchsection').expect(404);
    await http().get('/redis/info/bad-name').expect(400);
  });

  it('GET /products/:id loads once, then serves from the cache; invalidation reloads', async () => {
    const first = await http().get('/products/42').expect(200);
    expect(first.body.product).toMatchObject({ id: '42', name: 'Product 42' });
    const again = await http().get('/products/42').expect(200);
    // Served from the cache: the same load (its loadedAt), and the loader ran once (below).
    expect(again.body.product).toEqual(first.body.product);
    await http().post('/products/invalidate').expect(204);
    const reloaded = await http().get('/products/42').expect(200);
    expect(reloaded.body.product.loadedAt).not.toBe(first.body.product.loadedAt);
    const stats = await http().get('/cache/stats').expect(200);
    expect(stats.body.loads).toBe(2);
  });

  it('POST /jobs/:name/run runs one at a time, with increasing fencing tokens', async () => {
    const [one, two] = await Promise.all([
      http().post('/jobs/report/run'),
      http().post('/jobs/report/run'),
    ]);
    expect([one.status, two.status].sort()).toEqual([201, 409]);
    const done = one.status === 201 ? one : two;
    const next = await http().post('/jobs/report/run').expect(201);
    expect(next.body.fencingToken).toBeGreaterThan(done.body.fencingToken);
  });

  it('sessions: login, me (cookie or bearer), devices, logout everywhere', async () => {
    const login = await http()
      .post('/session/login')
      .set('User-Agent', 'phone')
      .send({ userId: 'alice' })
      .expect(200);
    const id: string = login.body.id;
    expect(id).toMatch(/^[A-Za-z0-9_-]{46}$/);
    const cookie = ([] as string[]).concat(login.headers['set-cookie'] ?? [])[0];
    expect(cookie).toMatch(/^sid=[^;]+; .*HttpOnly/);

    const viaCookie = await http().get('/session/me').set('Cookie', cookie.split(';')[0]);
    expect(viaCookie.status).toBe(200);
    expect(viaCookie.body).toMatchObject({ userId: 'alice', data: { signedInWith: 'demo' } });
    expect(viaCookie.body).not.toHaveProperty('id');
    const bearer = { Authorization: `Bearer ${id}` };
    await http().get('/session/me').set(bearer).expect(200);

    const second = await http()
      .post('/session/login')
      .set('User-Agent', 'laptop')
      .send({ userId: 'alice' });
    const devices = await http().get('/session/devices').set(bearer).expect(200);
    expect(devices.body).toHaveLength(2);
    expect(devices.body.find((d: { current: boolean }) => d.current).meta.userAgent).toBe('phone');
    expect(JSON.stringify(devices.body)).not.toContain(id);

    const everywhere = await http().post('/session/logout-everywhere').set(bearer).expect(200);
    expect(everywhere.body).toEqual({ ended: 2 });
    await http().get('/session/me').set(bearer).expect(401);
    await http()
      .get('/session/me')
      .set({ Authorization: `Bearer ${second.body.id}` })
      .expect(401);
    await http().post('/session/login').send({ userId: '' }).expect(400);
  });
});
