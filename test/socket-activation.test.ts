/**
 * Socket-activation mode (issue 24): unmodified third-party servers under the real
 * `baton` binary. gunicorn (2 sync workers) adopts baton's listeners through systemd's
 * LISTEN_FDS/LISTEN_PID; nginx adopts fd 3 through its own inheritance variable
 * (`NGINX=3;`) and stops gracefully on SIGQUIT. Load comes from wrk, an independent
 * client, on keep-alive connections; its error counters (connect, read, write, timeout,
 * non-2xx) must all stay 0. Asserted throughout: what `baton upgrade` said and its exit
 * code, which process serves (the answering master is the one `baton status` names),
 * that the old process is gone after a commit and that nothing of a failed new process
 * is left, and the history.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort } from '../bench/lib/scope.js';
import type { JobRecord } from '../src/daemon/jobs.js';
import { isAlive } from '../src/os/proc.js';
import { useCliWorlds, writeScript, type DaemonHandle } from './support/cli.js';
import { request, ROOT, taggedPids } from './support/engine.js';
import { Harness, LineReader, pollUntil } from './support/harness.js';

const h = new Harness();
const worlds = useCliWorlds(h);

const FIXTURE = path.join(ROOT, 'fixtures/activation');
const GUNICORN = ['gunicorn', '-w', '2', '--chdir', FIXTURE, '--log-level', 'warning', 'wsgi_app:app'];

interface WrkResult {
  requests: number;
  connect: number;
  read: number;
  write: number;
  timeout: number;
  status: number;
}

/** wrk on keep-alive connections until stopped (SIGINT: it prints its summary), its counters read from its Lua done() hook. */
class Wrk {
  private readonly out: LineReader;
  constructor(
    private readonly child: ReturnType<Harness['spawn']>,
  ) {
    this.out = new LineReader(child);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  static start(port: number, connections = 16): Wrk {
    const script = path.join(h.tempDir('baton-wrk-'), 'done.lua');
    writeFileSync(
      script,
      `done = function(s)
  io.write(string.format('WRK_RESULT {"requests":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d}\\n',
    s.requests, s.errors.connect, s.errors.read, s.errors.write, s.errors.timeout, s.errors.status))
end
`,
    );
    // Bounded: 3 minutes at most even if never stopped; the test stops it long before.
    return new Wrk(h.spawn('wrk', ['-t', '2', '-c', String(connections), '-d', '180s', '--timeout', '10s', '-s', script, `http://127.0.0.1:${port}/`], { env: worlds.w.env() }));
  }

  async stop(): Promise<WrkResult> {
    this.child.kill('SIGINT');
    const line = await this.out.next<string>((l) => typeof l === 'string' && l.startsWith('WRK_RESULT '), 'wrk summary', 30_000);
    return JSON.parse(line.slice('WRK_RESULT '.length)) as WrkResult;
  }
}

/** One GET / on a fresh connection: which gunicorn master and worker answered. */
async function gunicornServer(port: number): Promise<{ master: number; worker: number }> {
  const r = await request(port, 'GET', '/');
  expect(r.status).toBe(200);
  const m = /^pid (\d+) worker (\d+)/.exec(r.body);
  if (!m) throw new Error(`unexpected answer: ${r.body}`);
  return { master: Number(m[1]), worker: Number(m[2]) };
}

/** Fields of /proc/PID/stat after the command name: [state, ppid, pgrp, ...]. */
function procStat(pid: number): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

async function upgrade(d: DaemonHandle, extra: string[] = []): Promise<{ code: number | null; job: JobRecord; stderr: string }> {
  const r = await worlds.w.baton(['upgrade', '--json', '--state-dir', d.stateDir, ...extra], {}, 120_000);
  return { code: r.code, job: JSON.parse(r.stdout) as JobRecord, stderr: r.stderr };
}

const history = (d: DaemonHandle): Promise<JobRecord[]> => worlds.w.history(d);

/** Every tagged process but the supervisor belongs to the serving app's process group: nothing of another generation is left. */
async function onlyServingGeneration(d: DaemonHandle, appPid: number, wrk?: Wrk): Promise<void> {
  const others = (await taggedPids(worlds.tag)).filter((pid) => pid !== d.child.pid && pid !== wrk?.pid);
  const strays = others.filter((pid) => {
    try {
      return Number(procStat(pid)[2]) !== appPid;
    } catch {
      return false; // gone meanwhile
    }
  });
  expect(strays).toEqual([]);
}

/** A deployable gunicorn build behind a script (rewritten atomically, like a deploy). */
function gunicornScript(file: string, env: Record<string, string> = {}, args: string[] = []): void {
  const exports = Object.entries(env).map(([k, v]) => `export ${k}='${v}'`).join('\n');
  writeScript(file, `${exports}\nexec ${[...GUNICORN, ...args].join(' ')}`);
}

describe('socket activation: unmodified servers', () => {
  it('gunicorn (2 workers) adopts the listeners by LISTEN_FDS/LISTEN_PID and is upgraded 6 times under keep-alive load: 0 failed requests, a new process each time', async () => {
    const w = worlds.w;
    const metricsPort = await freePort();
    const d = await w.startDaemon({ extraArgs: ['--socket-activation', '--ready-http', '/healthz', '--metrics', `127.0.0.1:${metricsPort}`], command: GUNICORN });
    const s0 = await w.status(d);
    expect((s0 as unknown as { mode: string }).mode).toBe('socket-activation');
    expect(s0.lock).toBeNull(); // no data-dir lock in this mode
    // gunicorn serves our port only if LISTEN_PID named it: the master answering is the process baton started.
    expect((await gunicornServer(d.port)).master).toBe(s0.app!.pid);

    const wrk = Wrk.start(d.port);
    await new Promise((r) => setTimeout(r, 1_000));
    let serving = s0.app!.pid;
    const pids = [serving];
    for (let i = 1; i <= 6; i++) {
      const { code, job, stderr } = await upgrade(d);
      expect(code, stderr).toBe(0);
      expect(job.state).toBe('SUCCEEDED');
      expect(job.handoff?.phases.map((p) => p.phase)).toEqual(['spawning', 'await_ready', 'committing']);
      expect(job.handoff?.oldPid).toBe(serving);
      const next = job.handoff!.newPid!;
      expect(pids).not.toContain(next);
      expect(isAlive(serving)).toBe(false); // the old one got SIGTERM and is gone before the commit is reported
      expect((await w.status(d)).app!.pid).toBe(next);
      expect((await gunicornServer(d.port)).master).toBe(next);
      serving = next;
      pids.push(next);
    }
    const load = await wrk.stop();
    expect(load.requests).toBeGreaterThan(1_000);
    expect({ ...load, requests: 0 }).toEqual({ requests: 0, connect: 0, read: 0, write: 0, timeout: 0, status: 0 });

    const jobs = await history(d);
    expect(jobs.map((j) => [j.trigger, j.state])).toEqual([...Array.from({ length: 6 }, () => ['admin', 'SUCCEEDED']), ['cold-start', 'SUCCEEDED']]);
    // Metrics count these handoffs as in protocol mode (the cold start is one).
    const metrics = (await request(metricsPort, 'GET', '/metrics')).body;
    expect(metrics).toMatch(/^baton_handoffs_total\{outcome="committed"[^}]*\} 7$/m);
    expect(metrics).toMatch(/^baton_generation\{[^}]*\} 7$/m);
    await onlyServingGeneration(d, serving);
    await w.stop(d);
    expect(isAlive(serving)).toBe(false);
  }, 180_000);

