/**
 * Smoke test of `npm run bench` (bench/run.ts, built to dist/bench/run.js): the quick
 * anatomy benchmark runs to the end, prints its sections and exits 0, leaves no
 * process behind and does not touch BENCHMARKS.md (--quick does not write). No
 * performance figure is asserted: those are for BENCHMARKS.md, not for a test.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { collect } from './support/cli.js';
import { killTagged, newTag, ROOT, taggedPids } from './support/engine.js';
import { Harness, pollUntil } from './support/harness.js';

const RUN = path.join(ROOT, 'dist/bench/run.js');
const BENCHMARKS = path.join(ROOT, 'BENCHMARKS.md');

const h = new Harness();
const tags: string[] = [];

afterEach(async () => {
  await h.cleanup();
  const leaked = (await Promise.all(tags.splice(0).map((t) => killTagged(t)))).flat();
  expect(leaked, 'processes left behind by the bench').toEqual([]);
});

describe('npm run bench', () => {
  it('--quick --only anatomy prints the anatomy, the blackout segments and the goals, exits 0, cleans up', { timeout: 90_000 }, async () => {
    const before = readFileSync(BENCHMARKS, 'utf8');
    const tag = newTag();
    tags.push(tag);
    const child = h.spawn(process.execPath, [RUN, '--quick', '--only', 'anatomy'], { env: { ...process.env, BATON_TEST_TAG: tag } });
    const r = await collect(child, 80_000);
    expect(r.code, `exit ${r.code ?? r.signal}\n${r.stderr}\n${r.stdout}`).toBe(0);
    for (const text of [
      '### Handoff anatomy',
      'trigger → commit',
      'successor start-up (spawn → Hello)',
      'lock pass',
      '**write blackout**',
      'longest per-connection write stall',
      'listen + first write',
      'bare cold start of the kv app',
      '| goal | measured | verdict |',
      'done in',
    ]) {
      expect(r.stdout).toContain(text);
    }
    // Every upgrade committed (the quick run does 10); figures are not judged here.
    expect(r.stdout).toMatch(/10 committed upgrades/);
    expect(r.stdout).not.toContain('Not committed');
    expect(r.stdout).toMatch(/- machine: \d+ CPUs/);
    expect(readFileSync(BENCHMARKS, 'utf8')).toBe(before);
    await pollUntil(async () => ((await taggedPids(tag)).length === 0 ? true : undefined), 'no process of the bench left', 5_000, 50).catch(() => undefined);
    expect(await taggedPids(tag)).toEqual([]);
  });

  it('rejects an unknown benchmark name with exit 2 and the usage', async () => {
    const r = await collect(h.spawn(process.execPath, [RUN, '--only', 'nope']), 20_000);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown benchmark nope');
    expect(r.stderr).toContain('--quick');
  });
});
