/**
 * Fleet rollouts on Ansible (issue 24): examples/ansible/upgrade.yml, run by the real
 * `ansible-playbook` (ansible-core from Debian) against three real `baton run`
 * supervisors of fixtures/kv on 127.0.0.1 (`ansible_connection: local`, one state dir and
 * one release layout per "host"), serial 1, keep-alive load with writes on every host:
 *
 *  1. release v2 everywhere: every host committed (new pid, generation 2, a committed
 *     upgrade in its history, v2 known good after its bake window), the report says so;
 *  2. release v3, broken on host2 (it dies after Begin): the playbook fails, host1 is on
 *     v3, host2 serves on its old pid with its release link put back, host3 was not
 *     touched (same pid, no new history entry, same link), and the report and the output
 *     name host2 and the reason; no request failed and no acknowledged write was lost;
 *  3. release v4 on host3, which crashes after its commit inside its bake window: the
 *     playbook waits for the bake, sees baton's rollback, and fails the host.
 *
 * Skipped without ansible-playbook, except in CI (CI set), where .ci/run installs it.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { JobRecord } from '../src/daemon/jobs.js';
import type { BuildRecord } from '../src/supervisor/builds.js';
import { CLI, CLI_NODE_ARGS, collect, useCliWorlds, writeScript, type CliResult, type DaemonHandle } from './support/cli.js';
import { healthz, ROOT } from './support/engine.js';
import { Harness } from './support/harness.js';
import { KvLoad } from './support/kv-load.js';
import { Releases } from './support/releases.js';

const PLAYBOOK = path.join(ROOT, 'examples/ansible/upgrade.yml');
const hasAnsible = spawnSync('sh', ['-c', 'command -v ansible-playbook']).status === 0;
const inCi = Boolean(process.env.CI);

const h = new Harness();
const worlds = useCliWorlds(h);

interface Host {
  name: string;
  d: DaemonHandle;
  rel: Releases;
}

interface StatusJson {
  app: { pid: number; generation: number } | null;
  serving: boolean;
  builds: { current: BuildRecord | null; lastGood: BuildRecord | null };
}

/** One host's entry in the playbook's JSON report (`baton_report_file`). */
interface HostReport {
  host: string;
  ok: boolean;
  outcome: string;
  exitCode?: number;
  job?: string | null;
  code?: string | null;
  oldPid?: number | null;
  newPid?: number | null;
  generation?: number | null;
  durationMs?: number | null;
  build?: string | null;
  servingPid?: number | null;
  reason?: string | null;
  line: string;
}

async function status(d: DaemonHandle): Promise<StatusJson> {
  return (await worlds.w.status(d)) as unknown as StatusJson;
}

async function history(d: DaemonHandle): Promise<JobRecord[]> {
  const r = await worlds.w.baton(['history', '--json', '--limit', '50', '--state-dir', d.stateDir]);
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { jobs: JobRecord[] }).jobs;
}

/**
 * Three supervisors on release v1, each in its own dir (host1..3), and a `baton` command
 * in `<dir>/bin` (the built CLI with the bin's node flags), as a host would have it.
 */
async function startFleet(dir: string): Promise<{ hosts: Host[]; baton: string }> {
  const baton = path.join(dir, 'bin', 'baton');
  mkdirSync(path.dirname(baton));
  writeScript(baton, `exec ${process.execPath} ${CLI_NODE_ARGS.join(' ')} ${CLI} "$@"`);
  const hosts = await Promise.all(
    [1, 2, 3].map(async (i): Promise<Host> => {
      const name = `host${i}`;
      const hostDir = path.join(dir, name);
      const rel = new Releases(hostDir);
      rel.deploy({ name: 'v1' });
      const config = path.join(hostDir, 'baton.json');
      // Short bake windows (the playbook waits for each new build to prove itself); host3's
      // is longer, for the build that crashes inside it.
      writeFileSync(config, JSON.stringify({ name, handoff: { bakeS: i === 3 ? 3 : 1 } }));
      const d = await worlds.w.startDaemon({ dir: hostDir, command: rel.command, extraArgs: ['--config', config] });
      return { name, d, rel };
    }),
  );
  return { hosts, baton };
}

