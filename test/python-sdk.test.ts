/**
 * The Python SDK (sdk/python, issue 24) under the real `baton` binary:
 *
 *  - its own unittest suite (a fake supervisor in-process) and an offline `pip install`
 *    into a fresh venv;
 *  - the README's example app: cold start, an upgrade that keeps its count, a maintenance
 *    task, its probe in `baton health`, a stop;
 *  - fixtures/python-peer (on the SDK): upgrades under keep-alive load with no failed request
 *    and no lost write, an upgrade whose successor is unhealthy (aborted, the incumbent serves
 *    on), a maintenance job with live progress and a cancel, probes, lifecycle notices;
 *  - standalone mode, handed Node's IPC channel (NODE_CHANNEL_FD): the SDK closes it.
 *
 * Every process carries the suite's BATON_TEST_TAG; every temp dir is removed. Skipped
 * without python3 >= 3.9.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { adminRequest } from '../src/daemon/admin.js';
import { adminSocketPath } from '../src/daemon/daemon.js';
import type { JobRecord } from '../src/daemon/jobs.js';
import { lockHolder } from '../src/os/lock.js';
import { useCliWorlds, writeScript, type DaemonHandle } from './support/cli.js';
import { healthz, Load, lostWrites, request, ROOT } from './support/engine.js';
import { exitOf, Harness, LineReader, pollUntil } from './support/harness.js';

const SDK = path.join(ROOT, 'sdk/python');
const PEER = path.join(ROOT, 'fixtures/python-peer/peer.py');
const PY_ENV = { PYTHONDONTWRITEBYTECODE: '1', PYTHONPATH: SDK };
const version = spawnSync('python3', ['-c', 'import sys; print(sys.version_info >= (3, 9))'], { encoding: 'utf8' });
const hasPython = version.status === 0 && version.stdout.trim() === 'True';

const h = new Harness();
const worlds = useCliWorlds(h);

function python(args: string[], opts: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {}): SpawnSyncReturns<string> {
  return spawnSync(args[0]!, args.slice(1), {
    cwd: opts.cwd ?? ROOT,
    encoding: 'utf8',
    env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1', ...opts.env },
    timeout: opts.timeoutMs ?? 120_000,
  });
}

const api = (d: DaemonHandle, method: string, url: string, body?: unknown) => adminRequest(adminSocketPath(d.stateDir), method, url, body, { timeoutMs: 20_000 });

async function job(d: DaemonHandle, id: string): Promise<JobRecord> {
  const r = await api(d, 'GET', `/v1/jobs/${id}`);
  expect(r.status).toBe(200);
  return r.body.job as JobRecord;
}

/** The newest maintenance job once it is RUNNING. */
function runningJob(d: DaemonHandle): Promise<JobRecord> {
  return pollUntil(
    async () => {
      const j = ((await api(d, 'GET', '/v1/jobs?kind=maintenance&limit=1')).body.jobs as JobRecord[])[0];
      return j?.state === 'RUNNING' ? j : undefined;
    },
    'a running maintenance job',
    20_000,
    20,
  );
}

async function appProbes(d: DaemonHandle): Promise<{ name: string; status: string; source: string; message: string }[]> {
  const r = await worlds.w.baton(['health', '--json', '--state-dir', d.stateDir]);
  return (JSON.parse(r.stdout) as { probes: { name: string; status: string; source: string; message: string }[] }).probes.filter((p) => p.source === 'app');
}

async function stopDaemon(d: DaemonHandle): Promise<void> {
  const r = await worlds.w.baton(['stop', '--state-dir', d.stateDir]);
  expect(r.code, r.stderr).toBe(0);
  expect(await exitOf(d.child)).toEqual({ code: 0, signal: null });
}

