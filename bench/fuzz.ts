/**
 * Fuzzer for baton's three input surfaces (issue 7):
 *
 *   incumbent  the control socket of a serving incumbent (a real `baton run` with
 *              fixtures/kv): we connect to the supervisor's control path as a client,
 *              like test/support/rogue-supervisor.ts, before or after the handshake;
 *   successor  fixtures/primitive started as a successor by a fake supervisor (this
 *              process, src/generation.ts spawnApp: listeners + a socketpair control fd);
 *   admin      the admin socket of that same `baton run` (HTTP over a unix socket),
 *              every route but the actions (upgrade, stop, maintenance runs).
 *
 *   npm run fuzz -- --inputs 100000 --seed 1
 *
 * Inputs (seeded, so a seed replays the same inputs): golden vectors
 * (protocol/vectors/*.json) as they are and mutated (bit flips, interesting bytes,
 * inserts, deletes, duplicated ranges, length/version rewrites), schema-shaped messages
 * with wrong kinds / missing / extra / duplicate fields, random msgpack values (deep
 * nesting, ext types, bad UTF-8, non-str keys), random bytes, oversize and undersize
 * length fields, valid frames in invalid orders; for the admin socket, HTTP requests
 * (templates, mutated, pipelined, oversize headers and bodies, chunked bodies, non-HTTP
 * bytes, JSON bodies nested up to 6,000 deep, paths up to 15 KB, long header values).
 * Every input is written in pieces split at random points. After the fuzz, rounds of slow
 * clients (idle, or trickling a request that never ends) hold every listener the
 * supervisor serves — the admin socket, the TCP admin API, the metrics endpoint — 40 at a
 * time: each must be closed by the server within its bound while real requests on the
 * same listener are all answered (issue #21).
 *
 * Oracle. For the control sockets a model of the receiver (the reference FrameDecoder
 * plus the incumbent/successor transition rules) predicts each input's answer: nothing
 * (a Heartbeat, a frame the state accepts), a reply (Resumed), or an Error frame with a
 * named code followed by the close (or just the close, for a stream cut inside a frame
 * or an Abort). The peer must answer exactly that within a bound. Inputs the model says
 * would really act (PrepareHandoff naming the session, Shutdown, Begin, any message a
 * newer engine accepts that the model does not know) are drawn again: they are not bad
 * input, and would stop the service under test. For the admin socket: an HTTP answer or
 * a close within a bound; templates must get their known status; no 5xx; a POST to
 * /v1/upgrade, /v1/stop or /v1/jobs is never sent.
 *
 * Throughout: the incumbent keeps its pid, holds the data-dir lock and answers HTTP
 * (checked every 2 s, with a write read back), `baton run` stays up, every successor
 * exits with code 0 once it lost its supervisor, and the RSS of the incumbent and the
 * supervisor after the run stays within a bound of what it was after warm-up.
 * Exit 1 on any violation, printing the seed and the input (hex).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { adminRequest } from '../src/admin.js';
import { encodeFrame, FrameDecoder } from '../src/codec.js';
import { spawnApp, type AppProcess } from '../src/generation.js';
import { INCUMBENT_TRANSITIONS } from '../src/incumbent.js';
import { bindListener, parseListenAddress, type HeldListener } from '../src/listeners.js';
import { lockHolder } from '../src/lock.js';
import { createLogger } from '../src/log.js';
import { MESSAGE_PLANS, type FieldPlan } from '../src/messages.js';
import { isAlive } from '../src/proc.js';
import { MAX_FRAME_LENGTH, type Message } from '../src/schema.js';
import { SUCCESSOR_TRANSITIONS } from '../src/successor.js';
import { request } from './lib/http.js';
import { freePort } from './lib/scope.js';
import { Rng } from './lib/prng.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The checkout: bench/ under it when run from source (vitest), dist/bench/ when built. */
const ROOT = existsSync(path.join(HERE, '../package.json')) ? path.resolve(HERE, '..') : path.resolve(HERE, '../..');
const CLI = path.join(ROOT, 'dist/src/cli.js');
const KV = [process.execPath, path.join(ROOT, 'dist/fixtures/kv/main.js')];
const PRIMITIVE = [process.execPath, path.join(ROOT, 'dist/fixtures/primitive/app.js')];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** How long a peer may take to answer (or close) after the input that calls for it. */
const ANSWER_BOUND_MS = 5_000;

class Violation extends Error {
  constructor(
    message: string,
    readonly input?: Buffer,
  ) {
    super(message);
  }
}

// ============================================================================ msgpack building blocks

function u8(...b: number[]): Buffer {
  return Buffer.from(b);
}

function be(n: number | bigint, bytes: 2 | 4 | 8): Buffer {
  const b = Buffer.alloc(bytes);
  if (bytes === 8) b.writeBigUInt64BE(BigInt.asUintN(64, BigInt(n)));
  else b.writeUIntBE(Number(n), 0, bytes);
  return b;
}

/** A msgpack header of a length-prefixed family, in the smallest or a random legal size. */
function lenHeader(rng: Rng, n: number, fix: number | undefined, fixLimit: number, t8: number | undefined, t16: number, t32: number): Buffer {
  const options: Buffer[] = [];
  if (fix !== undefined && n < fixLimit) options.push(u8(fix | n));
  if (t8 !== undefined && n < 0x100) options.push(u8(t8, n));
  if (n < 0x10000) options.push(Buffer.concat([u8(t16), be(n, 2)]));
  options.push(Buffer.concat([u8(t32), be(n, 4)]));
  return rng.chance(0.8) ? options[0]! : rng.pick(options);
}

const mp = {
  nil: () => u8(0xc0),
  bool: (v: boolean) => u8(v ? 0xc3 : 0xc2),
  /** Any legal encoding of a non-negative integer (positive fixint, uint8..64, int8..64). */
  uint(rng: Rng, v: bigint, canonical = rng.chance(0.7)): Buffer {
    const forms: Buffer[] = [];
    if (v < 0x80n) forms.push(u8(Number(v)));
    if (v < 0x100n) forms.push(u8(0xcc, Number(v)));
    if (v < 0x10000n) forms.push(Buffer.concat([u8(0xcd), be(v, 2)]));
    if (v < 0x1_0000_0000n) forms.push(Buffer.concat([u8(0xce), be(v, 4)]));
    forms.push(Buffer.concat([u8(0xcf), be(v, 8)]));
    if (v < 0x80n) forms.push(u8(0xd0, Number(v)));
    if (v < 0x8000n) forms.push(Buffer.concat([u8(0xd1), be(v, 2)]));
    if (v < 0x8000_0000n) forms.push(Buffer.concat([u8(0xd2), be(v, 4)]));
    if (v < 0x8000_0000_0000_0000n) forms.push(Buffer.concat([u8(0xd3), be(v, 8)]));
    return canonical ? forms[0]! : rng.pick(forms);
  },
  negint(rng: Rng, v: bigint): Buffer {
    if (v >= -32n && rng.chance(0.5)) return u8(Number(v) & 0xff);
    if (v >= -128n && rng.chance(0.5)) return u8(0xd0, Number(v) & 0xff);
    const b = Buffer.alloc(9);
    b[0] = 0xd3;
    b.writeBigInt64BE(v, 1);
    return b;
  },
  float(rng: Rng, v: number): Buffer {
    if (rng.chance(0.5)) {
      const b = Buffer.alloc(5);
      b[0] = 0xca;
      b.writeFloatBE(v, 1);
      return b;
    }
    const b = Buffer.alloc(9);
    b[0] = 0xcb;
    b.writeDoubleBE(v, 1);
    return b;
  },
  strBytes: (rng: Rng, bytes: Buffer) => Buffer.concat([lenHeader(rng, bytes.length, 0xa0, 32, 0xd9, 0xda, 0xdb), bytes]),
  str: (rng: Rng, s: string) => mp.strBytes(rng, Buffer.from(s, 'utf8')),
  bin: (rng: Rng, bytes: Uint8Array) => Buffer.concat([lenHeader(rng, bytes.length, undefined, 0, 0xc4, 0xc5, 0xc6), Buffer.from(bytes)]),
  array: (rng: Rng, items: Buffer[]) => Buffer.concat([lenHeader(rng, items.length, 0x90, 16, undefined, 0xdc, 0xdd), ...items]),
  map: (rng: Rng, entries: [Buffer, Buffer][]) => Buffer.concat([lenHeader(rng, entries.length, 0x80, 16, undefined, 0xde, 0xdf), ...entries.flat()]),
  ext(rng: Rng): Buffer {
    const type = rng.int(0, 255);
    const n = rng.pick([1, 2, 4, 8, 16, 0, 3, 20]);
    const data = rng.bytes(n);
    const fixed: Record<number, number> = { 1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8 };
    if (fixed[n] !== undefined && rng.chance(0.6)) return Buffer.concat([u8(fixed[n]!, type), data]);
    return Buffer.concat([u8(0xc7, n, type), data]);
  },
};

/** Frame = u32be length | u16be version | body. */
function frame(body: Buffer, version = 1, length = body.length + 2): Buffer {
  const h = Buffer.alloc(6);
  h.writeUInt32BE(length >>> 0, 0);
  h.writeUInt16BE(version & 0xffff, 4);
  return Buffer.concat([h, body]);
}

// ============================================================================ control-protocol inputs

export interface Vector {
  name: string;
  bytes: Buffer;
}

