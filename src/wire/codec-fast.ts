/**
 * The frame decoder's fast path: one pass over a frame body that reads and
 * validates a message in the shape our own encoder writes (`type` first, then
 * known fields; revmaps with ascending ASCII keys and uint values), straight
 * from the bytes into the result, without the generic msgpack tree and the
 * second validation walk of the strict path (readMsgpack + validateMessage).
 *
 * It never decides that a frame is bad: on anything it does not handle (unknown
 * or duplicate field, nil, a non-canonical encoding, a value out of range,
 * invalid UTF-8, truncation, trailing bytes...) it returns undefined and the
 * caller decodes the body again with the strict path, which is the single
 * authority for errors and for the lenient-but-valid cases (unknown fields
 * ignored, any int encoding for u64, etc.). For every body it accepts, it returns
 * exactly what the strict path returns (test/codec-fast.test.ts checks this
 * differentially on random and mutated frames).
 *
 * Revision maps: building a 64-key object with keyed stores costs ~3 µs in V8
 * (it turns into a dictionary-mode object after a dozen keys) and a dictionary
 * object is slow to enumerate afterwards. A peer sends the same shard names
 * frame after frame, so once a revmap field has arrived twice in a row with the
 * same keys, that key set gets a compiled constructor (an object literal: a
 * fast-mode object built in ~70 ns), and later frames are matched against the
 * key bytes instead of decoding the keys at all.
 */
import { cachedKey } from './msgpack.js';
import { MESSAGE_PLANS, type FieldPlan } from './messages.js';
import type { Message } from './schema.js';

// ---------------------------------------------------------------------------
// uint64 <-> bigint through a BigUint64Array cell: a typed-array store/load is
// inlined by V8, DataView.setBigUint64 and Buffer.writeBigUInt64BE are not.

const cellBytes = new Uint8Array(8);
const cell = new BigUint64Array(cellBytes.buffer);
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Write v (already known to be 0..2^64-1) as 8 big-endian bytes at b[p]. */
export function writeU64BE(b: Uint8Array, p: number, v: bigint): void {
  cell[0] = v;
  const c = cellBytes;
  if (LITTLE_ENDIAN) {
    b[p] = c[7]!;
    b[p + 1] = c[6]!;
    b[p + 2] = c[5]!;
    b[p + 3] = c[4]!;
    b[p + 4] = c[3]!;
    b[p + 5] = c[2]!;
    b[p + 6] = c[1]!;
    b[p + 7] = c[0]!;
  } else b.set(c, p);
}

/** The 8 big-endian bytes at b[p] as a bigint (caller checks the bounds). */
export function readU64BE(b: Uint8Array, p: number): bigint {
  const c = cellBytes;
  if (LITTLE_ENDIAN) {
    c[7] = b[p]!;
    c[6] = b[p + 1]!;
    c[5] = b[p + 2]!;
    c[4] = b[p + 3]!;
    c[3] = b[p + 4]!;
    c[2] = b[p + 5]!;
    c[1] = b[p + 6]!;
    c[0] = b[p + 7]!;
  } else for (let i = 0; i < 8; i++) c[i] = b[p + i]!;
  return cell[0]!;
}

// ---------------------------------------------------------------------------
// Per-type decode plans

/** Thrown (never escapes this module) to hand the body to the strict path. */
const BAIL: unique symbol = Symbol('bail');
function bail(): never {
  throw BAIL;
}

/** Largest revmap that gets a compiled constructor (bigger ones are built key by key). */
const MAX_SHAPE_KEYS = 256;
/**
 * Compilations per revmap field over the process's life. Key sets are stable in
 * practice (an app's shard names); the cap keeps a peer that keeps changing them
 * from making us compile over and over (it then gets the key-by-key path).
 */
const MAX_COMPILES_PER_FIELD = 16;

/** Reads a revmap with a known key set: the map, or undefined if the bytes differ. */
type ShapeDecoder = (
  /** A view of b's whole ArrayBuffer; the entries start at d in it (at p in b). */
  dv: DataView,
  d: number,
  b: Uint8Array,
  p: number,
  readU64: (b: Uint8Array, p: number) => bigint,
) => Record<string, bigint> | undefined;

/** A compiled revmap key set. */
interface RevmapShape {
  readonly keys: readonly string[];
  /** Length of the entries as our encoder writes them: fixstr key, 0xcf, 8 value bytes. */
  readonly length: number;
  readonly decode: ShapeDecoder;
}

/** Shape state of one revmap field (e.g. SealComplete.lastRevisionPerShard). */
interface RevmapSlot {
  shape: RevmapShape | undefined;
  /** Keys of the last map that had no shape: compiled when the next map repeats them. */
  candidate: string[] | undefined;
  compiles: number;
}

