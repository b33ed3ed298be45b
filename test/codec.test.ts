import fc from 'fast-check';
import { Unpackr } from 'msgpackr';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { InvalidVector, ValidVector } from '../protocol/vectors.js';
import { encodeFrame, FrameDecoder, negotiateVersion, type DecodedFrame } from '../src/wire/codec.js';
import { ProtocolError } from '../src/os/errors.js';
import { messageFromJson, messageToJson, validateMessage } from '../src/wire/messages.js';
import { MAX_FRAME_LENGTH, MESSAGE_TYPES, type Message } from '../src/wire/schema.js';
import { anyMessage, exampleMessage, messageArbitrary } from './support/protocol-arbitraries.js';

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw new Error(`expected a ProtocolError, got ${String(err)}`);
    return err.code;
  }
  throw new Error('expected a ProtocolError');
}

const json = (m: Message) => messageToJson(m);
const jsonFrames = (fs: DecodedFrame[]) => fs.map((f) => ({ version: f.version, message: json(f.message) }));
const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

function decodeAll(bytes: Buffer, chunks: number[] = [bytes.length]): DecodedFrame[] {
  const d = new FrameDecoder();
  const out: DecodedFrame[] = [];
  let off = 0;
  for (const n of chunks) {
    out.push(...d.push(bytes.subarray(off, off + n)));
    off += n;
  }
  if (off < bytes.length) out.push(...d.push(bytes.subarray(off)));
  d.end();
  return out;
}

describe('encodeFrame', () => {
  it('writes the documented bytes for a Heartbeat (hand-assembled)', () => {
    const frame = encodeFrame({ type: 'Heartbeat', tsMs: 5n, phase: 'x' });
    expect(frame.toString('hex')).toBe(
      [
        '00000028', // length: 40 bytes follow
        '0001', // version 1
        '83', // fixmap, 3 entries
        'a474797065 a9486561727462656174', // "type": "Heartbeat"
        'a474734d73 cf0000000000000005', // "tsMs": uint64 5 (always 0xcf)
        'a57068617365 a178', // "phase": "x"
      ]
        .join('')
        .replace(/\s+/g, ''),
    );
  });

  it('uses the smallest int encoding for u32 and 0xcf for u64', () => {
    const cases: [number, string][] = [
      [0, '00'],
      [127, '7f'],
      [128, 'cc80'],
      [255, 'ccff'],
      [256, 'cd0100'],
      [65535, 'cdffff'],
      [65536, 'ce00010000'],
      [2 ** 32 - 1, 'ceffffffff'],
    ];
    for (const [n, enc] of cases) {
      const f = encodeFrame({ type: 'SealProgress', handoffId: '', done: n, total: 0 });
      expect(f.toString('hex')).toContain(`a4646f6e65${enc}a5746f74616c00`);
    }
    const f = encodeFrame({ type: 'Heartbeat', tsMs: 2n ** 64n - 1n, phase: '' });
    expect(f.toString('hex')).toContain('cfffffffffffffffff');
  });

  it('is standard msgpack: another decoder reads the same values', () => {
    const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: 'bigint' });
    for (const type of MESSAGE_TYPES) {
      const msg = exampleMessage(type);
      const frame = encodeFrame(msg);
      expect(frame.readUInt32BE(0)).toBe(frame.length - 4);
      expect(frame.readUInt16BE(4)).toBe(1);
      expect(json(unpackr.unpack(frame.subarray(6)) as Message)).toEqual(json(msg));
    }
  });

  it('sorts revmap keys by UTF-8 bytes', () => {
    const f = encodeFrame({ type: 'SealFailed', handoffId: '', error: '', partialState: { b: 1n, '10': 2n, a: 3n, '9': 4n } });
    const keys = [...f.toString('latin1').matchAll(/[\xa1\xa2](10|9|a|b)\xcf/g)].map((m) => m[1]);
    expect(keys).toEqual(['10', '9', 'a', 'b']);
  });

  it('orders non-ASCII revmap keys by UTF-8 bytes, not UTF-16 units', () => {
    // U+10000 is a surrogate pair (0xd800...) so sorts first in UTF-16, last in UTF-8.
    const astral = '\u{10000}';
    const bmp = '\ue000';
    for (const partialState of [{ [astral]: 1n, [bmp]: 2n }, { [bmp]: 2n, [astral]: 1n }]) {
      const f = encodeFrame({ type: 'SealFailed', handoffId: '', error: '', partialState });
      const at = (k: string) => f.indexOf(Buffer.from(k, 'utf8'));
      expect(at(bmp)).toBeLessThan(at(astral));
    }
  });

  it('validates before encoding', () => {
    expect(codeOf(() => encodeFrame({ type: 'Heartbeat', tsMs: -1n, phase: '' } as Message))).toBe('E_BAD_FIELD');
    expect(codeOf(() => encodeFrame({ type: 'Nope' } as unknown as Message))).toBe('E_UNKNOWN_TYPE');
    expect(codeOf(() => encodeFrame(exampleMessage('Commit'), 65536))).toBe('E_BAD_VERSION');
  });

  it('enforces the frame cap', () => {
    const big = (n: number): Message => ({ type: 'Error', code: 'E', message: 'x'.repeat(n) });
    // Overhead: 4 length + 2 version + map/keys/values besides the big string.
    const overhead = encodeFrame(big(70000)).length - 70000;
    const atCap = encodeFrame(big(MAX_FRAME_LENGTH + 4 - overhead));
    expect(atCap.readUInt32BE(0)).toBe(MAX_FRAME_LENGTH);
    expect(codeOf(() => encodeFrame(big(MAX_FRAME_LENGTH + 5 - overhead)))).toBe('E_FRAME_TOO_LARGE');
    expect(codeOf(() => encodeFrame(big(10 * MAX_FRAME_LENGTH)))).toBe('E_FRAME_TOO_LARGE');
    // The encoder still works after an oversize attempt.
    expect(decodeAll(encodeFrame(big(3)))).toHaveLength(1);
  });
});

