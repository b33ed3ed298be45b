/**
 * The examples in examples/ (node:http, fastify, express, lmdb), built to dist/examples/
 * and importing the package by its public name, run as a user runs them: under the real
 * `baton run` binary, upgraded with `baton upgrade` under keep-alive load with writes.
 * Asserted: every upgrade committed, to a new process each time, which then serves; no
 * request failed; every acknowledged write reads back; `baton stop` ends it all (the
 * suite's tag check finds no process left). And on LMDB, a successor that opens a copy
 * of the database other than the one the incumbent sealed (an old backup) is stopped by
 * `verifyOpened`: the upgrade aborts naming the mismatch and the old process serves on.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { isAlive } from '../src/os/proc.js';
import type { JobRecord } from '../src/daemon/jobs.js';
import { healthz, Load, lostWrites, ROOT } from './support/engine.js';
import { useCliWorlds, writeScript, type DaemonHandle } from './support/cli.js';
import { Harness, pollUntil } from './support/harness.js';

const h = new Harness();
const worlds = useCliWorlds(h);

const EXAMPLES = ['node-http', 'fastify', 'express', 'lmdb'] as const;
const UPGRADES = 3;
const mainOf = (name: string): string => path.join(ROOT, 'dist/examples', name, 'main.js');

/** `baton upgrade --json`: its exit code and the job record it printed (none when it printed an error). */
async function upgrade(d: DaemonHandle): Promise<{ code: number | null; job: JobRecord | undefined; out: string }> {
  const r = await worlds.w.baton(['upgrade', '--json', '--state-dir', d.stateDir], {}, 90_000);
  return { code: r.code, job: r.stdout.startsWith('{') ? (JSON.parse(r.stdout) as JobRecord) : undefined, out: r.stdout + r.stderr };
}

/** The old incumbent exits right after the commit (killed 1 s later if it lingers). */
async function exited(pid: number): Promise<void> {
  await pollUntil(async () => !isAlive(pid) || undefined, `pid ${pid} to exit`, 10_000, 20);
}

/** Waits until the load has had `n` more writes acknowledged (so each upgrade happens under writes). */
async function moreWrites(load: Load, n: number): Promise<void> {
  const target = load.acked.size + n;
  await pollUntil(async () => load.acked.size >= target || undefined, `${n} more acknowledged writes`, 20_000, 20);
}

async function expectNoLoss(load: Load, port: number): Promise<void> {
  await load.stop();
  expect(load.failures, `failed requests: ${JSON.stringify(load.failures)}`).toEqual({});
  expect(load.acked.size).toBeGreaterThan(100);
  expect(await lostWrites(port, load.acked), 'acknowledged writes that do not read back').toEqual([]);
}

