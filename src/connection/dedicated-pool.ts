import { RedisConnectionError } from '../errors.js';

import type { RedisClient } from './client-factory.js';

/** What the pool needs from its owner: how to open a connection, and the shared bounds. */
export interface DedicatedPoolHost {
  /** Opens a connected client, or rejects (the pool counts it as opening meanwhile). */
  open(): Promise<RedisClient>;
  /** Closes a client for good and detaches whatever the owner attached to it. */
  drop(client: RedisClient): void;
  /** Whether one more connection fits under `maxConnections`, counting every role. */
  hasRoom(): boolean;
  /** The refusal to give once the owner is shutting down. */
  shuttingDown(): Error;
  /** The error of a caller that waited `waitMs` for a free connection in vain. */
  exhausted(waitMs: number): Error;
  /** How long a caller waits for a busy connection to come back, in ms. */
  readonly waitMs: number;
  /** How long an idle connection stays open, in ms. */
  readonly idleMs: number;
}

interface Waiting {
  resolve: (client: RedisClient) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * Connections of their own for blocking commands (`BLPOP`, `XREAD BLOCK`, `WAIT`), so that they
 * never stall the shared command connection: opened on demand, reused while idle, closed after
 * `idleMs` without use, and bounded together with every other connection of the registration.
 * When all are busy, a caller waits up to `waitMs` for one to come back.
 */
export class DedicatedPool {
  private readonly idle: RedisClient[] = [];
  private readonly idleTimers = new Map<RedisClient, NodeJS.Timeout>();
  private readonly busy = new Set<RedisClient>();
  private readonly waiting: Waiting[] = [];
  private opening = 0;
  private closed = false;

  constructor(private readonly host: DedicatedPoolHost) {}

  /** Connections open or being opened: idle, busy and opening. */
  get size(): number {
    return this.idle.length + this.busy.size + this.opening;
  }

  /** Runs `fn` with a connection of its own and gives the connection back afterwards. */
  async run<T>(fn: (client: RedisClient) => Promise<T>): Promise<T> {
    const client = await this.acquire();
    try {
      return await fn(client);
    } finally {
      this.release(client);
    }
  }

  /**
   * Refuses new work, rejects the waiting callers and returns every connection for the owner
   * to close (idle ones and the ones still in use, whose commands then fail).
   */
  close(): RedisClient[] {
    this.closed = true;
    for (const waiter of this.waiting.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(this.host.shuttingDown());
    }
    for (const timer of this.idleTimers.values()) clearTimeout(timer);
    this.idleTimers.clear();
    const all = [...this.idle.splice(0), ...this.busy];
    this.busy.clear();
    return all;
  }

  private async acquire(): Promise<RedisClient> {
    if (this.closed) throw this.host.shuttingDown();
    while (this.idle.length > 0) {
      const client = this.idle.pop()!;
      clearTimeout(this.idleTimers.get(client));
      this.idleTimers.delete(client);
      if (client.status === 'ready') {
        this.busy.add(client);
        return client;
      }
      this.host.drop(client);
    }
    if (this.host.hasRoom()) {
      this.opening += 1;
      let client: RedisClient;
      try {
        client = await this.host.open();
      } finally {
        this.opening -= 1;
      }
      this.busy.add(client);
      return client;
    }
    return new Promise<RedisClient>((resolve, reject) => {
      const waiter: Waiting = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiting.splice(this.waiting.indexOf(waiter), 1);
          reject(this.host.exhausted(this.host.waitMs));
        }, this.host.waitMs),
      };
      this.waiting.push(waiter);
    });
  }

  private release(client: RedisClient): void {
    this.busy.delete(client);
    if (this.closed || client.status !== 'ready') {
      this.host.drop(client);
      // A slot freed up: let the next waiter open a fresh connection.
      const next = this.waiting.shift();
      if (next && !this.closed) {
        clearTimeout(next.timer);
        this.acquire().then(next.resolve, next.reject);
      }
      return;
    }
    const next = this.waiting.shift();
    if (next) {
      clearTimeout(next.timer);
      this.busy.add(client);
      next.resolve(client);
      return;
    }
    this.idle.push(client);
    const timer = setTimeout(() => {
      const i = this.idle.indexOf(client);
      if (i >= 0) this.idle.splice(i, 1);
      this.idleTimers.delete(client);
      this.host.drop(client);
    }, this.host.idleMs);
    timer.unref();
    this.idleTimers.set(client, timer);
  }
}

/** The error of a caller that found every dedicated connection busy for too long. */
export function poolExhausted(
  name: string,
  address: string,
  waitMs: number,
  maxConnections: number,
): RedisConnectionError {
  return new RedisConnectionError(
    name,
    address,
    `no dedicated connection became free within ${waitMs} ms ` +
      `(all ${maxConnections} allowed by maxConnections are in use)`,
    { hint: 'Raise maxConnections, or make blocking commands use shorter timeouts.' },
  );
}
