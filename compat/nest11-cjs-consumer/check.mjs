// Runs the compiled consumer (dist/main.js) against the Redis at $REDIS_URL and checks what a
// user would see: /health answers 200 with redis up, and the express-session store from
// `nestjs-redis-infra/express-session` keeps a session across two requests. Then stops the app
// with SIGTERM and expects a clean exit. Every wait is bounded; exit code 0 means all passed.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as delay } from 'node:timers/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
if (!process.env.REDIS_URL) throw new Error('REDIS_URL is not set');

const app = spawn(process.execPath, [path.join(here, 'dist/main.js')], {
  env: process.env,
  stdio: ['ignore', 'pipe', 'inherit'],
});
const exited = once(app, 'exit');
let out = '';

async function bounded(promise, ms, what) {
  const timeout = new AbortController();
  const timer = delay(ms, undefined, { signal: timeout.signal }).then(() => {
    throw new Error(`${what}: no answer within ${ms} ms`);
  });
  // The loser of the race is cancelled, so no timer outlives its step.
  timer.catch(() => {});
  try {
    return await Promise.race([promise, timer]);
  } finally {
    timeout.abort();
  }
}

function expectEqual(actual, expected, what) {
  if (JSON.stringify(actual) !== JSON.stringify(expected)) {
    throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
  console.log(`ok - ${what}`);
}

try {
  const port = await bounded(
    new Promise((resolve, reject) => {
      app.stdout.setEncoding('utf8');
      app.stdout.on('data', (chunk) => {
        out += chunk;
        const match = /listening (\d+)/.exec(out);
        if (match) resolve(Number(match[1]));
      });
      app.once('exit', (code) =>
        reject(new Error(`the app exited with code ${code} before listening`)),
      );
    }),
    30_000,
    'app start',
  );
  const base = `http://127.0.0.1:${port}`;

  const health = await bounded(fetch(`${base}/health`), 10_000, 'GET /health');
  const body = await health.json();
  expectEqual(
    [health.status, body.status, body.info?.redis?.status],
    [200, 'ok', 'up'],
    'GET /health',
  );

  const first = await bounded(fetch(`${base}/visits`), 10_000, 'GET /visits');
  const cookie = first.headers.get('set-cookie')?.split(';')[0];
  expectEqual(
    [first.status, await first.json(), typeof cookie],
    [200, { visits: 1 }, 'string'],
    'first visit sets a session cookie',
  );
  const second = await bounded(
    fetch(`${base}/visits`, { headers: { cookie } }),
    10_000,
    'GET /visits',
  );
  expectEqual(
    [second.status, await second.json()],
    [200, { visits: 2 }],
    'second visit finds the session in Redis',
  );
} finally {
  if (app.exitCode === null && app.signalCode === null) app.kill('SIGTERM');
}
const [code, signal] = await bounded(exited, 10_000, 'app shutdown');
// enableShutdownHooks() runs the hooks, then re-raises the signal: death by SIGTERM after the
// hook's line is the clean outcome.
expectEqual(
  [code, signal, /shutdown SIGTERM/.test(out)],
  [null, 'SIGTERM', true],
  'SIGTERM runs the shutdown hooks',
);
