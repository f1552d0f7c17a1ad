import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';

import { Logger } from '@nestjs/common';

import type { RedisClient } from '../connection/client-factory.js';
import type { RedisConnection } from '../connection/redis-connection.js';

import type { StreamKeys } from './streams.keys.js';
import { ACK, DEAD_LETTER, KEEP_CLAIMED, RECORD_ERROR } from './streams.scripts.js';

/** What a stream handler gets besides the message. */
export interface StreamMessageContext {
  /** The entry id Redis gave the message (`1700000000000-0`). */
  id: string;
  /** The stream's name, as given to `producer`/`consumer`. */
  stream: string;
  /** The consumer group. */
  group: string;
  /** How many times this message has been delivered, this delivery included. */
  deliveries: number;
  /** Aborted when shutdown gives up waiting for this handler (`shutdownTimeout`). */
  signal: AbortSignal;
}

/** A function that processes one stream message; a throw (or rejection) means "not done". */
export type StreamHandler<T> = (message: T, context: StreamMessageContext) => unknown;

/** Options of `StreamsService.consumer` and `@OnStreamMessage`. */
export interface StreamConsumerOptions {
  /**
   * Handlers running at once in this process.
   * @defaultValue 1
   */
  concurrency?: number;
  /**
   * How long a delivered message may go without its consumer showing signs of life (ms)
   * before another consumer takes it over. A running handler keeps its message claimed; a
   * consumer that died or froze stops doing so.
   * @defaultValue 30000
   */
  visibilityTimeout?: number;
  /**
   * Deliveries before a message that keeps failing goes to the dead-letter stream.
   * @defaultValue 5
   */
  maxAttempts?: number;
  /**
   * Move messages that failed `maxAttempts` times to `<stream>:dead` with their last error;
   * `false` drops them (acknowledged, logged once each).
   * @defaultValue true
   */
  deadLetter?: boolean;
  /**
   * Where a new group starts: `'start'` processes what the stream already holds, `'new'` only
   * what is added after the group is created. An existing group keeps its position.
   * @defaultValue 'start'
   */
  from?: 'start' | 'new';
  /**
   * This consumer's name in the group.
   * @defaultValue `<hostname>:<pid>:<random>`
   */
  consumerName?: string;
  /**
   * How long one blocking read waits for new messages (ms).
   * @defaultValue 2000
   */
  block?: number;
}

/** What `StreamsService.stats` reports. */
export interface StreamStats {
  /** Entries in the stream. */
  length: number;
  /** Entries in the dead-letter stream. */
  deadLetters: number;
  /** Per consumer group: delivered but not acknowledged, consumers, entries not yet read. */
  groups: Array<{ name: string; pending: number; consumers: number; lag: number | null }>;
}

/**
 * What `StreamsService.counters()` reports: this process's consumers of one connection, since
 * the application started (a stopped consumer's counts stay). One message may count several
 * times: each delivery is one `delivered`.
 */
export interface StreamCounters {
  /** Deliveries handed to a handler: first ones and redeliveries alike. */
  delivered: number;
  /** Deliveries acknowledged (`XACK`) after their handler returned. */
  acked: number;
  /**
   * Deliveries that ended without an acknowledgement and stay pending, to be delivered again
   * after `visibilityTimeout`: the handler threw before `maxAttempts`, or the ack failed.
   */
  failed: number;
  /** Redeliveries: deliveries after a message's first (taken over after `visibilityTimeout`). */
  retried: number;
  /**
   * Messages moved to `<stream>:dead` (or dropped, with `deadLetter: false`): failed
   * `maxAttempts` times, or undecodable.
   */
  deadLettered: number;
  /** Handler calls that threw or rejected (the last attempt before dead-lettering included). */
  handlerFailures: number;
}

/** What `StreamsService.backlog` reports for one consumer group, as Redis sees it. */
export interface StreamBacklog {
  /** Entries delivered to the group's consumers and not yet acknowledged (`XPENDING` count). */
  pending: number;
  /**
   * Entries of the stream not yet delivered to the group (`XINFO GROUPS` lag); `null` when
   * Redis cannot tell (entries deleted or trimmed between the group's position and the end).
   */
  lag: number | null;
  /** Consumers the group knows (live or not: Redis keeps a name until it is deleted). */
  consumers: number;
}

