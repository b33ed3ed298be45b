/**
 * The `baton` CLI and daemon, through the real binary (node dist/src/cli.js): real
 * processes, sockets and signals. Every process carries this suite's BATON_TEST_TAG;
 * each test ends with none of them left.
 */
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { healthz, PRIMITIVE, request, taggedPids } from './support/engine.js';
import { exitOf, Harness, pollUntil } from './support/harness.js';
import { isAlive } from '../src/os/proc.js';
import { CLI, useCliWorlds, collect, writeScript, type DaemonHandle, type Status } from './support/cli.js';

const h = new Harness();
const worlds = useCliWorlds(h);

async function stopDaemon(d: DaemonHandle): Promise<void> {
  await worlds.w.stop(d);
  await expectPortFree(d.port);
}

function portRefuses(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', () => resolve(true));
  });
}

async function expectPortFree(port: number): Promise<void> {
  expect(await portRefuses(port)).toBe(true);
}

/** Raw bytes to the admin socket; resolves with everything it answered. */
function rawAdmin(sock: string, bytes: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(sock);
    let data = '';
    s.setEncoding('utf8');
    s.on('data', (c: string) => (data += c));
    s.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? resolve(data) : reject(err)));
    s.on('close', () => resolve(data));
    s.on('connect', () => s.write(bytes));
  });
}

