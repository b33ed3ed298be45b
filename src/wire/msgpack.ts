/**
 * A strict msgpack reader for frame bodies.
 *
 * Why not msgpackr's unpack: it is deliberately lenient in ways a wire protocol
 * must not be — 0xc1 decodes to a marker object, some ext types change how later
 * bytes are read (records, bundled strings), others become Dates/Sets/Errors —
 * and it reports trailing bytes only through an error message. This reader
 * accepts exactly standard msgpack minus ext types and returns plain values:
 *
 *   nil -> null, bool, int -> number (bigint for 64-bit encodings), float -> WireFloat,
 *   str -> string (strict UTF-8), bin -> Buffer (a copy), array, map -> object
 *
 * Maps must have str keys and no duplicate keys. Every failure is a MsgpackError
 * (`trailing` set when a complete value is followed by more bytes).
 */

export class MsgpackError extends Error {
  constructor(
    message: string,
    readonly trailing = false,
  ) {
    super(message);
    this.name = 'MsgpackError';
  }
}

/** A msgpack float, kept distinct from ints so integer fields can reject it. */
export class WireFloat {
  constructor(readonly value: number) {}
}

/** Nesting deeper than this is rejected (protects the stack; real messages nest 2 levels). */
const MAX_DEPTH = 32;
// ignoreBOM: a leading U+FEFF is part of the string, not a marker to strip.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

class Reader {
  pos: number;
  private readonly view: DataView;
  constructor(
    private readonly src: Uint8Array,
    start: number,
    private readonly end: number,
  ) {
    this.pos = start;
    this.view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  }

  private need(n: number): void {
    if (this.pos + n > this.end) throw new MsgpackError(`truncated msgpack value at offset ${this.pos}`);
  }

  private u8(): number {
    this.need(1);
    return this.src[this.pos++] as number;
  }
  private u16(): number {
    this.need(2);
    const v = this.view.getUint16(this.pos);
    this.pos += 2;
    return v;
  }
  private u32(): number {
    this.need(4);
    const v = this.view.getUint32(this.pos);
    this.pos += 4;
    return v;
  }

