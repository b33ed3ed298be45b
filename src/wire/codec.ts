/**
 * Control-protocol framing (spec: protocol/PROTOCOL.md).
 *
 *   frame = u32be length | u16be version | msgpack map
 *
 * `length` counts everything after itself (version + body), 2..MAX_FRAME_LENGTH.
 *
 * Encoding is done here by hand rather than by msgpackr: msgpackr writes small
 * bigints as int64 (0xd3) and plain objects as map16, while the protocol wants
 * u64 always as uint64 (0xcf) and the canonical, smallest headers elsewhere so
 * that golden vectors are reproducible in any language. Decoding uses the strict
 * reader in msgpack.ts (see there why not msgpackr).
 *
 * Both directions have a fast path for the usual case (BENCHMARKS.md#codec):
 * encodeFrame validates while writing (writeMessageFast) and the decoder reads
 * straight into the result (codec-fast.ts). Each declines anything unusual to
 * the general path (validateMessage then write; strict reader then
 * validateMessage), which alone decides errors; test/codec-fast.test.ts checks
 * that the two always agree.
 */
import { ProtocolError } from '../os/errors.js';
import { fastDecodeBody, writeU64BE } from './codec-fast.js';
import { MsgpackError, readMsgpack } from './msgpack.js';
import {
  isPlainObject,
  MESSAGE_PLANS,
  MessageErrorCode,
  revmapEntry,
  U32_MAX,
  validateMessage,
  type MessagePlan,
} from './messages.js';
import { MAX_FRAME_LENGTH, PROTO_MAX, PROTO_MIN, PROTOCOL_VERSION, type Message } from './schema.js';

/** Every code codec functions throw (as ProtocolError). */
export const CodecErrorCode = {
  ...MessageErrorCode,
  /** Length field > MAX_FRAME_LENGTH (decoder: rejected as soon as the 4 length bytes arrive), or encoded message too big. */
  E_FRAME_TOO_LARGE: 'E_FRAME_TOO_LARGE',
  /** Length field < 2 (no room for the version). */
  E_FRAME_TOO_SHORT: 'E_FRAME_TOO_SHORT',
  /** The body is not one valid msgpack value: empty, truncated, 0xc1, ext type, bad UTF-8, non-str or duplicate map key, nesting > 32. */
  E_BAD_MSGPACK: 'E_BAD_MSGPACK',
  /** The body holds bytes after the msgpack value. */
  E_TRAILING_BYTES: 'E_TRAILING_BYTES',
  /** Header version outside the accepted range (checked as soon as the 6 header bytes arrive). */
  E_BAD_VERSION: 'E_BAD_VERSION',
  /** The stream ended (end()) inside a frame. */
  E_TRUNCATED: 'E_TRUNCATED',
  /** negotiateVersion: no version in common. */
  E_VERSION_MISMATCH: 'E_VERSION_MISMATCH',
} as const;
export type CodecErrorCode = (typeof CodecErrorCode)[keyof typeof CodecErrorCode];

/** Length prefix + version. */
export const FRAME_HEADER_BYTES = 6;
/** Hello, HelloAck and any Error sent before HelloAck always carry this header version. */
export const HANDSHAKE_VERSION = 1;

export interface DecodedFrame {
  version: number;
  message: Message;
}

// ---------------------------------------------------------------------------
// Encoder

const SLAB_BYTES = 64 * 1024;
/** A new slab is started when less than this is left in the current one. */
const MIN_SLAB_ROOM = 4 * 1024;
/** A frame may not need more than this many bytes in all. */
const MAX_TOTAL = MAX_FRAME_LENGTH + 4;
/** Writer methods reserve a few bytes more than they write (e.g. 5 for any int); allow for it at the cap. */
const MAX_SCRATCH = MAX_TOTAL + 16;

function tooLarge(what: string): ProtocolError {
  return new ProtocolError('E_FRAME_TOO_LARGE', `${what} exceeds the frame cap of ${MAX_FRAME_LENGTH} bytes`);
}

