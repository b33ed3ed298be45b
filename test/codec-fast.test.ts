/**
 * The codec's fast paths against its general ones (differential tests):
 *
 * - decode: fastDecodeBody either declines (undefined) or returns exactly what
 *   decodeStrict (generic strict msgpack + validateMessage) returns: same values,
 *   same types, same key order; it never accepts what the strict path rejects.
 * - encode: encodeFrame gives the same bytes, or throws the same error, as
 *   encodeFrameGeneral (validateMessage first, then write), also for inputs that
 *   are not in the exact TS types (numbers for u64, unsorted maps, nil, ...).
 *
 * Both fast paths keep per-field state (decoder: compiled revmap key sets;
 * encoder: revmap templates), so the inputs repeat key sets on purpose.
 */
import fc from 'fast-check';
import { beforeEach, describe, expect, it } from 'vitest';
import { fastDecodeBody, learnedShapeCompiles, resetLearnedShapes } from '../src/wire/codec-fast.js';
import { decodeStrict, encodeFrame, encodeFrameGeneral, FrameDecoder } from '../src/wire/codec.js';
import { ProtocolError } from '../src/os/errors.js';
import { MESSAGE_TYPES, type Message } from '../src/wire/schema.js';
import { anyMessage, exampleMessage, messageArbitrary } from './support/protocol-arbitraries.js';

type Outcome = { ok: true; value: unknown } | { ok: false; code: string; message: string };

function outcome(fn: () => unknown): Outcome {
  try {
    return { ok: true, value: fn() };
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err;
    return { ok: false, code: err.code, message: err.message };
  }
}

/** Deep equality including key order at every level (toStrictEqual ignores the order). */
function expectSameShape(a: unknown, b: unknown): void {
  expect(a).toStrictEqual(b);
  if (a !== null && typeof a === 'object' && !(a instanceof Uint8Array) && !Array.isArray(a)) {
    const ka = Object.keys(a);
    expect(ka).toEqual(Object.keys(b as object));
    for (const k of ka) expectSameShape((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]);
  }
}

/** Decode one body both ways and compare; returns whether the fast path took it. */
function checkBody(body: Uint8Array): boolean {
  const fast = fastDecodeBody(body, 0, body.length);
  const strict = outcome(() => decodeStrict(body));
  if (fast === undefined) return false;
  expect(strict.ok, `fast path accepted a body the strict path rejects: ${Buffer.from(body).toString('hex')}`).toBe(true);
  expectSameShape(fast, (strict as { value: unknown }).value);
  return true;
}

const bodyOf = (m: Message) => encodeFrame(m).subarray(6);

// Revmap keys the fast paths take (short ASCII, incl. characters that need
// escaping in a JS string literal) and a few they must decline.
const fastKey = fc.oneof(
  fc.string({ unit: fc.constantFrom(...'ab09-_"\\\n\u0000\u007f'.split('')), minLength: 1, maxLength: 6 }),
  fc.constantFrom('0', '1', '10', '2', 'shard-00', 'constructor', 'toString', 'x'.repeat(31)),
);
const oddKey = fc.constantFrom('', 'x'.repeat(32), 'é', '__proto__', '\u{1f600}', '\ufeffbom');
const revValue = fc.oneof(fc.constantFrom(0n, 127n, 2n ** 32n, 2n ** 64n - 1n), fc.bigInt(0n, 2n ** 64n - 1n));

function revmapOf(entries: [string, unknown][]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of entries) {
    if (k === '__proto__') Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
    else out[k] = v;
  }
  return out;
}

/** A SealComplete body written by hand, so that it can hold keys the encoder refuses ('__proto__'). */
function rawSealBody(entries: [string, bigint][]): Buffer {
  const str = (s: string) => {
    const b = Buffer.from(s, 'utf8');
    return Buffer.concat([b.length < 32 ? Buffer.of(0xa0 | b.length) : Buffer.of(0xd9, b.length), b]);
  };
  const parts = [Buffer.of(0x84), str('type'), str('SealComplete'), str('handoffId'), str('h-1'), str('lastRevisionPerShard')];
  parts.push(entries.length < 16 ? Buffer.of(0x80 | entries.length) : Buffer.of(0xde, 0, entries.length));
  for (const [k, v] of entries) {
    const n = Buffer.alloc(9);
    n[0] = 0xcf;
    n.writeBigUInt64BE(v, 1);
    parts.push(str(k), n);
  }
  parts.push(str('dataDirFingerprint'), Buffer.of(0xc4, 32), Buffer.alloc(32, 1));
  return Buffer.concat(parts);
}

const sealComplete = (revs: Record<string, unknown>) =>
  ({ type: 'SealComplete', handoffId: 'h-1', lastRevisionPerShard: revs, dataDirFingerprint: new Uint8Array(32).fill(1) }) as unknown as Message;

