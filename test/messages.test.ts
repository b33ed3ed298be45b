import { describe, expect, it } from 'vitest';
import { ProtocolError } from '../src/os/errors.js';
import { messageFromJson, messageToJson, validateMessage } from '../src/wire/messages.js';
import { MESSAGE_TYPES, SCHEMA } from '../src/wire/schema.js';
import { isListenerCopiesRequest, MAX_LISTENER_COPIES_PER_REQUEST } from '../src/wire/listener-copies.js';
import { exampleMessage } from './support/protocol-arbitraries.js';

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ProtocolError);
    return (err as ProtocolError).code;
  }
  throw new Error('expected a ProtocolError');
}

function messageOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected an error');
}

const fp = new Uint8Array(32).fill(1);

describe('validateMessage', () => {
  it('accepts an example of every message type and keeps only schema fields, type first', () => {
    for (const type of MESSAGE_TYPES) {
      const msg = exampleMessage(type);
      const out = validateMessage({ ...msg, extra: 1, another: { nested: [1] } });
      expect(out).toEqual(msg);
      expect(Object.keys(out)).toEqual(['type', ...Object.keys(SCHEMA[type].fields)]);
    }
  });

  it('rejects non-maps', () => {
    for (const v of [null, undefined, 1, 'x', true, [], [1], new Uint8Array(2), new Map(), new Date(0)]) {
      expect(codeOf(() => validateMessage(v))).toBe('E_NOT_A_MAP');
    }
  });

  it('rejects a missing, non-string or unknown type (including prototype names)', () => {
    for (const t of [undefined, 1, null, 'Nope', 'constructor', '__proto__', 'toString', 'hello']) {
      expect(codeOf(() => validateMessage({ type: t }))).toBe('E_UNKNOWN_TYPE');
    }
    expect(codeOf(() => validateMessage({}))).toBe('E_UNKNOWN_TYPE');
  });

  it('names the type and field of a missing field', () => {
    const fn = () => validateMessage({ type: 'PrepareHandoff', handoffId: 'h', successorPid: 1, drainGraceMs: 5 });
    expect(codeOf(fn)).toBe('E_MISSING_FIELD');
    expect(messageOf(fn)).toContain('PrepareHandoff.deadlineMs');
  });

  it('normalizes u64 to bigint and u32 to number', () => {
    const out = validateMessage({ type: 'PrepareHandoff', handoffId: 'h', successorPid: 7n, deadlineMs: 5, drainGraceMs: 9 });
    expect(out).toEqual({ type: 'PrepareHandoff', handoffId: 'h', successorPid: 7, deadlineMs: 5n, drainGraceMs: 9 });
    const r = validateMessage({ type: 'SealFailed', handoffId: 'h', error: 'e', partialState: { a: 1, b: 2n ** 64n - 1n } });
    expect(r).toEqual({ type: 'SealFailed', handoffId: 'h', error: 'e', partialState: { a: 1n, b: 2n ** 64n - 1n } });
  });

  const bad: [string, Record<string, unknown>, string][] = [
    ['u32 negative', { type: 'Hello', role: 'incumbent', pid: -1, buildId: fp, protoMin: 1, protoMax: 1 }, 'Hello.pid'],
    ['u32 too big', { type: 'Hello', role: 'incumbent', pid: 2 ** 32, buildId: fp, protoMin: 1, protoMax: 1 }, 'Hello.pid'],
    ['u32 bigint too big', { type: 'Hello', role: 'incumbent', pid: 2n ** 32n, buildId: fp, protoMin: 1, protoMax: 1 }, 'Hello.pid'],
    ['u32 float', { type: 'Hello', role: 'incumbent', pid: 1.5, buildId: fp, protoMin: 1, protoMax: 1 }, 'Hello.pid'],
    ['u32 string', { type: 'Hello', role: 'incumbent', pid: '1', buildId: fp, protoMin: 1, protoMax: 1 }, 'Hello.pid'],
    ['enum not allowed', { type: 'Hello', role: 'boss', pid: 1, buildId: fp, protoMin: 1, protoMax: 1 }, 'Hello.role'],
    ['bin as string', { type: 'Hello', role: 'incumbent', pid: 1, buildId: 'ab', protoMin: 1, protoMax: 1 }, 'Hello.buildId'],
    ['nil required', { type: 'Hello', role: 'incumbent', pid: null, buildId: fp, protoMin: 1, protoMax: 1 }, 'Hello.pid'],
    ['u64 negative', { type: 'Heartbeat', tsMs: -1n, phase: 'x' }, 'Heartbeat.tsMs'],
    ['u64 too big', { type: 'Heartbeat', tsMs: 2n ** 64n, phase: 'x' }, 'Heartbeat.tsMs'],
    ['u64 unsafe number', { type: 'Heartbeat', tsMs: 2 ** 60, phase: 'x' }, 'Heartbeat.tsMs'],
    ['str lone surrogate', { type: 'Heartbeat', tsMs: 1n, phase: '\ud800' }, 'Heartbeat.phase'],
    ['bool as int', { type: 'Drained', handoffId: 'h', openConnsRemaining: 0, acceptClosed: 1 }, 'Drained.acceptClosed'],
    [
      'bin32 short',
      { type: 'SealComplete', handoffId: 'h', lastRevisionPerShard: {}, dataDirFingerprint: new Uint8Array(31) },
      'SealComplete.dataDirFingerprint',
    ],
    [
      'revmap not a map',
      { type: 'SealComplete', handoffId: 'h', lastRevisionPerShard: [1], dataDirFingerprint: fp },
      'SealComplete.lastRevisionPerShard',
    ],
    [
      'revmap negative value',
      { type: 'SealComplete', handoffId: 'h', lastRevisionPerShard: { s1: -1 }, dataDirFingerprint: fp },
      'SealComplete.lastRevisionPerShard["s1"]',
    ],
    [
      'revmap string value',
      { type: 'SealComplete', handoffId: 'h', lastRevisionPerShard: { s1: '1' }, dataDirFingerprint: fp },
      'SealComplete.lastRevisionPerShard["s1"]',
    ],
    [
      'strlist element',
      { type: 'Ready', handoffId: 'h', listeningOn: ['a', 1], healthzOk: true, advertisedRevisionPerShard: {}, buildId: fp },
      'Ready.listeningOn[1]',
    ],
    [
      'strlist not an array',
      { type: 'Ready', handoffId: 'h', listeningOn: 'a', healthzOk: true, advertisedRevisionPerShard: {}, buildId: fp },
      'Ready.listeningOn',
    ],
  ];
  for (const [name, value, where] of bad) {
    it(`E_BAD_FIELD: ${name}`, () => {
      expect(codeOf(() => validateMessage(value))).toBe('E_BAD_FIELD');
      expect(messageOf(() => validateMessage(value))).toContain(where);
    });
  }

  it('does not mutate or copy a clean revmap, and copies one that needs normalizing', () => {
    const clean = { a: 1n };
    const out = validateMessage({ type: 'SealFailed', handoffId: 'h', error: '', partialState: clean });
    expect((out as { partialState: unknown }).partialState).toBe(clean);
    const dirty = { a: 1 };
    const out2 = validateMessage({ type: 'SealFailed', handoffId: 'h', error: '', partialState: dirty });
    expect(dirty).toEqual({ a: 1 });
    expect((out2 as { partialState: unknown }).partialState).toEqual({ a: 1n });
  });
});