/** Pre-encoded `type` entry and field-name keys of one message type. */
interface EncodePlan {
  readonly plan: MessagePlan;
  readonly typeEntry: Buffer; // fixstr "type" + str type name
  readonly keys: readonly Buffer[];
  readonly hasOptional: boolean;
  /** Per field: the last revmap key set written by writeRevmapFast (revmap fields only). */
  readonly revmapTemplates: (RevmapTemplate | undefined)[];
}

/**
 * The encoding of one revmap key set with zeroed values. Maps with the same keys
 * (an engine sends the same shard names every time) are written by copying it
 * and filling in the 8 value bytes of each entry.
 */
interface RevmapTemplate {
  readonly keys: readonly string[];
  /** Map header + entries, each value as 0xcf + 8 zero bytes. */
  readonly bytes: Buffer;
  /** Offset in `bytes` of each entry's 8 value bytes. */
  readonly valueAt: Int32Array;
}

/**
 * Writes frames straight into a slab (64 KiB, like Buffer.allocUnsafe's 8 KiB
 * pool but with fewer, larger allocations) and hands each one out as a view of
 * it: no copy-out (~10 % of a 1.3 KB frame's encode time). A frame keeps its
 * slab alive while referenced (normally until written to the socket). The frame
 * being written is buf[base, pos); positions that must survive ensure() (which
 * may move it to a new slab) are kept relative to base.
 */
class Writer {
  buf = Buffer.allocUnsafeSlow(SLAB_BYTES);
  /** Start of the frame being written. */
  base = 0;
  pos = 0;
  /** End of the last frame handed out. */
  private used = 0;

  /** Start a frame (writing begins after its 6 header bytes). */
  begin(): void {
    let base = (this.used + 7) & ~7; // 8-byte aligned, as Buffer's pool does
    // (A buffer grown for one big frame is not kept for the small ones after it.)
    if (this.buf.length - base < MIN_SLAB_ROOM || this.buf.length > SLAB_BYTES) {
      this.buf = Buffer.allocUnsafeSlow(SLAB_BYTES);
      base = 0;
    }
    this.base = base;
    this.pos = base + FRAME_HEADER_BYTES;
  }

  /** Hand out the frame written since begin(). */
  finish(): Buffer {
    this.used = this.pos;
    return Buffer.from(this.buf.buffer, this.buf.byteOffset + this.base, this.pos - this.base);
  }

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const len = this.pos - this.base;
    if (len + n > MAX_SCRATCH) throw tooLarge('message');
    const next = Buffer.allocUnsafeSlow(Math.min(MAX_SCRATCH, Math.max(SLAB_BYTES, 2 * (len + n))));
    this.buf.copy(next, 0, this.base, this.pos);
    this.buf = next;
    this.base = 0;
    this.pos = len;
    this.used = 0;
  }

  raw(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  /** Smallest unsigned encoding (positive fixint, uint8/16/32). */
  uint(n: number): void {
    this.ensure(5);
    const b = this.buf;
    if (n < 0x80) b[this.pos++] = n;
    else if (n < 0x100) {
      b[this.pos++] = 0xcc;
      b[this.pos++] = n;
    } else if (n < 0x10000) {
      b[this.pos++] = 0xcd;
      b.writeUInt16BE(n, this.pos);
      this.pos += 2;
    } else {
      b[this.pos++] = 0xce;
      b.writeUInt32BE(n, this.pos);
      this.pos += 4;
    }
  }

  /** Always uint64 (0xcf), whatever the value (the caller has checked 0..2^64-1). */
  u64(n: bigint): void {
    this.ensure(9);
    this.buf[this.pos] = 0xcf;
    writeU64BE(this.buf, this.pos + 1, n);
    this.pos += 9;
  }

  /** Returns true if the string was ASCII and short (so its bytes equal its UTF-16 units). */
  str(s: string): boolean {
    const n = s.length;
    if (n < 32) {
      // ASCII fast path for short strings; falls through on the first non-ASCII char.
      this.ensure(n + 1);
      const b = this.buf;
      const start = this.pos + 1;
      let i = 0;
      for (; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) break;
        b[start + i] = c;
      }
      if (i === n) {
        b[this.pos] = 0xa0 | n;
        this.pos = start + n;
        return true;
      }
    }
    const len = Buffer.byteLength(s, 'utf8');
    this.header(len, 0xa0, 32, 0xd9, 0xda, 0xdb);
    this.ensure(len);
    this.buf.write(s, this.pos, len, 'utf8');
    this.pos += len;
    return false;
  }

  bin(v: Uint8Array): void {
    this.header(v.length, -1, 0, 0xc4, 0xc5, 0xc6);
    this.raw(v);
  }

  mapHeader(n: number): void {
    this.header(n, 0x80, 16, -1, 0xde, 0xdf);
  }

  arrayHeader(n: number): void {
    this.header(n, 0x90, 16, -1, 0xdc, 0xdd);
  }

  /** Smallest of fix (if fixBase >= 0 and n < fixLimit) / 8-bit (if t8 >= 0) / 16-bit / 32-bit length header. */
  private header(n: number, fixBase: number, fixLimit: number, t8: number, t16: number, t32: number): void {
    if (n > MAX_TOTAL) throw tooLarge('field');
    this.ensure(5);
    const b = this.buf;
    if (fixBase >= 0 && n < fixLimit) b[this.pos++] = fixBase | n;
    else if (t8 >= 0 && n < 0x100) {
      b[this.pos++] = t8;
      b[this.pos++] = n;
    } else if (n < 0x10000) {
      b[this.pos++] = t16;
      b.writeUInt16BE(n, this.pos);
      this.pos += 2;
    } else {
      b[this.pos++] = t32;
      b.writeUInt32BE(n, this.pos);
      this.pos += 4;
    }
  }
}