interface FieldDec {
  readonly plan: FieldPlan;
  /** The field name's bytes (no header; names are short ASCII). */
  readonly name: Uint8Array;
  readonly slot: RevmapSlot | undefined;
}

interface TypeDec {
  readonly type: string;
  readonly fields: readonly FieldDec[];
  readonly requiredMask: number;
  readonly allMask: number;
  /** Builds the result when every field is present: `{ type, ...fields in schema order }`. */
  readonly build: (values: readonly unknown[]) => Message;
}

/**
 * `new Function` only ever sees schema field names and revmap keys that passed the
 * checks in compileShape, each written as a JSON string literal (JSON.stringify
 * escapes quotes, backslashes and control characters), so no input can inject code.
 */
function compileBuilder<T>(keys: readonly string[], prefix: string): (values: readonly unknown[]) => T {
  const props = keys.map((k, i) => `${JSON.stringify(k)}: v[${i}]`);
  // eslint-disable-next-line @typescript-eslint/no-implied-eval
  return new Function('v', `return { ${[prefix, ...props].filter(Boolean).join(', ')} };`) as (values: readonly unknown[]) => T;
}

const TYPE_DECS = new Map<string, TypeDec>();
for (const [type, plan] of MESSAGE_PLANS) {
  let requiredMask = 0;
  const fields = plan.fields.map((f, i): FieldDec => {
    if (!f.optional) requiredMask |= 1 << i;
    if (!/^[A-Za-z0-9]{1,31}$/.test(f.name)) throw new Error(`schema field name ${f.name} is not short ASCII`);
    return {
      plan: f,
      name: Buffer.from(f.name, 'ascii'),
      slot: f.kind === 'revmap' ? { shape: undefined, candidate: undefined, compiles: 0 } : undefined,
    };
  });
  if (fields.length > 30) throw new Error(`${type}: too many fields for the decoder's bit masks`);
  TYPE_DECS.set(type, {
    type,
    fields,
    requiredMask,
    allMask: (1 << fields.length) - 1,
    build: compileBuilder<Message>(
      plan.fields.map((f) => f.name),
      `type: ${JSON.stringify(type)}`,
    ),
  });
}

/**
 * A shape's decoder is straight-line code: one expression comparing every byte
 * but the values, 4 at a time, with constants (~3x faster than a loop over
 * tables), then an object literal reading the values. Its source holds only
 * numbers and the keys as JSON string literals (see compileBuilder).
 */
function compileShape(keys: readonly string[]): RevmapShape {
  const n = keys.length;
  const length = keys.reduce((sum, k) => sum + k.length + 10, 0);
  const bytes = Buffer.alloc(length);
  const mask = Buffer.alloc(length);
  const props: string[] = [];
  let p = 0;
  for (let i = 0; i < n; i++) {
    const k = keys[i]!;
    bytes[p] = 0xa0 | k.length;
    bytes.write(k, p + 1, 'latin1');
    bytes[p + 1 + k.length] = 0xcf;
    mask.fill(0xff, p, p + k.length + 2);
    props.push(`${JSON.stringify(k)}: rd(b, p + ${p + k.length + 2})`);
    p += k.length + 10;
  }
  // The last partial word holds only value bytes: never compared.
  const checks: string[] = [];
  for (let q = 0; q + 4 <= length; q += 4) {
    const m = mask.readInt32BE(q);
    if (m === 0) continue;
    const word = `(dv.getInt32(d + ${q}) ^ ${bytes.readInt32BE(q) & m})`;
    checks.push(m === -1 ? word : `(${word} & ${m})`);
  }
  const src = `if ((${checks.join(' | ') || '0'}) !== 0) return undefined;\nreturn { ${props.join(', ')} };`;
  // eslint-disable-next-line @typescript-eslint/no-implied-eval
  const decode = new Function('dv', 'd', 'b', 'p', 'rd', src) as ShapeDecoder;
  return { keys: keys.slice(), length, decode };
}

// Scratch arrays for revmap entries (decoding is synchronous and not re-entrant).
let scratchVals: bigint[] = [];
let scratchKeys: string[] = [];

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }); // as in msgpack.ts

/**
 * A DataView of the last ArrayBuffer a shape was matched in: frames from one
 * socket read or one encoder slab share it, and a new DataView costs ~0.1 us.
 * Only kept for buffers up to 64 KiB, so it never holds on to a large one.
 */
let viewedBuffer: ArrayBufferLike | undefined;
let view: DataView | undefined;

function viewOf(ab: ArrayBufferLike): DataView {
  if (ab === viewedBuffer) return view!;
  const dv = new DataView(ab);
  if (ab.byteLength <= 64 * 1024) {
    viewedBuffer = ab;
    view = dv;
  }
  return dv;
}