describe('baton run / upgrade / status / history / stop', () => {
  it('runs, upgrades three times, reports status and history, and stops cleanly', async () => {
    const d = await worlds.w.startDaemon();
    const first = await healthz(d.port);
    expect(first.generation).toBe(1);
    const put = await request(d.port, 'PUT', '/kv/hello', 'world');
    expect(put.status).toBe(200);

    const pids = [first.pid];
    for (let i = 0; i < 3; i++) {
      const r = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/committed: generation \d+ \(pid \d+ -> \d+\)/);
      expect(r.stdout).toContain('phase sealing'); // plain progress lines when stdout is not a TTY
      const hz = await healthz(d.port);
      expect(hz.generation).toBe(i + 2);
      pids.push(hz.pid);
    }
    expect(new Set(pids).size).toBe(4);
    expect(JSON.parse((await request(d.port, 'GET', '/kv/hello')).body)).toEqual({ value: 'world' });
    // The supervisor runs with the bin's V8 flags (jitless); the app it spawned does not.
    const cmdline = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    expect(cmdline(d.child.pid!)).toContain('--lite-mode');
    expect(cmdline(pids[3]!)).not.toContain('--lite-mode');

    const s = await worlds.w.status(d);
    expect(s.app).toEqual({ pid: pids[3], alive: true, generation: 4 });
    expect(s.supervisor.pid).toBe(d.child.pid);
    expect(s.health.status).toBe('OK');
    expect(s.lock).toMatchObject({ pid: pids[3], alive: true });
    expect(s.lastHandoff).toMatchObject({ state: 'SUCCEEDED', trigger: 'admin', handoff: { newPid: pids[3], generation: 4 } });
    expect(s.listeners[0]!.address).toBe(`tcp://127.0.0.1:${d.port}`);

    const human = await worlds.w.baton(['status', '--state-dir', d.stateDir]);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(new RegExp(`app +pid ${pids[3]}, generation 4`));
    expect(human.stdout).toMatch(/health +OK/);

    const hist = await worlds.w.baton(['history', '--json', '--state-dir', d.stateDir]);
    expect(hist.code).toBe(0);
    const jobs = (JSON.parse(hist.stdout) as { jobs: { kind: string; state: string; trigger: string; handoff: { phases: unknown[]; oldPid: number; newPid: number } }[] }).jobs;
    expect(jobs.map((j) => [j.kind, j.state, j.trigger])).toEqual([
      ['handoff', 'SUCCEEDED', 'admin'],
      ['handoff', 'SUCCEEDED', 'admin'],
      ['handoff', 'SUCCEEDED', 'admin'],
      ['handoff', 'SUCCEEDED', 'cold-start'],
    ]);
    expect(jobs[0]!.handoff).toMatchObject({ oldPid: pids[2], newPid: pids[3] });
    expect(jobs[0]!.handoff.phases.length).toBeGreaterThanOrEqual(7);
    const limited = await worlds.w.baton(['history', '--limit', '2', '--state-dir', d.stateDir]);
    expect(limited.stdout.trim().split('\n')).toHaveLength(3); // header + 2

    // The history survives the supervisor (one atomically rewritten file).
    await stopDaemon(d);
    const onDisk = JSON.parse(readFileSync(path.join(d.stateDir, 'jobs.json'), 'utf8')) as { jobs: unknown[] };
    expect(onDisk.jobs).toHaveLength(4);
    const audit = readFileSync(path.join(d.stateDir, 'audit.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { path: string; who: { pid: number; verified: boolean } });
    expect(audit.filter((a) => a.path === '/v1/upgrade')).toHaveLength(3);
    expect(audit.at(-1)).toMatchObject({ path: '/v1/stop', who: { verified: false } });
    expect(typeof audit.at(-1)!.who.pid).toBe('number');
  });

  it('refuses an upgrade while another runs (exit 3); the first one commits', async () => {
    // A long seal: the second `baton upgrade` (a new node process) must start while the first still runs, even on a loaded machine.
    const d = await worlds.w.startDaemon({ env: { PRIM_SEAL_BLOCK_MS: '8000' } });
    const slow = worlds.w.spawnBaton(['upgrade', '--json', '--state-dir', d.stateDir]);
    const slowResult = collect(slow);
    await pollUntil(async () => (await worlds.w.status(d)).phase === 'sealing', 'the first upgrade to be sealing', 15_000, 50);
    const second = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir]);
    expect(second.code, second.stderr).toBe(3);
    expect(second.stderr).toContain('E_HANDOFF_IN_PROGRESS');
    const first = await slowResult;
    expect(first.code, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout)).toMatchObject({ kind: 'handoff', state: 'SUCCEEDED' });
    const jobs = JSON.parse((await worlds.w.baton(['history', '--json', '--state-dir', d.stateDir])).stdout).jobs as { state: string; code?: string }[];
    expect(jobs.map((j) => j.state).sort()).toEqual(['SKIPPED', 'SUCCEEDED', 'SUCCEEDED']);
    expect(jobs.find((j) => j.state === 'SKIPPED')!.code).toBe('E_HANDOFF_IN_PROGRESS');
    await stopDaemon(d);
  });

  it('an incumbent SIGKILLed mid-handoff: the service comes back (successor promoted), recorded in history', async () => {
    // A 5 s seal: the status polls (a CLI process each) surely see it, even on a loaded machine.
    const d = await worlds.w.startDaemon({ env: { PRIM_SEAL_BLOCK_MS: '5000' } });
    const gen1 = (await worlds.w.status(d)).app!.pid;
    expect((await request(d.port, 'PUT', '/kv/before', 'kill')).status).toBe(200);
    const upgrade = collect(worlds.w.spawnBaton(['upgrade', '--json', '--state-dir', d.stateDir]));
    await pollUntil(async () => (await worlds.w.status(d)).phase === 'sealing', 'the upgrade to be sealing', 30_000, 50);
    process.kill(gen1, 'SIGKILL');
    const r = await upgrade;
    expect(r.code, r.stderr).toBe(0);
    const job = JSON.parse(r.stdout) as { state: string; reason?: string; handoff: { newPid: number; promoted?: boolean } };
    expect(job.state).toBe('SUCCEEDED');
    expect(job.handoff.promoted).toBe(true);
    expect(job.reason ?? '').toMatch(/incumbent died/);
    const after = await worlds.w.status(d);
    expect(after.app!.pid).toBe(job.handoff.newPid);
    expect((await healthz(d.port)).pid).toBe(job.handoff.newPid);
    expect(JSON.parse((await request(d.port, 'GET', '/kv/before')).body).value).toBe('kill');
    await stopDaemon(d);
  });

  it('baton run SIGKILLed, then started again without the python3 helper: it says why, stops the orphaned app gracefully and binds anew (cold start), no write lost', async () => {
    const d = await worlds.w.startDaemon();
    const orphan = (await worlds.w.status(d)).app!.pid;
    expect((await request(d.port, 'PUT', '/kv/before', 'takeover')).status).toBe(200);
    d.child.kill('SIGKILL');
    await exitOf(d.child);
    expect((await healthz(d.port)).pid).toBe(orphan); // still serving, unsupervised
    // (With the helper it takes the listeners back and re-adopts the app: test/supervisor-continuity.test.ts.)
    const d2 = await worlds.w.startDaemon({ dir: d.dir, listen: `tcp://127.0.0.1:${d.port}`, env: { BATON_PYTHON: path.join(d.dir, 'no-python3') } });
    const now = await healthz(d.port);
    expect(now.pid).not.toBe(orphan);
    expect(isAlive(orphan)).toBe(false);
    expect(JSON.parse((await request(d.port, 'GET', '/kv/before')).body).value).toBe('takeover');
    const log = d2.out.stderr + JSON.stringify(d2.out.lines);
    expect(log).toMatch(/"event":"daemon.reclaim_failed".*cannot run .*no-python3/);
    expect(log).toMatch(new RegExp(`"event":"daemon.takeover","pid":${orphan}`));
    await stopDaemon(d2);

    // A port held by another program (no earlier supervisor's app alive): exit 1, said so.
    const other = net.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => other.once('listening', r));
    const port = (other.address() as net.AddressInfo).port;
    const r = await worlds.w.baton(['run', '--listen', `tcp://127.0.0.1:${port}`, '--data-dir', d.dataDir, '--state-dir', d.stateDir, '--', ...PRIMITIVE]);
    other.close();
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/EADDRINUSE; no app of an earlier baton supervisor .* is alive, so another program holds it/);
  });

  it('re-resolves the command on each upgrade: a broken deploy aborts (exit 2), the old generation serves, a fixed one commits', async () => {
    const dir = h.tempDir('baton-cli-');
    const script = path.join(dir, 'app.sh');
    const good = `exec ${process.execPath} ${PRIMITIVE[1]}`;
    writeScript(script, good);
    const d = await worlds.w.startDaemon({ dir, command: [script] });
    const before = await healthz(d.port);

    writeScript(script, 'echo "broken build" >&2; exit 1');
    const broken = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir]);
    expect(broken.code, broken.stdout + broken.stderr).toBe(2);
    expect(broken.stderr).toMatch(/aborted: .*exited/);
    expect(await healthz(d.port)).toMatchObject({ pid: before.pid, generation: 1 });
    const json = await worlds.w.baton(['upgrade', '--json', '--state-dir', d.stateDir]);
    expect(json.code).toBe(2);
    expect(JSON.parse(json.stdout)).toMatchObject({ state: 'FAILED', handoff: { outcome: 'aborted', newPid: before.pid } });

    writeScript(script, good);
    const fixed = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir]);
    expect(fixed.code, fixed.stderr).toBe(0);
    expect((await healthz(d.port)).pid).not.toBe(before.pid);
    const s = await worlds.w.status(d);
    expect(s.lastHandoff).toMatchObject({ state: 'SUCCEEDED' });
    await stopDaemon(d);
  });

  it('a build that hangs after taking over the data is aborted after --ready-timeout (exit 2), or handoff.readyTimeoutS; the old generation serves', async () => {
    const dir = h.tempDir('baton-cli-');
    const script = path.join(dir, 'app.sh');
    const good = `exec ${process.execPath} ${PRIMITIVE[1]}`;
    writeScript(script, good);
    writeFileSync(path.join(dir, 'baton.json'), JSON.stringify({ handoff: { readyTimeoutS: 1.5 } }));
    const d = await worlds.w.startDaemon({ dir, command: [script], extraArgs: ['--config', path.join(dir, 'baton.json')] });
    const before = await healthz(d.port);
    writeScript(script, `PRIM_NEVER_READY=1 ${good}`);
    for (const flags of [['--ready-timeout', '2'], []]) {
      const t0 = Date.now();
      const r = await worlds.w.baton(['upgrade', '--json', '--state-dir', d.stateDir, ...flags]);
      expect(r.code, r.stdout + r.stderr).toBe(2);
      const job = JSON.parse(r.stdout) as { code: string; reason: string };
      expect(job.code).toBe('E_READY_TIMEOUT');
      expect(job.reason).toMatch(new RegExp(`within ${flags.length ? 2000 : 1500} ms of Begin`));
      expect(Date.now() - t0).toBeLessThan(20_000);
      expect(await healthz(d.port)).toMatchObject({ pid: before.pid, generation: 1 });
    }
    expect((await worlds.w.baton(['upgrade', '--ready-timeout', 'soon', '--state-dir', d.stateDir])).code).toBe(1);
    await stopDaemon(d);
  });

  it('handoff.helloTimeoutS lets a slow-starting version upgrade (past the 5 s default), and a short one aborts it', async () => {
    const dir = h.tempDir('baton-cli-');
    const script = path.join(dir, 'app.sh');
    writeScript(script, `exec ${process.execPath} ${PRIMITIVE[1]}`);
    const config = path.join(dir, 'baton.json');
    writeFileSync(config, JSON.stringify({ handoff: { helloTimeoutS: 15 } }));
    const d = await worlds.w.startDaemon({ dir, command: [script], extraArgs: ['--config', config] });
    const before = await healthz(d.port);
    // Hello comes ≥ 5.5 s after the spawn: the default 5 s would abort this upgrade.
    writeScript(script, `sleep 5.5; exec ${process.execPath} ${PRIMITIVE[1]}`);
    const slow = await worlds.w.baton(['upgrade', '--json', '--state-dir', d.stateDir]);
    expect(slow.code, slow.stdout + slow.stderr).toBe(0);
    const phases = (JSON.parse(slow.stdout) as { handoff: { phases: { phase: string; ms: number }[] } }).handoff.phases;
    expect(phases.find((p) => p.phase === 'hello')?.ms).toBeGreaterThan(5_000);
    expect((await healthz(d.port)).pid).not.toBe(before.pid);
    await stopDaemon(d);

    writeFileSync(config, JSON.stringify({ handoff: { helloTimeoutS: 2.5 } }));
    writeScript(script, `exec ${process.execPath} ${PRIMITIVE[1]}`);
    const d2 = await worlds.w.startDaemon({ dir, command: [script], extraArgs: ['--config', config] });
    const sleepPid = path.join(dir, 'sleep.pid');
    writeScript(script, `sleep 30 & echo $! > ${sleepPid}; wait; exec ${process.execPath} ${PRIMITIVE[1]}`);
    const short = await worlds.w.baton(['upgrade', '--state-dir', d2.stateDir]);
    expect(short.code, short.stdout + short.stderr).toBe(2);
    expect(short.stderr).toMatch(/aborted: no message from successor within 2500 ms/);
    // The aborted successor's process group went with it: its `sleep` is not left behind.
    const orphan = Number(readFileSync(sleepPid, 'utf8'));
    await pollUntil(async () => !isAlive(orphan) || undefined, `the aborted successor's child ${orphan} to be killed`, 5_000);
    await stopDaemon(d2);
  }, 60_000);

  it('handoff.listenerSpares 0 and an app that re-listens with listenFd: an aborted upgrade leaves an incumbent that cannot listen again; upgrade says so and a cold start serves', async () => {
    const dir = h.tempDir('baton-cli-');
    const script = path.join(dir, 'app.sh');
    writeScript(script, `export PRIM_LISTEN_FD=1; exec ${process.execPath} ${PRIMITIVE[1]}`);
    const config = path.join(dir, 'baton.json');
    writeFileSync(config, JSON.stringify({ handoff: { listenerSpares: 0 } }));
    const d = await worlds.w.startDaemon({ dir, command: [script], extraArgs: ['--config', config] });
    const before = await healthz(d.port);
    // The next version reports itself unhealthy once (abort after the seal); the cold start after it is healthy.
    const once = path.join(dir, 'unhealthy.once');
    writeScript(script, `export PRIM_LISTEN_FD=1; if [ ! -e ${once} ]; then touch ${once}; export PRIM_HEALTHZ_FALSE=1; fi; exec ${process.execPath} ${PRIMITIVE[1]}`);
    const r = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir]);
    expect(r.code, r.stdout + r.stderr).toBe(2);
    expect(r.stderr).toMatch(/aborted: successor reported healthzOk=false \(E_READY_REJECTED\)/);
    expect(r.stderr).toMatch(/the old process could not serve again \(incumbent reported E_RESUME_FAILED: .*listener l0: all 0 spare copies are used.*\); cold start committed: pid (\d+)/);
    const coldPid = Number(/cold start committed: pid (\d+)/.exec(r.stderr)![1]);
    expect(isAlive(before.pid)).toBe(false);
    expect((await healthz(d.port)).pid).toBe(coldPid);
    await stopDaemon(d);
  }, 60_000);

  it('SIGHUP upgrades; SIGTERM stops the app and the supervisor (exit 0)', async () => {
    const d = await worlds.w.startDaemon();
    const before = await healthz(d.port);
    d.child.kill('SIGHUP');
    const after = await pollUntil(async () => {
      const hz = await healthz(d.port).catch(() => undefined);
      return hz && hz.pid !== before.pid ? hz : undefined;
    }, 'a new generation after SIGHUP', 20_000, 50);
    expect(after.generation).toBe(2);
    const s = await pollUntil(async () => {
      const st = await worlds.w.status(d);
      return st.lastHandoff?.trigger === 'signal' ? st : undefined;
    }, 'the SIGHUP job in the history');
    expect(s.lastHandoff).toMatchObject({ state: 'SUCCEEDED', trigger: 'signal' });

    d.child.kill('SIGTERM');
    expect(await exitOf(d.child)).toEqual({ code: 0, signal: null });
    await expectPortFree(d.port);
    expect(existsSync(path.join(d.stateDir, 'admin.sock'))).toBe(false);
    expect(await taggedPids(worlds.tag)).toEqual([]);
  });

  it('Ctrl-C at a terminal (SIGINT to the whole foreground process group) stops gracefully: the app drains and seals', async () => {
    const dir = h.tempDir('baton-cli-');
    const stateDir = path.join(dir, 'state');
    const markers = path.join(dir, 'markers');
    // baton leads its own process group here, as a shell's foreground job does.
    const child = h.spawn(
      process.execPath,
      [CLI, 'run', '--listen', 'tcp://127.0.0.1:0', '--data-dir', path.join(dir, 'data'), '--state-dir', stateDir, '--', ...PRIMITIVE],
      { env: worlds.w.env({ PRIM_MARKERS: markers }), detached: true },
    );
    const status = await pollUntil(
      async () => {
        const r = await worlds.w.baton(['status', '--json', '--state-dir', stateDir]);
        const st = r.code === 0 ? (JSON.parse(r.stdout) as Status) : undefined;
        return st?.app ? st : undefined;
      },
      'baton run to serve',
      30_000,
      100,
    );
    const appPid = status.app!.pid;
    process.kill(-child.pid!, 'SIGINT');
    expect(await exitOf(child)).toEqual({ code: 0, signal: null });
    const hooks = readdirSync(markers).filter((f) => f.startsWith(`${appPid}.`));
    expect(hooks).toEqual(expect.arrayContaining([`${appPid}.drain`, `${appPid}.seal`]));
    // Shutdown tells the app who asked (PROTOCOL.md 7.7), and that the stop completed.
    expect(hooks).toEqual(expect.arrayContaining([`${appPid}.shutdown-requested-signal`, `${appPid}.shutdown-completed-signal`]));
    expect(await taggedPids(worlds.tag)).toEqual([]);
  });

  it('baton upgrade shows the app\'s seal progress as it comes; baton stop reaches the app as reason "admin"', async () => {
    const dir = h.tempDir('baton-cli-');
    const markers = path.join(dir, 'markers');
    const d = await worlds.w.startDaemon({ dir, env: { PRIM_SEAL_STEP_MS: '250', PRIM_MARKERS: markers } });
    const r = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/seal progress 1\/4/);
    const appPid = (await healthz(d.port)).pid;
    await stopDaemon(d);
    expect(readdirSync(markers)).toEqual(expect.arrayContaining([`${appPid}.shutdown-requested-admin`, `${appPid}.shutdown-completed-admin`]));
  });

  it('restarts an app killed outside a handoff, and exits 4 when it crash-loops', async () => {
    const dir = h.tempDir('baton-cli-');
    const script = path.join(dir, 'app.sh');
    writeScript(script, `exec ${process.execPath} ${PRIMITIVE[1]}`);
    writeFileSync(path.join(dir, 'baton.json'), JSON.stringify({ restart: { maxRestarts: 2, windowS: 60 } }));
    const d = await worlds.w.startDaemon({ dir, command: [script], extraArgs: ['--config', path.join(dir, 'baton.json')] });
    const first = await healthz(d.port);
    process.kill(first.pid, 'SIGKILL');
    const again = await pollUntil(async () => {
      const hz = await healthz(d.port).catch(() => undefined);
      return hz && hz.pid !== first.pid ? hz : undefined;
    }, 'the restarted app', 20_000, 50);
    expect(again.pid).not.toBe(first.pid);
    const jobs = JSON.parse((await worlds.w.baton(['history', '--json', '--state-dir', d.stateDir])).stdout).jobs as { trigger: string; state: string }[];
    expect(jobs[0]).toMatchObject({ trigger: 'restart', state: 'SUCCEEDED' });

    // Now every start fails: restarts with backoff, then a crash loop.
    writeScript(script, 'exit 1');
    process.kill(again.pid, 'SIGKILL');
    expect(await exitOf(d.child)).toEqual({ code: 4, signal: null });
    expect(d.out.stderr).toMatch(/crashed \d+ times in a row; giving up/);
    await expectPortFree(d.port);
  });
});

