/**
 * The fuzzer (bench/fuzz.ts, `npm run fuzz`), CI budget: the incumbent's control socket
 * (a real `baton run` with fixtures/kv), a successor's control channel (fixtures/primitive
 * spawned by a fake supervisor) and the admin socket get 5,000 generated and mutated
 * inputs: every one answered as the model predicts (the right Error code then the close,
 * or nothing for an accepted frame) within 5 s, the service keeps its incumbent, lock and
 * HTTP, every successor exits cleanly, and neither the incumbent's nor the supervisor's
 * RSS runs away. The full run (≥ 100,000 inputs) is `npm run fuzz -- --inputs 100000`;
 * its figures are in RELIABILITY.md.
 *
 * Bug B3 (an admin request whose target is not a valid relative URL, `GET // HTTP/1.1`,
 * killed `baton run`; RELIABILITY.md) is fixed, so those inputs are sent too. The oracle
 * test below pins the predicate that recognises them.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { hitsKnownAdminBug, judge, loadVectors, reachesAction } from '../bench/fuzz.js';
import { encodeFrame } from '../src/wire/codec.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

describe('fuzz oracle', () => {
  it('predicts the golden invalid vectors’ error codes (E_TRUNCATED: the stream is cut inside a frame)', () => {
    for (const v of loadVectors().invalid) {
      const verdict = judge('incumbent', 'h', v.bytes);
      const expected = JSON.parse(readFileSync(path.join(ROOT, 'protocol/vectors/invalid.json'), 'utf8')).find((x: { name: string }) => x.name === v.name).error as string;
      if (expected === 'E_TRUNCATED') expect(verdict, v.name).toEqual({ kind: 'incomplete' });
      else expect(verdict, v.name).toEqual({ kind: 'error', codes: [expected] });
    }
  });

  it('follows the state: HelloAck attaches, a Heartbeat is accepted, a Commit or a foreign handoff id is refused, PrepareHandoff and Shutdown act', () => {
    const ack = encodeFrame({ type: 'HelloAck', handoffId: 'h1', protoVersion: 1 });
    expect(judge('incumbent', undefined, ack)).toEqual({ kind: 'accept', replies: 0, attached: 'h1' });
    expect(judge('incumbent', undefined, encodeFrame({ type: 'HelloAck', handoffId: 'h1', protoVersion: 2 }))).toEqual({ kind: 'error', codes: ['E_VERSION_MISMATCH'] });
    expect(judge('incumbent', 'h1', encodeFrame({ type: 'Heartbeat', tsMs: 1n, phase: 'x' }))).toEqual({ kind: 'accept', replies: 0 });
    expect(judge('incumbent', 'h1', encodeFrame({ type: 'ResumeAfterAbort', handoffId: 'h1' }))).toEqual({ kind: 'accept', replies: 1 });
    expect(judge('incumbent', 'h1', encodeFrame({ type: 'Commit', handoffId: 'h1' }))).toMatchObject({ kind: 'error', codes: ['E_UNEXPECTED_MESSAGE', 'E_ABORTED'] });
    expect(judge('incumbent', 'h1', encodeFrame({ type: 'SealRequest', handoffId: 'h1' }))).toEqual({ kind: 'error', codes: ['E_UNEXPECTED_MESSAGE'] });
    const prepare = encodeFrame({ type: 'PrepareHandoff', handoffId: 'h1', successorPid: 1, deadlineMs: 1n, drainGraceMs: 1 });
    expect(judge('incumbent', 'h1', prepare).kind).toBe('acts');
    expect(judge('incumbent', 'h2', prepare)).toEqual({ kind: 'error', codes: ['E_WRONG_HANDOFF'] });
    expect(judge('incumbent', undefined, Buffer.concat([ack, prepare])).kind).toBe('acts'); // a valid order in one input
    expect(judge('incumbent', 'h1', encodeFrame({ type: 'Shutdown', reason: 'x', timeoutMs: 1 })).kind).toBe('acts');
    expect(judge('successor', 'h1', encodeFrame({ type: 'Abort', handoffId: 'h1', reason: 'x' }))).toEqual({ kind: 'close', or: [] });
    const begin = encodeFrame({ type: 'Begin', handoffId: 'h1', sealedRevisionPerShard: {}, sealedFingerprint: new Uint8Array(), incumbentPid: 0 });
    expect(judge('successor', 'h1', begin).kind).toBe('acts');
    // A framing error after a refused frame in the same input: either Error may come first.
    expect(judge('incumbent', 'h1', Buffer.concat([encodeFrame({ type: 'Commit', handoffId: 'h1' }), Buffer.from([0, 0, 0, 1])]))).toMatchObject({
      kind: 'error',
      codes: ['E_UNEXPECTED_MESSAGE', 'E_ABORTED', 'E_FRAME_TOO_SHORT'],
    });
  });

  it('never lets an upgrade, a stop or a maintenance run through to the admin socket', () => {
    for (const line of ['POST /v1/upgrade HTTP/1.1', 'POST /v1/stop HTTP/1.1', 'POST /v1/jobs HTTP/1.1', 'POST /v1/jobs/abc/cancel HTTP/1.1', 'POST /v1/%6Aobs HTTP/1.1', 'POST /v1/./stop HTTP/1.1', 'POST /x/../v1/upgrade HTTP/1.1', 'POST /v1\\stop HTTP/1.1', 'POST http://baton/v1/stop HTTP/1.1', 'POST /v1/%73top HTTP/1.1', 'POST //v1//upgrade HTTP/1.1']) {
      expect(reachesAction(Buffer.from(`GET /v1/status HTTP/1.1\r\n\r\n${line}\r\n\r\n`)), line).toBe(true);
    }
    expect(reachesAction(Buffer.from('GET /v1/upgrade HTTP/1.1\r\n\r\nPOST /v1/status HTTP/1.1\r\n\r\n'))).toBe(false);
  });

  it('recognises the request targets of known bug B3 (not a valid relative URL)', () => {
    for (const target of ['//', '/\\', '//a[b', '/\\x[y', 'https:']) expect(hitsKnownAdminBug(Buffer.from(`GET ${target} HTTP/1.1\r\n\r\n`)), target).toBe(true);
    expect(hitsKnownAdminBug(Buffer.from('GET /v1/status?limit=%zz HTTP/1.1\r\nhost: baton\r\n\r\n'))).toBe(false);
  });
});

describe('fuzz run (CI budget)', () => {
  it('5,000 inputs across the three surfaces: every one answered as predicted, the service unharmed', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'baton-fuzz-test-'));
    const summaryFile = path.join(dir, 'summary.json');
    try {
      const child = spawn(process.execPath, [path.join(ROOT, 'dist/bench/fuzz.js'), '--inputs', '5000', '--seed', '20261123', '--summary', summaryFile], { stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      child.stdout.on('data', (c: Buffer) => (output += c.toString()));
      child.stderr.on('data', (c: Buffer) => (output += c.toString()));
      const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
      expect(code, output.slice(-6000)).toBe(0);
      const summary = JSON.parse(readFileSync(summaryFile, 'utf8')) as {
        inputs: number;
        violations: unknown[];
        targets: Record<string, { inputs: number; byAnswer: Record<string, number>; byKind: Record<string, number> }>;
        successorExits: Record<string, number>;
        serviceChecks: number;
        rssKb: Record<string, { before: number; after: number }>;
        slowClients: Record<string, { clients: number; closedByServer: number; realRequests: number; realFailures: number }>;
      };
      expect(summary.violations).toEqual([]);
      expect(summary.inputs).toBeGreaterThanOrEqual(5000);
      for (const target of ['incumbent', 'successor', 'admin']) expect(summary.targets[target]!.inputs, target).toBeGreaterThan(500);
      // The inputs reach deep: refusals of many kinds, not just one framing error.
      const codes = Object.keys(summary.targets.incumbent!.byAnswer).filter((k) => k.startsWith('Error '));
      expect(codes.length).toBeGreaterThanOrEqual(10);
      expect(Object.keys(summary.successorExits)).toEqual(['exit 0']);
      expect(summary.serviceChecks).toBeGreaterThan(3);
      // Issue #21: nested JSON, long paths and headers reach the admin socket ...
      for (const kind of ['nested-json', 'long-path', 'long-header']) expect(summary.targets.admin!.byKind[kind], kind).toBeGreaterThan(0);
      // ... and slow clients every listener the supervisor serves: all closed by it, real requests answered meanwhile.
      expect(Object.keys(summary.slowClients).sort()).toEqual(['admin-socket', 'admin-tcp', 'metrics']);
      for (const [name, r] of Object.entries(summary.slowClients)) {
        expect(r.clients, name).toBeGreaterThanOrEqual(40);
        expect(r.closedByServer, name).toBe(r.clients);
        expect(r.realFailures, name).toBe(0);
      }
      for (const [name, r] of Object.entries(summary.rssKb)) expect(r.after, name).toBeLessThan(r.before * 1.5 + 64 * 1024);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