describe('fast decode path', () => {
  // Each test starts with no compiled key sets (their number per field is capped).
  beforeEach(() => resetLearnedShapes());

  it('declines or agrees with the strict path on valid frames of every type', () => {
    let taken = 0;
    for (const type of MESSAGE_TYPES) {
      fc.assert(
        fc.property(messageArbitrary(type), (m) => {
          const body = bodyOf(m);
          // Twice: the second time a revmap's key set has been compiled.
          if (checkBody(body)) taken++;
          if (checkBody(body)) taken++;
        }),
        { numRuns: 40 },
      );
    }
    expect(taken).toBeGreaterThan(MESSAGE_TYPES.length * 10); // it is used, not always declined
  });

  it('agrees on mutated, truncated and extended frames (revmap shapes learned first)', () => {
    // Sorted by UTF-16 units, which is not always the canonical order: the fast path must decline those.
    // Sometimes with a repeated key (the strict reader rejects duplicate keys).
    const revmapBody = fc
      .tuple(
        fc.oneof(fc.uniqueArray(fc.oneof(fastKey, fastKey, oddKey), { maxLength: 40 }), fc.array(fc.constantFrom('a', 'b', 'c', 'd'), { maxLength: 6 })),
        fc.array(revValue, { minLength: 40, maxLength: 40 }),
      )
      .map(([keys, vals]) => rawSealBody(keys.sort().map((k, i): [string, bigint] => [k, vals[i]!])));
    const body = fc.oneof(anyMessage.map(bodyOf), revmapBody, revmapBody);
    const edit = fc.oneof(
      fc.record({ kind: fc.constant('set' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
      fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
    );
    fc.assert(
      fc.property(body, fc.array(edit, { minLength: 1, maxLength: 3 }), (original, edits) => {
        checkBody(original);
        checkBody(original);
        let b = Buffer.from(original);
        for (const e of edits) {
          const at = b.length === 0 ? 0 : e.at % b.length;
          if (e.kind === 'set') b[at] = e.byte;
          else if (e.kind === 'cut') b = b.subarray(0, at);
          else b = Buffer.concat([b.subarray(0, at), Buffer.of(e.byte), b.subarray(at)]);
        }
        checkBody(b);
      }),
      { numRuns: 1500 },
    );
  });

  it('agrees on non-canonical but valid encodings (the strict path decides them)', () => {
    // Heartbeat with tsMs as uint8, phase as str8, an unknown field, and nil for an optional field.
    const cases = [
      '82 a474797065 a9486561727462656174 a474734d73 cc05 a57068617365 d90178',
      '83 a474797065 a9486561727462656174 a474734d73 05 a57068617365 a178 a178 c0',
      '82 a57068617365 a178 a474797065 a9486561727462656174',
      // Hello with `features: nil` (an optional field: counts as absent)
      '87 a474797065 a548656c6c6f a4726f6c65 a8696e63756d62656e74 a3706964 01 a76275696c644964 c400 a870726f746f4d696e 01 a870726f746f4d6178 01 a86665617475726573 c0',
    ];
    for (const h of cases) checkBody(Buffer.from(h.replace(/\s+/g, ''), 'hex'));
  });

  it('a compiled key set does not leak into maps with other keys, orders or values', () => {
    const keys = Array.from({ length: 64 }, (_, i) => `shard-${String(i).padStart(2, '0')}`);
    const base = revmapOf(keys.map((k, i) => [k, BigInt(i)]));
    const body = bodyOf(sealComplete(base));
    expect(checkBody(body)).toBe(true);
    expect(checkBody(body)).toBe(true); // now from the compiled shape
    const variants: Record<string, unknown>[] = [
      revmapOf(keys.map((k, i) => [k, 2n ** 64n - 1n - BigInt(i)])),
      revmapOf(keys.map((k, i) => [i === 63 ? 'shard-99' : k, 1n])),
      revmapOf(keys.map((k, i) => [i === 0 ? 'shard-0' : k, 1n])),
      revmapOf(keys.slice(1).map((k) => [k, 1n])),
      revmapOf(keys.map((k, i) => [k, i])),
    ];
    for (const v of variants) {
      const b = bodyOf(sealComplete(v));
      expect(checkBody(b)).toBe(true);
      expect(checkBody(b)).toBe(true);
      expect(checkBody(body)).toBe(true);
    }
    // Decoded maps are ordinary plain objects.
    const out = new FrameDecoder().push(encodeFrame(sealComplete(base)))[0]!.message as { lastRevisionPerShard: object };
    expect(Object.getPrototypeOf(out.lastRevisionPerShard)).toBe(Object.prototype);
    expect(Object.keys(out.lastRevisionPerShard)).toEqual(keys);
  });

  it('compiles a key set on its second arrival in a row, and at most 16 times per field', () => {
    const body = (tag: number) => rawSealBody([[`a${tag}`, 1n], [`b${tag}`, 2n]]);
    checkBody(body(0));
    expect(learnedShapeCompiles()).toBe(0);
    checkBody(body(0));
    expect(learnedShapeCompiles()).toBe(1);
    checkBody(body(1));
    checkBody(body(0));
    expect(learnedShapeCompiles()).toBe(1); // not twice in a row
    for (let i = 2; i < 40; i++) {
      expect(checkBody(body(i))).toBe(true);
      expect(checkBody(body(i))).toBe(true);
    }
    expect(learnedShapeCompiles()).toBe(16);
  });

  it('keeps a leading U+FEFF in strings (the UTF-8 decoder must not strip it as a BOM)', () => {
    const m = { type: 'Error', code: '\ufeffE', message: '\ufeff'.repeat(20) + 'é' } as Message;
    const [f] = new FrameDecoder().push(encodeFrame(m));
    expect(f!.message).toEqual(m);
    expect(decodeStrict(bodyOf(m))).toEqual(m);
  });
});

describe('fast encode path', () => {
  const same = (m: unknown) => {
    const a = outcome(() => encodeFrame(m as Message).toString('hex'));
    const b = outcome(() => encodeFrameGeneral(m as Message).toString('hex'));
    expect(a).toEqual(b);
  };

  it('writes the same bytes as the general path for valid messages', () => {
    fc.assert(
      fc.property(anyMessage, (m) => {
        same(m);
        same(m); // a revmap's template is in place the second time
      }),
      { numRuns: 500 },
    );
  });

  const weirdValues: unknown[] = [
    undefined, null, 0, 1, -1, 1.5, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 0n, -1n, 2n ** 32n, 2n ** 64n, '', 'x', 'é', '\ud800',
    'incumbent', 'low', 'failed', true, [], ['a'], ['\udc00'], [1], {}, { a: 1n }, new Uint8Array(31), new Uint8Array(32),
    Buffer.alloc(3), new Date(0),
  ];

  it('writes the same bytes or throws the same error for every field set to odd values', () => {
    for (const type of MESSAGE_TYPES) {
      const m = exampleMessage(type) as unknown as Record<string, unknown>;
      for (const k of Object.keys(m)) for (const v of weirdValues) same({ ...m, [k]: v });
    }
  });

  it('writes the same bytes or throws the same error for loose and invalid inputs', () => {
    const weird = fc.constantFrom<unknown>(...weirdValues);
    const looseRevmap = fc
      .array(fc.tuple(fc.oneof(fastKey, oddKey), fc.oneof(revValue, weird)), { maxLength: 20 })
      .map((entries) => revmapOf(entries));
    fc.assert(
      fc.property(anyMessage, fc.nat(), fc.oneof(weird, looseRevmap), (m, pick, value) => {
        same(m);
        const fields = Object.keys(m).filter((k) => k !== 'type');
        const loose = { ...m } as Record<string, unknown>;
        if (fields.length > 0) loose[fields[pick % fields.length]!] = value;
        same(loose);
        same(loose);
      }),
      { numRuns: 1500 },
    );
  });

  it('revmap templates follow changes to the map (keys added, removed, reordered, values changed)', () => {
    const keys = Array.from({ length: 40 }, (_, i) => `s${String(i).padStart(2, '0')}`);
    const map: Record<string, unknown> = {};
    for (const k of keys) map[k] = 1n;
    const steps: ((m: Record<string, unknown>) => void)[] = [
      () => undefined,
      (m) => (m['s05'] = 2n ** 64n - 1n),
      (m) => (m['s10'] = 5),
      (m) => (m['s10'] = -5n),
      (m) => (m['s10'] = 2n ** 64n),
      (m) => (m['s10'] = 6n),
      (m) => (m['s99'] = 3n),
      (m) => delete m['s99'],
      (m) => delete m['s00'],
      (m) => (m['s00'] = 4n), // same keys, different insertion order
    ];
    for (const step of steps) {
      step(map);
      same(sealComplete(map));
      same(sealComplete(map));
      same(sealComplete({ ...map }));
    }
    // Inherited enumerable properties are not part of a map (Object.keys semantics).
    const withProto = Object.create({ inherited: 1n }) as Record<string, unknown>;
    withProto['own'] = 1n;
    same(sealComplete(withProto));
  });

  it('messages built without the optional fields, or with them, encode alike', () => {
    for (const type of MESSAGE_TYPES) {
      const m = exampleMessage(type) as unknown as Record<string, unknown>;
      same(m);
      for (const k of Object.keys(m)) {
        if (k === 'type') continue;
        same({ ...m, [k]: undefined });
        const { [k]: _drop, ...rest } = m;
        same(rest);
      }
    }
  });
});