const writer = new Writer();

/** Bytes of a str in its canonical encoding (for pre-encoded keys). */
function encodeStr(s: string): Buffer {
  const w = writer;
  w.begin(); // nothing is handed out: the bytes are copied
  w.str(s);
  return Buffer.from(w.buf.subarray(w.base + FRAME_HEADER_BYTES, w.pos));
}

const ENCODE_PLANS = new Map<string, EncodePlan>();
for (const [type, plan] of MESSAGE_PLANS) {
  ENCODE_PLANS.set(type, {
    plan,
    typeEntry: Buffer.concat([encodeStr('type'), encodeStr(type)]),
    keys: plan.fields.map((f) => encodeStr(f.name)),
    hasOptional: plan.fields.some((f) => f.optional),
    revmapTemplates: plan.fields.map(() => undefined),
  });
}

/**
 * Canonical revmap order: keys ascending by their UTF-8 bytes. Comparing UTF-16
 * code units gives the same order except that surrogates (code points >= U+10000)
 * must sort above U+E000..U+FFFF, hence the remap.
 */
export function compareUtf8(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800) x = x < 0xe000 ? x + 0x2000 : x - 0x800;
    if (y >= 0xd800) y = y < 0xe000 ? y + 0x2000 : y - 0x800;
    return x - y;
  }
  return a.length - b.length;
}

/**
 * Validate and write one revmap in a single pass. The engine's 64-shard maps are
 * dictionary-mode objects, where Object.keys alone costs ~1.5 µs, so validating
 * in validateMessage and then writing (two Object.keys + two lookups per entry)
 * was the largest encode cost. revmapEntry throws the validator's own errors.
 */
function writeRevmap(w: Writer, map: Record<string, unknown>, type: string, field: string): void {
  const keys = Object.keys(map);
  // Native string order is UTF-16 order, which equals UTF-8 order for ASCII keys (the
  // usual case); compareUtf8 is only needed when a key is not ASCII.
  let sorted = true;
  for (let i = 1; i < keys.length && sorted; i++) sorted = (keys[i - 1] as string) < (keys[i] as string);
  if (!sorted) keys.sort(compareUtf8);
  const start = w.pos - w.base;
  let ascii = true;
  w.mapHeader(keys.length);
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i] as string;
    // A short ASCII key (w.str returns true) is well-formed: no isWellFormed call needed.
    const keyAscii = w.str(k);
    ascii = keyAscii && ascii;
    w.u64(revmapEntry(type, field, k, map[k], keyAscii));
  }
  if (sorted && !ascii) {
    const resorted = keys.slice().sort(compareUtf8);
    if (resorted.some((k, i) => k !== keys[i])) {
      w.pos = w.base + start;
      w.mapHeader(keys.length);
      for (const k of resorted) {
        w.str(k);
        w.u64(revmapEntry(type, field, k, map[k], true)); // already validated above
      }
    }
  }
}