  value(depth: number): unknown {
    const t = this.u8();
    if (t < 0x80) return t;
    if (t >= 0xe0) return t - 0x100;
    if (t < 0x90) return this.map(t & 0x0f, depth);
    if (t < 0xa0) return this.array(t & 0x0f, depth);
    if (t < 0xc0) return this.str(t & 0x1f);
    const v = this.view;
    switch (t) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xc4:
        return this.bin(this.u8());
      case 0xc5:
        return this.bin(this.u16());
      case 0xc6:
        return this.bin(this.u32());
      case 0xca: {
        this.need(4);
        const x = v.getFloat32(this.pos);
        this.pos += 4;
        return new WireFloat(x);
      }
      case 0xcb: {
        this.need(8);
        const x = v.getFloat64(this.pos);
        this.pos += 8;
        return new WireFloat(x);
      }
      case 0xcc:
        return this.u8();
      case 0xcd:
        return this.u16();
      case 0xce:
        return this.u32();
      case 0xcf: {
        this.need(8);
        const x = v.getBigUint64(this.pos);
        this.pos += 8;
        return x;
      }
      case 0xd0: {
        const x = this.u8();
        return x < 0x80 ? x : x - 0x100;
      }
      case 0xd1: {
        this.need(2);
        const x = v.getInt16(this.pos);
        this.pos += 2;
        return x;
      }
      case 0xd2: {
        this.need(4);
        const x = v.getInt32(this.pos);
        this.pos += 4;
        return x;
      }
      case 0xd3: {
        this.need(8);
        const x = v.getBigInt64(this.pos);
        this.pos += 8;
        return x;
      }
      case 0xd9:
        return this.str(this.u8());
      case 0xda:
        return this.str(this.u16());
      case 0xdb:
        return this.str(this.u32());
      case 0xdc:
        return this.array(this.u16(), depth);
      case 0xdd:
        return this.array(this.u32(), depth);
      case 0xde:
        return this.map(this.u16(), depth);
      case 0xdf:
        return this.map(this.u32(), depth);
      case 0xc1:
        throw new MsgpackError(`reserved byte 0xc1 at offset ${this.pos - 1}`);
      default: // 0xc7-0xc9, 0xd4-0xd8
        throw new MsgpackError(`ext type (0x${t.toString(16)}) at offset ${this.pos - 1}: not used by this protocol`);
    }
  }

  str(len: number): string {
    this.need(len);
    const src = this.src;
    const start = this.pos;
    this.pos += len;
    if (len <= 16) {
      // Short ASCII (field names, shard names): cheaper than TextDecoder.
      let s = '';
      for (let i = start; i < start + len; i++) {
        const c = src[i] as number;
        if (c >= 0x80) return this.utf8(start, len);
        s += String.fromCharCode(c);
      }
      return s;
    }
    return this.utf8(start, len);
  }

  private utf8(start: number, len: number): string {
    try {
      return utf8.decode(this.src.subarray(start, start + len));
    } catch {
      throw new MsgpackError(`invalid UTF-8 in str at offset ${start}`);
    }
  }

  private bin(len: number): Buffer {
    this.need(len);
    // A copy: the source chunk may be reused by its owner.
    const out = Buffer.from(this.src.subarray(this.pos, this.pos + len));
    this.pos += len;
    return out;
  }

  private array(n: number, depth: number): unknown[] {
    if (depth >= MAX_DEPTH) throw new MsgpackError(`nesting deeper than ${MAX_DEPTH}`);
    this.need(n); // every element takes at least one byte: no huge allocation from a bogus count
    const out = new Array<unknown>(n);
    for (let i = 0; i < n; i++) out[i] = this.value(depth + 1);
    return out;
  }

  private map(n: number, depth: number): Record<string, unknown> {
    if (depth >= MAX_DEPTH) throw new MsgpackError(`nesting deeper than ${MAX_DEPTH}`);
    this.need(2 * n);
    const out: Record<string, unknown> = {};
    let prev = ''; // '' sorts below every other key; a second '' fails `key > prev` and is checked
    for (let i = 0; i < n; i++) {
      const at = this.pos;
      const t = this.src[at] as number;
      let key: string;
      if (t >= 0xa0 && t < 0xc0) {
        const len = t & 0x1f;
        this.pos++;
        this.need(len);
        key = cachedKey(this.src, this.pos, len) ?? this.str(len);
        if (this.pos === at + 1) this.pos += len; // cache hit: str() did not advance
      } else if (t === 0xd9 || t === 0xda || t === 0xdb) {
        key = this.value(depth + 1) as string;
      } else throw new MsgpackError(`map key at offset ${at} is not a str`);
      // Keys in strictly ascending order (canonical maps are sorted) cannot repeat,
      // so the hasOwn lookup is only needed once the order breaks.
      if (key > prev) prev = key;
      else if (Object.hasOwn(out, key)) throw new MsgpackError(`duplicate map key ${JSON.stringify(key)} at offset ${at}`);
      const val = this.value(depth + 1);
      if (key === '__proto__') Object.defineProperty(out, key, { value: val, enumerable: true, writable: true, configurable: true });
      else out[key] = val;
    }
    return out;
  }
}

// Map keys repeat from frame to frame (field names, shard names). Returning the
// same string object for the same bytes makes the object inserts that follow much
// cheaper than with a freshly built string (V8 compares/hashes it once).
const KEY_CACHE_SLOTS = 4096;
const keyCache: (string | undefined)[] = new Array<string | undefined>(KEY_CACHE_SLOTS);

/**
 * The string for the ASCII bytes src[start, start+len), from (or added to) the
 * cache; undefined if a byte is not ASCII. The caller checks the bounds.
 * Also used by the codec's fast decoder for short str values (type names, ids, phases).
 */
export function cachedKey(src: Uint8Array, start: number, len: number): string | undefined {
  let h = len;
  for (let i = start; i < start + len; i++) {
    const c = src[i] as number;
    if (c >= 0x80) return undefined; // non-ASCII keys take the normal path
    h = (Math.imul(h, 31) + c) | 0;
  }
  const slot = h & (KEY_CACHE_SLOTS - 1);
  const hit = keyCache[slot];
  if (hit !== undefined && hit.length === len) {
    let i = 0;
    while (i < len && hit.charCodeAt(i) === src[start + i]) i++;
    if (i === len) return hit;
  }
  let s = '';
  for (let i = start; i < start + len; i++) s += String.fromCharCode(src[i] as number);
  keyCache[slot] = s;
  return s;
}

/** Decode exactly one msgpack value spanning src[start, end). Throws MsgpackError. */
export function readMsgpack(src: Uint8Array, start = 0, end = src.length): unknown {
  if (start >= end) throw new MsgpackError('empty msgpack input');
  const r = new Reader(src, start, end);
  const value = r.value(0);
  if (r.pos !== end) throw new MsgpackError(`${end - r.pos} bytes after the msgpack value`, true);
  return value;
}