describe('FrameDecoder', () => {
  const msgs = MESSAGE_TYPES.map(exampleMessage);
  const stream = Buffer.concat(msgs.map((m) => encodeFrame(m)));
  const expected = msgs.map((m) => ({ version: 1, message: json(m) }));

  it('decodes many frames per chunk', () => {
    expect(jsonFrames(decodeAll(stream))).toEqual(expected);
  });

  it('decodes one byte at a time', () => {
    expect(jsonFrames(decodeAll(stream, new Array<number>(stream.length).fill(1)))).toEqual(expected);
  });

  it('rejects an oversize length before the body arrives', () => {
    const d = new FrameDecoder();
    const header = Buffer.alloc(6);
    header.writeUInt32BE(MAX_FRAME_LENGTH + 1, 0);
    header.writeUInt16BE(1, 4);
    expect(codeOf(() => d.push(header.subarray(0, 4)))).toBe('E_FRAME_TOO_LARGE');
    expect(d.buffered).toBe(0);
    const d2 = new FrameDecoder();
    expect(codeOf(() => d2.push(header))).toBe('E_FRAME_TOO_LARGE');
  });

  it('rejects a bad version as soon as the header is in', () => {
    const d = new FrameDecoder();
    expect(codeOf(() => d.push(hex('00000100 0002')))).toBe('E_BAD_VERSION');
  });

  it('is poisoned after an error and reports frames decoded before it', () => {
    const d = new FrameDecoder();
    const good = encodeFrame(exampleMessage('Commit'));
    let first: unknown;
    try {
      d.push(Buffer.concat([good, hex('00000001 00')]));
    } catch (err) {
      first = err;
    }
    expect(first).toBeInstanceOf(ProtocolError);
    expect((first as ProtocolError).code).toBe('E_FRAME_TOO_SHORT');
    expect(((first as ProtocolError).details?.['decoded'] as DecodedFrame[]).length).toBe(1);
    let again: unknown;
    try {
      d.push(good);
    } catch (err) {
      again = err;
    }
    expect((again as ProtocolError).code).toBe('E_FRAME_TOO_SHORT');
    expect(codeOf(() => d.end())).toBe('E_FRAME_TOO_SHORT');
  });

  it('end() reports a partial frame', () => {
    const d = new FrameDecoder();
    d.push(stream.subarray(0, 3));
    expect(codeOf(() => d.end())).toBe('E_TRUNCATED');
    const d2 = new FrameDecoder();
    d2.push(stream.subarray(0, 9));
    expect(codeOf(() => d2.end())).toBe('E_TRUNCATED');
    const d3 = new FrameDecoder();
    d3.push(stream);
    expect(() => d3.end()).not.toThrow();
  });

  it('setVersionRange narrows the accepted versions', () => {
    const v2 = encodeFrame(exampleMessage('Commit'), 2);
    const d = new FrameDecoder();
    expect(codeOf(() => d.push(v2))).toBe('E_BAD_VERSION');
    const d2 = new FrameDecoder();
    d2.setVersionRange(1, 2);
    expect(d2.push(v2)[0]?.version).toBe(2);
    d2.setVersionRange(2, 2);
    expect(codeOf(() => d2.push(encodeFrame(exampleMessage('Commit'), 1)))).toBe('E_BAD_VERSION');
  });

  it('bin values do not alias the input chunk', () => {
    const frame = encodeFrame(exampleMessage('Hello'));
    const d = new FrameDecoder();
    const [f] = d.push(frame);
    const before = json(f!.message);
    frame.fill(0);
    expect(json(f!.message)).toEqual(before);
  });
});