function writeMessage(w: Writer, msg: Record<string, unknown>, ep: EncodePlan): void {
  const fields = ep.plan.fields;
  let count = fields.length + 1;
  if (ep.hasOptional) for (const f of fields) if (msg[f.name] === undefined) count--;
  w.mapHeader(count);
  w.raw(ep.typeEntry);
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i]!;
    const v = msg[f.name];
    if (v === undefined) continue;
    w.raw(ep.keys[i]!);
    switch (f.kind) {
      case 'u32':
        w.uint(v as number);
        break;
      case 'u64':
        w.u64(v as bigint);
        break;
      case 'str':
      case 'enum':
        w.str(v as string);
        break;
      case 'bool':
        w.ensure(1);
        w.buf[w.pos++] = v ? 0xc3 : 0xc2;
        break;
      case 'bin':
      case 'bin32':
        w.bin(v as Uint8Array);
        break;
      case 'revmap':
        writeRevmap(w, v as Record<string, unknown>, ep.plan.type, f.name);
        break;
      case 'strlist': {
        const list = v as string[];
        w.arrayHeader(list.length);
        for (const s of list) w.str(s);
        break;
      }
    }
  }
}

// Node 20 has String.prototype.isWellFormed; the ES2022 lib typings do not.
const isWellFormed = (s: string): boolean => (s as unknown as { isWellFormed(): boolean }).isWellFormed();

/** Largest revmap the encoder keeps a template of. */
const MAX_TEMPLATE_KEYS = 1024;

/**
 * Fast path of writeRevmap for the usual map: ASCII keys < 32 bytes in ascending
 * order, bigint values in range. Returns false (the caller rewinds and takes the
 * general path, which also reports errors) on anything else.
 *
 * Object.keys, not for-in: an app's 64-shard map, filled in a loop, is a
 * dictionary-mode object, where for-in costs ~25 % more (it re-checks every key).
 */
function writeRevmapFast(w: Writer, map: Record<string, unknown>, ep: EncodePlan, field: number): boolean {
  const keys = Object.keys(map);
  const n = keys.length;
  const t = ep.revmapTemplates[field];
  if (t !== undefined && t.keys.length === n) {
    // Same keys as last time (=== is a pointer compare for property-key strings):
    // copy the template, then fill in the values.
    const tk = t.keys;
    const at = t.valueAt;
    w.ensure(t.bytes.length);
    const start = w.pos;
    const b = w.buf;
    b.set(t.bytes, start); // not Buffer#copy: its argument checks cost more than the copy
    let i = 0;
    for (; i < n; i++) {
      const k = keys[i]!;
      if (k !== tk[i]) break;
      const v = map[k];
      if (typeof v !== 'bigint' || BigInt.asUintN(64, v) !== v) return false;
      writeU64BE(b, start + at[i]!, v);
    }
    if (i === n) {
      w.pos = start + t.bytes.length;
      return true;
    }
  }
  const start = w.pos - w.base; // relative: w.str/w.u64 may move the frame
  w.mapHeader(n);
  const valueAt = new Int32Array(n);
  let prev = '';
  for (let i = 0; i < n; i++) {
    const k = keys[i]!;
    const v = map[k];
    if (typeof v !== 'bigint' || BigInt.asUintN(64, v) !== v) return false;
    if ((i > 0 && !(prev < k)) || k === '__proto__' || !w.str(k)) return false; // w.str: false if not short ASCII
    valueAt[i] = w.pos - w.base - start + 1;
    w.u64(v);
    prev = k;
  }
  // Remember this key set (its bytes are the ones just written, values zeroed);
  // not for huge maps, whose copy would stay in memory for nothing.
  if (n > MAX_TEMPLATE_KEYS) return true;
  const bytes = Buffer.from(w.buf.subarray(w.base + start, w.pos));
  for (let i = 0; i < n; i++) bytes.fill(0, valueAt[i]!, valueAt[i]! + 8);
  ep.revmapTemplates[field] = { keys, bytes, valueAt };
  return true;
}

