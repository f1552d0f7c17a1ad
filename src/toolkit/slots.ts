import { createHash } from 'node:crypto';

/** Redis Cluster has 16,384 hash slots; a key's slot is CRC16 of its hash tag (or whole name). */
export const CLUSTER_SLOTS = 16384;

// CRC16-CCITT (XMODEM), the checksum Redis Cluster uses for key slots.
const TABLE = (() => {
  const table = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let crc = i << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1;
    table[i] = crc & 0xffff;
  }
  return table;
})();

function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const byte of bytes) crc = ((crc << 8) ^ TABLE[((crc >> 8) ^ byte) & 0xff]) & 0xffff;
  return crc;
}

/**
 * The cluster hash slot of a full key name (prefix included), computed locally the way Redis
 * does: only the part between the first `{` and the next `}` counts, when that part is not empty.
 */
export function keySlot(key: string | Buffer): number {
  const bytes = typeof key === 'string' ? Buffer.from(key) : key;
  const open = bytes.indexOf(0x7b);
  if (open !== -1) {
    const close = bytes.indexOf(0x7d, open + 1);
    if (close > open + 1) return crc16(bytes.subarray(open + 1, close)) % CLUSTER_SLOTS;
  }
  return crc16(bytes) % CLUSTER_SLOTS;
}

/**
 * The keys (as the caller wrote them, without `keyPrefix`) grouped by slot, or `undefined`
 * when they all share one slot.
 */
export function slotGroups(
  keys: readonly string[],
  keyPrefix: string,
): Map<number, string[]> | undefined {
  const groups = new Map<number, string[]>();
  for (const key of keys) {
    const slot = keySlot(keyPrefix + key);
    const group = groups.get(slot);
    if (group) group.push(key);
    else groups.set(slot, [key]);
  }
  return groups.size > 1 ? groups : undefined;
}

/**
 * A hash tag for a user-given name: the name itself when it has no braces (readable in
 * `redis-cli`), otherwise a short digest of it, so braces in a name can never split the keys
 * that must share its slot.
 */
export function hashTag(name: string): string {
  return /[{}]/.test(name)
    ? `h:${createHash('sha1').update(name).digest('hex').slice(0, 16)}`
    : name;
}