describe('negotiateVersion', () => {
  it('picks the highest common version', () => {
    expect(negotiateVersion(1, 1)).toBe(1);
    expect(negotiateVersion(1, 5, 2, 3)).toBe(3);
    expect(negotiateVersion(3, 9, 1, 4)).toBe(4);
  });
  it('throws E_VERSION_MISMATCH without overlap or for a malformed range', () => {
    expect(codeOf(() => negotiateVersion(2, 3, 1, 1))).toBe('E_VERSION_MISMATCH');
    expect(codeOf(() => negotiateVersion(1, 1, 2, 2))).toBe('E_VERSION_MISMATCH');
    expect(codeOf(() => negotiateVersion(3, 1))).toBe('E_VERSION_MISMATCH');
    expect(codeOf(() => negotiateVersion(Number.NaN, 1))).toBe('E_VERSION_MISMATCH');
  });
});

describe('properties', () => {
  it('decode(encode(m)) equals m for every message type', () => {
    for (const type of MESSAGE_TYPES) {
      fc.assert(
        fc.property(messageArbitrary(type), (m) => {
          const [f] = decodeAll(encodeFrame(m));
          expect(json(f!.message)).toEqual(json(m));
          // Encoding is deterministic: re-encoding the decoded message gives the same bytes.
          expect(encodeFrame(f!.message).equals(encodeFrame(m))).toBe(true);
        }),
        { numRuns: 60 },
      );
    }
  });

  it('any chunking of a stream yields the same messages', () => {
    fc.assert(
      fc.property(
        fc.array(anyMessage, { minLength: 1, maxLength: 8 }),
        fc.array(fc.integer({ min: 1, max: 64 }), { maxLength: 200 }),
        (ms, cuts) => {
          const bytes = Buffer.concat(ms.map((m) => encodeFrame(m)));
          expect(jsonFrames(decodeAll(bytes, cuts))).toEqual(ms.map((m) => ({ version: 1, message: json(m) })));
        },
      ),
      { numRuns: 150 },
    );
  });

  it('random bytes never throw anything but ProtocolError', () => {
    const check = (bytes: Uint8Array, cuts: number[]) => {
      const d = new FrameDecoder();
      try {
        let off = 0;
        for (const n of [...cuts, bytes.length]) {
          d.push(bytes.subarray(off, off + n));
          off += n;
        }
        d.end();
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw err;
      }
    };
    // Plain random bytes, and random bodies behind a valid header (to reach msgpack and the validator).
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.array(fc.integer({ min: 1, max: 16 })), check),
      { numRuns: 300 },
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (body) => {
        const header = Buffer.alloc(6);
        header.writeUInt32BE(body.length + 2, 0);
        header.writeUInt16BE(1, 4);
        check(Buffer.concat([header, body]), []);
      }),
      { numRuns: 500 },
    );
    // Mutations of valid frames hit deeper paths than pure noise.
    fc.assert(
      fc.property(anyMessage, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }), (m, muts) => {
        const f = Buffer.from(encodeFrame(m));
        for (const [i, b] of muts) f[6 + (i % (f.length - 6))] = b;
        check(f, []);
      }),
      { numRuns: 500 },
    );
  });
});