describe('JSON representation', () => {
  it('round-trips every message type', () => {
    for (const type of MESSAGE_TYPES) {
      const msg = exampleMessage(type);
      const json = messageToJson(msg);
      expect(JSON.parse(JSON.stringify(json))).toEqual(json);
      // Compared through JSON: bins come back as Buffer, examples are plain Uint8Array.
      expect(messageToJson(messageFromJson(json))).toEqual(json);
    }
  });

  it('writes u64 as decimal strings and bytes as lowercase hex', () => {
    const json = messageToJson({
      type: 'SealComplete',
      handoffId: 'h',
      lastRevisionPerShard: { s: 2n ** 64n - 1n },
      dataDirFingerprint: new Uint8Array(32).fill(0xab),
    });
    expect(json).toEqual({
      type: 'SealComplete',
      handoffId: 'h',
      lastRevisionPerShard: { s: '18446744073709551615' },
      dataDirFingerprint: 'ab'.repeat(32),
    });
  });
});

describe('listener copies requests (PROTOCOL.md "Listener copies")', () => {
  it('takes a count of 1..64 or none; anything else is not a request', () => {
    expect(isListenerCopiesRequest({ baton: 'listener-copies?', seq: 1 })).toBe(true);
    for (const count of [1, 15, MAX_LISTENER_COPIES_PER_REQUEST]) expect(isListenerCopiesRequest({ baton: 'listener-copies?', seq: 2, count }), `count ${count}`).toBe(true);
    for (const count of [0, -1, MAX_LISTENER_COPIES_PER_REQUEST + 1, 1.5, '2', null, 1e9]) expect(isListenerCopiesRequest({ baton: 'listener-copies?', seq: 3, count }), `count ${String(count)}`).toBe(false);
    for (const seq of [-1, 0.5, '1', undefined]) expect(isListenerCopiesRequest({ baton: 'listener-copies?', seq }), `seq ${String(seq)}`).toBe(false);
    expect(isListenerCopiesRequest({ baton: 'listener-copy', seq: 1 })).toBe(false);
    expect(MAX_LISTENER_COPIES_PER_REQUEST).toBe(64);
  });
});