export function loadVectors(): { valid: Vector[]; invalid: Vector[] } {
  const read = (f: string): Vector[] =>
    (JSON.parse(readFileSync(path.join(ROOT, 'protocol/vectors', f), 'utf8')) as { name: string; hex: string }[]).map((v) => ({
      name: v.name,
      bytes: Buffer.from(v.hex, 'hex'),
    }));
  return { valid: read('valid.json'), invalid: read('invalid.json') };
}

const INTERESTING_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xff, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc7, 0xca, 0xcb, 0xcc, 0xcf, 0xd0, 0xd3, 0xd4, 0xd8, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xa0, 0x90, 0x8f, 0x9f, 0xbf];
const INTERESTING_LENGTHS = [0, 1, 2, 3, 5, 6, 0x7f, 0xff, 0x100, 0xffff, 0x10000, MAX_FRAME_LENGTH - 1, MAX_FRAME_LENGTH, MAX_FRAME_LENGTH + 1, 0x7fffffff, 0x80000000, 0xffffffff];

/** One mutation of `b` (a copy). */
function mutate(rng: Rng, b: Buffer): Buffer {
  const out = Buffer.from(b);
  const at = () => rng.int(0, Math.max(out.length - 1, 0));
  switch (rng.int(0, 9)) {
    case 0: // bit flip
      if (out.length) out[at()]! ^= 1 << rng.int(0, 7);
      return out;
    case 1: // interesting byte
      if (out.length) out[at()] = rng.pick(INTERESTING_BYTES);
      return out;
    case 2: // random byte
      if (out.length) out[at()] = rng.int(0, 255);
      return out;
    case 3: {
      // insert bytes
      const i = at();
      return Buffer.concat([out.subarray(0, i), rng.chance(0.5) ? u8(rng.pick(INTERESTING_BYTES)) : rng.bytes(rng.int(1, 8)), out.subarray(i)]);
    }
    case 4: {
      // delete a range
      const i = at();
      return Buffer.concat([out.subarray(0, i), out.subarray(Math.min(out.length, i + rng.int(1, 8)))]);
    }
    case 5: {
      // duplicate a range
      const i = at();
      const j = Math.min(out.length, i + rng.int(1, 16));
      return Buffer.concat([out.subarray(0, j), out.subarray(i, j), out.subarray(j)]);
    }
    case 6: // truncate
      return out.subarray(0, rng.int(0, out.length));
    case 7: // length field
      if (out.length >= 4) out.writeUInt32BE(rng.chance(0.5) ? rng.pick(INTERESTING_LENGTHS) : (out.readUInt32BE(0) + rng.int(-3, 3)) >>> 0, 0);
      return out;
    case 8: // version field
      if (out.length >= 6) out.writeUInt16BE(rng.pick([0, 1, 2, 3, 0x100, 0x7fff, 0xffff]), 4);
      return out;
    default: {
      // overwrite a u16/u32 inside the body with an interesting length (hits map/str/bin headers)
      if (out.length >= 10) {
        const i = rng.int(6, out.length - 4);
        out.writeUInt32BE(rng.pick(INTERESTING_LENGTHS), i);
      }
      return out;
    }
  }
}

/** After body mutations, make the length field match again (so the body reaches the msgpack reader). */
function fixLength(b: Buffer): Buffer {
  if (b.length >= 6) b.writeUInt32BE(b.length - 4, 0);
  return b;
}

const UNICODE = ['é', 'ß', '漢字', '🙂', '\u0000', '\u200b', 'ǅ', '\uffff', 'a'.repeat(40)];

function randomString(rng: Rng, max = 24): string {
  const n = rng.int(0, max);
  let s = '';
  for (let i = 0; i < n; i++) s += rng.chance(0.9) ? String.fromCharCode(rng.int(0x20, 0x7e)) : rng.pick(UNICODE);
  return s;
}

/** Bytes that are not valid UTF-8 (lone continuation, overlong, surrogate, truncated sequence). */
function badUtf8(rng: Rng): Buffer {
  return rng.pick([u8(0x80), u8(0xc0, 0xaf), u8(0xed, 0xa0, 0x80), u8(0xe2, 0x82), u8(0xf8, 0x88, 0x80, 0x80, 0x80), u8(0xff), u8(0xf4, 0x90, 0x80, 0x80)]);
}

/** A random msgpack value; depth may exceed the 32-level limit on purpose. */
function randomValue(rng: Rng, depth: number, maxDepth: number): Buffer {
  const k = depth >= maxDepth ? rng.int(0, 7) : rng.int(0, 11);
  switch (k) {
    case 0:
      return mp.nil();
    case 1:
      return mp.bool(rng.chance(0.5));
    case 2:
      return mp.uint(rng, BigInt(rng.int(0, 2 ** 31)) * (rng.chance(0.2) ? 0x1_0000_0000n : 1n));
    case 3:
      return mp.negint(rng, -BigInt(rng.int(1, 2 ** 31)));
    case 4:
      return mp.float(rng, rng.chance(0.5) ? rng.int(0, 100) : rng.next() * 1e6);
    case 5:
      return rng.chance(0.9) ? mp.str(rng, randomString(rng)) : mp.strBytes(rng, Buffer.concat([Buffer.from('x'), badUtf8(rng)]));
    case 6:
      return mp.bin(rng, rng.bytes(rng.pick([0, 1, 31, 32, 33, rng.int(0, 64)])));
    case 7:
      return rng.chance(0.15) ? mp.ext(rng) : rng.chance(0.1) ? u8(0xc1) : mp.uint(rng, BigInt(rng.int(0, 200)));
    case 8:
    case 9: {
      const n = rng.int(0, depth > 20 ? 1 : 4);
      return mp.array(rng, Array.from({ length: n }, () => randomValue(rng, depth + 1, maxDepth)));
    }
    default: {
      const n = rng.int(0, depth > 20 ? 1 : 4);
      const entries: [Buffer, Buffer][] = [];
      for (let i = 0; i < n; i++) {
        const key = rng.chance(0.85) ? mp.str(rng, rng.chance(0.5) ? `k${i}` : randomString(rng, 8)) : randomValue(rng, depth + 1, depth + 1);
        entries.push([key, randomValue(rng, depth + 1, maxDepth)]);
      }
      if (entries.length && rng.chance(0.1)) entries.push(entries[0]!); // duplicate key
      return mp.map(rng, entries);
    }
  }
}

/** A value of the field's own kind (valid), or with `bad` a wrong one. */
function fieldValue(rng: Rng, f: FieldPlan, sessionId: string | undefined, bad: boolean): Buffer {
  if (bad) {
    switch (rng.int(0, 6)) {
      case 0:
        return mp.nil();
      case 1:
        return mp.float(rng, 5);
      case 2:
        return mp.negint(rng, -1n);
      case 3:
        return mp.str(rng, 'wrong kind');
      case 4:
        return mp.bin(rng, rng.bytes(rng.pick([0, 31, 33])));
      case 5:
        return mp.uint(rng, 0x1_0000_0000n + BigInt(rng.int(0, 9)));
      default:
        return randomValue(rng, 1, 4);
    }
  }
  switch (f.kind) {
    case 'u32':
      return mp.uint(rng, BigInt(rng.pick([0, 1, 127, 128, 255, 256, 65535, 65536, 0xffffffff, rng.int(0, 100_000)])));
    case 'u64':
      return mp.uint(rng, rng.pick([0n, 1n, 2n ** 53n + 1n, 2n ** 64n - 1n, BigInt(Date.now()), BigInt(rng.int(0, 1e9))]), rng.chance(0.5));
    case 'str':
      if (f.name === 'handoffId' && sessionId !== undefined && rng.chance(0.6)) return mp.str(rng, sessionId);
      return mp.str(rng, randomString(rng));
    case 'enum':
      return mp.str(rng, rng.chance(0.9) && f.values ? rng.pick([...f.values]) : randomString(rng, 10));
    case 'bool':
      return mp.bool(rng.chance(0.5));
    case 'bin':
      return mp.bin(rng, rng.bytes(rng.int(0, 40)));
    case 'bin32':
      return mp.bin(rng, rng.bytes(32));
    case 'revmap': {
      const n = rng.int(0, 6);
      return mp.map(
        rng,
        Array.from({ length: n }, (_, i): [Buffer, Buffer] => [mp.str(rng, rng.chance(0.8) ? String(i) : randomString(rng, 6) + i), mp.uint(rng, BigInt(rng.int(0, 1e6)))]),
      );
    }
    case 'strlist':
      return mp.array(rng, Array.from({ length: rng.int(0, 4) }, () => mp.str(rng, randomString(rng, 10))));
  }
}

/** A message-shaped body from the schema: valid, or with one or more things wrong. */
function schemaBody(rng: Rng, sessionId: string | undefined, valid: boolean, type?: string): Buffer {
  const types = [...MESSAGE_PLANS.keys()];
  const t = type ?? rng.pick(types);
  const plan = MESSAGE_PLANS.get(t)!;
  const entries: [Buffer, Buffer][] = [[mp.str(rng, 'type'), mp.str(rng, t)]];
  for (const f of plan.fields) {
    if (f.optional && rng.chance(0.5)) continue;
    if (!valid && rng.chance(0.12)) continue; // missing field
    entries.push([mp.str(rng, f.name), fieldValue(rng, f, sessionId, !valid && rng.chance(0.15))]);
  }
  if (rng.chance(0.15)) entries.push([mp.str(rng, `x-${randomString(rng, 6)}`), randomValue(rng, 1, valid ? 6 : 40)]); // unknown field: ignored
  if (rng.chance(0.2)) entries.reverse();
  if (!valid) {
    switch (rng.int(0, 5)) {
      case 0:
        entries.push(entries[rng.int(0, entries.length - 1)]!); // duplicate key
        break;
      case 1:
        entries[0] = [mp.str(rng, 'type'), rng.chance(0.5) ? mp.str(rng, randomString(rng, 12)) : randomValue(rng, 1, 3)];
        break;
      case 2:
        entries.shift(); // no type
        break;
      default:
        break;
    }
  }
  return mp.map(rng, entries);
}

