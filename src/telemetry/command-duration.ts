import type { Attributes, Histogram, Meter } from '@opentelemetry/api';

import { recordCommands, type CommandListener } from './command-recorder.js';

/** Histogram boundaries the database semantic conventions recommend, in seconds. */
export const DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10];

/**
 * Durations held before they go to the SDK. Past this many, the next command's hook hands them
 * over itself: a process that never idles (nor collects) holds a bounded amount.
 */
export const PENDING_DURATIONS = 512;

/** What the command histogram needs of a connection. */
export interface CommandDurationSource {
  /** The registered connection's name (`db.client.connection.pool.name`). */
  name: string;
  /** The database index (`db.namespace`). */
  database: number;
  client: Parameters<typeof recordCommands>[0];
}

/** The command histogram of one connection. */
export interface CommandDurations {
  /** Hands every held duration to the SDK now. */
  flush(): void;
  /** Flushes, then unhooks the client. */
  stop(): void;
}

/**
 * `db.client.operation.duration` for every command the connection sends. The SDK's `record`
 * hashes the attributes of every call (a sort and a `JSON.stringify`), which costs more than
 * the hook: the hook only stores the duration and its attribute set, and the SDK gets them
 * after the reply has been handled — on `setImmediate`, when the process next waits for I/O —
 * and, whatever happens first, when the meter collects (see `flush`: the caller wires it to an
 * observable callback of the same meter, which the SDK runs before it reads this histogram),
 * when the buffer is full, and when the connection is unhooked. No duration is dropped.
 */
export function instrumentCommandDuration(
  meter: Meter,
  src: CommandDurationSource,
): CommandDurations {
  const histogram = meter.createHistogram('db.client.operation.duration', {
    description: 'Duration of Redis commands sent through the connection.',
    unit: 's',
    advice: { explicitBucketBoundaries: DURATION_BUCKETS },
  });
  const pending = new PendingDurations(histogram, attributeSets(src));
  const unhook = recordCommands(src.client, pending.add);
  return {
    flush: pending.flush,
    stop: () => {
      unhook();
      pending.flush();
    },
  };
}

/**
 * The attribute set of a command name and error type, made once per pair: only the semantic
 * conventions' attributes, since the SDK hashes all of them on every recording.
 */
function attributeSets(src: CommandDurationSource): (op: string, err?: string) => Attributes {
  const made = new Map<string, Attributes>();
  const namespace = String(src.database);
  return (operation, errorType) => {
    const id = errorType === undefined ? operation : `${operation}\u0000${errorType}`;
    let attrs = made.get(id);
    if (!attrs) {
      attrs = {
        'db.system.name': 'redis',
        'db.operation.name': operation,
        'db.namespace': namespace,
        'db.client.connection.pool.name': src.name,
        ...(errorType !== undefined ? { 'error.type': errorType } : {}),
      };
      // Command names and error types are a small set; made-up ones must not grow this forever.
      if (made.size < 2000) made.set(id, attrs);
    }
    return attrs;
  };
}

/** Durations waiting for `histogram.record`, in preallocated arrays (nothing made per command). */
class PendingDurations {
  private readonly seconds = new Float64Array(PENDING_DURATIONS);
  private readonly operations = new Array<string>(PENDING_DURATIONS).fill('');
  private readonly errorTypes = new Array<string | undefined>(PENDING_DURATIONS).fill(undefined);
  private size = 0;
  private drain: NodeJS.Immediate | undefined;

  constructor(
    private readonly histogram: Histogram,
    private readonly attributes: (operation: string, errorType?: string) => Attributes,
  ) {}

  /** The hook's listener: runs on the reply path, so it only stores. */
  readonly add: CommandListener = (operation, seconds, errorType) => {
    if (this.size === PENDING_DURATIONS) this.flush();
    const i = this.size++;
    this.seconds[i] = seconds;
    this.operations[i] = operation;
    this.errorTypes[i] = errorType;
    this.drain ??= setImmediate(this.flush);
  };

  readonly flush = (): void => {
    if (this.drain !== undefined) {
      clearImmediate(this.drain);
      this.drain = undefined;
    }
    const n = this.size;
    // Emptied first: a recording that throws loses its own duration, never the others'.
    this.size = 0;
    for (let i = 0; i < n; i++) {
      try {
        this.histogram.record(
          this.seconds[i],
          this.attributes(this.operations[i], this.errorTypes[i]),
        );
      } catch {
        // A metrics sink must never break the command path, nor the collection.
      }
    }
  };
}
