/**
 * `baton upgrade` progress rendering through the real binary: on a terminal one live
 * line rewritten in place (carriage return + clear-line), through a pipe plain lines
 * without escape codes. The terminal is a real pseudo-terminal from util-linux
 * `script` (no native node-pty needed).
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { Harness } from './support/harness.js';
import { CLI, collect, useCliWorlds } from './support/cli.js';

const hasScript = spawnSync('sh', ['-c', 'command -v script']).status === 0;

const h = new Harness();
const worlds = useCliWorlds(h);

const CLEAR = '\r\x1b[2K';
const shellQuote = (s: string): string => `'${s.replaceAll("'", `'\\''`)}'`;

describe('baton upgrade progress', () => {
  it.skipIf(!hasScript)('on a TTY: one line updated in place with the phase and elapsed time (needs util-linux `script`)', async () => {
    // The seal blocks the incumbent 1.5 s, so the 200 ms ticker redraws the line several times.
    const d = await worlds.w.startDaemon({ env: { PRIM_SEAL_BLOCK_MS: '1500' } });
    const cmd = [process.execPath, CLI, 'upgrade', '--state-dir', d.stateDir].map(shellQuote).join(' ');
    // -q quiet, -f flush each write, -e the command's exit code, -c the command; no typescript file.
    const r = await collect(h.spawn('script', ['-qfec', cmd, '/dev/null'], { env: worlds.w.env() }));
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const out = r.stdout;

    const frames = [...out.matchAll(/\r\x1b\[2Kupgrading: (\S+) +(\d+\.\d)s/g)].map((m) => ({ phase: m[1]!, elapsedS: Number(m[2]) }));
    expect(frames.length, JSON.stringify(out)).toBeGreaterThanOrEqual(5);
    // Phase names as they happen, in order, with the long one redrawn by the ticker.
    const phases = frames.map((f) => f.phase).filter((p, i, a) => p !== a[i - 1]);
    expect(phases).toEqual(expect.arrayContaining(['spawning', 'draining', 'sealing', 'await_ready', 'committing']));
    expect(phases.indexOf('sealing')).toBeLessThan(phases.indexOf('committing'));
    expect(frames.filter((f) => f.phase === 'sealing').length).toBeGreaterThanOrEqual(3);
    // Elapsed time never goes back and covers the blocked seal.
    for (let i = 1; i < frames.length; i++) expect(frames[i]!.elapsedS).toBeGreaterThanOrEqual(frames[i - 1]!.elapsedS);
    expect(frames.at(-1)!.elapsedS).toBeGreaterThanOrEqual(1.4);
    // No line feed between frames (it is one line), and the line is cleared before the result.
    const first = out.indexOf(CLEAR);
    const last = out.lastIndexOf(CLEAR);
    expect(out.slice(first, last)).not.toContain('\n');
    expect(out.slice(last + CLEAR.length)).toMatch(/^committed: generation 2 \(pid \d+ -> \d+\) in \d+ ms/);
    // Nothing of the plain (pipe) format.
    expect(out).not.toMatch(/^phase /m);

    const stop = await worlds.w.baton(['stop', '--state-dir', d.stateDir]);
    expect(stop.code, stop.stderr).toBe(0);
  });

  it('through a pipe: plain lines, no carriage returns or escape codes', async () => {
    const d = await worlds.w.startDaemon();
    const r = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/[\r\x1b]/);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^upgrade [0-9a-f-]{36} started$/);
    const phases = lines.filter((l) => l.startsWith('phase ')).map((l) => /^phase (\S+) \+\d+ms$/.exec(l)?.[1]);
    expect(phases).toEqual(['spawning', 'hello', 'draining', 'sealing', 'begin', 'await_ready', 'committing']);
    expect(lines.at(-1)).toMatch(/^committed: generation 2 \(pid \d+ -> \d+\) in \d+ ms/);

    const stop = await worlds.w.baton(['stop', '--state-dir', d.stateDir]);
    expect(stop.code, stop.stderr).toBe(0);
  });
});