describe('golden vectors (protocol/vectors)', () => {
  const load = <T>(name: string): T => JSON.parse(readFileSync(new URL(`../protocol/vectors/${name}`, import.meta.url), 'utf8')) as T;
  const valid = [...load<ValidVector[]>('valid.json'), ...load<ValidVector[]>('large.json')];
  const invalid = load<InvalidVector[]>('invalid.json');

  it('cover every message type', () => {
    const types = new Set(valid.map((v) => v.message['type']));
    for (const t of MESSAGE_TYPES) expect(types.has(t)).toBe(true);
  });

  for (const v of valid) {
    it(`valid: ${v.name}`, () => {
      const bytes = Buffer.from(v.hex, 'hex');
      const frames = decodeAll(bytes);
      expect(frames).toHaveLength(1);
      expect(json(frames[0]!.message)).toEqual(v.message);
      if (v.canonical) expect(encodeFrame(messageFromJson(v.message)).toString('hex')).toBe(v.hex);
      else expect(encodeFrame(messageFromJson(v.message)).toString('hex')).not.toBe(v.hex);
    });
  }

  for (const v of invalid) {
    it(`invalid: ${v.name} -> ${v.error}`, () => {
      expect(codeOf(() => decodeAll(Buffer.from(v.hex, 'hex')))).toBe(v.error);
      // Same result when the bytes trickle in one at a time.
      const bytes = Buffer.from(v.hex, 'hex');
      expect(codeOf(() => decodeAll(bytes, new Array<number>(bytes.length).fill(1)))).toBe(v.error);
    });
  }
});

describe('strict msgpack', () => {
  const body = (h: string) => {
    const b = hex(h);
    const head = Buffer.alloc(6);
    head.writeUInt32BE(b.length + 2, 0);
    head.writeUInt16BE(1, 4);
    return Buffer.concat([head, b]);
  };
  const commit = (extra: string) => body(`83 a474797065 a6436f6d6d6974 a968616e646f66664964 a168 ${extra}`);
  it('rejects what lenient decoders let through', () => {
    expect(codeOf(() => decodeAll(commit('a178 c1')))).toBe('E_BAD_MSGPACK'); // reserved 0xc1 in an unknown field
    expect(codeOf(() => decodeAll(commit('a178 d6ff00000000')))).toBe('E_BAD_MSGPACK'); // ext (timestamp)
    expect(codeOf(() => decodeAll(commit('01 c0')))).toBe('E_BAD_MSGPACK'); // non-str map key
    expect(codeOf(() => decodeAll(commit('a474797065 a6436f6d6d6974')))).toBe('E_BAD_MSGPACK'); // duplicate key
    expect(codeOf(() => decodeAll(commit('a178 a2c328')))).toBe('E_BAD_MSGPACK'); // invalid UTF-8
    expect(codeOf(() => decodeAll(commit('a178 a3eda080')))).toBe('E_BAD_MSGPACK'); // UTF-8-encoded lone surrogate
    expect(codeOf(() => decodeAll(commit('a178 ' + '91'.repeat(40) + 'c0')))).toBe('E_BAD_MSGPACK'); // nesting
    expect(codeOf(() => decodeAll(commit('a178 dd7fffffff')))).toBe('E_BAD_MSGPACK'); // bogus array count
  });
  it('rejects floats for int fields, even integral ones', () => {
    expect(codeOf(() => decodeAll(body('83 a474797065 a9486561727462656174 a474734d73 cb4014000000000000 a57068617365 a0')))).toBe(
      'E_BAD_FIELD',
    );
  });
  it('accepts standard values in unknown fields', () => {
    const frames = decodeAll(commit('a178 93 c0 cb3ff8000000000000 82a161c2a162d0ff'));
    expect(json(frames[0]!.message)).toEqual({ type: 'Commit', handoffId: 'h' });
  });
  it('agrees with msgpackr + validateMessage on every valid frame', () => {
    const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: 'bigint' });
    fc.assert(
      fc.property(anyMessage, (m) => {
        const f = encodeFrame(m);
        expect(json(decodeAll(f)[0]!.message)).toEqual(json(validateMessage(unpackr.unpack(f.subarray(6)))));
      }),
      { numRuns: 200 },
    );
  });
});
