/**
 * Golden test vectors for the control protocol (written to protocol/vectors/ by
 * generate.ts). Canonical vectors are produced by encodeFrame; non-canonical and
 * invalid ones are assembled byte by byte with the tiny msgpack writer below, so
 * they do not depend on our encoder.
 */
import { isDeepStrictEqual } from 'node:util';
import { encodeFrame, FrameDecoder } from '../src/wire/codec.js';
import { ProtocolError } from '../src/os/errors.js';
import { messageToJson, type JsonValue } from '../src/wire/messages.js';
import { MAX_FRAME_LENGTH, type Message } from '../src/wire/schema.js';

export interface ValidVector {
  name: string;
  /** True when a conforming encoder must produce exactly these bytes from `message`. */
  canonical: boolean;
  /** The whole frame, length prefix included, lowercase hex. */
  hex: string;
  /** What a decoder returns: u64 as decimal strings, bytes as lowercase hex, unknown fields dropped. */
  message: Record<string, JsonValue>;
  note?: string;
}

export interface InvalidVector {
  name: string;
  hex: string;
  /** The ProtocolError code a decoder reports (after the whole input and end-of-stream). */
  error: string;
  note?: string;
}

// ---------------------------------------------------------------------------
// Minimal msgpack writer for hand-built frames (each helper returns the bytes of one item).