/** A valid message of `type` for an attached session (via the reference encoder). */
function validFrame(rng: Rng, sessionId: string | undefined, type?: string): Buffer {
  for (;;) {
    const body = schemaBody(rng, sessionId, true, type);
    try {
      new FrameDecoder().push(frame(body)); // the generator can still produce e.g. a non-str revmap key
      return frame(body);
    } catch {
      // draw again
    }
  }
}

function heartbeat(rng: Rng): Buffer {
  if (rng.chance(0.5)) return encodeFrame({ type: 'Heartbeat', tsMs: BigInt(Date.now()), phase: randomString(rng, 12) } as Message);
  return validFrame(rng, undefined, 'Heartbeat');
}

export type ControlKind = 'vector' | 'invalid-vector' | 'mutated-vector' | 'schema' | 'msgpack' | 'random' | 'sequence' | 'length' | 'heartbeat';

/** One control-protocol input. */
function controlInput(rng: Rng, vectors: { valid: Vector[]; invalid: Vector[] }, sessionId: string | undefined): { kind: ControlKind; bytes: Buffer } {
  const kind = rng.weighted<ControlKind>({
    vector: 4,
    'invalid-vector': 6,
    'mutated-vector': 30,
    schema: 18,
    msgpack: 10,
    random: 8,
    sequence: 10,
    length: 6,
    heartbeat: 8,
  });
  switch (kind) {
    case 'vector':
      return { kind, bytes: rng.pick(vectors.valid).bytes };
    case 'invalid-vector':
      return { kind, bytes: rng.pick(vectors.invalid).bytes };
    case 'mutated-vector': {
      let b: Buffer = Buffer.from(rng.pick(rng.chance(0.8) ? vectors.valid : vectors.invalid).bytes);
      for (let i = rng.int(1, 4); i > 0; i--) b = mutate(rng, b);
      return { kind, bytes: rng.chance(0.5) ? fixLength(b) : b };
    }
    case 'schema':
      return { kind, bytes: frame(schemaBody(rng, sessionId, rng.chance(0.3)), rng.chance(0.95) ? 1 : rng.int(0, 3)) };
    case 'msgpack': {
      const body = rng.chance(0.8) ? randomValue(rng, 1, rng.chance(0.2) ? 40 : 6) : Buffer.concat([randomValue(rng, 1, 4), randomValue(rng, 1, 2)]);
      return { kind, bytes: frame(body) };
    }
    case 'random':
      return { kind, bytes: rng.bytes(rng.chance(0.8) ? rng.int(1, 64) : rng.int(65, 4096)) };
    case 'sequence': {
      // Valid frames in (mostly) invalid orders: any message types, this session's id.
      const n = rng.int(2, 5);
      return { kind, bytes: Buffer.concat(Array.from({ length: n }, () => validFrame(rng, sessionId))) };
    }
    case 'length': {
      const len = rng.pick(INTERESTING_LENGTHS);
      const body = rng.bytes(rng.int(0, 12));
      return { kind, bytes: frame(body, 1, len).subarray(0, rng.chance(0.3) ? rng.int(1, 6) : undefined) };
    }
    case 'heartbeat':
      return { kind, bytes: heartbeat(rng) };
  }
}

// ============================================================================ the model (oracle)

export type Side = 'incumbent' | 'successor';

/** What the peer must do with one input. */
export type Verdict =
  /** Nothing (keeps the connection): Heartbeats, accepted frames; `replies` frames may come back. */
  | { kind: 'accept'; replies: number; attached?: string }
  /** An Error frame with one of `codes` first, then the close. */
  | { kind: 'error'; codes: string[] }
  /** The close, without an Error (an Abort to a successor); `or` an Error with those codes, if a framing error followed in the same read. */
  | { kind: 'close'; or: string[] }
  /** The input ends inside a frame: the peer waits; after our end of stream it closes (E_TRUNCATED, local). */
  | { kind: 'incomplete' }
  /** Would really act (drain, shut down, begin, an unknown accepted message): not sent. */
  | { kind: 'acts'; why: string };

/** Messages whose effect in an attached state the model knows; anything else the state accepts "acts". */
function judgeMessage(side: Side, attached: string | undefined, msg: Message): { verdict?: Verdict; attach?: string; reply?: boolean } {
  if (msg.type === 'Heartbeat') return {};
  if (attached === undefined) {
    // Before the handshake the app waits for HelloAck only (agent.ts sayHello).
    if (msg.type === 'Error') return { verdict: { kind: 'error', codes: ['E_PEER_ERROR'] } };
    if (msg.type !== 'HelloAck') return { verdict: { kind: 'error', codes: ['E_UNEXPECTED_MESSAGE'] } };
    if (msg.protoVersion !== 1) return { verdict: { kind: 'error', codes: ['E_VERSION_MISMATCH'] } };
    return { attach: msg.handoffId };
  }
  const table = (side === 'incumbent' ? INCUMBENT_TRANSITIONS.ATTACHED : SUCCESSOR_TRANSITIONS.WAIT_BEGIN) as Record<string, unknown> | undefined;
  if (msg.type === 'Error') return { verdict: { kind: 'error', codes: ['E_PEER_ERROR'] } };
  if (!table?.[msg.type]) return { verdict: { kind: 'error', codes: ['E_UNEXPECTED_MESSAGE'] } };
  if ('handoffId' in msg && msg.handoffId !== attached) return { verdict: { kind: 'error', codes: ['E_WRONG_HANDOFF'] } };
  if (side === 'incumbent') {
    if (msg.type === 'ResumeAfterAbort' || msg.type === 'Abort') return { reply: true }; // nothing to undo: Resumed
    if (msg.type === 'Commit') return { verdict: { kind: 'error', codes: ['E_UNEXPECTED_MESSAGE', 'E_ABORTED'] } };
  } else if (msg.type === 'Abort') {
    return { verdict: { kind: 'close', or: [] } }; // the successor aborts and exits
  }
  return { verdict: { kind: 'acts', why: `${msg.type} in ${side === 'incumbent' ? 'ATTACHED' : 'WAIT_BEGIN'}` } };
}

/**
 * The verdict for `bytes` sent at a frame boundary to a peer in the given state
 * (attached: the session's handoff id, or undefined before HelloAck).
 */
export function judge(side: Side, attached: string | undefined, bytes: Buffer): Verdict {
  const dec = new FrameDecoder();
  let frames: { message: Message }[] = [];
  let framingCode: string | undefined;
  try {
    frames = dec.push(bytes);
  } catch (err) {
    framingCode = (err as { code: string }).code;
    frames = ((err as { details?: { decoded?: { message: Message }[] } }).details?.decoded ?? []) as { message: Message }[];
  }
  let session = attached;
  let replies = 0;
  // Frames before a framing error are still processed by the peer (channel.ts delivers them),
  // but its Error for the framing error may go out first when they arrive in the same read.
  for (const { message } of frames) {
    const j = judgeMessage(side, session, message);
    if (j.verdict?.kind === 'acts') return j.verdict;
    if (j.verdict?.kind === 'error') return { kind: 'error', codes: framingCode ? [...j.verdict.codes, framingCode] : j.verdict.codes };
    if (j.verdict?.kind === 'close') return { kind: 'close', or: framingCode ? [framingCode] : [] };
    if (j.attach !== undefined) session = j.attach;
    if (j.reply) replies++;
  }
  if (framingCode) return { kind: 'error', codes: [framingCode] };
  if (dec.buffered > 0) return { kind: 'incomplete' };
  return { kind: 'accept', replies, ...(session !== attached && { attached: session }) };
}

// ============================================================================ a control connection, as the client side

/** Frames and the end of one control connection, decoded with the reference decoder. */
class Peer {
  readonly frames: Message[] = [];
  ended = false;
  undecodable: string | undefined;
  /**
   * Our socket failed (EPIPE/ECONNRESET): the peer closed while we were still writing.
   * Node then destroys the socket and drops what it had not read yet, so an Error the
   * peer sent just before closing may never reach us.
   */
  socketError: string | undefined;
  private readonly decoder = new FrameDecoder();
  private waiters: (() => void)[] = [];

  constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      try {
        for (const f of this.decoder.push(chunk)) this.frames.push(f.message);
      } catch (err) {
        this.undecodable = (err as Error).message;
      }
      this.wake();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => (this.socketError = err.code ?? err.message)); // then 'close': seen as the end
    socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Waits until `pred()` holds or the bound passes; returns whether it held. */
  async until(pred: () => boolean, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!pred()) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return true;
  }

  /** Non-heartbeat frames received from index `from`. */
  since(from: number): Message[] {
    return this.frames.slice(from).filter((m) => m.type !== 'Heartbeat');
  }

  /** Writes `bytes` in 1..4 pieces split at random points, sometimes with a pause between them. */
  async write(rng: Rng, bytes: Buffer): Promise<void> {
    const cuts = [...new Set(Array.from({ length: rng.int(0, 3) }, () => rng.int(1, Math.max(bytes.length - 1, 1))))].sort((a, b) => a - b);
    let at = 0;
    const answered = this.frames.filter((m) => m.type === 'Error').length;
    for (const cut of [...cuts, bytes.length]) {
      if (cut <= at) continue;
      // Once the peer refused (or closed), the rest of the input would only hit a closed socket.
      if (this.socket.destroyed || this.ended || this.frames.filter((m) => m.type === 'Error').length > answered) return;
      this.socket.write(bytes.subarray(at, cut));
      at = cut;
      if (cut < bytes.length && rng.chance(0.5)) await sleep(rng.chance(0.8) ? 0 : 2);
    }
  }
}

