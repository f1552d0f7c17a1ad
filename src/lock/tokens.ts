import { randomFillSync } from 'node:crypto';

/**
 * Holder tokens: 128 random bits each, hex. Drawn from the CSPRNG 256 tokens at a time: one
 * `randomBytes(16)` per lock was about 6% of the CPU of an uncontended acquire + release.
 */
export class TokenSource {
  private readonly pool = Buffer.allocUnsafe(16 * 256);
  private offset = this.pool.length;

  next(): string {
    if (this.offset === this.pool.length) {
      randomFillSync(this.pool);
      this.offset = 0;
    }
    const token = this.pool.toString('hex', this.offset, this.offset + 16);
    this.offset += 16;
    return token;
  }
}