describe.skipIf(!hasPython)('python sdk: its own tests and its install', () => {
  it('python3 -m unittest discover sdk/python/tests passes', () => {
    const r = python(['python3', '-m', 'unittest', 'discover', 'sdk/python/tests']);
    expect(r.status, r.stderr.slice(-4000)).toBe(0);
    expect(Number(/Ran (\d+) tests/.exec(r.stderr)?.[1])).toBeGreaterThanOrEqual(50);
    expect(r.stderr).toMatch(/\nOK\s*$/);
  }, 180_000);

  it('pip installs it into a fresh venv with no index and no build isolation; the installed package imports, with py.typed and its schema', () => {
    const dir = h.tempDir('baton-sdk-venv-');
    const venv = path.join(dir, 'venv');
    expect(python(['python3', '-m', 'venv', venv]).status).toBe(0);
    const install = python([path.join(venv, 'bin/pip'), 'install', '--no-index', '--no-build-isolation', SDK], { cwd: dir, env: { PIP_DISABLE_PIP_VERSION_CHECK: '1' } });
    expect(install.status, install.stdout + install.stderr).toBe(0);
    expect(install.stdout).toMatch(/Successfully installed baton-sdk-0\.1\.0/);
    const check = python([path.join(venv, 'bin/python'), '-c', [
      'import json, os, baton_sdk, baton_sdk.wire as w',
      'd = os.path.dirname(baton_sdk.__file__)',
      "print(json.dumps({'file': baton_sdk.__file__, 'typed': os.path.exists(os.path.join(d, 'py.typed')), 'hello': [f.name for f in w.SCHEMA['Hello']], 'version': baton_sdk.__version__}))",
    ].join('\n')], { cwd: dir, env: { PYTHONPATH: '' } });
    expect(check.status, check.stderr).toBe(0);
    const got = JSON.parse(check.stdout) as { file: string; typed: boolean; hello: string[]; version: string };
    expect(got.file.startsWith(path.join(venv, 'lib'))).toBe(true); // the installed copy, not the checkout
    expect(got).toMatchObject({ typed: true, hello: ['role', 'pid', 'buildId', 'protoMin', 'protoMax', 'features'], version: '0.1.0' });
  }, 120_000);
});