interface Outcomes {
  /** Inputs by what they were answered with: accepted, Resumed, Error <code>, closed. */
  byAnswer: Record<string, number>;
  byKind: Record<string, number>;
  inputs: number;
  connections: number;
  /** Inputs the model said would act (drawn again, never sent). */
  redrawn: number;
  busyRetries: number;
}

function newOutcomes(): Outcomes {
  return { byAnswer: {}, byKind: {}, inputs: 0, connections: 0, redrawn: 0, busyRetries: 0 };
}

function count(rec: Record<string, number>, key: string): void {
  rec[key] = (rec[key] ?? 0) + 1;
}

/**
 * One connection's worth of inputs. With our HelloAck first (usually) or without it (the
 * peer then wants a HelloAck: the first input takes its place). Then a planned number of
 * inputs the model says the peer accepts (drawn from the same generators, so they are
 * just as varied: Heartbeats in every encoding, unknown fields, frames split anywhere,
 * ResumeAfterAbort to an attached incumbent), then one it must refuse — or, sometimes,
 * our end of stream. Checks the answer to each against the model.
 */
async function controlSession(
  side: Side,
  peer: Peer,
  rng: Rng,
  vectors: { valid: Vector[]; invalid: Vector[] },
  out: Outcomes,
  budget: number,
): Promise<number> {
  let session: string | undefined;
  const sentInputs: Buffer[] = [];
  const helloAck = rng.chance(0.85) ? `fuzz-${randomUUID()}` : undefined;
  if (helloAck !== undefined) {
    session = helloAck;
    peer.socket.write(encodeFrame({ type: 'HelloAck', handoffId: session, protoVersion: 1 }));
  }
  const t0 = Date.now();
  let lastSentAt = t0;
  const fail = (what: string): never => {
    const replay = sentInputs.map((b, i) => `#${i + 1} ${b.toString('hex')}`).join('\n  ');
    what += ` (${Date.now() - t0} ms into the connection, ${Date.now() - lastSentAt} ms after the last input)`;
    throw new Violation(
      `${side} (${helloAck ? `our HelloAck named ${helloAck}` : 'no HelloAck from us'}; ${session ? `attached as ${session}` : 'not attached'}): ${what}\n  inputs of this connection, in order:\n  ${replay}`,
    );
  };
  // Accepted inputs first (budget - 1 of them), then the one that ends the connection.
  const accepted = rng.int(0, Math.max(budget - 1, 0));
  for (let sent = 0; ; ) {
    const wantAccept = sent < accepted;
    let input: { kind: ControlKind; bytes: Buffer };
    let verdict: Verdict;
    for (let tries = 0; ; tries++) {
      input = controlInput(rng, vectors, session);
      verdict = judge(side, session, input.bytes);
      if (verdict.kind === 'acts') {
        out.redrawn++;
        continue;
      }
      // (After many tries, take what comes: the plan is a bias, not a rule.)
      if (tries > 200 || (verdict.kind === 'accept') === wantAccept) break;
    }
    const from = peer.frames.length;
    sentInputs.push(input.bytes);
    lastSentAt = Date.now();
    await peer.write(rng, input.bytes);
    sent++;
    out.inputs++;
    count(out.byKind, input.kind);
    if (peer.undecodable) fail(`sent bytes our decoder rejects: ${peer.undecodable}`);
    if (verdict.kind === 'accept') {
      if (verdict.attached !== undefined) session = verdict.attached;
      if (verdict.replies > 0) {
        // Resumed, one per ResumeAfterAbort/Abort.
        const got = await peer.until(() => peer.since(from).length >= verdict.replies || peer.ended, ANSWER_BOUND_MS);
        const replies = peer.since(from);
        if (!got || replies.length < verdict.replies || replies.some((m) => m.type !== 'Resumed')) {
          fail(`expected ${verdict.replies} Resumed, got ${JSON.stringify(replies.map((m) => m.type))}${peer.ended ? ' and the close' : ''}`);
        }
        count(out.byAnswer, 'Resumed');
      } else {
        count(out.byAnswer, 'accepted (no answer)');
      }
      if (peer.ended) fail('closed the connection after an input it must accept');
      if (sent < budget) continue;
      // Budget spent on accepted inputs: we hang up; the peer must close too, without an Error.
      const answeredBefore = peer.frames.length;
      peer.socket.end();
      if (!(await peer.until(() => peer.ended, ANSWER_BOUND_MS))) fail(`no close within ${ANSWER_BOUND_MS} ms after our end of stream`);
      const late = peer.since(answeredBefore);
      if (late.length) fail(`answered ${JSON.stringify(late.map((m) => m.type))} to our end of stream`);
      return sent;
    }
    if (verdict.kind === 'incomplete') peer.socket.end();
    const closed = await peer.until(() => peer.ended, ANSWER_BOUND_MS);
    const answers = peer.since(from).filter((m) => m.type !== 'Resumed');
    const firstError = answers.find((m) => m.type === 'Error') as Extract<Message, { type: 'Error' }> | undefined;
    if (!closed) fail(`no close within ${ANSWER_BOUND_MS} ms (answers: ${JSON.stringify(answers.map((m) => m.type))})`);
    if (answers.some((m) => m.type !== 'Error')) fail(`answered ${JSON.stringify(answers.map((m) => m.type))}`);
    if (verdict.kind === 'error') {
      if (!firstError && peer.socketError) {
        // It closed while our input was still going out (a successor exits right after its
        // Error); the Error was sent but our side dropped it with the failed write.
        count(out.byAnswer, `closed during our write (${peer.socketError}); expected ${verdict.codes[0]}`);
        return sent;
      }
      if (!firstError) fail(`closed without an Error; expected ${verdict.codes.join(' or ')}`);
      if (!verdict.codes.includes(firstError!.code)) fail(`answered Error ${firstError!.code} (${firstError!.message}); expected ${verdict.codes.join(' or ')}`);
      count(out.byAnswer, `Error ${firstError!.code}`);
    } else if (verdict.kind === 'close') {
      if (firstError && !verdict.or.includes(firstError.code)) fail(`answered Error ${firstError.code}; expected only the close (Abort)`);
      count(out.byAnswer, 'closed (Abort)');
    } else {
      if (firstError) fail(`answered Error ${firstError.code} (${firstError.message}) to a stream that ended inside a frame (E_TRUNCATED is local)`);
      count(out.byAnswer, 'closed (stream cut inside a frame)');
    }
    return sent;
  }
}

// ============================================================================ targets

/** `baton run` with fixtures/kv: the incumbent (control socket) and the admin socket. */
class Daemon {
  readonly dir = mkdtempSync(path.join(tmpdir(), 'baton-fuzz-'));
  readonly tag = `fuzz-${randomUUID()}`;
  readonly stateDir = path.join(this.dir, 'state');
  readonly dataDir = path.join(this.dir, 'data');
  readonly adminSock = path.join(this.stateDir, 'admin.sock');
  readonly controlPath = path.join(this.stateDir, 'control', 'incumbent.sock');
  readonly logFile = path.join(this.dir, 'baton.log');
  child!: ChildProcess;
  port = 0;
  /** The admin API on TCP (token required) and the metrics endpoint: listeners the slow-client phase covers. */
  adminTcpPort = 0;
  metricsPort = 0;
  readToken = '';
  incumbentPid = 0;
  private acked = new Map<string, string>();
  private probes = 0;

  async start(): Promise<void> {
    const fd = openSync(this.logFile, 'a');
    this.metricsPort = await freePort();
    this.child = spawn(process.execPath, [CLI, 'run', '--listen', 'http=tcp://127.0.0.1:0', '--data-dir', this.dataDir, '--state-dir', this.stateDir, '--admin-listen', '127.0.0.1:0', '--metrics', `127.0.0.1:${this.metricsPort}`, '--', ...KV], {
      stdio: ['ignore', 'ignore', fd],
      env: { ...process.env, BATON_TEST_TAG: this.tag, BATON_LOG_LEVEL: 'error', KV_LOG_LEVEL: 'error' },
    });
    closeSync(fd);
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (this.child.exitCode !== null) throw new Error(`baton run exited (${this.child.exitCode}); see ${this.logFile}`);
      const r = await adminRequest(this.adminSock, 'GET', '/v1/status', undefined, { timeoutMs: 2_000 }).catch(() => undefined);
      const body = r?.body as { app?: { pid: number } | null; listeners?: { address: string }[]; admin?: { tcp: string | null } } | undefined;
      if (body?.app?.pid && body.listeners?.[0]) {
        this.incumbentPid = body.app.pid;
        this.port = Number(body.listeners[0].address.split(':').pop());
        this.adminTcpPort = Number(body.admin?.tcp?.split(':').pop());
        this.readToken = readFileSync(path.join(this.stateDir, 'tokens', 'read.token'), 'utf8').trim();
        return;
      }
      if (Date.now() > deadline) throw new Error(`baton run did not come up; see ${this.logFile}`);
      await sleep(100);
    }
  }

  /** The incumbent still is the same process, holds the lock, answers HTTP and takes a write. */
  async checkServing(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Violation(`baton run exited (${this.child.exitCode ?? this.child.signalCode}); see ${this.logFile}`);
    if (!isAlive(this.incumbentPid)) throw new Violation(`the incumbent (pid ${this.incumbentPid}) is gone; see ${this.logFile}`);
    const holder = await lockHolder(this.dataDir);
    if (holder?.owner.pid !== this.incumbentPid || !holder.alive) throw new Violation(`the data-dir lock is held by ${holder?.owner.pid ?? 'nobody'}, not the incumbent ${this.incumbentPid}`);
    const h = await request(this.port, 'GET', '/healthz', undefined, undefined, 5_000).catch((err: Error) => ({ status: 0, body: err.message }));
    if (h.status !== 200 || (JSON.parse(h.body) as { pid: number }).pid !== this.incumbentPid) throw new Violation(`/healthz: ${h.status} ${h.body.slice(0, 200)}`);
    const key = `probe-${this.probes++}`;
    const value = randomUUID();
    const put = await request(this.port, 'PUT', `/kv/${key}`, value, undefined, 5_000);
    if (put.status !== 200) throw new Violation(`PUT /kv/${key}: ${put.status} ${put.body.slice(0, 200)}`);
    this.acked.set(key, value);
  }

  /** Every probe write reads back. */
  async verify(): Promise<number> {
    for (const [key, value] of this.acked) {
      const r = await request(this.port, 'GET', `/kv/${key}`);
      if (r.status !== 200 || (JSON.parse(r.body) as { value: string }).value !== value) throw new Violation(`acknowledged write ${key} reads back ${r.status} ${r.body.slice(0, 100)}`);
    }
    return this.acked.size;
  }

  async stop(keep: boolean): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      await adminRequest(this.adminSock, 'POST', '/v1/stop', { timeoutS: 10 }, { timeoutMs: 20_000 }).catch(() => undefined);
      const exited = await Promise.race([new Promise((r) => this.child.once('exit', r)), sleep(20_000).then(() => 'timeout')]);
      if (exited === 'timeout') this.child.kill('SIGKILL');
    }
    await killTagged(this.tag);
    if (!keep) rmSync(this.dir, { recursive: true, force: true });
  }
}