  it('nginx adopts fd 3 (NGINX=3;), configured from the config file, is stopped with SIGQUIT, and is upgraded 6 times under keep-alive load with 0 failed requests', async () => {
    const w = worlds.w;
    const dir = h.tempDir('baton-nginx-');
    const port = await freePort();
    const conf = path.join(dir, 'nginx.conf');
    // keepalive_timeout 0: every response says Connection: close (see docs/socket-activation.md:
    // nginx's graceful stop closes idle keep-alive connections a client may be reusing).
    writeFileSync(
      conf,
      `daemon off;
master_process on;
worker_processes 2;
env BATON_TEST_TAG;
error_log stderr warn;
events { worker_connections 512; }
http {
  access_log off;
  keepalive_timeout 0;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port};
    location / { return 200 "pid $pid\\n"; }
  }
}
`,
    );
    const script = path.join(dir, 'nginx.sh');
    // nginx's own fd inheritance (used by its binary upgrade): it takes fd 3 for the listen
    // address that matches it instead of binding. Each master its own pid file.
    writeScript(script, `export NGINX='3;'\nexec nginx -e stderr -p ${dir} -c ${conf} -g "pid ${dir}/nginx-$$.pid;"`);
    const config = path.join(dir, 'baton.json');
    writeFileSync(config, JSON.stringify({ socketActivation: { stopSignal: 'SIGQUIT', stopGraceS: 20 } }));
    const d = await w.startDaemon({ dir, listen: `http=tcp://127.0.0.1:${port}`, extraArgs: ['--config', config], command: [script] });

    const master = async (): Promise<number> => {
      const r = await request(port, 'GET', '/');
      expect(r.status).toBe(200);
      return Number(procStat(Number(/^pid (\d+)/.exec(r.body)![1]))[1]); // the worker's parent
    };
    let serving = (await w.status(d)).app!.pid;
    expect(await master()).toBe(serving);
    const wrk = Wrk.start(port);
    await new Promise((r) => setTimeout(r, 1_000));
    for (let i = 1; i <= 6; i++) {
      const { code, job, stderr } = await upgrade(d);
      expect(code, stderr).toBe(0);
      expect(job.handoff?.oldPid).toBe(serving);
      const next = job.handoff!.newPid!;
      expect(next).not.toBe(serving);
      expect(isAlive(serving)).toBe(false);
      expect(await master()).toBe(next);
      serving = next;
    }
    const load = await wrk.stop();
    expect(load.requests).toBeGreaterThan(1_000);
    expect({ ...load, requests: 0 }).toEqual({ requests: 0, connect: 0, read: 0, write: 0, timeout: 0, status: 0 });
    await onlyServingGeneration(d, serving);
    await w.stop(d);
  }, 180_000);

