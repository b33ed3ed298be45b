/**
 * Runtime validation of control-protocol messages, interpreted from SCHEMA
 * (src/schema.ts) — there is no second list of fields here.
 *
 * `validateMessage` turns a raw decoded msgpack value into a normalized
 * `Message` (u64 -> bigint, u32 -> number, unknown fields dropped) or throws a
 * ProtocolError with one of the MessageErrorCode codes.
 */
import { ProtocolError } from '../os/errors.js';
import { WireFloat } from './msgpack.js';
import { SCHEMA, type FieldSpec, type Message, type MessageType } from './schema.js';

/** Codes thrown by validateMessage (all as ProtocolError). */
export const MessageErrorCode = {
  /** The top-level value is not a msgpack map. */
  E_NOT_A_MAP: 'E_NOT_A_MAP',
  /** `type` is missing, not a string, or not a message type in SCHEMA. */
  E_UNKNOWN_TYPE: 'E_UNKNOWN_TYPE',
  /** A required field is absent. */
  E_MISSING_FIELD: 'E_MISSING_FIELD',
  /** A field has the wrong kind, is out of range, has the wrong length or a disallowed value. */
  E_BAD_FIELD: 'E_BAD_FIELD',
} as const;

/**
 * Codes a peer may put in `Error.code` at the session level (above framing).
 * Framing/validation codes (CodecErrorCode in codec.ts) may be sent too.
 */
export const SessionErrorCode = {
  /** The message is valid but not allowed in the receiver's current state. */
  E_UNEXPECTED_MESSAGE: 'E_UNEXPECTED_MESSAGE',
  /** The handoffId does not match the one fixed by HelloAck. */
  E_WRONG_HANDOFF: 'E_WRONG_HANDOFF',
  /** The incumbent's control socket already has a supervisor connection. */
  E_BUSY: 'E_BUSY',
  /** The receiver has already aborted the handoff on its own (answer to Commit). */
  E_ABORTED: 'E_ABORTED',
  /** The peer was silent for longer than the receive timeout. */
  E_TIMEOUT: 'E_TIMEOUT',
  /** No protocol version in common (answer to Hello). */
  E_VERSION_MISMATCH: 'E_VERSION_MISMATCH',
  /** A Hello whose role is not the one this channel is for (answer to Hello). */
  E_WRONG_ROLE: 'E_WRONG_ROLE',
  /** A Hello whose pid is not the process the supervisor started or connected to (answer to Hello). */
  E_WRONG_PID: 'E_WRONG_PID',
  /**
   * The incumbent cannot serve again after an abort (its app's resumeAfterAbort failed,
   * e.g. no listener copy left to listen on); it exits (answer to ResumeAfterAbort).
   */
  E_RESUME_FAILED: 'E_RESUME_FAILED',
} as const;

export const U32_MAX = 0xffff_ffff;
export const U64_MAX = 0xffff_ffff_ffff_ffffn;

type Kind = FieldSpec['kind'];

export interface FieldPlan {
  readonly name: string;
  readonly kind: Kind;
  readonly optional: boolean;
  /** Allowed values of an enum field. */
  readonly values: ReadonlySet<string> | undefined;
}
export interface MessagePlan {
  readonly type: MessageType;
  /** In schema order; the encoder writes them in this order after `type`. */
  readonly fields: readonly FieldPlan[];
}

function compile(): ReadonlyMap<string, MessagePlan> {
  const plans = new Map<string, MessagePlan>();
  for (const [type, spec] of Object.entries(SCHEMA) as [MessageType, { fields: Record<string, FieldSpec> }][]) {
    const fields = Object.entries(spec.fields).map(([name, f]) => ({
      name,
      kind: f.kind,
      optional: f.optional === true,
      values: f.values ? new Set(f.values) : undefined,
    }));
    plans.set(type, { type, fields });
  }
  return plans;
}

/** Per-type field plans derived from SCHEMA (a Map, so `type: "constructor"` cannot hit a prototype key). */
export const MESSAGE_PLANS = compile();

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

function describe(v: unknown): string {
  if (v === null) return 'nil';
  if (v instanceof WireFloat) return `float ${v.value}`;
  if (Array.isArray(v)) return 'array';
  if (v instanceof Uint8Array) return `bin(${v.length})`;
  if (typeof v === 'bigint') return `integer ${v}`;
  if (typeof v === 'number') return Number.isInteger(v) ? `integer ${v}` : `float ${v}`;
  if (typeof v === 'string') return `str(${v.length})`;
  if (isPlainObject(v)) return 'map';
  return typeof v;
}