describe('docs/embedded-db.md', () => {
  it('quotes examples/lmdb/main.ts as it is: every line of its TypeScript excerpts is in the example', () => {
    const source = new Set(readFileSync(path.join(ROOT, 'examples/lmdb/main.ts'), 'utf8').split('\n'));
    const excerpts = [...readFileSync(path.join(ROOT, 'docs/embedded-db.md'), 'utf8').matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
    expect(excerpts.length).toBeGreaterThanOrEqual(2);
    const missing = excerpts.flatMap((e) => e.split('\n').filter((line) => line.trim() !== '' && !source.has(line)));
    expect(missing).toEqual([]);
  });
});

describe('the examples under baton run', () => {
  for (const name of EXAMPLES) {
    it(`${name}: ${UPGRADES} upgrades under keep-alive load with writes; each commits to a new process, no request fails, every acknowledged write reads back`, { timeout: 90_000 }, async () => {
      const d = await worlds.w.startDaemon({ command: [process.execPath, mainOf(name)], listen: 'http=tcp://127.0.0.1:0' });
      const pids = [(await worlds.w.status(d)).app!.pid];
      expect((await healthz(d.port)).pid).toBe(pids[0]);
      const load = new Load(d.port, 8);
      try {
        for (let i = 1; i <= UPGRADES; i++) {
          await moreWrites(load, 30);
          const r = await upgrade(d);
          expect(r.code, `upgrade ${i}: ${r.out}`).toBe(0);
          expect(r.job).toMatchObject({ state: 'SUCCEEDED', handoff: { outcome: 'committed', oldPid: pids.at(-1) } });
          const newPid = r.job!.handoff!.newPid!;
          expect(pids).not.toContain(newPid);
          expect((await healthz(d.port)).pid, `upgrade ${i}: who serves`).toBe(newPid);
          await exited(pids.at(-1)!);
          pids.push(newPid);
        }
        await moreWrites(load, 30);
      } finally {
        await expectNoLoss(load, d.port);
      }
      expect((await worlds.w.status(d)).app?.pid).toBe(pids.at(-1));
      await worlds.w.stop(d);
      expect(existsSync(path.join(d.dataDir, '.baton.lock'))).toBe(false);
    });
  }

  it('lmdb: a successor that opens an old backup instead of the sealed database is stopped by verifyOpened: the upgrade aborts naming the revision it opened and the sealed one, the old process serves on, and the next upgrade commits', { timeout: 90_000 }, async () => {
    const dir = h.tempDir('baton-examples-');
    // The command is a script, as a deploy would have it: DB_PATH is the knob the bad deploy sets.
    const app = path.join(dir, 'app.sh');
    const deploy = (env: string): void => writeScript(app, `${env}\nexec ${process.execPath} ${mainOf('lmdb')}`);
    deploy('');
    const d = await worlds.w.startDaemon({ dir, command: [app], listen: 'http=tcp://127.0.0.1:0' });
    const v1 = (await worlds.w.status(d)).app!.pid;
    const load = new Load(d.port, 8);
    try {
      await moreWrites(load, 50);
      const b = await worlds.w.baton(['maintenance', 'run', 'backup', '--json', '--state-dir', d.stateDir]);
      expect(b.code, b.stdout + b.stderr).toBe(0);
      const backup = ((JSON.parse(b.stdout) as JobRecord).maintenance!.result as { file: string }).file;
      expect(path.dirname(backup)).toBe(path.join(d.dataDir, 'backups'));
      await moreWrites(load, 50); // the backup falls behind

      deploy(`export DB_PATH='${backup}'`);
      const bad = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir], {}, 90_000); // what an operator reads
      expect(bad.code, bad.stdout + bad.stderr).toBe(2);
      // The reason, on its line: which field differs and both values.
      const reason = /^aborted: successor \(pid \d+\) exited \(code 1, signal -\) during (begin|await_ready); its stderr says: SealMismatchError: the data this process opened is not what the incumbent sealed: lastRevisionPerShard\.0 sealed (\d+), opened (\d+) \(behind: a stale copy\)/m.exec(bad.stderr);
      expect(reason, bad.stderr).not.toBeNull();
      const [sealed = 0, opened = 0] = reason!.slice(2).map(Number);
      expect(opened).toBeGreaterThanOrEqual(50);
      expect(opened).toBeLessThan(sealed);
      expect(bad.stderr).toMatch(new RegExp(`the old process serves on: generation 1 \\(pid ${v1}\\)`));
      expect((await worlds.w.status(d)).app?.pid).toBe(v1);
      expect((await healthz(d.port)).pid).toBe(v1);
      await moreWrites(load, 50); // the old process writes again (it reopened its database)

      deploy('');
      const good = await upgrade(d);
      expect(good.code, good.out).toBe(0);
      expect(good.job).toMatchObject({ state: 'SUCCEEDED', handoff: { outcome: 'committed', oldPid: v1 } });
      expect((await healthz(d.port)).pid).toBe(good.job!.handoff!.newPid);
      await exited(v1);
      await moreWrites(load, 30);
    } finally {
      await expectNoLoss(load, d.port);
    }
    await worlds.w.stop(d);
  });
});