  it('an upgrade to a broken build, or to one whose own /healthz fails, aborts (exit 2) with the old process serving on, the reason and history quoting its stderr; requests succeed throughout', async () => {
    const w = worlds.w;
    const dir = h.tempDir('baton-activation-');
    const app = path.join(dir, 'app.sh');
    gunicornScript(app);
    const d = await w.startDaemon({ dir, extraArgs: ['--socket-activation', '--ready-http', '/healthz'], command: [app] });
    const before = (await w.status(d)).app!.pid;
    const wrk = Wrk.start(d.port, 8);
    // The broken build: with --preload the master imports the app and dies at once (without
    // it, the master exits only once its workers failed to boot, seconds later on a busy machine).
    gunicornScript(app, { APP_CRASH_ON_IMPORT: '1' }, ['--preload']);
    const { code, job } = await upgrade(d);
    expect(code).toBe(2);
    expect(job.state).toBe('FAILED');
    expect(job.code).toBe('E_PEER_DIED');
    expect(job.reason).toMatch(/new process \(pid \d+\) exited \(code \d+.*before it was ready; its stderr says: .*APP_CRASH_ON_IMPORT/);
    expect(job.handoff?.successorStderr).toContain('APP_CRASH_ON_IMPORT: this build is broken on purpose');
    expect(job.handoff?.newPid).toBe(before); // who serves now: the old one
    expect((await w.status(d)).app!.pid).toBe(before);
    expect((await gunicornServer(d.port)).master).toBe(before);
    await onlyServingGeneration(d, before, wrk);
    // The text output says the same.
    const text = await w.baton(['upgrade', '--state-dir', d.stateDir]);
    expect(text.code).toBe(2);
    expect(text.stderr).toContain('APP_CRASH_ON_IMPORT');
    expect(text.stderr).toContain(`the old process serves on: generation 1 (pid ${before})`);
    const [last] = await history(d);
    expect(last!.state).toBe('FAILED');
    expect(last!.reason).toContain('APP_CRASH_ON_IMPORT');

    // A build that serves but whose /healthz says 503: only the new process is asked (its
    // private listener), so the old one's 200s on the shared port cannot make it look ready.
    gunicornScript(app, { APP_UNHEALTHY: '1' });
    const unhealthy = await upgrade(d, ['--ready-timeout', '3']);
    expect(unhealthy.code).toBe(2);
    expect(unhealthy.job.code).toBe('E_READY_TIMEOUT');
    expect(unhealthy.job.reason).toMatch(/not ready within 3000 ms of its start: GET http:\/\/127\.0\.0\.1:\d+\/healthz answered 503/);
    expect((await gunicornServer(d.port)).master).toBe(before);

    gunicornScript(app); // fixed: the next upgrade commits
    const fixed = await upgrade(d);
    expect(fixed.code, fixed.stderr).toBe(0);
    expect(fixed.job.handoff?.oldPid).toBe(before);
    const load = await wrk.stop();
    expect(load.requests).toBeGreaterThan(100);
    expect({ ...load, requests: 0 }).toEqual({ requests: 0, connect: 0, read: 0, write: 0, timeout: 0, status: 0 });
    await w.stop(d);
  }, 180_000);

  it('a new process that is never ready (--ready-cmd fails) is stopped at the ready timeout and the old one serves on (exit 2, E_READY_TIMEOUT, the check named)', async () => {
    const w = worlds.w;
    const dir = h.tempDir('baton-activation-');
    const ready = path.join(dir, 'ready.sh');
    writeFileSync(ready, 'exit 0\n');
    const d = await w.startDaemon({ dir, extraArgs: ['--socket-activation', '--ready-cmd', `sh ${ready}`], command: GUNICORN });
    const before = (await w.status(d)).app!.pid;
    writeFileSync(ready, 'echo "not ready: still warming up" >&2\nexit 1\n'); // what `false` is, with a word on why
    const wrk = Wrk.start(d.port, 8);
    const t0 = Date.now();
    const { code, job } = await upgrade(d, ['--ready-timeout', '3']);
    expect(code).toBe(2);
    expect(job.code).toBe('E_READY_TIMEOUT');
    expect(job.reason).toMatch(/was not ready within 3000 ms of its start: ready-cmd `sh .*ready\.sh` exited 1: not ready: still warming up/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(3_000);
    expect(job.handoff?.newPid).toBe(before);
    expect((await w.status(d)).app!.pid).toBe(before);
    expect((await gunicornServer(d.port)).master).toBe(before);
    await onlyServingGeneration(d, before, wrk); // the new gunicorn and its workers were stopped
    const load = await wrk.stop();
    expect({ ...load, requests: 0 }).toEqual({ requests: 0, connect: 0, read: 0, write: 0, timeout: 0, status: 0 });
    await w.stop(d);
  }, 120_000);

  it('a crashed server is restarted with backoff (100 ms, then 200 ms), its orphaned workers swept, recorded as restart jobs', async () => {
    const w = worlds.w;
    const d = await w.startDaemon({ extraArgs: ['--socket-activation'], command: GUNICORN });
    let serving = (await w.status(d)).app!.pid;
    for (let crash = 1; crash <= 2; crash++) {
      process.kill(serving, 'SIGKILL'); // the master dies; its workers are orphaned
      const crashed = serving;
      serving = await pollUntil(
        async () => {
          const s = await w.status(d);
          return s.app && s.app.pid !== crashed && (await gunicornServer(d.port).catch(() => undefined))?.master === s.app.pid ? s.app.pid : undefined;
        },
        `a restarted gunicorn after crash ${crash}`,
        30_000,
        100,
      );
      await onlyServingGeneration(d, serving);
    }
    const delays = d.out.stderr
      .split('\n')
      .filter((l) => l.includes('"app.restart_scheduled"'))
      .map((l) => (JSON.parse(l) as { delayMs: number }).delayMs);
    expect(delays).toEqual([100, 200]);
    // No protocol, so no maintenance tasks: refused at once, without a connection attempt.
    const job = await w.baton(['maintenance', 'run', 'compaction', '--json', '--state-dir', d.stateDir]);
    expect(job.code).toBe(2);
    expect(JSON.parse(job.stdout)).toMatchObject({ state: 'FAILED', code: 'E_UNSUPPORTED' });
    const jobs = await history(d);
    expect(jobs.filter((j) => j.kind === 'handoff').slice(0, 2).map((j) => [j.trigger, j.state])).toEqual([
      ['restart', 'SUCCEEDED'],
      ['restart', 'SUCCEEDED'],
    ]);
    await w.stop(d);
  }, 120_000);

  it('refuses a socket-activation flag without the mode, and a stop signal that stops nothing', async () => {
    const w = worlds.w;
    const dir = h.tempDir('baton-activation-');
    const r1 = await w.baton(['run', '--ready-after', '2', '--listen', 'tcp://127.0.0.1:0', '--state-dir', path.join(dir, 's'), '--', 'true']);
    expect(r1.code).toBe(1);
    expect(r1.stderr).toContain('only with --socket-activation');
    const r2 = await w.baton(['run', '--socket-activation', '--stop-signal', 'STOP', '--listen', 'tcp://127.0.0.1:0', '--state-dir', path.join(dir, 's'), '--', 'true']);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toContain('socketActivation.stopSignal');
    const r3 = await w.baton(['run', '--socket-activation', '--ready-after', '20', '--listen', 'tcp://127.0.0.1:0', '--state-dir', path.join(dir, 's'), '--', 'true']);
    expect(r3.code).toBe(1);
    expect(r3.stderr).toContain('less than handoff.readyTimeoutS');
  });
});
