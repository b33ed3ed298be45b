/**
 * Control-protocol input generators: golden vectors as they are and mutated,
 * schema-shaped messages (valid or with wrong kinds, missing, extra, duplicate fields),
 * random msgpack values, random bytes, interesting length fields, valid frames in
 * (mostly) invalid orders, Heartbeats.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { encodeFrame, FrameDecoder } from '../../src/wire/codec.js';
import { type FieldPlan, MESSAGE_PLANS } from '../../src/wire/messages.js';
import { MAX_FRAME_LENGTH, type Message } from '../../src/wire/schema.js';
import { Rng } from '../lib/prng.js';
import { frame, mp, u8 } from './msgpack.js';
import { ROOT } from './util.js';

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
export function mutate(rng: Rng, b: Buffer): Buffer {
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

export function randomString(rng: Rng, max = 24): string {
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
export function controlInput(rng: Rng, vectors: { valid: Vector[]; invalid: Vector[] }, sessionId: string | undefined): { kind: ControlKind; bytes: Buffer } {
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
