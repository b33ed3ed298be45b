/**
 * Generates the language-neutral protocol artifacts from src/wire/schema.ts:
 *   protocol/schema.json, protocol/vectors/{valid,large,invalid}.json and the
 *   message reference section of protocol/PROTOCOL.md (between the GENERATED markers).
 *
 *   npm run gen:protocol
 *
 * test/protocol-artifacts.test.ts fails when a committed file differs from what
 * this produces, so the artifacts cannot drift from the schema.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { CodecErrorCode, FRAME_HEADER_BYTES, HANDSHAKE_VERSION } from '../src/wire/codec.js';
import { SessionErrorCode } from '../src/wire/messages.js';
import { MAX_FRAME_LENGTH, PROTO_MAX, PROTO_MIN, PROTOCOL_VERSION, SCHEMA, type FieldSpec, type MessageSpec } from '../src/wire/schema.js';
import { checkVectors, invalidVectors, largeVectors, validVectors } from './vectors.js';

const KIND_DOCS: Record<FieldSpec['kind'], string> = {
  u32: 'non-negative integer < 2^32; encoded with the smallest msgpack int encoding',
  u64: 'non-negative integer < 2^64; ALWAYS encoded as msgpack uint64 (0xcf + 8 bytes big-endian); decoders accept any int encoding',
  str: 'msgpack str, UTF-8',
  bool: 'msgpack true/false',
  bin: 'msgpack bin, any length',
  bin32: 'msgpack bin of exactly 32 bytes',
  revmap: 'msgpack map of str (shard name) to u64 (revision); canonical order: keys ascending by UTF-8 bytes',
  strlist: 'msgpack array of str',
  enum: 'msgpack str, one of the listed values',
};

const FROM: Record<string, string> = { S: 'supervisor', I: 'incumbent', N: 'successor', A: 'any' };

export const GENERATED_BEGIN = '<!-- BEGIN GENERATED: message reference (npm run gen:protocol) -->';
export const GENERATED_END = '<!-- END GENERATED -->';

const messages = () => Object.entries(SCHEMA) as [string, MessageSpec][];

function schemaJson(): unknown {
  return {
    $comment: 'Generated from src/wire/schema.ts by `npm run gen:protocol`. Do not edit. Spec: PROTOCOL.md.',
    protocolVersion: PROTOCOL_VERSION,
    protoMin: PROTO_MIN,
    protoMax: PROTO_MAX,
    handshakeVersion: HANDSHAKE_VERSION,
    maxFrameLength: MAX_FRAME_LENGTH,
    frameHeaderBytes: FRAME_HEADER_BYTES,
    kinds: KIND_DOCS,
    errorCodes: { codec: Object.keys(CodecErrorCode), session: Object.keys(SessionErrorCode) },
    messages: Object.fromEntries(
      messages().map(([type, spec]) => [
        type,
        {
          from: spec.from.map((f) => FROM[f]),
          doc: spec.doc,
          fields: Object.entries(spec.fields).map(([name, f]) => ({
            name,
            kind: f.kind,
            ...(f.values ? { values: f.values } : {}),
            optional: f.optional === true,
            doc: f.doc,
          })),
        },
      ]),
    ),
  };
}

const md = (s: string) => s.replace(/\|/g, '\\|');

/** The message reference: one small table per message, in schema order. */
export function messageReference(): string {
  const lines = [GENERATED_BEGIN, ''];
  for (const [type, spec] of messages()) {
    lines.push(`#### ${type}`, '', `From: ${spec.from.map((f) => FROM[f]).join(', ')}. ${spec.doc}`, '');
    lines.push('| field | kind | meaning |', '|---|---|---|', '| `type` | str | `"' + type + '"` |');
    for (const [name, f] of Object.entries(spec.fields)) {
      const kind = f.kind === 'enum' ? `enum (${(f.values ?? []).map((v) => `\`${v}\``).join(', ')})` : f.kind;
      lines.push(`| \`${name}\` | ${kind}${f.optional ? ', optional' : ''} | ${md(f.doc)} |`);
    }
    lines.push('');
  }
  lines.push(GENERATED_END);
  return lines.join('\n');
}

/** PROTOCOL.md with its generated section replaced. */
export function renderProtocolMd(current: string): string {
  const start = current.indexOf(GENERATED_BEGIN);
  const end = current.indexOf(GENERATED_END);
  if (start < 0 || end < start) throw new Error('PROTOCOL.md lacks the GENERATED markers');
  return current.slice(0, start) + messageReference() + current.slice(end + GENERATED_END.length);
}

const json = (v: unknown) => JSON.stringify(v, null, 2) + '\n';

/** Every generated file: path relative to the repo root -> contents. */
export function buildArtifacts(root: string): Map<string, string> {
  const valid = validVectors();
  const large = largeVectors();
  const invalid = invalidVectors();
  checkVectors([...valid, ...large], invalid);
  return new Map([
    ['protocol/schema.json', json(schemaJson())],
    ['protocol/vectors/valid.json', json(valid)],
    // One vector per line, unindented: its hex is 2 MiB.
    ['protocol/vectors/large.json', JSON.stringify(large) + '\n'],
    ['protocol/vectors/invalid.json', json(invalid)],
    ['protocol/PROTOCOL.md', renderProtocolMd(readFileSync(join(root, 'protocol/PROTOCOL.md'), 'utf8'))],
  ]);
}

/** The repo root: nearest ancestor of this file holding package.json (works from src and dist). */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      readFileSync(join(dir, 'package.json'));
      return dir;
    } catch {
      const up = resolve(dir, '..');
      if (up === dir) throw new Error('package.json not found above ' + fileURLToPath(import.meta.url));
      dir = up;
    }
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const root = repoRoot();
  for (const [path, text] of buildArtifacts(root)) {
    writeFileSync(join(root, path), text);
    console.log(`wrote ${path} (${text.length} bytes)`);
  }
}