function bad(type: string, field: string, expected: string, got: unknown): ProtocolError {
  return new ProtocolError('E_BAD_FIELD', `${type}.${field}: expected ${expected}, got ${describe(got)}`, { type, field });
}

// Node 20 has String.prototype.isWellFormed; the ES2022 lib typings do not.
const isWellFormed = (s: string): boolean => (s as unknown as { isWellFormed(): boolean }).isWellFormed();

/** A str must be well-formed UTF-16 (no lone surrogates) so it round-trips through UTF-8 exactly. */
function isStr(v: unknown): v is string {
  return typeof v === 'string' && isWellFormed(v);
}

/** u64 from any integer representation; undefined if not a non-negative integer < 2^64. */
export function toU64(v: unknown): bigint | undefined {
  if (typeof v === 'bigint') return v >= 0n && v <= U64_MAX ? v : undefined;
  // Numbers beyond 2^53 may already have lost precision: refuse rather than guess.
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  return undefined;
}

function toU32(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isInteger(v) && v >= 0 && v <= U32_MAX ? v : undefined;
  if (typeof v === 'bigint') return v >= 0n && v <= 0xffff_ffffn ? Number(v) : undefined;
  return undefined;
}

/**
 * One revmap entry: the key must be a usable shard name and the value a u64.
 * `keyChecked` skips the well-formedness test when the caller already knows the
 * key is (the encoder sees that short ASCII keys are while writing them).
 * Shared by the validator and the encoder's fused validate-and-write pass.
 */
export function revmapEntry(type: string, field: string, k: string, v: unknown, keyChecked = false): bigint {
  if (k === '__proto__' || (!keyChecked && !isWellFormed(k))) throw bad(type, `${field}[${JSON.stringify(k)}]`, 'a shard name', k);
  if (typeof v === 'bigint' && v >= 0n && v <= U64_MAX) return v;
  const n = toU64(v);
  if (n === undefined) throw bad(type, `${field}[${JSON.stringify(k)}]`, 'u64 (integer 0..2^64-1)', v);
  return n;
}

/** A revmap field must be a plain object; its entries are checked by revmapEntry. */
export function checkRevmapObject(type: string, field: string, raw: unknown): asserts raw is Record<string, unknown> {
  if (!isPlainObject(raw)) throw bad(type, field, 'map of str to u64', raw);
}

function revmap(type: string, field: string, raw: unknown, trusted: boolean): Record<string, bigint> {
  checkRevmapObject(type, field, raw);
  // Fast path (the usual case for decoded frames): every value already a bigint in
  // range, so the decoded object is returned as is, without a copy.
  // Object.keys + indexed access: 64-shard maps are dictionary-mode objects, where for-in is ~2x slower.
  const keys = Object.keys(raw);
  let clean = true;
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i] as string;
    const v = raw[k];
    // Strings decoded by the strict reader are well-formed by construction (fatal
    // UTF-8), so `trusted` skips isWellFormed, the costliest per-key check.
    if (revmapEntry(type, field, k, v, trusted) !== v) clean = false;
  }
  if (clean) return raw as Record<string, bigint>;
  const out: Record<string, bigint> = {};
  for (const k of keys) out[k] = toU64(raw[k]) as bigint;
  return out;
}

function normalizeField(type: string, f: FieldPlan, raw: unknown, opts: ValidateOptions): unknown {
  switch (f.kind) {
    case 'u32': {
      const n = toU32(raw);
      if (n === undefined) throw bad(type, f.name, 'u32 (integer 0..2^32-1)', raw);
      return n;
    }
    case 'u64': {
      const n = toU64(raw);
      if (n === undefined) throw bad(type, f.name, 'u64 (integer 0..2^64-1)', raw);
      return n;
    }
    case 'str':
      if (!isStr(raw)) throw bad(type, f.name, 'str', raw);
      return raw;
    case 'bool':
      if (typeof raw !== 'boolean') throw bad(type, f.name, 'bool', raw);
      return raw;
    case 'bin':
      if (!(raw instanceof Uint8Array)) throw bad(type, f.name, 'bin', raw);
      return raw;
    case 'bin32':
      if (!(raw instanceof Uint8Array) || raw.length !== 32) throw bad(type, f.name, 'bin of exactly 32 bytes', raw);
      return raw;
    case 'enum':
      if (typeof raw !== 'string' || !f.values?.has(raw)) {
        throw bad(type, f.name, `one of ${[...(f.values ?? [])].map((s) => JSON.stringify(s)).join(', ')}`, raw);
      }
      return raw;
    case 'revmap':
      if (opts.revmapsCheckedByCaller) {
        checkRevmapObject(type, f.name, raw);
        return raw;
      }
      return revmap(type, f.name, raw, opts.fromWire === true);
    case 'strlist':
      if (!Array.isArray(raw)) throw bad(type, f.name, 'array of str', raw);
      for (let i = 0; i < raw.length; i++) {
        if (!isStr(raw[i])) throw bad(type, `${f.name}[${i}]`, 'str', raw[i]);
      }
      return raw as string[];
  }
}