const b = (...xs: number[]) => Buffer.from(xs);
const be = (n: bigint | number, bytes: number) => {
  const out = Buffer.alloc(bytes);
  let v = BigInt(n);
  for (let i = bytes - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
};
export const mp = {
  fixmap: (n: number) => b(0x80 | n),
  map16: (n: number) => Buffer.concat([b(0xde), be(n, 2)]),
  fixarray: (n: number) => b(0x90 | n),
  /** Canonical (smallest) str header. */
  str: (s: string) => {
    const bytes = Buffer.from(s, 'utf8');
    const h = bytes.length < 32 ? b(0xa0 | bytes.length) : bytes.length < 256 ? b(0xd9, bytes.length) : Buffer.concat([b(0xda), be(bytes.length, 2)]);
    return Buffer.concat([h, bytes]);
  },
  /** str8 header even for short strings (legal, not canonical). */
  str8: (s: string) => {
    const bytes = Buffer.from(s, 'utf8');
    return Buffer.concat([b(0xd9, bytes.length), bytes]);
  },
  fixint: (n: number) => b(n),
  uint8: (n: number) => b(0xcc, n),
  uint32: (n: number) => Buffer.concat([b(0xce), be(n, 4)]),
  uint64: (n: bigint | number) => Buffer.concat([b(0xcf), be(n, 8)]),
  int64: (n: bigint) => Buffer.concat([b(0xd3), be(BigInt.asUintN(64, n), 8)]),
  negfixint: (n: number) => b(n & 0xff),
  float64: (x: number) => {
    const out = Buffer.alloc(9);
    out[0] = 0xcb;
    out.writeDoubleBE(x, 1);
    return out;
  },
  nil: () => b(0xc0),
  bool: (v: boolean) => b(v ? 0xc3 : 0xc2),
  bin: (bytes: Uint8Array) => Buffer.concat([b(0xc4, bytes.length), bytes]),
};

/** `levels` nested arrays: each holds the next, the innermost is empty. */
const nestedArrays = (levels: number) => Buffer.concat([Buffer.alloc(levels - 1, 0x91), mp.fixarray(0)]);

/** A map from [key, encoded value] pairs (fixmap header). */
function map(entries: [string, Buffer][]): Buffer {
  return Buffer.concat([mp.fixmap(entries.length), ...entries.flatMap(([k, v]) => [mp.str(k), v])]);
}

/** Frame around a body; `length` overrides the length field. */
export function frame(body: Buffer, version = 1, length = body.length + 2): Buffer {
  return Buffer.concat([be(length, 4), be(version, 2), body]);
}

// ---------------------------------------------------------------------------
// Messages

const FP = Buffer.from('9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08', 'hex');
const BUILD = Buffer.from('3f2a9c1e', 'hex');
const H = 'h-20240601-0001';
const J = 'j-20240601-0002';

function shards(n: number): Record<string, bigint> {
  const out: Record<string, bigint> = {};
  for (let i = 0; i < n; i++) out[`shard-${String(i).padStart(2, '0')}`] = 1000n * BigInt(i + 1);
  return out;
}

/** One realistic message of every type, in schema order. */
export const EXAMPLES: Message[] = [
  { type: 'Hello', role: 'incumbent', pid: 4242, buildId: BUILD, protoMin: 1, protoMax: 1 },
  { type: 'HelloAck', handoffId: H, protoVersion: 1 },
  { type: 'PrepareHandoff', handoffId: H, successorPid: 4243, deadlineMs: 1_717_243_500_000n, drainGraceMs: 60_000 },
  { type: 'Drained', handoffId: H, openConnsRemaining: 0, acceptClosed: true },
  { type: 'DrainFailed', handoffId: H, error: 'drain hook threw: ECONNRESET' },
  { type: 'SealRequest', handoffId: H },
  { type: 'SealProgress', handoffId: H, done: 3, total: 8 },
  { type: 'SealComplete', handoffId: H, lastRevisionPerShard: { a: 17n, b: 4_000_000_000n }, dataDirFingerprint: FP },
  { type: 'SealFailed', handoffId: H, error: 'fsync failed: EIO', partialState: { a: 17n } },
  { type: 'Begin', handoffId: H, sealedRevisionPerShard: { a: 17n, b: 4_000_000_000n }, sealedFingerprint: FP, incumbentPid: 4242 },
  {
    type: 'Ready',
    handoffId: H,
    listeningOn: ['http', 'admin'],
    healthzOk: true,
    advertisedRevisionPerShard: { a: 17n, b: 4_000_000_000n },
    buildId: Buffer.from('7b1d0e55', 'hex'),
  },
  { type: 'Commit', handoffId: H },
  { type: 'Committed', handoffId: H },
  { type: 'Abort', handoffId: H, reason: 'successor exited (code 1) before Ready' },
  { type: 'ResumeAfterAbort', handoffId: H },
  { type: 'Resumed', handoffId: H },
  { type: 'Heartbeat', tsMs: 1_717_243_200_123n, phase: 'sealing' },
  { type: 'Shutdown', reason: 'graceful', timeoutMs: 30_000 },
  { type: 'JobStart', jobId: J, task: 'compaction', urgency: 'normal', reason: 'nightly', params: '{"shards":[0,1]}' },
  { type: 'JobProgress', jobId: J, done: 3n, total: 8n, counters: { bytesReclaimed: 1_048_576n, recordsDropped: 4096n } },
  { type: 'JobDone', jobId: J, outcome: 'succeeded', durationMs: 1234n, result: '{"shards":8,"bytesReclaimed":1048576}' },
  { type: 'JobCancel', jobId: J, reason: 'an upgrade needs the lease' },
  { type: 'ProbeRequest', requestId: 'p-1' },
  { type: 'ProbeReport', requestId: 'p-1', probes: '[{"name":"disk","status":"OK","message":"12% used","ms":0.4}]' },
  { type: 'StartupCompleted', durationMs: 830n, components: ['listeners', 'journal', 'app', 'admin'] },
  { type: 'Error', code: 'E_UNEXPECTED_MESSAGE', message: 'SealRequest while SERVING' },
];

function canonical(name: string, message: Message, note?: string): ValidVector {
  const v: ValidVector = { name, canonical: true, hex: encodeFrame(message).toString('hex'), message: messageToJson(message) };
  if (note) v.note = note;
  return v;
}

function handBuilt(name: string, bytes: Buffer, message: Message, note: string): ValidVector {
  return { name, canonical: false, hex: bytes.toString('hex'), message: messageToJson(message), note };
}

const hb = (tsMs: Buffer, phase = mp.str('x')) => map([['type', mp.str('Heartbeat')], ['tsMs', tsMs], ['phase', phase]]);

export function validVectors(): ValidVector[] {
  const out = EXAMPLES.map((m) => canonical(m.type, m));
  out.push(
    canonical('Hello with features (optional strlist, after protoMax)', { type: 'Hello', role: 'incumbent', pid: 4242, buildId: BUILD, protoMin: 1, protoMax: 1, features: ['jobs', 'probes', 'lifecycle'] }),
    canonical('JobDone failed with error', { type: 'JobDone', jobId: J, outcome: 'failed', durationMs: 17n, result: 'null', error: 'ENOSPC while writing shard-003.log.compact' }),
    canonical('Heartbeat u64 max', { type: 'Heartbeat', tsMs: 18_446_744_073_709_551_615n, phase: '' }),
    canonical('Heartbeat u64 2^53+1 (not representable as a double)', { type: 'Heartbeat', tsMs: 9_007_199_254_740_993n, phase: 'x' }),
    canonical('Heartbeat u64 zero (still 0xcf)', { type: 'Heartbeat', tsMs: 0n, phase: 'x' }),
    canonical('SealComplete empty revmap', { type: 'SealComplete', handoffId: H, lastRevisionPerShard: {}, dataDirFingerprint: FP }),
    canonical('SealComplete 64 shards', { type: 'SealComplete', handoffId: H, lastRevisionPerShard: shards(64), dataDirFingerprint: FP }),
    canonical(
      'Begin cold start (empty sealed map, empty fingerprint, incumbentPid 0)',
      { type: 'Begin', handoffId: H, sealedRevisionPerShard: {}, sealedFingerprint: Buffer.alloc(0), incumbentPid: 0 },
    ),
    canonical(
      'SealComplete revmap keys sorted by UTF-8 bytes',
      { type: 'SealComplete', handoffId: H, lastRevisionPerShard: { b: 1n, '10': 2n, '9': 3n, 'é': 4n, a: 5n }, dataDirFingerprint: FP },
      'Keys are written in UTF-8 byte order: "10" < "9" < "a" < "b" < "é".',
    ),
    canonical('SealProgress u32 boundaries', { type: 'SealProgress', handoffId: H, done: 127, total: 128 }),
    canonical('Drained u32 max', { type: 'Drained', handoffId: H, openConnsRemaining: 4_294_967_295, acceptClosed: false }),
    canonical('Error with non-ASCII text', { type: 'Error', code: 'E_BAD_FIELD', message: 'Ready.buildId: ungültig ✗ 𝄞' }),
    canonical('Ready with no listeners', { type: 'Ready', handoffId: H, listeningOn: [], healthzOk: false, advertisedRevisionPerShard: {}, buildId: Buffer.alloc(0) }),
    handBuilt(
      'unknown extra field is ignored',
      frame(map([['type', mp.str('Commit')], ['handoffId', mp.str(H)], ['futureField', map([['x', mp.fixarray(0)]])]])),
      { type: 'Commit', handoffId: H },
      'The frame carries "futureField"; a decoder drops it, so `message` does not show it.',
    ),
    handBuilt(
      'nesting at the limit: 32 levels',
      frame(map([['type', mp.str('Commit')], ['handoffId', mp.str(H)], ['futureField', nestedArrays(31)]])),
      { type: 'Commit', handoffId: H },
      'The top-level map is level 1; "futureField" holds 31 nested arrays (levels 2..32). One more level is E_BAD_MSGPACK.',
    ),
    handBuilt(
      'optional field given as nil is absent',
      frame(
        map([
          ['type', mp.str('JobDone')],
          ['jobId', mp.str(J)],
          ['outcome', mp.str('failed')],
          ['durationMs', mp.uint64(17)],
          ['result', mp.str('null')],
          ['error', mp.nil()],
        ]),
      ),
      { type: 'JobDone', jobId: J, outcome: 'failed', durationMs: 17n, result: 'null' },
      'A msgpack nil for an OPTIONAL field (JobDone.error, Hello.features) means the field is absent; for a required field it is E_BAD_FIELD. Encoders omit absent optional fields.',
    ),
    handBuilt('u64 encoded as positive fixint', frame(hb(mp.fixint(5))), { type: 'Heartbeat', tsMs: 5n, phase: 'x' }, 'Decoders accept any int encoding for u64.'),
    handBuilt('u64 encoded as uint32', frame(hb(mp.uint32(4_000_000_000))), { type: 'Heartbeat', tsMs: 4_000_000_000n, phase: 'x' }, 'Decoders accept any int encoding for u64.'),
    handBuilt('u64 encoded as positive int64', frame(hb(mp.int64(7n))), { type: 'Heartbeat', tsMs: 7n, phase: 'x' }, 'Decoders accept any int encoding for u64 (0xd3 with a non-negative value).'),
    handBuilt(
      'u32 encoded as uint64',
      frame(map([['type', mp.str('SealProgress')], ['handoffId', mp.str(H)], ['done', mp.uint64(1)], ['total', mp.uint8(200)]])),
      { type: 'SealProgress', handoffId: H, done: 1, total: 200 },
      'Decoders accept any int encoding for u32 as long as the value fits.',
    ),
    handBuilt(
      'fields in another order, map16 and str8 headers',
      frame(Buffer.concat([mp.map16(3), mp.str8('phase'), mp.str8('draining'), mp.str('tsMs'), mp.uint64(1), mp.str8('type'), mp.str8('Heartbeat')])),
      { type: 'Heartbeat', tsMs: 1n, phase: 'draining' },
      'Key order and header sizes are irrelevant for decoding.',
    ),
  );
  return out;
}

/** A frame of exactly MAX_FRAME_LENGTH (the largest legal frame). */
export function largeVectors(): ValidVector[] {
  const base: Message = { type: 'Hello', role: 'successor', pid: 1, buildId: Buffer.alloc(0x10000), protoMin: 1, protoMax: 1 };
  // Size with a 64 KiB buildId (bin32 header), then grow the bin to land exactly on the cap.
  const overhead = encodeFrame(base).readUInt32BE(0) - 0x10000;
  const buildId = Buffer.alloc(MAX_FRAME_LENGTH - overhead, 0).map((_, i) => i & 0xff);
  const msg: Message = { ...base, buildId } as Message;
  const v = canonical('Hello with a buildId that fills the frame to exactly MAX_FRAME_LENGTH', msg);
  if (encodeFrame(msg).readUInt32BE(0) !== MAX_FRAME_LENGTH) throw new Error('large vector is not at the cap');
  return [v];
}

export function invalidVectors(): InvalidVector[] {
  const hbFrame = encodeFrame({ type: 'Heartbeat', tsMs: 5n, phase: 'x' });
  const hello = (fields: Partial<Record<string, Buffer>>) => {
    const all: Record<string, Buffer> = {
      type: mp.str('Hello'),
      role: mp.str('successor'),
      pid: mp.uint32(100),
      buildId: mp.bin(BUILD),
      protoMin: mp.fixint(1),
      protoMax: mp.fixint(1),
    };
    const entries = Object.entries({ ...all, ...fields }).filter((e): e is [string, Buffer] => e[1] !== undefined);
    return frame(map(entries));
  };
  const seal = (revmap: Buffer, fp: Buffer = mp.bin(FP)) =>
    frame(map([['type', mp.str('SealComplete')], ['handoffId', mp.str(H)], ['lastRevisionPerShard', revmap], ['dataDirFingerprint', fp]]));
  const v = (name: string, bytes: Buffer, error: string, note?: string): InvalidVector => {
    const out: InvalidVector = { name, hex: bytes.toString('hex'), error };
    if (note) out.note = note;
    return out;
  };
  return [
    v('truncated body', hbFrame.subarray(0, hbFrame.length - 1), 'E_TRUNCATED', 'Reported at end of stream.'),
    v('truncated header', hbFrame.subarray(0, 3), 'E_TRUNCATED', 'Reported at end of stream.'),
    v('length over cap', b(0x00, 0x10, 0x00, 0x01, 0x00, 0x01), 'E_FRAME_TOO_LARGE', 'Rejected from the 4 length bytes alone; no body follows.'),
    v('length 0xffffffff', b(0xff, 0xff, 0xff, 0xff), 'E_FRAME_TOO_LARGE'),
    v('length 0', b(0, 0, 0, 0), 'E_FRAME_TOO_SHORT'),
    v('length 1', b(0, 0, 0, 1, 0), 'E_FRAME_TOO_SHORT'),
    v('version 0', frame(hbFrame.subarray(6), 0), 'E_BAD_VERSION'),
    v('version 2 (not accepted by a v1-only peer)', frame(hbFrame.subarray(6), 2), 'E_BAD_VERSION'),
    v('empty body', frame(Buffer.alloc(0)), 'E_BAD_MSGPACK'),
    v('reserved byte 0xc1', frame(b(0xc1)), 'E_BAD_MSGPACK'),
    v('map shorter than its header', frame(Buffer.concat([mp.fixmap(2), mp.str('type'), mp.str('Commit')])), 'E_BAD_MSGPACK'),
    v(
      'nesting 33 levels (in an ignored field)',
      frame(map([['type', mp.str('Commit')], ['handoffId', mp.str(H)], ['futureField', nestedArrays(32)]])),
      'E_BAD_MSGPACK',
      'The top-level map is level 1; the innermost (empty) array is level 33.',
    ),
    v('ext type (in an ignored field)', frame(map([['type', mp.str('Commit')], ['handoffId', mp.str(H)], ['futureField', b(0xd4, 0x01, 0x00)]])), 'E_BAD_MSGPACK'),
    v('map key is not a str (in an ignored field)', frame(map([['type', mp.str('Commit')], ['handoffId', mp.str(H)], ['futureField', Buffer.concat([mp.fixmap(1), mp.fixint(1), mp.nil()])]])), 'E_BAD_MSGPACK'),
    v('duplicate key', frame(Buffer.concat([mp.fixmap(3), mp.str('type'), mp.str('Commit'), mp.str('handoffId'), mp.str(H), mp.str('handoffId'), mp.str(H)])), 'E_BAD_MSGPACK'),
    v('str is not valid UTF-8', frame(map([['type', mp.str('Commit')], ['handoffId', Buffer.concat([b(0xa2, 0xc3, 0x28)])]])), 'E_BAD_MSGPACK'),
    v('str holds an encoded surrogate', frame(map([['type', mp.str('Commit')], ['handoffId', b(0xa3, 0xed, 0xa0, 0x80)]])), 'E_BAD_MSGPACK'),
    v('trailing bytes after the map', frame(Buffer.concat([hbFrame.subarray(6), b(0xc0)])), 'E_TRAILING_BYTES'),
    v('not a map: array', frame(Buffer.concat([mp.fixarray(1), mp.str('Commit')])), 'E_NOT_A_MAP'),
    v('not a map: integer', frame(mp.fixint(1)), 'E_NOT_A_MAP'),
    v('no type', frame(map([['handoffId', mp.str(H)]])), 'E_UNKNOWN_TYPE'),
    v('type is not a str', frame(map([['type', mp.fixint(1)]])), 'E_UNKNOWN_TYPE'),
    v('unknown type', frame(map([['type', mp.str('Launch')]])), 'E_UNKNOWN_TYPE'),
    v('missing field', frame(map([['type', mp.str('Heartbeat')], ['tsMs', mp.uint64(1)]])), 'E_MISSING_FIELD', 'Heartbeat.phase is missing.'),
    v('str field holds an int', frame(hb(mp.uint64(1), mp.fixint(1))), 'E_BAD_FIELD'),
    v('required field is nil', hello({ pid: mp.nil() }), 'E_BAD_FIELD'),
    v('u32 out of range', hello({ pid: mp.uint64(2n ** 32n) }), 'E_BAD_FIELD'),
    v('u32 negative', hello({ pid: mp.negfixint(-1) }), 'E_BAD_FIELD'),
    v('u32 as float', hello({ pid: mp.float64(1.5) }), 'E_BAD_FIELD'),
    v('u64 negative', frame(hb(mp.int64(-1n))), 'E_BAD_FIELD'),
    v('u64 as an integral float (5.0)', frame(hb(mp.float64(5))), 'E_BAD_FIELD'),
    v('bin field holds a str', hello({ buildId: mp.str('3f2a9c1e') }), 'E_BAD_FIELD'),
    v('enum value not allowed', hello({ role: mp.str('observer') }), 'E_BAD_FIELD'),
    v('bool field holds an int', frame(map([['type', mp.str('Drained')], ['handoffId', mp.str(H)], ['openConnsRemaining', mp.fixint(0)], ['acceptClosed', mp.fixint(1)]])), 'E_BAD_FIELD'),
    v('bin32 of 31 bytes', seal(mp.fixmap(0), mp.bin(FP.subarray(1))), 'E_BAD_FIELD'),
    v('revmap value negative', seal(map([['a', mp.negfixint(-1)]])), 'E_BAD_FIELD'),
    v('revmap value is a str', seal(map([['a', mp.str('17')]])), 'E_BAD_FIELD'),
    v('revmap is an array', seal(Buffer.concat([mp.fixarray(1), mp.fixint(1)])), 'E_BAD_FIELD'),
    v(
      'strlist element is not a str',
      frame(
        map([
          ['type', mp.str('Ready')],
          ['handoffId', mp.str(H)],
          ['listeningOn', Buffer.concat([mp.fixarray(1), mp.fixint(1)])],
          ['healthzOk', mp.bool(true)],
          ['advertisedRevisionPerShard', mp.fixmap(0)],
          ['buildId', mp.bin(BUILD)],
        ]),
      ),
      'E_BAD_FIELD',
    ),
  ];
}

/** Decode a whole input as one stream (push everything, then end()). */
export function decodeStream(bytes: Buffer): Message[] {
  const d = new FrameDecoder();
  const out = d.push(bytes).map((f) => f.message);
  d.end();
  return out;
}

/** Throws unless every vector behaves as it says (the generator refuses to write bad vectors). */
export function checkVectors(valid: ValidVector[], invalid: InvalidVector[]): void {
  for (const v of valid) {
    const bytes = Buffer.from(v.hex, 'hex');
    const msgs = decodeStream(bytes);
    if (msgs.length !== 1 || !isDeepStrictEqual(messageToJson(msgs[0] as Message), v.message)) {
      throw new Error(`valid vector "${v.name}" does not decode to its message`);
    }
    if (v.canonical !== encodeFrame(msgs[0] as Message).equals(bytes)) {
      throw new Error(`valid vector "${v.name}": canonical flag is wrong`);
    }
  }
  for (const v of invalid) {
    let code: string | undefined;
    try {
      decodeStream(Buffer.from(v.hex, 'hex'));
    } catch (err) {
      code = err instanceof ProtocolError ? err.code : `non-ProtocolError ${String(err)}`;
    }
    if (code !== v.error) throw new Error(`invalid vector "${v.name}": expected ${v.error}, got ${code ?? 'no error'}`);
  }
}