/**
 * Validate-while-writing for a message whose values already have the exact TS
 * types of the schema (what the engine and apps build). Returns false on
 * anything else (wrong kinds, nil for an optional field, a u64 given as a
 * number, a revmap off the fast path, ...): encodeFrame then rewinds and runs
 * validateMessage, which normalizes or throws the documented error.
 */
function writeMessageFast(w: Writer, msg: Record<string, unknown>, ep: EncodePlan): boolean {
  const fields = ep.plan.fields;
  let count = fields.length + 1;
  if (ep.hasOptional) for (const f of fields) if (!Object.hasOwn(msg, f.name) || msg[f.name] === undefined) count--;
  w.mapHeader(count);
  w.raw(ep.typeEntry);
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i]!;
    if (!Object.hasOwn(msg, f.name)) {
      if (f.optional) continue;
      return false;
    }
    const v = msg[f.name];
    if (v === undefined && f.optional) continue;
    w.raw(ep.keys[i]!);
    switch (f.kind) {
      case 'u32':
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > U32_MAX) return false;
        w.uint(v);
        break;
      case 'u64':
        if (typeof v !== 'bigint' || BigInt.asUintN(64, v) !== v) return false;
        w.u64(v);
        break;
      case 'str':
        // w.str is true for a short ASCII string (well-formed by construction).
        if (typeof v !== 'string' || (!w.str(v) && !isWellFormed(v))) return false;
        break;
      case 'enum':
        if (typeof v !== 'string' || !f.values!.has(v)) return false;
        w.str(v);
        break;
      case 'bool':
        if (typeof v !== 'boolean') return false;
        w.ensure(1);
        w.buf[w.pos++] = v ? 0xc3 : 0xc2;
        break;
      case 'bin':
      case 'bin32':
        if (!(v instanceof Uint8Array) || (f.kind === 'bin32' && v.length !== 32)) return false;
        w.bin(v);
        break;
      case 'revmap':
        if (!isPlainObject(v) || !writeRevmapFast(w, v, ep, i)) return false;
        break;
      case 'strlist': {
        if (!Array.isArray(v)) return false;
        w.arrayHeader(v.length);
        for (const s of v as unknown[]) if (typeof s !== 'string' || (!w.str(s) && !isWellFormed(s))) return false;
        break;
      }
    }
  }
  return true;
}

function checkVersionNumber(version: number): void {
  if (!Number.isInteger(version) || version < 0 || version > 0xffff) {
    throw new ProtocolError('E_BAD_VERSION', `frame version ${version} is not a u16`, { version });
  }
}

/**
 * Encode one message as one frame (a fresh Buffer, safe to hand to socket.write).
 * Validates first: throws ProtocolError (MessageErrorCode) for an invalid message,
 * E_FRAME_TOO_LARGE past the cap, E_BAD_VERSION if version is not a u16.
 */
export function encodeFrame(msg: Message, version: number = PROTOCOL_VERSION): Buffer {
  return encode(msg, version, true);
}

/** encodeFrame without its fast path: the reference for test/codec-fast.test.ts. */
export function encodeFrameGeneral(msg: Message, version: number = PROTOCOL_VERSION): Buffer {
  return encode(msg, version, false);
}

function encode(msg: Message, version: number, fast: boolean): Buffer {
  checkVersionNumber(version);
  const w = writer;
  const raw = msg as unknown as Record<string, unknown>;
  const type = fast && isPlainObject(raw) ? raw['type'] : undefined;
  let ep = typeof type === 'string' ? ENCODE_PLANS.get(type) : undefined;
  w.begin();
  let done = false;
  try {
    done = ep !== undefined && writeMessageFast(w, raw, ep);
  } catch {
    // E.g. the cap hit before a field the validator would reject first: the
    // general path below decides which error the caller sees.
  }
  if (!done) {
    w.pos = w.base + FRAME_HEADER_BYTES;
    // Revmap entries are validated by writeRevmap as it writes them (one pass).
    const m = validateMessage(msg, { revmapsCheckedByCaller: true }) as unknown as Record<string, unknown>;
    ep = ENCODE_PLANS.get(m['type'] as string) as EncodePlan;
    writeMessage(w, m, ep);
  }
  const length = w.pos - w.base - 4;
  if (length > MAX_FRAME_LENGTH) throw tooLarge(`${ep!.plan.type} frame (${length} bytes)`);
  w.buf.writeUInt32BE(length, w.base);
  w.buf.writeUInt16BE(version, w.base + 4);
  return w.finish();
}