/** A fresh set of zero counters. */
export function emptyStreamCounters(): StreamCounters {
  return {
    delivered: 0,
    acked: 0,
    failed: 0,
    retried: 0,
    deadLettered: 0,
    handlerFailures: 0,
  };
}

export interface ResolvedConsumerOptions {
  concurrency: number;
  visibilityTimeout: number;
  maxAttempts: number;
  deadLetter: boolean;
  from: 'start' | 'new';
  consumerName: string;
  block: number;
}

type Entry = [id: string, fields: string[]];

/**
 * One consumer of a consumer group: reads with `XREADGROUP` on a dedicated connection, runs the
 * handler for each message (at most `concurrency` at once), acknowledges what succeeded, keeps
 * what is running claimed, takes over what other consumers left idle past `visibilityTimeout`
 * (`XAUTOCLAIM`), and dead-letters what failed `maxAttempts` times.
 */
export class StreamConsumer<T = unknown> {
  private readonly logger: Logger;
  private readonly inFlight = new Map<string, { done: Promise<void>; abort: AbortController }>();
  private readonly slotFreed: Array<() => void> = [];
  private readonly stopWakers = new Set<() => void>();
  private readFailures = 0;
  private reader?: RedisClient;
  private readLoop?: Promise<void>;
  private reclaimTimer?: NodeJS.Timeout;
  private heartbeatTimer?: NodeJS.Timeout;
  private stopped = false;
  private readonly counters = { processed: 0, failed: 0, deadLettered: 0, reclaimed: 0, scans: 0 };

  constructor(
    private readonly connection: RedisConnection,
    /** The stream's name. */
    readonly stream: string,
    /** The consumer group. */
    readonly group: string,
    private readonly keys: StreamKeys,
    private readonly handler: StreamHandler<T>,
    private readonly options: ResolvedConsumerOptions,
    /** The service's totals, shared by its consumers (`StreamsService.counters()`). */
    private readonly totals: StreamCounters = emptyStreamCounters(),
  ) {
    this.logger = new Logger(`Redis:${connection.name}:streams`);
  }

  /** This consumer's name in the group. */
  get name(): string {
    return this.options.consumerName;
  }

  /** Messages handled, failed, dead-lettered and taken over from other consumers so far. */
  get counts(): Readonly<{
    processed: number;
    failed: number;
    deadLettered: number;
    reclaimed: number;
    scans: number;
  }> {
    return { ...this.counters };
  }

  /** Handlers running now. */
  get inFlightCount(): number {
    return this.inFlight.size;
  }

  /** Creates the group if needed and starts reading. */
  async start(): Promise<void> {
    await this.ensureGroup();
    const every = Math.max(50, Math.floor(this.options.visibilityTimeout / 3));
    this.reclaimTimer = setInterval(() => void this.reclaim(), every);
    this.heartbeatTimer = setInterval(() => void this.heartbeat(), every);
    this.readLoop = this.readForever();
  }

  /** Reads until stopped; a failed connection is replaced after a short, growing pause. */
  private async readForever(): Promise<void> {
    while (!this.stopped) {
      try {
        await this.connection.withDedicated((reader) => this.read(reader));
      } catch (err) {
        if (this.stopped) return;
        this.readFailures += 1;
        if (this.readFailures === 1) {
          this.logger.warn(
            `consumer ${this.describe()} cannot read (${this.scrub(err)}); retrying`,
          );
        }
        await new Promise<void>((resolve) => {
          const wake = (): void => {
            clearTimeout(timer);
            this.stopWakers.delete(wake);
            resolve();
          };
          const timer = setTimeout(wake, Math.min(2000, 100 * 2 ** Math.min(this.readFailures, 5)));
          this.stopWakers.add(wake);
        });
      }
    }
  }