async function taggedPids(tag: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if ((await readFile(`/proc/${entry}/environ`, 'latin1')).split('\0').includes(`BATON_TEST_TAG=${tag}`) && isAlive(Number(entry))) pids.push(Number(entry));
    } catch {
      // gone
    }
  }
  return pids;
}

async function killTagged(tag: string): Promise<number[]> {
  const pids = await taggedPids(tag);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  return pids;
}

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

/** Connects to the incumbent's control socket and waits for its Hello (retrying E_BUSY: the previous session may still be closing). */
async function connectIncumbent(controlPath: string, out: Outcomes): Promise<Peer> {
  for (let attempt = 0; ; attempt++) {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(controlPath);
      s.once('connect', () => resolve(s));
      s.once('error', (err) => reject(new Violation(`the incumbent's control socket: cannot connect: ${err.message}`)));
    });
    const peer = new Peer(socket);
    if (!(await peer.until(() => peer.frames.length > 0 || peer.ended, ANSWER_BOUND_MS))) throw new Violation(`the incumbent did not say Hello within ${ANSWER_BOUND_MS} ms`);
    const first = peer.frames[0];
    if (first?.type === 'Hello') {
      if (first.role !== 'incumbent') throw new Violation(`the incumbent said Hello with role ${first.role}`);
      return peer;
    }
    socket.destroy();
    if (first?.type === 'Error' && first.code === 'E_BUSY' && attempt < 200) {
      out.busyRetries++;
      await sleep(5);
      continue;
    }
    throw new Violation(`the incumbent answered a new connection with ${JSON.stringify(first ?? 'the close')}`);
  }
}

async function fuzzIncumbent(d: Daemon, rng: Rng, vectors: { valid: Vector[]; invalid: Vector[] }, budget: number, out: Outcomes, tick: () => Promise<void>): Promise<void> {
  while (out.inputs < budget) {
    const peer = await connectIncumbent(d.controlPath, out);
    out.connections++;
    await controlSession('incumbent', peer, rng, vectors, out, Math.min(rng.int(1, 8), budget - out.inputs));
    peer.socket.destroy();
    await tick();
  }
}

/** Successors started by us (a fake supervisor) with a socketpair control fd, like Supervisor.stepSpawn. */
class SuccessorFactory {
  readonly dir = mkdtempSync(path.join(tmpdir(), 'baton-fuzz-successor-'));
  readonly tag = `fuzz-successor-${randomUUID()}`;
  readonly listener: HeldListener = bindListener(parseListenAddress('tcp://127.0.0.1:0'));
  private readonly log = createLogger('fuzz-supervisor');
  generation = 1;
  exits: Record<string, number> = {};

  constructor() {
    this.log.level = 'silent';
  }

  spawn(): AppProcess {
    return spawnApp({
      command: PRIMITIVE,
      role: 'successor',
      generation: ++this.generation,
      listeners: [this.listener],
      spares: 1,
      controlPath: path.join(this.dir, 'control', 'incumbent.sock'),
      dataDir: path.join(this.dir, 'data'),
      // FUZZ_SUCCESSOR_LOG_LEVEL=warn shows what each successor saw (on our stderr).
      baseEnv: { ...process.env, BATON_TEST_TAG: this.tag, BATON_LOG_LEVEL: process.env.FUZZ_SUCCESSOR_LOG_LEVEL ?? 'fatal' },
      stdout: 'ignore',
      log: this.log,
    });
  }

  async close(keep: boolean): Promise<number[]> {
    const left = await killTagged(this.tag);
    this.listener.close();
    if (!keep) rmSync(this.dir, { recursive: true, force: true });
    return left;
  }
}

async function fuzzOneSuccessor(f: SuccessorFactory, rng: Rng, vectors: { valid: Vector[]; invalid: Vector[] }, out: Outcomes, budget: number): Promise<void> {
  const app = f.spawn();
  const peer = new Peer(app.control!);
  try {
    if (!(await peer.until(() => peer.frames.length > 0 || peer.ended, 15_000))) throw new Violation(`successor ${app.pid} did not say Hello within 15 s`);
    const hello = peer.frames[0];
    if (hello?.type !== 'Hello' || hello.role !== 'successor' || hello.pid !== app.pid) throw new Violation(`successor ${app.pid} opened with ${JSON.stringify(hello ?? 'the close')}`);
    out.connections++;
    try {
      await controlSession('successor', peer, rng, vectors, out, budget);
    } catch (err) {
      // Say how the process ended (a crash and a clean abort look alike on the socket).
      const status = await Promise.race([app.exited, sleep(3_000).then(() => undefined)]);
      if (err instanceof Violation) {
        throw new Violation(`${err.message}\n  successor ${app.pid}: ${status ? `exit ${status.code ?? '-'} signal ${status.signal ?? '-'}` : 'still running 3 s later'}`, err.input);
      }
      throw err;
    }
    // It lost its supervisor: it must exit, cleanly (exit 0 is its "aborted" exit).
    const status = await Promise.race([app.exited, sleep(10_000).then(() => undefined)]);
    if (!status) throw new Violation(`successor ${app.pid} still running 10 s after its supervisor closed the channel`);
    const how = status.signal ? `signal ${status.signal}` : `exit ${status.code}`;
    count(f.exits, how);
    if (status.code !== 0) throw new Violation(`successor ${app.pid} ended with ${how} after a bad input (a crash, not an abort)`);
  } finally {
    peer.socket.destroy();
    app.signal('SIGKILL');
  }
}

async function fuzzSuccessors(f: SuccessorFactory, rng: Rng, vectors: { valid: Vector[]; invalid: Vector[] }, budget: number, out: Outcomes, parallel: number): Promise<void> {
  const lanes = Array.from({ length: parallel }, (_, i) => i);
  const streams = lanes.map(() => rng.fork());
  await Promise.all(
    lanes.map(async (i) => {
      while (out.inputs < budget) await fuzzOneSuccessor(f, streams[i]!, vectors, out, Math.min(streams[i]!.int(1, 50), Math.max(budget - out.inputs, 1)));
    }),
  );
}

// ============================================================================ admin socket

const ADMIN_PATHS = ['/v1/status', '/v1/history', '/v1/jobs', '/v1/jobs/nope', '/v1/jobs/%00', '/v1/health', '/v1/history?limit=5', '/v1/history?limit=0', '/v1/history?limit=abc', '/v1/history?limit=99999', '/', '/v1', '/v1/', '/v2/status', '/v1/status?x=%zz', '/v1/../v1/status', '//v1/status', '/v1/status#frag', '*', 'http://baton/v1/status', '/v1/' + 'a'.repeat(3000)];
const METHODS = ['GET', 'HEAD', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'CONNECT', 'get', 'G ET', 'POST'];

interface AdminInput {
  kind: string;
  bytes: Buffer;
  /** For unmutated templates: the status the daemon must answer. */
  expect?: number;
  /**
   * The answer may be lost to the client: the daemon rejects early (a bad method, header
   * overflow, a declared length over the limit) and closes while the rest of the input is
   * still being sent; our write then fails and Node drops what was received. A close
   * without an answer is fine then.
   */
  orClose?: boolean;
}

function httpRequest(method: string, target: string, headers: [string, string][], body = ''): string {
  return `${method} ${target} HTTP/1.1\r\n${headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n${body}`;
}