// ---------------------------------------------------------------------------
// Decoder

function wrapError(err: unknown, code: CodecErrorCode, what: string): ProtocolError {
  if (err instanceof ProtocolError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  return new ProtocolError(code, `${what}: ${detail}`, undefined, { cause: err });
}

/** Decode and validate one frame body (the bytes after the version). */
export function decodeBody(body: Uint8Array): Message {
  return decodeRange(body, 0, body.length);
}

/** decodeBody for src[start, end): the fast path, and the strict one when it declines. */
function decodeRange(src: Uint8Array, start: number, end: number): Message {
  // A subarray for the strict path, so that its error offsets count from the body start.
  return fastDecodeBody(src, start, end) ?? decodeStrict(src.subarray(start, end));
}

/**
 * The reference decoder: generic strict msgpack, then validateMessage. It alone
 * decides errors; exported for the differential tests of the fast path.
 */
export function decodeStrict(src: Uint8Array, start = 0, end = src.length): Message {
  let value: unknown;
  try {
    value = readMsgpack(src, start, end);
  } catch (err) {
    if (err instanceof MsgpackError && err.trailing) {
      throw new ProtocolError('E_TRAILING_BYTES', `frame body: ${err.message}`, undefined, { cause: err });
    }
    throw wrapError(err, 'E_BAD_MSGPACK', 'frame body is not valid msgpack');
  }
  try {
    return validateMessage(value, { fromWire: true });
  } catch (err) {
    throw wrapError(err, 'E_BAD_FIELD', 'invalid message');
  }
}

/**
 * Streaming frame decoder for one connection. Feed it socket chunks of any size.
 *
 * Rejects an out-of-range length as soon as the 4 length bytes are in, and a
 * bad version as soon as the 6 header bytes are in, before any body is
 * buffered. Holds at most one frame (header + MAX_FRAME_LENGTH) in memory.
 * After the first error it is poisoned: every later push/end rethrows that same
 * ProtocolError. Frames decoded earlier in the failing push are attached as
 * `err.details.decoded` (only on that first throw).
 */
export class FrameDecoder {
  private readonly header = Buffer.alloc(FRAME_HEADER_BYTES);
  private headerFill = 0;
  /** Body of the frame being assembled (allocated once its length is known). */
  private body: Buffer | null = null;
  private bodyFill = 0;
  private version = 0;
  private error: ProtocolError | null = null;
  private minVersion = PROTO_MIN;
  private maxVersion = PROTO_MAX;

  /** Narrow the accepted header versions (after negotiation: setVersionRange(v, v)). */
  setVersionRange(min: number, max: number): void {
    checkVersionNumber(min);
    checkVersionNumber(max);
    if (min > max) throw new ProtocolError('E_BAD_VERSION', `empty version range ${min}..${max}`, { min, max });
    this.minVersion = min;
    this.maxVersion = max;
  }

  /** Bytes of an incomplete frame currently held. */
  get buffered(): number {
    return this.headerFill + this.bodyFill;
  }

  push(chunk: Uint8Array): DecodedFrame[] {
    if (this.error) throw this.error;
    const frames: DecodedFrame[] = [];
    try {
      this.consume(chunk, frames);
    } catch (err) {
      const e = wrapError(err, 'E_BAD_MSGPACK', 'undecodable frame');
      this.error = e;
      this.release();
      if (frames.length > 0) throw new ProtocolError(e.code, e.message, { ...e.details, decoded: frames }, { cause: e });
      throw e;
    }
    return frames;
  }

  /** The stream ended: throws E_TRUNCATED if a partial frame is held. */
  end(): void {
    if (this.error) throw this.error;
    if (this.buffered > 0) {
      this.error = new ProtocolError('E_TRUNCATED', `stream ended inside a frame (${this.buffered} bytes buffered)`, {
        buffered: this.buffered,
      });
      this.release();
      throw this.error;
    }
  }

  /** A poisoned decoder keeps nothing buffered. */
  private release(): void {
    this.body = null;
    this.bodyFill = 0;
    this.headerFill = 0;
  }

  private consume(chunk: Uint8Array, frames: DecodedFrame[]): void {
    let off = 0;
    const n = chunk.length;
    while (off < n) {
      if (this.body === null) {
        // Fast path: a whole frame inside this chunk is decoded in place.
        if (this.headerFill === 0 && n - off >= FRAME_HEADER_BYTES) {
          const length = readU32(chunk, off);
          this.checkLength(length);
          const version = (chunk[off + 4]! << 8) | chunk[off + 5]!;
          this.checkVersion(version);
          const end = off + 4 + length;
          if (end <= n) {
            frames.push({ version, message: decodeRange(chunk, off + 6, end) });
            off = end;
            continue;
          }
          // Partial body: fall through to the buffered path via the header buffer.
        }
        const take = Math.min(FRAME_HEADER_BYTES - this.headerFill, n - off);
        this.header.set(chunk.subarray(off, off + take), this.headerFill);
        const before = this.headerFill;
        this.headerFill += take;
        off += take;
        if (before < 4 && this.headerFill >= 4) this.checkLength(this.header.readUInt32BE(0));
        if (this.headerFill < FRAME_HEADER_BYTES) continue;
        this.version = this.header.readUInt16BE(4);
        this.checkVersion(this.version);
        this.body = Buffer.allocUnsafe(this.header.readUInt32BE(0) - 2);
        this.bodyFill = 0;
      }
      const take = Math.min(this.body.length - this.bodyFill, n - off);
      this.body.set(chunk.subarray(off, off + take), this.bodyFill);
      this.bodyFill += take;
      off += take;
      if (this.bodyFill === this.body.length) {
        const body = this.body;
        this.body = null;
        this.bodyFill = 0;
        this.headerFill = 0;
        frames.push({ version: this.version, message: decodeBody(body) });
      }
    }
  }

  private checkLength(length: number): void {
    if (length > MAX_FRAME_LENGTH) {
      throw new ProtocolError('E_FRAME_TOO_LARGE', `frame length ${length} exceeds the cap of ${MAX_FRAME_LENGTH}`, {
        length,
      });
    }
    if (length < 2) {
      throw new ProtocolError('E_FRAME_TOO_SHORT', `frame length ${length} is below the minimum of 2`, { length });
    }
  }

  private checkVersion(version: number): void {
    if (version < this.minVersion || version > this.maxVersion) {
      throw new ProtocolError(
        'E_BAD_VERSION',
        `frame version ${version} outside the accepted range ${this.minVersion}..${this.maxVersion}`,
        { version, min: this.minVersion, max: this.maxVersion },
      );
    }
  }
}

function readU32(b: Uint8Array, off: number): number {
  return ((b[off]! << 24) >>> 0) + ((b[off + 1]! << 16) | (b[off + 2]! << 8) | b[off + 3]!);
}

/**
 * Highest version in both ranges, or ProtocolError E_VERSION_MISMATCH
 * (also for a malformed peer range, e.g. min > max).
 */
export function negotiateVersion(
  peerMin: number,
  peerMax: number,
  ourMin: number = PROTO_MIN,
  ourMax: number = PROTO_MAX,
): number {
  const lo = Math.max(peerMin, ourMin);
  const hi = Math.min(peerMax, ourMax);
  if (!Number.isInteger(lo) || !Number.isInteger(hi) || peerMin > peerMax || hi < lo) {
    throw new ProtocolError(
      'E_VERSION_MISMATCH',
      `no common protocol version: peer speaks ${peerMin}..${peerMax}, we speak ${ourMin}..${ourMax}`,
      { peerMin, peerMax, ourMin, ourMax },
    );
  }
  return hi;
}
