/**
 * msgpack building blocks for the input generators: every legal encoding of a value
 * (`mp`), and the frame around a body.
 */
import { Rng } from '../lib/prng.js';

export function u8(...b: number[]): Buffer {
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

export const mp = {
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
export function frame(body: Buffer, version = 1, length = body.length + 2): Buffer {
  const h = Buffer.alloc(6);
  h.writeUInt32BE(length >>> 0, 0);
  h.writeUInt16BE(version & 0xffff, 4);
  return Buffer.concat([h, body]);
}