/** Internal shortcuts for the codec; callers outside src/codec.ts pass nothing. */
export interface ValidateOptions {
  /** The value comes from readMsgpack: every string in it is well-formed UTF-16. */
  readonly fromWire?: boolean;
  /**
   * Only check that revmap fields are plain objects and return them as they are:
   * the encoder validates (with revmapEntry) and normalizes each entry while
   * writing it, which saves a second pass over a large map.
   */
  readonly revmapsCheckedByCaller?: boolean;
}

/**
 * Validate a decoded msgpack value (or an app-built message) against SCHEMA.
 * Returns a new object with `type` first and the schema fields in schema order;
 * fields not in the schema are dropped (forward compatibility). A nil value for
 * an optional field counts as absent. Throws ProtocolError (MessageErrorCode).
 */
export function validateMessage(value: unknown, opts: ValidateOptions = {}): Message {
  if (!isPlainObject(value)) {
    throw new ProtocolError('E_NOT_A_MAP', `message: expected a map, got ${describe(value)}`);
  }
  const type = value['type'];
  const plan = typeof type === 'string' ? MESSAGE_PLANS.get(type) : undefined;
  if (plan === undefined) {
    const what = typeof type === 'string' ? JSON.stringify(type) : `a ${describe(type)}`;
    throw new ProtocolError('E_UNKNOWN_TYPE', `message.type: unknown message type ${what}`, { field: 'type' });
  }
  const out: Record<string, unknown> = { type: plan.type };
  for (const f of plan.fields) {
    const raw = Object.hasOwn(value, f.name) ? value[f.name] : undefined;
    if (raw === undefined || (raw === null && f.optional)) {
      if (f.optional) continue;
      throw new ProtocolError('E_MISSING_FIELD', `${plan.type}.${f.name}: required field is missing`, {
        type: plan.type,
        field: f.name,
      });
    }
    out[f.name] = normalizeField(plan.type, f, raw, opts);
  }
  return out as Message;
}

// ---------------------------------------------------------------------------
// JSON representation (golden vectors, logs): u64 as decimal strings, bytes as
// lowercase hex, everything else as is.

export type JsonValue = string | number | boolean | JsonValue[] | { [k: string]: JsonValue };

/** A validated message as JSON: u64 -> decimal string, bin -> lowercase hex. */
export function messageToJson(msg: Message): Record<string, JsonValue> {
  const m = validateMessage(msg) as unknown as Record<string, unknown>;
  const plan = MESSAGE_PLANS.get(m['type'] as string) as MessagePlan;
  const out: Record<string, JsonValue> = { type: plan.type };
  for (const f of plan.fields) {
    const v = m[f.name];
    if (v === undefined) continue;
    switch (f.kind) {
      case 'u64':
        out[f.name] = (v as bigint).toString();
        break;
      case 'bin':
      case 'bin32':
        out[f.name] = Buffer.from(v as Uint8Array).toString('hex');
        break;
      case 'revmap': {
        const r: Record<string, string> = {};
        for (const [k, n] of Object.entries(v as Record<string, bigint>)) r[k] = n.toString();
        out[f.name] = r;
        break;
      }
      default:
        out[f.name] = v as JsonValue;
    }
  }
  return out;
}

/** Inverse of messageToJson; validates the result. */
export function messageFromJson(json: Record<string, unknown>): Message {
  const plan = typeof json['type'] === 'string' ? MESSAGE_PLANS.get(json['type']) : undefined;
  if (plan === undefined) return validateMessage(json); // throws the right error
  const raw: Record<string, unknown> = { ...json };
  for (const f of plan.fields) {
    const v = json[f.name];
    if (v === undefined) continue;
    if (f.kind === 'u64' && typeof v === 'string') raw[f.name] = BigInt(v);
    if ((f.kind === 'bin' || f.kind === 'bin32') && typeof v === 'string') raw[f.name] = Buffer.from(v, 'hex');
    if (f.kind === 'revmap' && isPlainObject(v)) {
      const r: Record<string, unknown> = {};
      for (const [k, n] of Object.entries(v)) r[k] = typeof n === 'string' ? BigInt(n) : n;
      raw[f.name] = r;
    }
  }
  return validateMessage(raw);
}
