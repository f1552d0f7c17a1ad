import type { CacheEntry } from './cache-entry.js';
import type { DegradingCaller } from './cache.degrade.js';
import { cacheKeys } from './cache.scripts.js';
import type { CacheState } from './cache.types.js';
import type { CacheScripts } from './defined-scripts.js';

/**
 * Tag versions: each tag is a counter in Redis that only grows (see cache.scripts.ts); an
 * entry remembers the versions it was written under and is valid only under exactly those.
 * The latest versions seen are memoized, trusted only while the cache is coherent.
 */
export class TagVersions {
  private readonly memo = new Map<string, number>();

  constructor(
    private readonly redis: DegradingCaller,
    private readonly scripts: CacheScripts,
    private readonly state: CacheState,
  ) {}

  /**
   * Whether an L1 entry's tags are current, by the memo alone. Version 0 (a counter that did
   * not exist, before versions were clock-based) is never valid.
   */
  valid(entry: CacheEntry): boolean {
    if (!entry.tags) return true;
    for (const tag in entry.tags) {
      const known = this.memo.get(tag);
      if (known === undefined || known !== entry.tags[tag] || known === 0) return false;
    }
    return true;
  }

  /** Whether an entry read from Redis is still valid under its tags (false when unsure). */
  async current(tags: Record<string, number>): Promise<boolean> {
    const current = await this.versionsFor(tags).catch(() => undefined);
    return (
      current !== undefined &&
      Object.keys(tags).every((tag) => tags[tag] > 0 && current[tag] === tags[tag])
    );
  }

  /**
   * Current versions of an entry's tags: from the memo while coherent, else from Redis (one GET
   * per tag). An entry written under a version higher than the memo's proves the memo behind
   * (a counter created by a write is not announced): that tag is read from Redis.
   */
  private async versionsFor(tags: Record<string, number>): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    const unknown = Object.keys(tags).filter((tag) => {
      const known = this.state.coherent ? this.memo.get(tag) : undefined;
      if (known !== undefined && known >= tags[tag]) out[tag] = known;
      return out[tag] === undefined;
    });
    if (unknown.length) {
      const values = await this.redis.call('read tag versions', (client) =>
        Promise.all(unknown.map((tag) => client.get(cacheKeys.tag(tag)))),
      );
      unknown.forEach((tag, i) => {
        // A missing counter is version 0, under which no entry is valid; it is not remembered.
        const version = Number(values[i] ?? 0);
        out[tag] = version;
        if (this.state.coherent && version > 0) this.note(tag, version);
      });
    }
    return out;
  }

  /**
   * The versions to write an entry under, from Redis (one script per tag, in parallel): each
   * counter is created if missing and kept at least `lifetime` ms, as long as the entry.
   */
  async forWrite(tags: string[], lifetime: number): Promise<Record<string, number>> {
    const values = await this.redis.call('read tag versions', () =>
      Promise.all(tags.map((tag) => this.scripts.tagVersion.run([cacheKeys.tag(tag)], [lifetime]))),
    );
    const out: Record<string, number> = {};
    tags.forEach((tag, i) => {
      out[tag] = Number(values[i]);
      if (this.state.coherent) this.note(tag, out[tag]);
    });
    return out;
  }

  /** Bumps every tag (one script each, in parallel); returns the new versions. */
  async bump(tags: string[], lifetime: number): Promise<Record<string, number>> {
    const versions = await Promise.all(
      tags.map((tag) => this.scripts.tagBump.run([cacheKeys.tag(tag)], [lifetime])),
    );
    const bumped: Record<string, number> = {};
    tags.forEach((tag, i) => {
      bumped[tag] = Number(versions[i]);
      this.note(tag, bumped[tag]);
    });
    return bumped;
  }

  /** Remembers a version seen (announced, read or written); versions only grow. */
  note(tag: string, version: number): void {
    const known = this.memo.get(tag);
    if (known === undefined || version > known) this.memo.set(tag, version);
  }

  clear(): void {
    this.memo.clear();
  }
}
