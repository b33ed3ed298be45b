/**
 * `npm run demo` (bench/demo.ts, built to dist/bench/demo.js): the quick run passes with
 * 0 failed requests and 0 lost writes and leaves no process and no temp dir; Ctrl-C
 * (SIGINT) while the load runs stops everything promptly and cleans up the same way.
 * The demo passes its env on, so every process it starts carries our BATON_TEST_TAG.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { collect } from './support/cli.js';
import { killTagged, newTag, ROOT, taggedPids } from './support/engine.js';
import { exitOf, Harness, pollUntil } from './support/harness.js';

const DEMO = path.join(ROOT, 'dist/bench/demo.js');

const h = new Harness();
const tags: string[] = [];

afterEach(async () => {
  await h.cleanup();
  const leaked = (await Promise.all(tags.splice(0).map((t) => killTagged(t)))).flat();
  expect(leaked, 'processes left behind by the demo').toEqual([]);
});

function startDemo(args: string[]) {
  const tag = newTag();
  tags.push(tag);
  const child = h.spawn(process.execPath, [DEMO, ...args], { env: { ...process.env, BATON_TEST_TAG: tag, NO_COLOR: '1' } });
  return { child, tag };
}

function tempDirOf(stdout: string): string {
  const m = /temp dir\s+(\S+)/.exec(stdout);
  if (!m) throw new Error(`no temp dir line in:\n${stdout}`);
  return m[1]!;
}

/** No process carries the tag (the last ones may take a moment to be reaped). */
async function noneLeft(tag: string): Promise<void> {
  await pollUntil(async () => (await taggedPids(tag)).length === 0, 'no tagged process left', 5_000, 50).catch(() => undefined);
  expect(await taggedPids(tag)).toEqual([]);
}

describe('npm run demo', () => {
  it('--quick: 2 upgrades under load, 0 failed requests, 0 lost writes, nothing left behind', { timeout: 120_000 }, async () => {
    const { child, tag } = startDemo(['--quick']);
    const r = await collect(child, 110_000);
    const out = r.stdout;
    const all = `stdout:\n${out}\nstderr:\n${r.stderr}`;
    expect(r.code, `demo exit code; ${all}`).toBe(0);
    expect(out, all).toMatch(/failures\s+0 failed requests \(refused 0, reset 0, timeout 0, non-2xx 0, wrong answer 0, other 0\)/);
    expect(out, all).toMatch(/lost writes\s+0\n/);
    expect(out, all).toMatch(/upgrades\s+2\/2 committed/);
    expect(out, all).toMatch(/verified\s+[\d,]+ keys read back: [\d,]+ values exact, [\d,]+ deleted keys 404/);
    expect(out, all).toMatch(/revisions\s+shard revisions sum to ([\d,]+) = \1 acknowledged writes/);
    expect(out, all).toMatch(/upgrade 1: generation 2, pid \d+ → \d+, \d+ ms, write blackout ([\d.]+ ms|unresolved)/);
    expect(out, all).toMatch(/cleanup\s+baton stop: stopped in \d+ ms; no process left; temp dir removed/);
    expect(out, all).toMatch(/PASS: 0 failed requests, 0 lost writes, 2\/2 upgrades committed/);
    // Not a terminal: periodic plain progress lines, no cursor control.
    expect(out, all).not.toContain('\r');
    expect(existsSync(tempDirOf(out))).toBe(false);
    await noneLeft(tag);
  });

  it('Ctrl-C while the load runs and an upgrade is under way: exits promptly, stops baton, removes the temp dir, leaves no process', { timeout: 60_000 }, async () => {
    const { child, tag } = startDemo(['--quick']);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    await pollUntil(() => /keep-alive connections running/.test(stdout), 'the demo load to run', 40_000, 20);
    const dir = tempDirOf(stdout);
    expect(existsSync(dir)).toBe(true);
    // The service is up and loaded: its processes carry our tag.
    expect((await taggedPids(tag)).length).toBeGreaterThanOrEqual(2);
    // --quick triggers upgrade 1 at 2 s: interrupt in the middle of it (the harder case:
    // `baton stop` waits for the running handoff to end).
    await new Promise((r) => setTimeout(r, 2_200));
    const t0 = Date.now();
    child.kill('SIGINT');
    const { code } = await exitOf(child);
    const ms = Date.now() - t0;
    console.log(`demo exited ${ms} ms after SIGINT`);
    expect(code, `stdout:\n${stdout}\nstderr:\n${stderr}`).toBe(130);
    expect(ms, 'exit after SIGINT (ms)').toBeLessThan(15_000);
    expect(stderr).toMatch(/SIGINT: stopping baton/);
    expect(stderr).toMatch(/cleaned up: baton stop: stopped in \d+ ms; no process left; temp dir removed/);
    expect(existsSync(dir)).toBe(false);
    await noneLeft(tag);
  });
});