function baseHeaders(rng: Rng, bodyLength?: number): [string, string][] {
  const h: [string, string][] = [['host', 'baton']];
  if (bodyLength !== undefined) h.push(['content-type', 'application/json'], ['content-length', String(bodyLength)]);
  if (rng.chance(0.3)) h.push(['x-baton-client-pid', rng.pick(['1', '-1', '1e99', 'abc', String(2 ** 53 + 1), ''])]);
  // Printable ASCII only: a template must stay a valid request (the claimed user is free text).
  if (rng.chance(0.3)) h.push(['x-baton-client-user', rng.chance(0.5) ? 'x'.repeat(rng.int(0, 200)) : randomString(rng, 20).replace(/[^\x20-\x7e]/g, '?')]);
  if (rng.chance(0.2)) h.push(['connection', rng.pick(['close', 'keep-alive', 'upgrade'])]);
  return h;
}

/** A template request the daemon must answer with a known status. */
function adminTemplate(rng: Rng): AdminInput {
  switch (rng.int(0, 12)) {
    case 10: {
      // Nested JSON (issue #21 item 1): deeper than 32 levels is refused before parsing.
      const depth = rng.pick([1, 2, 16, 31, 32, 33, 64, 1000, 2400, 6000]);
      const body = `{"a":${'['.repeat(depth - 1)}0${']'.repeat(depth - 1)}}`;
      return { kind: 'nested-json', bytes: Buffer.from(httpRequest('GET', '/v1/status', baseHeaders(rng, body.length), body)), expect: depth > 32 ? 400 : 200 };
    }
    case 11:
      // A long path (under the 16 KiB header limit): an unknown endpoint, cut in the audit log.
      return { kind: 'long-path', bytes: Buffer.from(httpRequest('GET', `/v1/${'p'.repeat(rng.int(1_000, 15_000))}`, baseHeaders(rng))), expect: 404 };
    case 12:
      // Long header values (the claimed user, an unknown header): answered, cut where logged.
      return {
        kind: 'long-header',
        bytes: Buffer.from(httpRequest('GET', '/v1/history?limit=1', [...baseHeaders(rng), ['x-baton-client-user', 'u'.repeat(rng.int(100, 6_000))], ['x-filler', 'f'.repeat(rng.int(100, 6_000))]])),
        expect: 200,
      };
    case 0:
      return { kind: 'template', bytes: Buffer.from(httpRequest('GET', '/v1/status', baseHeaders(rng))), expect: 200 };
    case 1: {
      const limit = rng.int(1, 10_000);
      return { kind: 'template', bytes: Buffer.from(httpRequest('GET', `/v1/history?limit=${limit}`, baseHeaders(rng))), expect: 200 };
    }
    case 2:
      return { kind: 'template', bytes: Buffer.from(httpRequest('GET', rng.pick(['/v1/history?limit=0', '/v1/history?limit=abc', '/v1/history?limit=10001']), baseHeaders(rng))), expect: 400 };
    case 3:
      return { kind: 'template', bytes: Buffer.from(httpRequest('GET', rng.pick(['/nope', '/v2/status', '/v1/statuses', '/']), baseHeaders(rng))), expect: 404 };
    case 4:
      return { kind: 'template', bytes: Buffer.from(httpRequest(rng.pick(['PUT', 'DELETE', 'PATCH']), '/v1/status', baseHeaders(rng))), expect: 405 };
    case 5: {
      const body = rng.pick(['{', '[1,2]', '"x"', 'null', '{"a":', '\u0000', 'true']);
      return { kind: 'template', bytes: Buffer.from(httpRequest('GET', '/v1/status', baseHeaders(rng, Buffer.byteLength(body)), body)), expect: 400 };
    }
    case 6: {
      const n = 64 * 1024 + rng.int(1, 4096);
      return { kind: 'template', bytes: Buffer.from(httpRequest('GET', '/v1/status', baseHeaders(rng, n), 'x'.repeat(n))), expect: 413, orClose: true };
    }
    case 7: {
      // Chunked, over the body limit.
      const chunk = 'y'.repeat(16 * 1024);
      const body = `${Array.from({ length: 5 }, () => `${chunk.length.toString(16)}\r\n${chunk}\r\n`).join('')}0\r\n\r\n`;
      return { kind: 'template', bytes: Buffer.from(httpRequest('GET', '/v1/history', [['host', 'baton'], ['transfer-encoding', 'chunked']], body)), expect: 413, orClose: true };
    }
    case 8:
      // Over the 16 KiB header limit: the admin server answers every malformed request with 400.
      return { kind: 'template', bytes: Buffer.from(httpRequest('GET', '/v1/status', [...baseHeaders(rng), ['x-big', 'z'.repeat(17 * 1024)]])), expect: 400, orClose: true };
    default:
      return { kind: 'template', bytes: Buffer.from(`GARBAGE ${randomString(rng, 10).replace(/[\r\n ]/g, '')}\r\n\r\n`), expect: 400, orClose: true };
  }
}

function adminGenerated(rng: Rng): AdminInput {
  const method = rng.pick(METHODS);
  const target = rng.chance(0.8) ? rng.pick(ADMIN_PATHS) : `/${randomString(rng, 30).replace(/[\s]/g, '')}`;
  const headers = baseHeaders(rng);
  if (rng.chance(0.2)) headers.push(['content-length', rng.pick(['-1', '1e3', 'abc', '99999999999999999999', '0x10', ' 5', '5, 6'])]);
  if (rng.chance(0.15)) headers.push(['transfer-encoding', rng.pick(['chunked', 'gzip', 'chunked, chunked', 'identity'])]);
  if (rng.chance(0.1)) headers.push(['host', 'other']);
  if (rng.chance(0.1)) headers.push([randomString(rng, 10).replace(/[\s:]/g, '') || 'x', randomString(rng, 40).replace(/[\r\n]/g, '')]);
  if (rng.chance(0.05)) for (let i = 0; i < rng.int(50, 300); i++) headers.push([`h${i}`, 'v']);
  const body = rng.chance(0.3) ? rng.pick(['{}', '{"limit":5}', '{"deadlineS":-1}', '[]', '{"a":'.repeat(rng.int(1, 50)), '0\r\n\r\n', 'ZZ\r\n']) : '';
  const version = rng.chance(0.9) ? 'HTTP/1.1' : rng.pick(['HTTP/1.0', 'HTTP/2.0', 'HTTP/9.9', 'HTTP/1', 'http/1.1', '']);
  const text = `${method} ${target} ${version}\r\n${headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n${body}`;
  return { kind: 'generated', bytes: Buffer.from(text, 'latin1') };
}

function adminInput(rng: Rng, vectors: { valid: Vector[]; invalid: Vector[] }): AdminInput {
  switch (rng.weighted({ template: 20, generated: 25, mutated: 30, pipelined: 8, random: 7, 'non-http': 10 })) {
    case 'template':
      return adminTemplate(rng);
    case 'generated':
      return adminGenerated(rng);
    case 'mutated': {
      let b = rng.chance(0.5) ? adminTemplate(rng).bytes : adminGenerated(rng).bytes;
      for (let i = rng.int(1, 5); i > 0; i--) {
        b = rng.chance(0.2) ? Buffer.from(b.toString('latin1').replace(rng.pick(['\r\n', ' ', ':', 'HTTP/1.1', '\r\n\r\n']), rng.pick(['', '\n', '\r', '  ', '\t', '\r\n\r\n', '\u0000'])), 'latin1') : mutate(rng, b);
      }
      return { kind: 'mutated', bytes: b };
    }
    case 'pipelined':
      return { kind: 'pipelined', bytes: Buffer.concat(Array.from({ length: rng.int(2, 4) }, () => (rng.chance(0.7) ? adminTemplate(rng).bytes : adminGenerated(rng).bytes))) };
    case 'random':
      return { kind: 'random', bytes: rng.bytes(rng.int(1, 2048)) };
    default:
      // Other protocols on the admin socket: control frames, an HTTP/2 preface, a TLS ClientHello.
      return {
        kind: 'non-http',
        bytes: rng.pick([
          rng.pick(vectors.valid).bytes,
          Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
          Buffer.concat([u8(0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03), rng.bytes(64)]),
          Buffer.from('\r\n\r\n\r\n'),
        ]),
      };
  }
}

/**
 * True if any request line in the input could reach an action: POST /v1/upgrade,
 * /v1/stop, /v1/jobs (a maintenance run) or /v1/jobs/:id/cancel, after URL
 * normalisation (dot segments, backslashes, absolute form, %-escapes). Such an input is
 * never sent: it is not bad input, it is an upgrade, a stop or a maintenance run.
 */
export function reachesAction(bytes: Buffer): boolean {
  const text = bytes.toString('latin1');
  for (const m of text.matchAll(/POST[\s\x00-\x20]+(\S+)/gi)) {
    let p: string;
    try {
      p = new URL(m[1]!.replace(/[\x00-\x20\x7f]/g, ''), 'http://baton').pathname;
    } catch {
      continue;
    }
    let decoded = p;
    try {
      decoded = decodeURIComponent(p);
    } catch {
      // not decodable: the raw path is all there is
    }
    if (/upgrade|stop|jobs/i.test(p) || /upgrade|stop|jobs/i.test(decoded)) return true;
  }
  return false;
}

/**
 * The inputs of bug B3 (RELIABILITY.md), fixed in 648c08d: src/admin.ts parsed the request
 * target with `new URL(req.url, 'http://baton')` outside its try block, so a target that is
 * not a valid relative URL (`//`, `/\\`, `//bad host`, `https:`) rejected the handler
 * promise and the unhandled rejection killed `baton run`. Such targets now get a 400, and
 * the fuzzer sends them like any other input (--hold-back-known holds nothing back); this
 * predicate stays as the record of what B3's inputs were (test/fuzz.test.ts pins it). It
 * checks every whitespace-separated token, a superset of the request targets.
 */