describe('configuration and arguments', () => {
  function configCase(name: string, config: Record<string, unknown>, field: RegExp) {
    it(`rejects a config file with ${name} (exit 1, field named, nothing started)`, async () => {
      const dir = h.tempDir('baton-cfg-');
      const file = path.join(dir, 'baton.json');
      writeFileSync(file, JSON.stringify({ dataDir: 'data', stateDir: 'state', command: PRIMITIVE, ...config }));
      const r = await worlds.w.baton(['run', '--config', file], { PRIM_MARKERS: path.join(dir, 'markers') });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(field);
      expect(existsSync(path.join(dir, 'state'))).toBe(false); // nothing created, nothing bound
      expect(existsSync(path.join(dir, 'markers'))).toBe(false); // no app ran
    });
  }
  configCase('an unknown key', { listenn: ['tcp://127.0.0.1:0'] }, /"listenn": unknown option; expected one of: command, listen/);
  configCase('a wrong type', { listen: 'tcp://127.0.0.1:0' }, /"listen": expected an array of strings \(got "tcp:\/\/127.0.0.1:0"\)/);
  configCase('a bad address', { listen: ['tcp://127.0.0.1:0', 'tcp://localhost:80'] }, /"listen\[1\]": expected a listen address; host "localhost" is not an IP literal/);
  configCase('a bad nested value', { history: { maxRecords: -3 } }, /"history.maxRecords": expected an integer in 1..100000 \(got -3\)/);
  configCase('a fractional listener spare count', { handoff: { listenerSpares: 2.5 } }, /"handoff.listenerSpares": expected an integer in 0..64 \(got 2.5\)/);
  configCase('a listener-copies switch that is not a boolean', { handoff: { listenerCopies: 'yes' } }, /"handoff.listenerCopies": expected true or false \(got "yes"\)/);
  configCase('a data dir that is a file', { dataDir: 'baton.json' }, /"dataDir": expected a directory; .*baton.json exists and is not a directory/);
  configCase('an empty command', { command: [] }, /"command": expected the app command after `--`/);

  it('rejects an unreadable or malformed config file', async () => {
    const dir = h.tempDir('baton-cfg-');
    const missing = await worlds.w.baton(['run', '--config', path.join(dir, 'nope.json')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/--config .*nope.json: cannot read the file/);
    writeFileSync(path.join(dir, 'bad.json'), '{"listen": [');
    const bad = await worlds.w.baton(['run', '--config', path.join(dir, 'bad.json')]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/bad.json: not valid JSON/);
  });

  it('rejects bad flags before binding anything (the port stays free)', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const dir = h.tempDir('baton-cfg-');
    const base = ['--listen', `tcp://127.0.0.1:${port}`, '--data-dir', path.join(dir, 'data'), '--state-dir', path.join(dir, 'state')];
    const cases: [string[], RegExp][] = [
      [['run', '--bogus', ...base, '--', ...PRIMITIVE], /baton run: Unknown option '--bogus'/],
      [['run', ...base, '--listen', 'tcp://127.0.0.1:99999', '--', ...PRIMITIVE], /"listen\[1\]": expected a listen address; port 99999 is out of range/],
      [['run', ...base, '--metrics', 'nonsense', '--', ...PRIMITIVE], /"metrics": expected HOST:PORT/],
      [['run', ...base], /"command": expected the app command/],
      [['run', ...base, '--name', 'a b', '--', ...PRIMITIVE], /"name": expected letters, digits/],
      [['upgrade', '--deadline', 'soon', '--state-dir', dir], /--deadline: expected a positive number of seconds \(got "soon"\)/],
      [['history', '--limit', '0', '--state-dir', dir], /--limit: expected an integer in 1..10000/],
      [['frobnicate'], /unknown command "frobnicate"/],
    ];
    for (const [args, msg] of cases) {
      const r = await worlds.w.baton(args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(1);
      expect(r.stderr).toMatch(msg);
      expect(await portRefuses(port)).toBe(true);
    }
    expect(existsSync(path.join(dir, 'state'))).toBe(false);
    const none = await worlds.w.baton(['status', '--state-dir', path.join(dir, 'nothing')]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/no supervisor is running for this state dir/);
    const noneUp = await worlds.w.baton(['upgrade', '--state-dir', path.join(dir, 'nothing')]);
    expect(noneUp.code).toBe(1);
  });

  it('has --help on every command and --version', async () => {
    for (const cmd of ['run', 'upgrade', 'status', 'history', 'stop', 'unit']) {
      const r = await worlds.w.baton([cmd, '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`Usage: baton ${cmd}`);
    }
    const main = await worlds.w.baton(['--help']);
    expect(main.stdout).toMatch(/Commands:\n {2}run/);
    expect(main.stdout).toMatch(/^baton \d+\.\d+\.\d+ \(npm package @baton-sh\/baton\) — /);
    const version = await worlds.w.baton(['--version']);
    expect(version.stdout.trim()).toBe(JSON.parse(readFileSync(path.join(path.dirname(path.dirname(new URL(import.meta.url).pathname)), 'package.json'), 'utf8')).version);
    // The installed bin runs through its shebang (it carries node flags: `env -S`).
    const shebang = readFileSync(CLI, 'utf8').split('\n', 1)[0]!;
    expect(shebang).toMatch(/^#!\/usr\/bin\/env -S node --max-semi-space-size=1 --v8-pool-size=1 --lite-mode --no-expose-wasm$/);
    const viaShebang = spawnSync('/bin/sh', ['-c', `${shebang.slice(2)} "$0" --version`, CLI], { encoding: 'utf8' });
    expect(viaShebang.status, viaShebang.stderr).toBe(0);
    expect(viaShebang.stdout.trim()).toBe(version.stdout.trim());
    expect(viaShebang.stderr).toBe(''); // no V8 flag warning on every command
  });

  it('refuses a second supervisor on the same state dir', async () => {
    const d = await worlds.w.startDaemon();
    const r = await worlds.w.baton(['run', '--listen', 'tcp://127.0.0.1:0', '--data-dir', d.dataDir, '--state-dir', d.stateDir, '--', ...PRIMITIVE]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/another baton supervisor is running on state dir/);
    expect((await worlds.w.status(d)).app?.generation).toBe(1);
    await stopDaemon(d);
  });
});

describe('admin socket', () => {
  it('is 0600 in a 0700 dir, and answers garbage, oversize and unknown requests with errors while staying up', async () => {
    const dir = h.tempDir('baton-cli-');
    mkdirSync(path.join(dir, 'state'), { mode: 0o755 }); // a too-open state dir is tightened
    const d = await worlds.w.startDaemon({ dir });
    const sock = path.join(d.stateDir, 'admin.sock');
    expect(statSync(d.stateDir).mode & 0o777).toBe(0o700);
    expect(statSync(sock).mode & 0o777).toBe(0o600);
    expect(statSync(sock).isSocket()).toBe(true);

    expect(await rawAdmin(sock, 'this is not http\r\n\r\n')).toMatch(/^HTTP\/1.1 400 .*E_BAD_REQUEST/s);
    expect(await rawAdmin(sock, Buffer.from([0, 1, 2, 255, 254, 13, 10, 13, 10]))).toMatch(/^HTTP\/1.1 400/);
    const big = 'x'.repeat(100 * 1024);
    expect(await rawAdmin(sock, `POST /v1/upgrade HTTP/1.1\r\nHost: x\r\nContent-Length: ${big.length}\r\n\r\n${big}`)).toMatch(/^HTTP\/1.1 413 .*E_TOO_LARGE/s);
    expect(await rawAdmin(sock, `POST /v1/upgrade HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${(80_000).toString(16)}\r\n${'y'.repeat(80_000)}\r\n0\r\n\r\n`)).toMatch(/^HTTP\/1.1 413/);
    expect(await rawAdmin(sock, 'POST /v1/upgrade HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{nope')).toMatch(/^HTTP\/1.1 400 .*E_BAD_JSON/s);
    expect(await rawAdmin(sock, 'POST /v1/upgrade HTTP/1.1\r\nHost: x\r\nContent-Length: 18\r\nConnection: close\r\n\r\n{"deadlineS":"no"}')).toMatch(/^HTTP\/1.1 400 .*deadlineS/s);
    expect(await rawAdmin(sock, 'GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).toMatch(/^HTTP\/1.1 404 .*E_NOT_FOUND/s);
    expect(await rawAdmin(sock, 'DELETE /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).toMatch(/^HTTP\/1.1 405/);
    expect(await rawAdmin(sock, 'GET /v1/history?limit=abc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).toMatch(/^HTTP\/1.1 400 .*limit/s);
    // Targets that are not a plain absolute path (found by the fuzzer: "GET //" used to kill baton run).
    for (const target of ['//', '/\\', '*', '//x/v1/status']) {
      expect(await rawAdmin(sock, `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)).toMatch(/^HTTP\/1.1 (400|404)/);
    }

    // A client that connects and says nothing does not block the others.
    const idle = net.connect(sock);
    const s = await worlds.w.status(d);
    expect(s.health.status).toBe('OK');
    idle.destroy();
    expect((await worlds.w.baton(['upgrade', '--state-dir', d.stateDir])).code).toBe(0);
    const audit = readFileSync(path.join(d.stateDir, 'audit.log'), 'utf8');
    expect(audit).toContain('"status":413');
    expect(audit).toContain('"status":404');
    expect(statSync(path.join(d.stateDir, 'audit.log')).mode & 0o777).toBe(0o600);
    await stopDaemon(d);
  });
});