/** The inventory: three local "hosts", each a supervisor with its state dir and releases. */
function writeInventory(dir: string, hosts: Host[], baton: string): string {
  const file = path.join(dir, 'inventory.yml');
  const lines = ['baton:', '  hosts:'];
  for (const { name, d, rel } of hosts) {
    lines.push(`    ${name}:`, `      baton_state_dir: ${d.stateDir}`, `      baton_releases_dir: ${rel.releasesDir}`, `      baton_current_link: ${rel.currentLink}`);
  }
  lines.push('  vars:', '    ansible_connection: local', '    ansible_python_interpreter: "{{ ansible_playbook_python }}"', `    baton_bin: ${baton}`);
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

/** `ansible-playbook` as on a fresh machine: its config, home and temp dirs inside `dir`, no host keys, no cows, no retry files. */
async function playbook(dir: string, inventory: string, args: string[]): Promise<CliResult & { report: { release: string; hosts: HostReport[] } }> {
  const home = path.join(dir, 'ansible');
  mkdirSync(home, { recursive: true });
  const config = path.join(home, 'ansible.cfg');
  writeFileSync(config, '[defaults]\n');
  const reportFile = path.join(dir, `report-${Date.now()}.json`);
  const env = {
    ANSIBLE_CONFIG: config,
    ANSIBLE_HOME: home,
    ANSIBLE_LOCAL_TEMP: path.join(home, 'tmp'),
    ANSIBLE_REMOTE_TEMP: path.join(home, 'remote-tmp'),
    ANSIBLE_HOST_KEY_CHECKING: 'False',
    ANSIBLE_NOCOWS: '1',
    ANSIBLE_NOCOLOR: '1',
    ANSIBLE_RETRY_FILES_ENABLED: 'False',
    LC_ALL: 'C.UTF-8',
  };
  const child = h.spawn('ansible-playbook', ['-i', inventory, PLAYBOOK, '-e', `baton_report_file=${reportFile}`, ...args], { cwd: dir, env: worlds.w.env(env) });
  const r = await collect(child, 420_000);
  let report: { release: string; hosts: HostReport[] };
  try {
    report = JSON.parse(readFileSync(reportFile, 'utf8'));
  } catch (err) {
    throw new Error(`no report from the playbook (${String(err)}); exit ${r.code}\n${r.stdout}\n${r.stderr}`);
  }
  return { ...r, report };
}

/**
 * The three runs (see the file's header) on a started fleet, each asserted from what baton
 * says on every host, what the playbook reported, and what the load saw.
 */
async function rollOut(dir: string, hosts: Host[], baton: string): Promise<void> {
  const inventory = writeInventory(dir, hosts, baton);
  const loads = hosts.map((x) => new KvLoad(x.d.port, { conns: 2, pauseMs: 50 }));
  try {
    // 1. v2 everywhere.
    const v1Pids = await Promise.all(hosts.map(async (x) => (await status(x.d)).app!.pid));
    for (const x of hosts) x.rel.write({ name: 'v2' });
    const first = await playbook(dir, inventory, ['-e', 'baton_release=v2']);
    expect(first.code, first.stdout + first.stderr).toBe(0);
    expect(first.report.release).toBe('v2');
    for (const [i, x] of hosts.entries()) {
      const s = await status(x.d);
      expect(s.app?.pid, x.name).not.toBe(v1Pids[i]);
      expect(s.app?.generation).toBe(2);
      expect(s.builds.current).toMatchObject({ generation: 2, buildId: 'v2', state: 'good' });
      const upgrade = (await history(x.d))[0]!;
      expect(upgrade).toMatchObject({ kind: 'handoff', trigger: 'admin', state: 'SUCCEEDED', handoff: { outcome: 'committed', oldPid: v1Pids[i], newPid: s.app!.pid, generation: 2 } });
      expect(first.report.hosts[i]).toMatchObject({ host: x.name, ok: true, outcome: 'committed', exitCode: 0, job: upgrade.id, oldPid: v1Pids[i], newPid: s.app!.pid, generation: 2, build: 'v2', reason: null });
      expect(first.report.hosts[i]!.durationMs).toBe(upgrade.durationMs);
      expect(first.stdout).toContain(`${x.name}: committed: generation 2 (pid ${v1Pids[i]} -> ${s.app!.pid}) in ${upgrade.durationMs} ms, build v2 good`);
      expect(realpathSync(x.rel.currentLink)).toBe(realpathSync(path.join(x.rel.releasesDir, 'v2')));
    }

    // 2. v3, which dies after Begin on host2 (a failed migration).
    const v2 = await Promise.all(hosts.map(async (x) => ({ pid: (await status(x.d)).app!.pid, jobs: await history(x.d) })));
    for (const x of hosts) x.rel.write(x.name === 'host2' ? { name: 'v3', env: { KV_FAIL_AFTER_BEGIN: '1' } } : { name: 'v3' });
    const second = await playbook(dir, inventory, ['-e', 'baton_release=v3']);
    expect(second.code, second.stdout + second.stderr).toBe(2);
    const [h1, h2, h3] = hosts as [Host, Host, Host];

    // host1: upgraded before the failure.
    const s1 = await status(h1.d);
    expect(s1.app?.pid).not.toBe(v2[0]!.pid);
    expect(s1.builds.current).toMatchObject({ generation: 3, buildId: 'v3', state: 'good' });
    expect(second.report.hosts[0]).toMatchObject({ host: 'host1', ok: true, outcome: 'committed', oldPid: v2[0]!.pid, newPid: s1.app!.pid });

    // host2: aborted, serves on its old pid, its release link put back.
    const s2 = await status(h2.d);
    expect(s2.serving).toBe(true);
    expect(s2.app).toMatchObject({ pid: v2[1]!.pid, generation: 2 });
    expect(s2.builds.current).toMatchObject({ generation: 2, buildId: 'v2' });
    expect((await healthz(h2.d.port)).pid).toBe(v2[1]!.pid);
    const aborted = (await history(h2.d))[0]!;
    expect(aborted).toMatchObject({ trigger: 'admin', state: 'FAILED', code: 'E_PEER_DIED', handoff: { outcome: 'aborted', oldPid: v2[1]!.pid, newPid: v2[1]!.pid } });
    expect(aborted.reason).toMatch(/migration 0042 failed/);
    expect(realpathSync(h2.rel.currentLink)).toBe(realpathSync(path.join(h2.rel.releasesDir, 'v2')));
    const r2 = second.report.hosts[1]!;
    expect(r2).toMatchObject({ host: 'host2', ok: false, outcome: 'aborted', exitCode: 2, job: aborted.id, code: 'E_PEER_DIED', oldPid: v2[1]!.pid, newPid: v2[1]!.pid, servingPid: v2[1]!.pid, reason: aborted.reason });
    expect(r2.reason).toMatch(/successor \(pid \d+\) exited \(code 1, signal -\) during (begin|await_ready); its stderr says: .*migration 0042 failed/);
    expect(second.stdout).toMatch(/fatal: \[host2\]: FAILED! => .*host2: aborted: successor .*migration 0042 failed.*\(E_PEER_DIED\); serving: pid \d+/);

    // host3: not reached, not touched.
    const s3 = await status(h3.d);
    expect(s3.app).toMatchObject({ pid: v2[2]!.pid, generation: 2 });
    expect((await history(h3.d)).map((j) => j.id)).toEqual(v2[2]!.jobs.map((j) => j.id));
    expect(realpathSync(h3.rel.currentLink)).toBe(realpathSync(path.join(h3.rel.releasesDir, 'v2')));
    expect(second.report.hosts[2]).toMatchObject({ host: 'host3', ok: false, outcome: 'not reached' });
    expect(second.stdout).toContain('"host3: not reached"');
    expect(second.stdout).not.toMatch(/\[host3\]/);
  } finally {
    await Promise.all(loads.map((l) => l.stop()));
  }
  for (const [i, load] of loads.entries()) {
    expect(load.failures, `${hosts[i]!.name}: failed requests`).toEqual({});
    expect(load.ackedWrites).toBeGreaterThan(0);
    const { lost, resurrected } = await load.verify();
    expect(lost, `${hosts[i]!.name}: lost acknowledged writes`).toEqual([]);
    expect(resurrected).toEqual([]);
  }

  // 3. v4 on host3 crashes after its commit, inside its bake window: baton rolls it back,
  // and the playbook, waiting for the bake, fails the host and puts its link back.
  const h3 = hosts[2]!;
  h3.rel.write({ name: 'v4', env: { KV_CRASH_AFTER_READY_S: '0.2' } });
  const third = await playbook(dir, inventory, ['-e', 'baton_release=v4', '--limit', 'host3']);
  expect(third.code, third.stdout + third.stderr).toBe(2);
  const s3 = await status(h3.d);
  expect(s3.serving).toBe(true);
  expect(s3.builds.current).toMatchObject({ buildId: 'v2', state: 'good' });
  const rollback = (await history(h3.d)).find((j) => j.trigger === 'rollback');
  expect(rollback).toMatchObject({ state: 'SUCCEEDED', handoff: { rollback: { automatic: true, from: { buildId: 'v4' }, to: { buildId: 'v2' } } } });
  expect(third.report.hosts).toHaveLength(1);
  expect(third.report.hosts[0]).toMatchObject({ host: 'host3', ok: false, outcome: 'rolled back', exitCode: 0, servingPid: s3.app!.pid });
  expect(third.report.hosts[0]!.reason).toBe(`the build did not last its bake window: ${rollback!.handoff!.rollback!.reason}`);
  expect(third.report.hosts[0]!.reason).toMatch(/exited \(code 1, signal -\) \d+\.\d s after its commit, inside its bake window/);
  expect(realpathSync(h3.rel.currentLink)).toBe(realpathSync(path.join(h3.rel.releasesDir, 'v2')));
}

describe.skipIf(!hasAnsible && !inCi)('fleet rollouts with Ansible: examples/ansible/upgrade.yml (needs ansible-playbook: apt-get install ansible-core)', () => {
  it('rolls a release out host by host with baton upgrade as the gate, stops at the first host whose upgrade aborts, and says which and why', { timeout: 600_000 }, async () => {
    if (!hasAnsible) throw new Error('ansible-playbook is not installed: in CI, .ci/run installs ansible-core (apt-get)');
    const dir = h.tempDir('baton-fleet-');
    const { hosts, baton } = await startFleet(dir);
    try {
      await rollOut(dir, hosts, baton);
      await Promise.all(hosts.map((x) => worlds.w.stop(x.d)));
    } finally {
      // A failed assertion leaves the supervisors running: stop them (the suite's tag check then proves nothing leaked).
      await Promise.all(hosts.filter((x) => x.d.child.exitCode === null).map((x) => worlds.w.baton(['stop', '--state-dir', x.d.stateDir])));
    }
  });
});