class FastReader {
  pos: number;
  constructor(
    private readonly b: Uint8Array,
    start: number,
    private readonly end: number,
  ) {
    this.pos = start;
  }

  private need(n: number): void {
    if (this.pos + n > this.end) bail();
  }

  /** A uint (positive fixint, uint8/16/32); anything else bails. */
  private smallUint(t: number): number {
    const b = this.b;
    const p = this.pos;
    if (t < 0x80) return t;
    if (t === 0xcc) {
      this.need(1);
      this.pos++;
      return b[p]!;
    }
    if (t === 0xcd) {
      this.need(2);
      this.pos += 2;
      return (b[p]! << 8) | b[p + 1]!;
    }
    if (t === 0xce) {
      this.need(4);
      this.pos += 4;
      return b[p]! * 0x100_0000 + ((b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!);
    }
    return bail();
  }

  private u64(): bigint {
    this.need(1);
    const t = this.b[this.pos++]!;
    if (t === 0xcf) {
      this.need(8);
      const v = readU64BE(this.b, this.pos);
      this.pos += 8;
      return v;
    }
    return BigInt(this.smallUint(t));
  }

  /** Length of a str whose header is at pos (advances past the header). */
  private strLen(): number {
    this.need(1);
    const t = this.b[this.pos++]!;
    if (t >= 0xa0 && t < 0xc0) return t & 0x1f;
    if (t === 0xd9 || t === 0xda || t === 0xdb) return this.smallUint(t === 0xd9 ? 0xcc : t === 0xda ? 0xcd : 0xce);
    return bail();
  }

  str(): string {
    const len = this.strLen();
    this.need(len);
    const start = this.pos;
    this.pos += len;
    if (len < 32) {
      const s = cachedKey(this.b, start, len);
      if (s !== undefined) return s;
    }
    try {
      return utf8.decode(this.b.subarray(start, start + len));
    } catch {
      return bail();
    }
  }

  private bin(): Buffer {
    this.need(1);
    const t = this.b[this.pos++]!;
    const len = t === 0xc4 ? this.smallUint(0xcc) : t === 0xc5 ? this.smallUint(0xcd) : t === 0xc6 ? this.smallUint(0xce) : bail();
    this.need(len);
    const start = this.pos;
    this.pos += len;
    // A copy (the source chunk may be reused by its owner), as the strict reader makes;
    // by hand for short ones (fingerprints, build ids): Buffer.from(subarray) costs ~0.1 us more.
    if (len > 64) return Buffer.from(this.b.subarray(start, start + len));
    const out = Buffer.allocUnsafe(len);
    for (let i = 0; i < len; i++) out[i] = this.b[start + i]!;
    return out;
  }

  private mapOrArrayLen(fix: number, t16: number, t32: number): number {
    this.need(1);
    const t = this.b[this.pos++]!;
    if ((t & 0xf0) === fix) return t & 0x0f;
    if (t === t16) return this.smallUint(0xcd);
    if (t === t32) return this.smallUint(0xce);
    return bail();
  }

  private revmap(slot: RevmapSlot): Record<string, bigint> {
    const n = this.mapOrArrayLen(0x80, 0xde, 0xdf);
    this.need(2 * n);
    if (scratchVals.length < n) {
      scratchVals = new Array<bigint>(n).fill(0n);
      scratchKeys = new Array<string>(n).fill('');
    }
    const vals = scratchVals;
    const b = this.b;
    const shape = slot.shape;
    const p0 = this.pos;
    if (shape !== undefined && shape.keys.length === n && p0 + shape.length <= this.end) {
      // No key string is built; readU64BE is ~5 % faster than dv.getBigUint64.
      const out = shape.decode(viewOf(b.buffer), b.byteOffset + p0, b, p0, readU64BE);
      if (out !== undefined) {
        this.pos = p0 + shape.length;
        return out;
      }
    }
    // Key by key. Keys must ascend strictly (canonical order; rules out duplicates)
    // and be short ASCII; anything else (including a '' key) goes to the strict path.
    const keys = scratchKeys;
    let prev = '';
    for (let i = 0; i < n; i++) {
      this.need(1);
      const t = b[this.pos]!;
      if (t < 0xa0 || t >= 0xc0) bail();
      const len = t & 0x1f;
      this.need(1 + len);
      const k = cachedKey(b, this.pos + 1, len);
      if (k === undefined || !(k > prev) || k === '__proto__') bail();
      this.pos += 1 + len;
      prev = keys[i] = k;
      vals[i] = this.u64();
    }
    const out: Record<string, bigint> = {};
    for (let j = 0; j < n; j++) out[keys[j]!] = vals[j]!;
    if (n > 0 && n <= MAX_SHAPE_KEYS && slot.compiles < MAX_COMPILES_PER_FIELD) learnShape(slot, keys, n);
    return out;
  }

  private field(f: FieldDec): unknown {
    const p = f.plan;
    switch (p.kind) {
      case 'u32': {
        this.need(1);
        const t = this.b[this.pos++]!;
        return this.smallUint(t);
      }
      case 'u64':
        return this.u64();
      case 'str':
        return this.str();
      case 'enum': {
        const s = this.str();
        if (!p.values!.has(s)) bail();
        return s;
      }
      case 'bool': {
        this.need(1);
        const t = this.b[this.pos++]!;
        if (t === 0xc3) return true;
        if (t === 0xc2) return false;
        return bail();
      }
      case 'bin':
        return this.bin();
      case 'bin32': {
        const v = this.bin();
        if (v.length !== 32) bail();
        return v;
      }
      case 'revmap':
        return this.revmap(f.slot!);
      case 'strlist': {
        const n = this.mapOrArrayLen(0x90, 0xdc, 0xdd);
        this.need(n);
        const out = new Array<string>(n);
        for (let i = 0; i < n; i++) out[i] = this.str();
        return out;
      }
    }
  }

  message(): Message {
    const b = this.b;
    const n = this.mapOrArrayLen(0x80, 0xde, 0xdf);
    // First entry: fixstr "type" and the type name.
    this.need(5);
    const p = this.pos;
    if (n === 0 || b[p] !== 0xa4 || b[p + 1] !== 0x74 || b[p + 2] !== 0x79 || b[p + 3] !== 0x70 || b[p + 4] !== 0x65) bail();
    this.pos = p + 5;
    const td = TYPE_DECS.get(this.str()) ?? bail();
    const fields = td.fields;
    const vals = new Array<unknown>(fields.length);
    let seen = 0;
    let next = 0; // our encoder writes the fields in schema order: try that one first
    for (let e = 1; e < n; e++) {
      this.need(1);
      const t = b[this.pos]!;
      if (t < 0xa0 || t >= 0xc0) bail();
      const len = t & 0x1f;
      this.need(1 + len);
      const at = this.pos + 1;
      let j = -1;
      for (let c = 0; c < fields.length; c++) {
        const cand = next + c < fields.length ? next + c : next + c - fields.length;
        const name = fields[cand]!.name;
        if (name.length !== len) continue;
        let k = 0;
        while (k < len && b[at + k] === name[k]) k++;
        if (k === len) {
          j = cand;
          break;
        }
      }
      if (j < 0 || (seen & (1 << j)) !== 0) bail(); // unknown field (strict path ignores it) or duplicate
      this.pos = at + len;
      seen |= 1 << j;
      vals[j] = this.field(fields[j]!);
      next = j + 1;
    }
    if (this.pos !== this.end || (seen & td.requiredMask) !== td.requiredMask) bail();
    if (seen === td.allMask) return td.build(vals);
    // An optional field is absent: the result has no key for it.
    const out: Record<string, unknown> = { type: td.type };
    for (let j = 0; j < fields.length; j++) if ((seen & (1 << j)) !== 0) out[fields[j]!.plan.name] = vals[j];
    return out as unknown as Message;
  }
}

/** Compile a constructor for a key set once it arrives twice in a row in this field. */
function learnShape(slot: RevmapSlot, keys: readonly string[], n: number): void {
  const cand = slot.candidate;
  let same = cand !== undefined && cand.length === n;
  for (let i = 0; same && i < n; i++) same = cand![i] === keys[i];
  if (same) {
    slot.shape = compileShape(cand!);
    slot.candidate = undefined;
    slot.compiles++;
  } else slot.candidate = keys.slice(0, n);
}

/** For tests: forget every compiled key set, and count the compilations since. */
export function resetLearnedShapes(): void {
  for (const td of TYPE_DECS.values()) {
    for (const f of td.fields) {
      if (f.slot === undefined) continue;
      f.slot.shape = undefined;
      f.slot.candidate = undefined;
      f.slot.compiles = 0;
    }
  }
}

/** For tests: compilations since the last resetLearnedShapes(), over all fields. */
export function learnedShapeCompiles(): number {
  let n = 0;
  for (const td of TYPE_DECS.values()) for (const f of td.fields) n += f.slot?.compiles ?? 0;
  return n;
}

/**
 * Decode and validate the frame body src[start, end), or undefined if the strict
 * path must decide (see the module comment). Never throws.
 */
export function fastDecodeBody(src: Uint8Array, start: number, end: number): Message | undefined {
  try {
    return new FastReader(src, start, end).message();
  } catch {
    // BAIL, or a bug here: either way the strict path decides, so a fast-path bug
    // can cost speed but never turn a valid frame into an error or vice versa.
    return undefined;
  }
}