  private async ensureGroup(): Promise<void> {
    const client = this.connection.client;
    try {
      await client.xgroup(
        'CREATE',
        this.keys.stream,
        this.group,
        this.options.from === 'new' ? '$' : '0',
        'MKSTREAM',
      );
    } catch (err) {
      if (!(err instanceof Error && err.message.startsWith('BUSYGROUP'))) throw err;
    }
  }

  /**
   * Stops reading at once, then waits up to `timeout` ms for running handlers; what is still
   * running then is aborted and stays pending, for another consumer after `visibilityTimeout`.
   */
  async stop(timeout: number): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.reclaimTimer);
    clearInterval(this.heartbeatTimer);
    for (const wake of this.slotFreed.splice(0)) wake();
    for (const wake of [...this.stopWakers]) wake();
    // A blocked XREADGROUP would hold the connection for up to `block` ms: drop it. A reply in
    // flight is not lost: the entry stays pending and is taken over later.
    this.reader?.disconnect();
    await this.readLoop;
    const running = [...this.inFlight.values()];
    if (running.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled(running.map((r) => r.done)),
      new Promise((resolve) => (timer = setTimeout(resolve, timeout))),
    ]);
    clearTimeout(timer);
    for (const r of this.inFlight.values())
      r.abort.abort(new Error('shutdown: handler did not finish in time'));
  }

  private async read(reader: RedisClient): Promise<void> {
    this.reader = reader;
    while (!this.stopped) {
      const free = this.options.concurrency - this.inFlight.size;
      if (free <= 0) {
        await new Promise<void>((resolve) => this.slotFreed.push(resolve));
        continue;
      }
      let reply: Array<[string, Entry[]]> | null;
      try {
        reply = (await reader.xreadgroup(
          'GROUP',
          this.group,
          this.name,
          'COUNT',
          free,
          'BLOCK',
          this.options.block,
          'STREAMS',
          this.keys.stream,
          '>',
        )) as Array<[string, Entry[]]> | null;
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof Error && err.message.startsWith('NOGROUP')) {
          // The stream or group was deleted under us: create them again and go on.
          await this.ensureGroup();
          continue;
        }
        throw err;
      }
      if (this.readFailures > 0) {
        this.readFailures = 0;
        this.logger.log(`consumer ${this.describe()} reads again`);
      }
      for (const [, entries] of reply ?? []) {
        for (const [id, fields] of entries) this.dispatch(id, fields, 1);
      }
    }
  }

  private dispatch(id: string, fields: string[] | null, deliveries: number): void {
    const abort = new AbortController();
    const done = this.handle(id, fields, deliveries, abort.signal).finally(() => {
      this.inFlight.delete(id);
      this.slotFreed.shift()?.();
    });
    this.inFlight.set(id, { done, abort });
  }

  private async handle(
    id: string,
    fields: string[] | null,
    deliveries: number,
    signal: AbortSignal,
  ): Promise<void> {
    const client = this.connection.client;
    const data = field(fields, 'd');
    let message: T;
    try {
      if (data === undefined)
        throw new Error('the entry has no "d" field (not written by a producer of this module)');
      message = JSON.parse(data) as T;
    } catch (err) {
      // Undecodable: no delivery can succeed, so it goes to the dead letters now.
      await this.bury(
        id,
        data ?? JSON.stringify(fields),
        deliveries,
        `cannot decode: ${(err as Error).message}`,
      );
      return;
    }
    this.totals.delivered += 1;
    if (deliveries > 1) this.totals.retried += 1;
    try {
      await this.handler(message, {
        id,
        stream: this.stream,
        group: this.group,
        deliveries,
        signal,
      });
    } catch (err) {
      this.counters.failed += 1;
      this.totals.handlerFailures += 1;
      const text = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      if (deliveries >= this.options.maxAttempts) {
        await this.bury(id, data, deliveries, text);
      } else {
        this.totals.failed += 1;
        await RECORD_ERROR.run(
          client,
          [this.keys.errors],
          [id, text.slice(0, 2000), 7 * 24 * 3600_000],
        ).catch(() => undefined);
      }
      return;
    }
    if (this.stopped && signal.aborted) return; // given up at shutdown: stays pending
    try {
      if (deliveries > 1)
        await ACK.run(client, [this.keys.stream, this.keys.errors], [this.group, id]);
      else await client.xack(this.keys.stream, this.group, id);
      this.counters.processed += 1;
      this.totals.acked += 1;
    } catch (err) {
      this.totals.failed += 1;
      // Stays pending: delivered again after visibilityTimeout. At least once, never lost.
      this.logger.warn(`could not acknowledge ${id} on ${this.describe()}: ${this.scrub(err)}`);
    }
  }

  private async bury(id: string, data: string, deliveries: number, error: string): Promise<void> {
    const client = this.connection.client;
    try {
      if (this.options.deadLetter) {
        await DEAD_LETTER.run(
          client,
          [this.keys.stream, this.keys.dead, this.keys.errors],
          [this.group, id, data, deliveries, error.slice(0, 2000)],
        );
      } else {
        await ACK.run(client, [this.keys.stream, this.keys.errors], [this.group, id]);
        this.logger.warn(
          `dropped message ${id} of ${this.describe()} after ${deliveries} deliveries: ${error.slice(0, 200)}`,
        );
      }
      this.counters.deadLettered += 1;
      this.totals.deadLettered += 1;
    } catch (err) {
      this.logger.warn(`could not dead-letter ${id} on ${this.describe()}: ${this.scrub(err)}`);
    }
  }

  /** Keeps the messages being handled claimed, so nobody takes over a live consumer's work. */
  private async heartbeat(): Promise<void> {
    if (this.stopped || this.inFlight.size === 0) return;
    try {
      await KEEP_CLAIMED.run(
        this.connection.client,
        [this.keys.stream],
        [this.group, this.name, ...this.inFlight.keys()],
      );
    } catch {
      // Redis unreachable: the next beat tries again; the worst case is a second delivery.
    }
  }

  /** Takes over messages left idle past `visibilityTimeout` by dead or frozen consumers. */
  private async reclaim(): Promise<void> {
    const free = this.options.concurrency - this.inFlight.size;
    if (this.stopped || free <= 0) return;
    const client = this.connection.client;
    this.counters.scans += 1;
    try {
      const [, entries] = (await client.xautoclaim(
        this.keys.stream,
        this.group,
        this.name,
        this.options.visibilityTimeout,
        '0-0',
        'COUNT',
        free,
      )) as [string, Array<Entry | null>, string[]?];
      const claimed = entries.filter(
        (e): e is Entry => Array.isArray(e) && !this.inFlight.has(e[0]),
      );
      if (claimed.length === 0 || this.stopped) return;
      this.counters.reclaimed += claimed.length;
      const ids = claimed.map(([id]) => id);
      const pending = (await client.xpending(
        this.keys.stream,
        this.group,
        ids[0],
        ids[ids.length - 1],
        ids.length + this.inFlight.size,
        this.name,
      )) as Array<[string, string, number, number]>;
      const deliveries = new Map(pending.map(([id, , , n]) => [id, Number(n)]));
      for (const [id, fields] of claimed) {
        const n = deliveries.get(id) ?? 2;
        if (n > this.options.maxAttempts) {
          void this.bury(id, field(fields, 'd') ?? '', n - 1, '');
        } else {
          this.dispatch(id, fields, n);
        }
      }
    } catch (err) {
      if (!this.stopped)
        this.logger.debug?.(`reclaim on ${this.describe()} failed: ${this.scrub(err)}`);
    }
  }

  private describe(): string {
    return `stream "${this.stream.slice(0, 100)}" group "${this.group.slice(0, 100)}"`;
  }

  private scrub(err: unknown): string {
    return this.connection.scrub(err instanceof Error ? err.message : String(err));
  }
}

/** The value of `name` in an entry's flat field list. */
function field(fields: string[] | null, name: string): string | undefined {
  if (!fields) return undefined;
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === name) return fields[i + 1];
  return undefined;
}

/** A consumer name unique to this process. */
export function defaultConsumerName(): string {
  return `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
}
