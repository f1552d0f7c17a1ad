import { checkInteger, checkMs as checkDuration, checkName } from '../common/checks.js';
import { describeValue as shown } from '../common/describe.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import { RedisScript } from '../connection/script.js';

/** A value a record field can hold: anything JSON can carry. */
export type RecordValue =
  string | number | boolean | null | RecordValue[] | { [key: string]: RecordValue };

/** The shape of a record: named fields of JSON values. */
export type RecordShape = Record<string, RecordValue>;

/** Options of `RedisService.records`. */
export interface RecordsOptions {
  /** How long a record lives after its last write or `touch`, in ms (at most a year). */
  ttl: number;
}

/** The most fields one write may carry (Lua's `unpack` has a bound). */
export const MAX_RECORD_FIELDS = 1000;

const SET = new RedisScript<number>(
  'records.set',
  `redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1`,
);

const PATCH = new RedisScript<number>(
  'records.patch',
  `if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1`,
);

const INCR = new RedisScript<number>(
  'records.incr',
  `local n = redis.call('HINCRBY', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return n`,
);

/**
 * Hash records with a lifetime (a task's status, a job's progress): one Redis hash per id,
 * each field JSON-encoded, every write refreshing the TTL in the same atomic step, so a record
 * never outlives its TTL and never loses it. Obtained from `RedisService.records()`.
 *
 * @example
 * ```ts
 * interface TaskStatus { [field: string]: RecordValue; state: string; attempts: number }
 * const tasks = redis.records<TaskStatus>('task', { ttl: 3_600_000 });
 * await tasks.set('42', { state: 'queued', attempts: 0 });
 * await tasks.incr('42', 'attempts');
 * const status = await tasks.get('42'); // { state: 'queued', attempts: 1 } or null
 * ```
 */
export class RedisRecords<T extends RecordShape = RecordShape> {
  private readonly ttl: number;

  constructor(
    private readonly connection: RedisConnection,
    /** The key namespace: record `id` lives at `<keyPrefix><namespace>:<id>`. */
    readonly namespace: string,
    options: RecordsOptions,
  ) {
    checkName(namespace, 'records namespace', 200);
    if (options === null || typeof options !== 'object') {
      throw new TypeError(`records("${namespace}") options must be an object like { ttl: 60000 }`);
    }
    this.ttl = checkDuration(options.ttl, `records("${namespace}") options.ttl`);
  }

  /** Replaces the record with `value` and restarts its TTL. */
  async set(id: string, value: T): Promise<void> {
    const fields = this.encode(value, 'set', true);
    await SET.run(this.connection.client, [this.key(id)], [this.ttl, ...fields]);
  }

  /** The record, or `null` when there is none (one round trip: `HGETALL`). */
  async get(id: string): Promise<T | null> {
    const hash = await this.connection.client.hgetall(this.key(id));
    const names = Object.keys(hash);
    if (names.length === 0) return null;
    const record: Record<string, RecordValue> = {};
    for (const name of names) record[name] = decode(hash[name]);
    return record as T;
  }

  /**
   * Writes some fields of an existing record and restarts its TTL; `false` (and nothing
   * written) when there is no record.
   */
  async patch(id: string, fields: Partial<T>): Promise<boolean> {
    const encoded = this.encode(fields, 'patch', false);
    if (encoded.length === 0) return this.touch(id);
    return (await PATCH.run(this.connection.client, [this.key(id)], [this.ttl, ...encoded])) === 1;
  }

  /**
   * Adds `by` to an integer field (creating the record and the field at 0 when absent) and
   * restarts the TTL; returns the new value. Not idempotent: do not retry it blindly.
   */
  async incr(id: string, field: keyof T & string, by = 1): Promise<number> {
    checkName(field, 'records.incr field', 1024);
    checkInteger(by, 'records.incr by', -Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
    return INCR.run(this.connection.client, [this.key(id)], [this.ttl, field, by]);
  }

  /** Restarts the record's TTL; `false` when there is no record. */
  async touch(id: string): Promise<boolean> {
    return (await this.connection.client.pexpire(this.key(id), this.ttl)) === 1;
  }

  /** Removes the record; `false` when there was none. */
  async delete(id: string): Promise<boolean> {
    return (await this.connection.client.unlink(this.key(id))) === 1;
  }

  private key(id: string): string {
    return `${this.namespace}:${checkName(id, 'records id', 1024)}`;
  }

  private encode(value: unknown, method: string, required: boolean): string[] {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw new TypeError(
        `records.${method} value must be an object of fields, got ${shown(value)}`,
      );
    }
    const args: string[] = [];
    for (const [field, fieldValue] of Object.entries(value)) {
      if (fieldValue === undefined) continue;
      if (field.length === 0) throw new TypeError(`records.${method}: a field name is empty`);
      let text: string | undefined;
      try {
        text = JSON.stringify(fieldValue);
      } catch (err) {
        throw new TypeError(
          `records.${method} field "${field.slice(0, 100)}" cannot be stored as JSON: ${(err as Error).message}`,
          { cause: err },
        );
      }
      if (text === undefined) {
        throw new TypeError(
          `records.${method} field "${field.slice(0, 100)}" cannot be stored as JSON, got ${shown(fieldValue)}`,
        );
      }
      args.push(field, text);
    }
    if (args.length / 2 > MAX_RECORD_FIELDS) {
      throw new RangeError(
        `records.${method} value has ${args.length / 2} fields; at most ${MAX_RECORD_FIELDS} fit one write`,
      );
    }
    if (required && args.length === 0) {
      throw new TypeError(`records.${method} value has no fields: use delete() to remove a record`);
    }
    return args;
  }
}

/** A field as JSON, or as the raw string another writer (`redis-cli HSET`) left there. */
function decode(text: string): RecordValue {
  try {
    return JSON.parse(text) as RecordValue;
  } catch {
    return text;
  }
}