describe.skipIf(!hasPython)('python sdk under baton run', () => {
  it('the README example: counts, an upgrade keeps the count, its task resets it, its probe is in `baton health`, it stops', async () => {
    const readme = readFileSync(path.join(SDK, 'README.md'), 'utf8');
    const code = /```python\n(# sdk-readme-example\n[\s\S]*?)```/.exec(readme)?.[1];
    expect(code).toBeDefined();
    const app = path.join(h.tempDir('baton-sdk-example-'), 'counter.py');
    writeFileSync(app, code!);
    const d = await worlds.w.startDaemon({ command: ['python3', app], listen: 'http=tcp://127.0.0.1:0', env: PY_ENV });
    const hit = async () => (await request(d.port, 'GET', '/')).body;
    const gen1 = /^pid (\d+) hits 1$/.exec((await hit()).trim())?.[1];
    expect(gen1).toBeDefined();
    expect((await hit()).trim()).toBe(`pid ${gen1} hits 2`);

    const up = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir]);
    expect(up.code, up.stdout + up.stderr).toBe(0);
    const after = (await hit()).trim();
    expect(after).toMatch(/^pid \d+ hits 3$/);
    expect(after).not.toContain(`pid ${gen1} `);

    expect(await appProbes(d)).toEqual([expect.objectContaining({ name: 'hits', status: 'OK', message: '3 hits' })]);
    const reset = await worlds.w.baton(['maintenance', 'run', 'reset', '--state-dir', d.stateDir]);
    expect(reset.code, reset.stdout + reset.stderr).toBe(0);
    expect(reset.stdout).toContain('succeeded: reset in');
    expect((await hit()).trim()).toMatch(/ hits 1$/);
    await stopDaemon(d);
    expect(readFileSync(path.join(d.dataDir, 'hits'), 'utf8')).toBe('1'); // the stop sealed it
  }, 120_000);

  it('the peer: upgrades under keep-alive load lose no request and no write; an unhealthy successor is aborted and the incumbent serves on', async () => {
    const script = path.join(h.tempDir('baton-sdk-deploy-'), 'app.sh');
    writeScript(script, `exec python3 ${PEER}`);
    const d = await worlds.w.startDaemon({ command: [script], env: { ...PY_ENV, PYPEER_SHARDS: '2' } });
    const load = new Load(d.port, 4);
    const pids = [(await healthz(d.port)).pid];
    try {
      await pollUntil(() => load.acked.size > 20 || undefined, 'load to get going', 10_000);
      for (let i = 0; i < 3; i++) {
        const up = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir]);
        expect(up.code, up.stdout + up.stderr).toBe(0);
        pids.push((await healthz(d.port)).pid);
      }
      writeScript(script, `PYPEER_HEALTHZ_FALSE=1 exec python3 ${PEER}`); // a bad build
      const bad = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir]);
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toContain('(E_READY_REJECTED)');
      expect((await healthz(d.port)).pid).toBe(pids[3]); // the incumbent serves on
      expect((await lockHolder(d.dataDir))?.owner.pid).toBe(pids[3]);
      writeScript(script, `exec python3 ${PEER}`); // the fix
      const fixed = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir]);
      expect(fixed.code, fixed.stdout + fixed.stderr).toBe(0);
      pids.push((await healthz(d.port)).pid);
    } finally {
      await load.stop();
    }
    expect(new Set(pids).size).toBe(5);
    expect(load.failures, `failed requests: ${JSON.stringify(load.failures)}`).toEqual({});
    expect(load.acked.size).toBeGreaterThan(100);
    expect(await lostWrites(d.port, load.acked)).toEqual([]);
    const revisions = Object.values((await healthz(d.port)).revisions).reduce((a, r) => a + Number(r), 0);
    expect(revisions).toBe(load.acked.size); // every acknowledged PUT is one revision, none lost or doubled
    await stopDaemon(d);
  }, 180_000);

  it('the peer: a maintenance job with live progress, a cancelled one, its probe in `baton health`, and lifecycle notices', async () => {
    const markers = h.tempDir('baton-sdk-markers-');
    const d = await worlds.w.startDaemon({ env: { ...PY_ENV, PYPEER_MAINTENANCE: '1', PYPEER_MARKERS: markers }, command: ['python3', PEER] });
    const pid = (await healthz(d.port)).pid;
    await pollUntil(() => readdirSync(markers).includes(`${pid}.startup-completed`), 'StartupCompleted to reach the app', 15_000);
    await request(d.port, 'PUT', '/kv/a', 'x');

    const run = worlds.w.baton(['maintenance', 'run', 'work', '--params', '{"steps":12,"stepMs":150}', '--reason', 'sdk test', '--state-dir', d.stateDir]);
    const j = await runningJob(d);
    const mid = await pollUntil(async () => {
      const p = (await job(d, j.id)).maintenance?.progress;
      return p && p.done > 0 && p.done < 12 ? p : undefined;
    }, 'a progress snapshot mid-run', 15_000);
    expect(mid).toMatchObject({ total: 12, counters: { steps: mid.done, keys: 1 } });
    const r = await run;
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/progress \d+\/12/);
    expect(await job(d, j.id)).toMatchObject({ state: 'SUCCEEDED', maintenance: { task: 'work', requestReason: 'sdk test', result: { steps: 12, keys: 1 }, progress: { done: 12, total: 12 } } });

    const long = worlds.w.baton(['maintenance', 'run', 'work', '--params', '{"steps":400,"stepMs":50}', '--state-dir', d.stateDir]);
    const lj = await runningJob(d);
    const c = await worlds.w.baton(['maintenance', 'cancel', lj.id, '--reason', 'changed my mind', '--state-dir', d.stateDir]);
    expect(c.code, c.stderr).toBe(0);
    const lr = await long;
    expect(lr.code).toBe(5);
    expect(lr.stderr).toContain('cancelled: changed my mind');
    expect(await job(d, lj.id)).toMatchObject({ state: 'CANCELLED' });

    expect(await appProbes(d)).toEqual([expect.objectContaining({ name: 'store', status: 'OK', message: '1 keys' })]);
    expect((await healthz(d.port)).pid).toBe(pid); // the app served on throughout
    await stopDaemon(d);
    expect(readdirSync(markers).filter((f) => f.startsWith(`${pid}.shutdown-`)).sort()).toEqual([`${pid}.shutdown-completed-admin`, `${pid}.shutdown-requested-admin`]);
  }, 120_000);

  it('standalone, handed a Node IPC channel: the SDK closes it (the parent sees the disconnect), takes the lock, and releases it on close()', async () => {
    const dataDir = path.join(h.tempDir('baton-sdk-standalone-'), 'data');
    const script = [
      'import json, os, sys',
      'from baton_sdk import start_baton',
      'baton = start_baton(None)',
      'info = baton.begin()',
      'baton.ready()',
      "print(json.dumps({'role': baton.role, 'begin': info.role, 'env': 'NODE_CHANNEL_FD' in os.environ}), flush=True)",
      'sys.stdin.readline()',
      'baton.close()',
      "print(json.dumps({'released': True}), flush=True)",
    ].join('\n');
    const child = h.spawn('python3', ['-c', script], {
      stdio: ['pipe', 'pipe', 'pipe', 'ipc'],
      env: { ...process.env, ...PY_ENV, BATON_DATA_DIR: dataDir, BATON_TEST_TAG: worlds.tag },
    });
    const out = new LineReader(child);
    let disconnected = false;
    child.once('disconnect', () => (disconnected = true));
    await pollUntil(() => {
      if (child.exitCode !== null) throw new Error(`python exited: ${out.stderr}`);
      return disconnected;
    }, 'the app to close its Node IPC channel', 15_000);
    expect(await out.next((l) => typeof l === 'object' && 'role' in l, 'the standalone app to report', 15_000)).toEqual({ role: 'standalone', begin: 'standalone', env: false });
    expect(await lockHolder(dataDir)).toMatchObject({ owner: { pid: child.pid, handoffId: 'standalone' }, alive: true });
    child.stdin!.write('\n');
    expect(await out.next((l) => typeof l === 'object' && 'released' in l, 'the lock to be released')).toEqual({ released: true });
    expect(await exitOf(child)).toEqual({ code: 0, signal: null });
    expect(await lockHolder(dataDir)).toBeUndefined();
  }, 60_000);
});
