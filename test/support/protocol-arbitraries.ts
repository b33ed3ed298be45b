/**
 * fast-check arbitraries and fixed examples for control-protocol messages,
 * derived from SCHEMA kinds (no per-message field lists here either).
 */
import fc from 'fast-check';
import { SCHEMA, MESSAGE_TYPES, type FieldSpec, type Message, type MessageType } from '../../src/wire/schema.js';

const U64_MAX = 2n ** 64n - 1n;

// 'binary' strings: any code point, never a lone surrogate (those are invalid str).
const anyStr = fc.string({ unit: 'binary', maxLength: 40 });

/** Integers biased to encoding boundaries, where a codec is likeliest to be wrong. */
const u32 = fc.oneof(
  fc.constantFrom(0, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1),
  fc.integer({ min: 0, max: 2 ** 32 - 1 }),
);
const u64 = fc.oneof(
  fc.constantFrom(0n, 1n, 127n, 2n ** 32n, 2n ** 53n, 2n ** 53n + 1n, U64_MAX),
  fc.bigInt(0n, U64_MAX),
);
const revmap = fc.dictionary(anyStr, u64, { maxKeys: 8 }).map((d) => {
  // fc.dictionary may build objects with a null prototype or a __proto__ key; normalize.
  const out: Record<string, bigint> = {};
  for (const [k, v] of Object.entries(d)) if (k !== '__proto__') out[k] = v;
  return out;
});

export function fieldArbitrary(spec: FieldSpec): fc.Arbitrary<unknown> {
  switch (spec.kind) {
    case 'u32':
      return u32;
    case 'u64':
      return u64;
    case 'str':
      return anyStr;
    case 'bool':
      return fc.boolean();
    case 'bin':
      return fc.uint8Array({ maxLength: 300 });
    case 'bin32':
      return fc.uint8Array({ minLength: 32, maxLength: 32 });
    case 'revmap':
      return revmap;
    case 'strlist':
      return fc.array(anyStr, { maxLength: 6 });
    case 'enum':
      return fc.constantFrom(...(spec.values ?? []));
  }
}

export function messageArbitrary(type: MessageType): fc.Arbitrary<Message> {
  const fields = SCHEMA[type].fields as Record<string, FieldSpec>;
  const record: Record<string, fc.Arbitrary<unknown>> = {};
  for (const [name, spec] of Object.entries(fields)) record[name] = fieldArbitrary(spec);
  return fc.record(record).map((r) => ({ type, ...r }) as unknown as Message);
}

/** Any valid message of any type. */
export const anyMessage: fc.Arbitrary<Message> = fc.oneof(...MESSAGE_TYPES.map(messageArbitrary));

/** A fixed, valid example of a message type (every field set from its kind). */
export function exampleMessage(type: MessageType): Message {
  const fields = SCHEMA[type].fields as Record<string, FieldSpec>;
  const msg: Record<string, unknown> = { type };
  for (const [name, spec] of Object.entries(fields)) {
    const examples: Record<FieldSpec['kind'], unknown> = {
      u32: 4242,
      u64: 1_700_000_000_000n,
      str: `${name}-value`,
      bool: true,
      bin: new Uint8Array([0xde, 0xad, 0xbe, 0xef]),
      bin32: new Uint8Array(32).map((_, i) => i),
      revmap: { 'shard-0': 10n, 'shard-1': 2n ** 53n + 1n },
      strlist: ['http', 'admin'],
      enum: spec.values?.[0],
    };
    msg[name] = examples[spec.kind];
  }
  return msg as unknown as Message;
}
