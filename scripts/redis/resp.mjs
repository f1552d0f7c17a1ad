// A tiny RESP2 client (Node built-ins only): enough to configure and probe the servers these
// scripts start, without depending on ioredis.

import net from 'node:net';

import { HOST } from './constants.mjs';

// Tiny RESP2 client
// ---------------------------------------------------------------------------

/** An error reply (`-ERR ...`) from Redis. */
export class RespError extends Error {
  constructor(message) {
    super(message);
    this.name = 'RespError';
  }
}

const CRLF = Buffer.from('\r\n');

function encodeCommand(args) {
  const parts = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = Buffer.isBuffer(arg) ? arg : Buffer.from(String(arg), 'utf8');
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, CRLF);
  }
  return Buffer.concat(parts);
}

// Returns [value, nextOffset], or undefined when the buffer does not hold a whole reply yet.
function parseReply(buf, offset) {
  if (offset >= buf.length) return undefined;
  const lineEnd = buf.indexOf(CRLF, offset);
  if (lineEnd === -1) return undefined;
  const type = String.fromCharCode(buf[offset]);
  const line = buf.toString('utf8', offset + 1, lineEnd);
  const next = lineEnd + 2;
  switch (type) {
    case '+':
      return [line, next];
    case '-':
      return [new RespError(line), next];
    case ':':
      return [Number(line), next];
    case '$': {
      const len = Number.parseInt(line, 10);
      if (len < 0) return [null, next];
      if (buf.length < next + len + 2) return undefined;
      return [buf.toString('utf8', next, next + len), next + len + 2];
    }
    case '*': {
      const count = Number.parseInt(line, 10);
      if (count < 0) return [null, next];
      const items = [];
      let pos = next;
      for (let i = 0; i < count; i++) {
        const parsed = parseReply(buf, pos);
        if (!parsed) return undefined;
        items.push(parsed[0]);
        pos = parsed[1];
      }
      return [items, pos];
    }
    default:
      throw new Error(`RESP protocol error: unexpected type byte ${JSON.stringify(type)}`);
  }
}

// One connection, pipelined commands (AUTH first when a password is given); resolves with the
// replies of `commands` (top-level error replies are returned as RespError values, not thrown).
export function sendCommands({ host = HOST, port, password, timeoutMs = 2000 }, commands) {
  const all =
    password !== undefined && password !== null ? [['AUTH', password], ...commands] : commands;
  return new Promise((resolve, reject) => {
    const replies = [];
    let buffer = Buffer.alloc(0);
    let settled = false;
    const socket = net.connect({ host, port });
    const timer = setTimeout(
      () => finish(new Error(`no reply from ${host}:${port} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    function finish(error) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (error) return reject(error);
      if (all !== commands) {
        const auth = replies.shift();
        if (auth instanceof RespError) return reject(new RespError(`AUTH failed: ${auth.message}`));
      }
      resolve(replies);
    }
    socket.setNoDelay(true);
    socket.on('connect', () => socket.write(Buffer.concat(all.map(encodeCommand))));
    socket.on('data', (chunk) => {
      buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
      try {
        let parsed;
        while (replies.length < all.length && (parsed = parseReply(buffer, 0))) {
          replies.push(parsed[0]);
          buffer = buffer.subarray(parsed[1]);
        }
      } catch (error) {
        return finish(error);
      }
      if (replies.length === all.length) finish();
    });
    socket.on('error', (error) => finish(error));
    socket.on('close', () =>
      finish(new Error(`connection to ${host}:${port} closed before all replies arrived`)),
    );
  });
}

/**
 * Send one command over a fresh connection and return its reply. Error replies reject with
 * RespError. Bulk strings are decoded as UTF-8; nil is null; integers are numbers.
 */
export async function sendCommand(target, args) {
  if (!Array.isArray(args) || args.length === 0)
    throw new TypeError('sendCommand: args must be a non-empty array');
  const [reply] = await sendCommands(target, [args]);
  if (reply instanceof RespError) throw reply;
  return reply;
}

// ---------------------------------------------------------------------------
