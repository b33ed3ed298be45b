/**
 * Smoke test of `npm run bench` (bench/run.ts, built to dist/bench/run.js): the quick
 * anatomy benchmark and the "after" rows of the continuity benchmark run to the end,
 * print their sections and exit 0, leave no process behind and do not touch
 * BENCHMARKS.md (--quick does not write). No performance figure is asserted: those are
 * for BENCHMARKS.md, not for a test; what baton promises (no failed request, the app's
 * pid kept, no write lost) is.
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

  it('--quick --only continuity (the two "after" rows): the app keeps its pid through a supervisor SIGKILL and an upgrade --self, nothing fails, nothing is lost or left running', { timeout: 120_000 }, async () => {
    const before = readFileSync(BENCHMARKS, 'utf8');
    const tag = newTag();
    tags.push(tag);
    // The "before" rows cost a cold start each and exercise no other helper: left to the bench run.
    const env = { ...process.env, BATON_TEST_TAG: tag, BENCH_CONTINUITY_VARIANTS: 'crash-after,replace-after' };
    const r = await collect(h.spawn(process.execPath, [RUN, '--quick', '--only', 'continuity'], { env }), 110_000);
    expect(r.code, `exit ${r.code ?? r.signal}\n${r.stderr}\n${r.stdout}`).toBe(0);
    expect(r.stdout).toContain('### Supervisor continuity: restarting and replacing baton itself');
    expect(r.stdout).not.toContain('did not complete');
    // One event per row; its line says what happened: no failed request, the app's pid kept, a new supervisor.
    for (const id of ['crash-after', 'replace-after']) {
      const line = new RegExp(`${id} #1: failed \\{\\} \\(refused 0, reset 0\\), .* app (\\d+) → (\\d+), supervisor (\\d+) → (\\d+), back in`).exec(r.stdout);
      expect(line, `${id}'s event line in\n${r.stdout}`).not.toBeNull();
      expect(line![2], `${id}: the app keeps its pid`).toBe(line![1]);
      expect(line![4], `${id}: a new supervisor`).not.toBe(line![3]);
    }
    const rows = r.stdout.split('\n').filter((l) => /^\| (supervisor crash|replacing the supervisor), after/.test(l));
    expect(rows).toHaveLength(4); // each row in both tables
    for (const row of rows.slice(2)) expect(row).toMatch(/\| 0 of 1 \| [\d,]+ checked, \*\*0 lost\*\* \|.*\| 0 \|$/);
    expect(rows[2]).toMatch(/listeners taken back ×1/);
    expect(rows[3]).toMatch(/job [\d.,]+; command/);
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