export function hitsKnownAdminBug(bytes: Buffer): boolean {
  for (const token of bytes.toString('latin1').split(/[\s\x00]+/)) {
    if (!token) continue;
    try {
      new URL(token, 'http://baton');
    } catch {
      return true;
    }
  }
  return false;
}

/** One admin connection: the input, then an answer or a close within bounds. */
async function adminOnce(sock: string, rng: Rng, input: AdminInput): Promise<{ statuses: number[]; closed: boolean }> {
  const socket = await new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect(sock);
    s.once('connect', () => resolve(s));
    s.once('error', (err) => reject(new Violation(`admin socket: cannot connect: ${err.message}`)));
  });
  let data = '';
  let closed = false;
  let lastActivity = Date.now();
  socket.setEncoding('latin1');
  socket.on('data', (c: string) => {
    data += c;
    lastActivity = Date.now();
  });
  socket.on('error', () => undefined);
  socket.on('close', () => (closed = true));
  const bytes = input.bytes;
  const cuts = [...new Set(Array.from({ length: rng.int(0, 3) }, () => rng.int(1, Math.max(bytes.length - 1, 1))))].sort((a, b) => a - b);
  let at = 0;
  for (const cut of [...cuts, bytes.length]) {
    if (cut <= at || closed) continue;
    socket.write(bytes.subarray(at, cut));
    at = cut;
    if (rng.chance(0.3)) await sleep(1);
  }
  lastActivity = Date.now();
  const statuses = (): number[] => [...data.matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => Number(m[1]));
  // Wait for the answer while it keeps coming; a template must be answered before we end our side.
  const quietMs = input.expect !== undefined ? 3_000 : 150;
  const hardDeadline = Date.now() + 15_000;
  while (!closed && Date.now() - lastActivity < quietMs && Date.now() < hardDeadline) {
    if (input.expect !== undefined && statuses().length > 0 && /\r\n\r\n/.test(data)) break;
    await sleep(10);
  }
  if (!closed) {
    socket.end(); // our end of stream: an incomplete request must not keep the connection
    const until = Date.now() + ANSWER_BOUND_MS;
    while (!closed && Date.now() < until) await sleep(10);
  }
  socket.destroy();
  if (!closed && Date.now() >= hardDeadline) throw new Violation('admin socket: no answer and no close within 15 s', bytes);
  return { statuses: statuses(), closed };
}

async function fuzzAdmin(
  d: Daemon,
  rng: Rng,
  vectors: { valid: Vector[]; invalid: Vector[] },
  budget: number,
  out: Outcomes,
  parallel: number,
): Promise<void> {
  const streams = Array.from({ length: parallel }, () => rng.fork());
  await Promise.all(
    streams.map(async (r) => {
      while (out.inputs < budget) {
        let input = adminInput(r, vectors);
        while (reachesAction(input.bytes)) {
          out.redrawn++;
          input = adminInput(r, vectors);
        }
        out.inputs++;
        out.connections++;
        count(out.byKind, input.kind);
        const { statuses, closed } = await adminOnce(d.adminSock, r, input);
        if (!closed && statuses.length === 0) throw new Violation('admin socket: neither an answer nor a close', input.bytes);
        const serverError = statuses.find((s) => s >= 500);
        if (serverError) throw new Violation(`admin socket answered ${serverError}`, input.bytes);
        if (input.expect !== undefined && statuses[0] !== input.expect && !(input.orClose && statuses.length === 0 && closed)) {
          throw new Violation(`admin socket: template answered ${statuses[0] ?? 'nothing'}, expected ${input.expect}`, input.bytes);
        }
        count(out.byAnswer, statuses.length ? `HTTP ${statuses[0]}${statuses.length > 1 ? ` (+${statuses.length - 1})` : ''}` : 'closed without an answer');
      }
    }),
  );
}

// ============================================================================ slow clients

/** How long each listener may keep a client that never completes a request (its guard's timeout + slack). */
const SLOW_BOUND_MS: Record<string, number> = { 'admin-socket': 5_000 + 3_000, 'admin-tcp': 2_000 + 3_000, metrics: 2_000 + 3_000 };

interface SlowReport {
  clients: number;
  closedByServer: number;
  maxOpenMs: number;
  realRequests: number;
  realFailures: number;
}

/**
 * One slow client: connects and then says nothing (idle) or trickles a request that never
 * ends, one byte every 300 ms. Resolves when the server closes it, or when we give up at
 * `boundMs` (then `closedByServer` is false: a violation).
 */
function slowOne(connect: () => net.Socket, mode: 'idle' | 'trickle', boundMs: number): Promise<{ closedByServer: boolean; openMs: number }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const socket = connect();
    let timer: NodeJS.Timeout | undefined;
    let done = false;
    const finish = (closedByServer: boolean): void => {
      if (done) return;
      done = true;
      clearInterval(timer);
      clearTimeout(giveUp);
      socket.destroy();
      resolve({ closedByServer, openMs: Date.now() - t0 });
    };
    const giveUp = setTimeout(() => finish(false), boundMs);
    socket.on('error', () => finish(true));
    socket.on('close', () => finish(true));
    socket.on('data', () => undefined);
    if (mode === 'trickle') {
      const text = `GET /v1/history?limit=1 HTTP/1.1\r\nhost: baton\r\nx-slow: ${'s'.repeat(1_000)}`;
      let i = 0;
      socket.on('connect', () => {
        timer = setInterval(() => {
          if (!socket.destroyed) socket.write(text[i++ % text.length]!);
        }, 300);
      });
    }
  });
}

/**
 * Slow clients on every listener the supervisor serves (the admin socket, the TCP admin
 * API, the metrics endpoint), `perListener` at once on each: every one must be closed by
 * the server within its bound, and real requests made meanwhile must all succeed.
 */
async function slowClients(d: Daemon, rng: Rng, out: Record<string, SlowReport>, perListener: number): Promise<void> {
  const targets = [
    { name: 'admin-socket', connect: () => net.connect(d.adminSock), real: async () => (await adminRequest(d.adminSock, 'GET', '/v1/history?limit=1', undefined, { timeoutMs: 10_000 })).status === 200 },
    {
      name: 'admin-tcp',
      connect: () => net.connect(d.adminTcpPort, '127.0.0.1'),
      real: async () => (await adminRequest({ tcp: { host: '127.0.0.1', port: d.adminTcpPort }, token: d.readToken }, 'GET', '/v1/history?limit=1', undefined, { timeoutMs: 10_000 })).status === 200,
    },
    { name: 'metrics', connect: () => net.connect(d.metricsPort, '127.0.0.1'), real: async () => (await request(d.metricsPort, 'GET', '/metrics', undefined, undefined, 10_000)).status === 200 },
  ];
  await Promise.all(
    targets.map(async (t) => {
      const rep = (out[t.name] ??= { clients: 0, closedByServer: 0, maxOpenMs: 0, realRequests: 0, realFailures: 0 });
      const bound = SLOW_BOUND_MS[t.name]!;
      const clients = Array.from({ length: perListener }, () => slowOne(t.connect, rng.chance(0.5) ? 'idle' : 'trickle', bound));
      const real = (async () => {
        for (let i = 0; i < 6; i++) {
          await sleep(400);
          rep.realRequests++;
          if (!(await t.real().catch(() => false))) rep.realFailures++;
        }
      })();
      const results = await Promise.all(clients);
      await real;
      for (const r of results) {
        rep.clients++;
        if (r.closedByServer) rep.closedByServer++;
        rep.maxOpenMs = Math.max(rep.maxOpenMs, r.openMs);
      }
      if (rep.realFailures > 0) throw new Violation(`${t.name}: ${rep.realFailures} of ${rep.realRequests} real requests failed while ${perListener} slow clients were connected`);
      if (rep.closedByServer < rep.clients) throw new Violation(`${t.name}: ${rep.clients - rep.closedByServer} slow clients were still open after ${bound} ms`);
    }),
  );
}

// ============================================================================ main

interface FuzzOptions {
  inputs: number;
  seed: number;
  shares: { incumbent: number; successor: number; admin: number };
  /** As given (for the replay hint), or undefined for the default. */
  sharesArg: string | undefined;
  keep: boolean;
  /** --hold-back-known: accepted so older command lines still run; no known bug is open, nothing is held back. */
  holdBackKnown: boolean;
  /** Rounds of slow clients (40 per listener each) after the fuzz. */
  slowRounds: number;
  summaryFile?: string | undefined;
}

function parseOptions(argv: string[]): FuzzOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      inputs: { type: 'string', default: '10000' },
      seed: { type: 'string' },
      shares: { type: 'string' },
      keep: { type: 'boolean', default: false },
      'hold-back-known': { type: 'boolean', default: false },
      'slow-rounds': { type: 'string', default: '2' },
      summary: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log(`npm run fuzz -- [--inputs N] [--seed S] [--shares I,S,A] [--hold-back-known] [--keep] [--summary FILE]

Fuzzes the incumbent's control socket, a successor's control channel and the admin socket.
  --inputs N      inputs in all (default 10000)
  --seed S        PRNG seed (default: random, printed)
  --shares I,S,A  percentage of inputs for incumbent, successor, admin (default 55,15,30)
  --hold-back-known  holds nothing back: no known bug is open (B3, the admin request target
                  that killed baton run, which it used to hold back, is fixed; those inputs are sent)
  --slow-rounds N rounds of 40 slow clients per supervisor listener (admin socket, admin TCP,
                  metrics) after the fuzz (default 2)
  --keep          keep the temp dirs (always kept after a violation)
  --summary FILE  write the figures as JSON`);
    process.exit(0);
  }
  const shares = (values.shares ?? '55,15,30').split(',').map(Number);
  const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
  const inputs = Number(values.inputs);
  if (!Number.isInteger(inputs) || inputs < 3 || !Number.isInteger(seed) || shares.length !== 3 || shares.some((s) => !Number.isFinite(s) || s < 0)) {
    console.error('fuzz: bad arguments (see --help)');
    process.exit(2);
  }
  const total = shares.reduce((a, b) => a + b, 0);
  return {
    inputs,
    seed,
    shares: { incumbent: shares[0]! / total, successor: shares[1]! / total, admin: shares[2]! / total },
    sharesArg: values.shares,
    keep: values.keep,
    holdBackKnown: values['hold-back-known'],
    slowRounds: Number(values['slow-rounds']),
    summaryFile: values.summary,
  };
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const rng = new Rng(opts.seed);
  const vectors = loadVectors();
  const budget = {
    incumbent: Math.round(opts.inputs * opts.shares.incumbent),
    successor: Math.round(opts.inputs * opts.shares.successor),
    admin: 0,
  };
  budget.admin = opts.inputs - budget.incumbent - budget.successor;
  console.log(`fuzz: seed ${opts.seed}, ${opts.inputs} inputs (incumbent ${budget.incumbent}, successor ${budget.successor}, admin ${budget.admin})${opts.holdBackKnown ? ' (--hold-back-known: no known bug is open, nothing held back)' : ''}`);
  const t0 = Date.now();
  const daemon = new Daemon();
  const successors = new SuccessorFactory();
  const out = { incumbent: newOutcomes(), successor: newOutcomes(), admin: newOutcomes() };
  const slow: Record<string, SlowReport> = {};
  const rss: Record<string, { before: number; peak: number; after: number }> = {};
  let violation: { target: string; message: string; input?: string } | undefined;
  let checks = 0;
  let verifiedWrites = 0;
  const durations: Record<string, number> = {};
  try {
    await daemon.start();
    await daemon.checkServing();
    const pids = { incumbent: daemon.incumbentPid, supervisor: daemon.child.pid! };
    // Warm-up (a first handful of sessions), then the baseline RSS.
    const warm = newOutcomes();
    await fuzzIncumbent(daemon, rng.fork(), vectors, 200, warm, async () => undefined);
    for (let i = 0; i < 50; i++) await adminOnce(daemon.adminSock, rng, adminTemplate(rng));
    for (const [name, pid] of Object.entries(pids)) rss[name] = { before: rssKb(pid), peak: 0, after: 0 };
    const sample = (): void => {
      for (const [name, pid] of Object.entries(pids)) if (isAlive(pid)) rss[name]!.peak = Math.max(rss[name]!.peak, rssKb(pid));
    };
    let lastCheck = Date.now();
    let progressAt = Date.now();
    const tick = async (): Promise<void> => {
      if (Date.now() - lastCheck < 2_000) return;
      lastCheck = Date.now();
      sample();
      await daemon.checkServing();
      checks++;
      if (Date.now() - progressAt > 15_000) {
        progressAt = Date.now();
        const n = out.incumbent.inputs + out.successor.inputs + out.admin.inputs;
        console.log(`  ${((Date.now() - t0) / 1000).toFixed(0)} s: ${n} inputs (incumbent ${out.incumbent.inputs}, successor ${out.successor.inputs}, admin ${out.admin.inputs}); RSS incumbent ${rssKb(pids.incumbent)} kB, supervisor ${rssKb(pids.supervisor)} kB`);
      }
    };
    let running = true;
    const checker = (async () => {
      while (running) {
        await tick();
        await sleep(250);
      }
    })();
    const timed = async (name: string, p: Promise<void>): Promise<void> => {
      const s = Date.now();
      try {
        await p;
      } catch (err) {
        if (err instanceof Violation && !violation) violation = { target: name, message: err.message, ...(err.input && { input: err.input.toString('hex') }) };
        throw err;
      } finally {
        durations[name] = Date.now() - s;
      }
    };
    try {
      await Promise.all([
        timed('incumbent', fuzzIncumbent(daemon, rng.fork(), vectors, budget.incumbent, out.incumbent, tick)),
        timed('successor', fuzzSuccessors(successors, rng.fork(), vectors, budget.successor, out.successor, 2)),
        timed('admin', fuzzAdmin(daemon, rng.fork(), vectors, budget.admin, out.admin, 8)),
      ]);
    } finally {
      running = false;
      await checker;
    }
    // Slow clients on every listener the supervisor serves, after the fuzz (they would
    // compete with its admin connections for the same slots).
    for (let round = 0; round < opts.slowRounds; round++) await timed('slow', slowClients(daemon, rng.fork(), slow, 40));
    await daemon.checkServing();
    checks++;
    sample();
    await sleep(1_000); // let the last sessions finish
    for (const [name, pid] of Object.entries(pids)) rss[name]!.after = rssKb(pid);
    verifiedWrites = await daemon.verify();
    const status = await adminRequest(daemon.adminSock, 'GET', '/v1/history?limit=100', undefined, { timeoutMs: 5_000 });
    const jobs = (status.body.jobs as { trigger: string }[] | undefined) ?? [];
    if (jobs.some((j) => j.trigger !== 'cold-start')) throw new Violation(`the admin history shows jobs other than the cold start: ${JSON.stringify(jobs.map((j) => j.trigger))}`);
    for (const [name, r] of Object.entries(rss)) {
      // Bounded memory: within 64 MiB (and 50 %) of the post-warm-up baseline.
      if (r.after > r.before * 1.5 + 64 * 1024) throw new Violation(`${name} RSS grew from ${r.before} kB to ${r.after} kB`);
    }
  } catch (err) {
    if (!(err instanceof Violation)) throw err;
    violation ??= { target: 'service', message: err.message, ...(err.input && { input: err.input.toString('hex') }) };
  } finally {
    if (violation && daemon.child && (daemon.child.exitCode !== null || daemon.child.signalCode !== null)) {
      // The daemon died: that is the finding; its log says why.
      const tail = readFileSync(daemon.logFile, 'utf8').trim().split('\n').slice(-12).join('\n    ');
      violation.message += `\n  baton run exited (${daemon.child.exitCode ?? daemon.child.signalCode}); the end of ${daemon.logFile}:\n    ${tail}`;
    }
    await daemon.stop(opts.keep || violation !== undefined);
    const left = await successors.close(opts.keep || violation !== undefined);
    if (left.length && !violation) violation = { target: 'successor', message: `successor processes left behind: ${left.join(', ')}` };
  }
  const durationMs = Date.now() - t0;
  const total = out.incumbent.inputs + out.successor.inputs + out.admin.inputs;
  const summary = {
    seed: opts.seed,
    inputs: total,
    durationMs,
    targets: Object.fromEntries(
      Object.entries(out).map(([k, o]) => [k, { ...o, ms: durations[k] ?? 0, byAnswer: sortDesc(o.byAnswer), byKind: sortDesc(o.byKind) }]),
    ),
    successorExits: successors.exits,
    serviceChecks: checks,
    slowClients: slow,
    verifiedWrites,
    rssKb: rss,
    violations: violation ? [violation] : [],
  };
  if (opts.summaryFile) writeFileSync(opts.summaryFile, `${JSON.stringify(summary, null, 2)}\n`);
  console.log('');
  console.log(`fuzz summary: seed ${opts.seed}, ${total} inputs in ${(durationMs / 1000).toFixed(1)} s`);
  for (const [name, o] of Object.entries(out)) {
    console.log(
      `  ${name.padEnd(9)} ${o.inputs} inputs on ${o.connections} connections in ${((durations[name] ?? 0) / 1000).toFixed(1)} s (${o.redrawn} redrawn${o.busyRetries ? `, ${o.busyRetries} E_BUSY retries` : ''})`,
    );
    console.log(`            answers: ${Object.entries(sortDesc(o.byAnswer)).map(([k, n]) => `${k}=${n}`).join(', ')}`);
    console.log(`            inputs:  ${Object.entries(sortDesc(o.byKind)).map(([k, n]) => `${k}=${n}`).join(', ')}`);
  }
  console.log(`  successor exits: ${JSON.stringify(successors.exits)}`);
  for (const [name, r] of Object.entries(slow)) console.log(`  slow clients on ${name}: ${r.closedByServer}/${r.clients} closed by the server (longest ${r.maxOpenMs} ms), ${r.realRequests - r.realFailures}/${r.realRequests} real requests answered meanwhile`);
  console.log(`  service: ${checks} checks (same incumbent pid, lock held, /healthz, a write), ${verifiedWrites} writes read back`);
  for (const [name, r] of Object.entries(rss)) console.log(`  RSS ${name}: ${r.before} kB after warm-up, peak ${r.peak} kB, ${r.after} kB at the end`);
  if (violation) {
    console.log(`  VIOLATION (${violation.target}): ${violation.message}`);
    if (violation.input) console.log(`  input (hex): ${violation.input.slice(0, 4000)}${violation.input.length > 4000 ? '…' : ''}`);
    console.log(`  replay: npm run fuzz -- --seed ${opts.seed} --inputs ${opts.inputs}${opts.sharesArg ? ` --shares ${opts.sharesArg}` : ''}${opts.holdBackKnown ? ' --hold-back-known' : ''} (the inputs replay; which one fails first can vary: the three targets run concurrently)`);
    process.exit(1);
  }
  console.log('  violations: 0');
}

function sortDesc(rec: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(rec).sort((a, b) => b[1] - a[1]));
}

const isMain = process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  main().catch((err: unknown) => {
    console.error(`fuzz: ${(err as Error).stack ?? String(err)}`);
    process.exit(2);
  });
}
