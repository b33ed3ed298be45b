/**
 * systemd integration through the real binary: the exact sd_notify sequence for start,
 * a committed and an aborted upgrade, and stop (against a fake NOTIFY_SOCKET, a unix
 * datagram receiver in Python since Node cannot open one; messages are sent by the
 * real systemd-notify), the watchdog, and `systemd-analyze verify` on the example units;
 * `baton unit` (src/daemon/unit.ts): what it writes, that its ExecStart/ExecReload run,
 * and `systemd-analyze verify` on its units.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { healthz, PRIMITIVE, ROOT } from './support/engine.js';
import { isAlive } from '../src/os/proc.js';
import { exitOf, Harness, LineReader, pollUntil } from './support/harness.js';
import { CLI, CLI_NODE_ARGS, useCliWorlds, writeScript } from './support/cli.js';

const has = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const canNotify = has('python3') && has('systemd-notify');
const canVerify = has('systemd-analyze');

const h = new Harness();
const worlds = useCliWorlds(h);

type Msg = Record<string, string>;

/** A fake NOTIFY_SOCKET (test/fixtures-systemd/notify-receiver.py) in `dir`, and what it got. */
async function notifyReceiver(dir: string): Promise<{ sock: string; receiver: ChildProcess; received: () => Msg[]; messages: () => Msg[] }> {
  const sock = path.join(dir, 'notify.sock');
  const receiver = h.spawn('python3', [path.join(ROOT, 'test/fixtures-systemd/notify-receiver.py'), sock], { env: worlds.w.env() });
  const rx = new LineReader(receiver);
  await rx.next((l: { ready?: boolean }) => l.ready === true, 'the fake NOTIFY_SOCKET');
  const received = (): Msg[] => (rx.lines as { fields?: Msg }[]).filter((l) => l.fields).map((l) => l.fields!);
  // The protocol messages, without systemd-notify's BARRIER=1 and the periodic watchdog.
  const messages = (): Msg[] => received().filter((m) => !m.BARRIER && !m.WATCHDOG);
  return { sock, receiver, received, messages };
}

describe.skipIf(!canNotify)('sd_notify', () => {
  it('sends READY, RELOADING/READY around committed and aborted upgrades, STOPPING, and the watchdog', async () => {
    const dir = h.tempDir('baton-sd-');
    const { sock, receiver, received, messages } = await notifyReceiver(dir);

    const script = path.join(dir, 'app.sh');
    const good = `exec ${process.execPath} ${PRIMITIVE[1]}`;
    writeScript(script, good);
    const d = await worlds.w.startDaemon({ dir, command: [script], env: { NOTIFY_SOCKET: sock, WATCHDOG_USEC: '300000' } });
    const gen1 = await healthz(d.port);
    await pollUntil(() => messages().length >= 1, 'READY=1');
    expect(messages()).toEqual([{ READY: '1', MAINPID: String(d.child.pid), STATUS: `serving generation 1 (pid ${gen1.pid})` }]);

    const up = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir]);
    expect(up.code, up.stderr).toBe(0);
    const gen2 = await healthz(d.port);
    await pollUntil(() => messages().length >= 10, 'the upgrade messages');
    const reloading = messages()[1]!;
    expect(reloading).toMatchObject({ RELOADING: '1', STATUS: 'upgrading' });
    // CLOCK_MONOTONIC in µs: the same clock as /proc/uptime, so within a few seconds of it.
    const uptimeUs = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * 1e6;
    expect(Math.abs(Number(reloading.MONOTONIC_USEC) - uptimeUs)).toBeLessThan(30e6);
    expect(messages().slice(2)).toEqual([
      ...['spawning', 'hello', 'draining', 'sealing', 'begin', 'await_ready', 'committing'].map((p) => ({ STATUS: `upgrading: ${p}` })),
      { READY: '1', STATUS: `serving generation 2 (pid ${gen2.pid})` },
    ]);

    writeScript(script, 'exit 1');
    const broken = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir]);
    expect(broken.code).toBe(2);
    await pollUntil(() => messages().length >= 15, 'the aborted upgrade messages');
    const masked = messages()
      .slice(10)
      .map((m) => (m.MONOTONIC_USEC ? { ...m, MONOTONIC_USEC: 'n' } : m));
    expect(masked).toEqual([
      { RELOADING: '1', MONOTONIC_USEC: 'n', STATUS: 'upgrading' },
      { STATUS: 'upgrading: spawning' },
      { STATUS: 'upgrading: hello' },
      { STATUS: 'upgrading: aborting' },
      { READY: '1', STATUS: `serving generation 2 (pid ${gen2.pid})` }, // READY=1 again after a failed reload
    ]);
    // The app never sees the notify socket (with NotifyAccess=all it could confuse systemd).
    expect(readFileSync(`/proc/${gen2.pid}/environ`, 'latin1').split('\0').some((e) => e.startsWith('NOTIFY_SOCKET='))).toBe(false);

    // WATCHDOG_USEC=300000: WATCHDOG=1 every 150 ms while it runs. Waited for, not counted
    // over the run: the run above can be over in well under a second.
    await pollUntil(() => received().filter((m) => m.WATCHDOG === '1').length >= 5, 'five WATCHDOG=1 pings', 10_000);

    const stop = await worlds.w.baton(['stop', '--state-dir', d.stateDir]);
    expect(stop.code).toBe(0);
    expect(await exitOf(d.child)).toEqual({ code: 0, signal: null });
    await pollUntil(() => messages().length >= 16, 'STOPPING=1');
    expect(messages().slice(15)).toEqual([{ STOPPING: '1', STATUS: 'stopping' }]);
    receiver.kill('SIGTERM');
    await exitOf(receiver);
  });
});

describe.skipIf(!canNotify)('sd_notify across baton upgrade --self', () => {
  it('the new supervisor tells systemd its MAINPID with READY=1 before the old one exits, and pings the watchdog as itself', async () => {
    const dir = h.tempDir('baton-sd-');
    const { sock, receiver, received, messages } = await notifyReceiver(dir);
    const d = await worlds.w.startDaemon({ dir, env: { NOTIFY_SOCKET: sock, WATCHDOG_USEC: '300000' } });
    const app = await healthz(d.port);
    await pollUntil(() => messages().length >= 1, 'READY=1');
    const r = await worlds.w.baton(['upgrade', '--self', '--json', '--state-dir', d.stateDir]);
    expect(r.code, r.stderr).toBe(0);
    const newPid = (JSON.parse(r.stdout) as { supervisor: { newPid: number } }).supervisor.newPid;
    expect(await exitOf(d.child)).toEqual({ code: 0, signal: null });
    expect(messages().slice(1)).toEqual([{ READY: '1', MAINPID: String(newPid), STATUS: `serving generation 1 (pid ${app.pid})` }]);
    const w0 = received().filter((m) => m.WATCHDOG === '1').length;
    await pollUntil(() => received().filter((m) => m.WATCHDOG === '1').length >= w0 + 3, 'WATCHDOG=1 from the new supervisor', 10_000);
    const stop = await worlds.w.baton(['stop', '--state-dir', d.stateDir]);
    expect(stop.code).toBe(0);
    await pollUntil(() => !isAlive(newPid) || undefined, 'the new supervisor to exit', 30_000);
    receiver.kill('SIGTERM');
    await exitOf(receiver);
  });
});

describe.skipIf(!canNotify)('sd_notify during a long handoff', () => {
  it('sends EXTEND_TIMEOUT_USEC while a slow seal runs and none after READY; WATCHDOG=1 throughout', async () => {
    const dir = h.tempDir('baton-sd-');
    const { sock, receiver, received, messages } = await notifyReceiver(dir);

    // Extend every 200 ms; the seal blocks the incumbent for 1.5 s (about 7 periods).
    const extendMs = 200;
    const d = await worlds.w.startDaemon({
      dir,
      env: { NOTIFY_SOCKET: sock, WATCHDOG_USEC: '300000', BATON_SYSTEMD_EXTEND_MS: String(extendMs), PRIM_SEAL_BLOCK_MS: '1500' },
    });
    await pollUntil(() => messages().some((m) => m.READY === '1'), 'READY=1');
    expect(messages().some((m) => m.EXTEND_TIMEOUT_USEC)).toBe(false); // nothing before an upgrade

    const up = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir]);
    expect(up.code, up.stderr).toBe(0);
    const readyAgain = (): number => messages().findIndex((m, i) => i > 0 && m.READY === '1');
    await pollUntil(() => readyAgain() > 0, 'READY=1 after the upgrade');
    const during = messages().slice(0, readyAgain());
    const reloadingAt = during.findIndex((m) => m.RELOADING === '1');
    const sealingAt = during.findIndex((m) => m.STATUS === 'upgrading: sealing');
    const extends_ = during.map((m, i) => ({ m, i })).filter(({ m }) => m.EXTEND_TIMEOUT_USEC !== undefined);
    expect(reloadingAt).toBeGreaterThan(0);
    expect(extends_.length, JSON.stringify(during)).toBeGreaterThanOrEqual(3);
    // All inside the handoff, some while it was sealing.
    expect(extends_.every(({ i }) => i > reloadingAt)).toBe(true);
    expect(extends_.filter(({ i }) => i > sealingAt).length).toBeGreaterThanOrEqual(2);
    // A sane value: several periods ahead (one late message is harmless), not unbounded.
    for (const { m } of extends_) {
      expect(m).toEqual({ EXTEND_TIMEOUT_USEC: String(3 * extendMs * 1000) });
    }

    // None after READY: watch at least 2 s of watchdog ticks (150 ms each), 10 extend periods.
    const watchdogs = (): number => received().filter((m) => m.WATCHDOG === '1').length;
    const w0 = watchdogs();
    await pollUntil(() => watchdogs() >= w0 + 14, 'WATCHDOG=1 to keep coming after the upgrade', 15_000);
    expect(messages().slice(readyAgain()).filter((m) => m.EXTEND_TIMEOUT_USEC !== undefined)).toEqual([]);

    const stop = await worlds.w.baton(['stop', '--state-dir', d.stateDir]);
    expect(stop.code).toBe(0);
    expect(await exitOf(d.child)).toEqual({ code: 0, signal: null });
    receiver.kill('SIGTERM');
    await exitOf(receiver);
  });
});

describe.skipIf(!canVerify)('systemd units', () => {
  it('fixtures/systemd/baton-example.{service,socket} pass systemd-analyze verify', () => {
    const dir = h.tempDir('baton-units-');
    // verify checks that ExecStart's binary exists: point it at this checkout's CLI.
    const service = readFileSync(path.join(ROOT, 'fixtures/systemd/baton-example.service'), 'utf8').replaceAll('/usr/local/bin/baton', `${process.execPath} ${CLI}`);
    writeFileSync(path.join(dir, 'baton-example.service'), service);
    copyFileSync(path.join(ROOT, 'fixtures/systemd/baton-example.socket'), path.join(dir, 'baton-example.socket'));
    const r = spawnSync('systemd-analyze', ['verify', 'baton-example.socket', 'baton-example.service'], { cwd: dir, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    // verify only warns (exit 0) on many mistakes, e.g. an unknown Type=: require silence about our units.
    expect(r.stderr.split('\n').filter((l) => l.includes('baton-example'))).toEqual([]);
  });
});

/**
 * The words of a unit's command line as systemd reads them, for the quoting `baton unit`
 * writes ("…" with \\ and \"; %% and $$). A lone % (a specifier) or $ (a variable) would
 * be expanded by systemd: that is an error here.
 */
function execWords(line: string): string[] {
  const words = [...line.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)].map((m) => (m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!));
  return words.map((w) =>
    w.replace(/%%|\$\$|%|\$/g, (t) => {
      if (t.length === 1) throw new Error(`systemd would expand the ${t} in ${JSON.stringify(w)}`);
      return t[0]!;
    }),
  );
}
const unitLine = (unit: string, key: string): string => unit.split('\n').find((l) => l.startsWith(`${key}=`))?.slice(key.length + 1) ?? '';
/** Key=value lines of a unit's [Service] section (comments left out). */
function serviceSettings(unit: string): Map<string, string> {
  const section = unit.split(/^\[Service\]$/m)[1]!.split(/^\[/m)[0]!;
  return new Map(section.split('\n').filter((l) => /^\w+=/.test(l)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
}

describe('baton unit', () => {
  it('prints a service unit with the settings of fixtures/systemd for the run command line; --json gives the same units', async () => {
    const args = ['unit', '--name', 'kv', '--user', 'kv', '--listen', 'http=tcp://127.0.0.1:8080', '--', '/srv/kv/bin/server', '--port file'];
    const r = await worlds.w.baton(args);
    expect(r.code, r.stderr).toBe(0);
    const unit = r.stdout;
    const fixture = serviceSettings(readFileSync(path.join(ROOT, 'fixtures/systemd/baton-example.service'), 'utf8'));
    const ours = serviceSettings(unit);
    for (const key of ['Type', 'NotifyAccess', 'StateDirectoryMode', 'KillMode', 'TimeoutStopSec', 'Restart', 'RestartSec', 'WatchdogSec']) {
      expect([key, ours.get(key)]).toEqual([key, fixture.get(key)]);
    }
    expect(ours.get('User')).toBe('kv');
    expect(ours.get('StateDirectory')).toBe('kv');
    // baton as this command runs it: this node, the bin's V8 flags, this install's cli.js.
    const baton = [process.execPath, ...CLI_NODE_ARGS, CLI];
    expect(execWords(unitLine(unit, 'ExecStart'))).toEqual([
      ...baton, 'run', '--name', 'kv', '--state-dir', '/var/lib/kv/supervisor', '--data-dir', '/var/lib/kv/data', '--listen', 'http=tcp://127.0.0.1:8080', '--', '/srv/kv/bin/server', '--port file',
    ]);
    expect(execWords(unitLine(unit, 'ExecReload'))).toEqual([...baton, 'upgrade', '--state-dir', '/var/lib/kv/supervisor']);
    expect(unit).toMatch(/^# kv\.service, generated by `baton unit` \(@baton-sh\/baton \d+\.\d+\.\d+\)\n/);

    const json = await worlds.w.baton([...args.slice(0, 1), '--json', ...args.slice(1)]);
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual({ units: [{ file: 'kv.service', content: unit }] });
  });

  it('escapes what systemd would expand, resolves a bare command on $PATH, and refuses what it cannot write', async () => {
    const r = await worlds.w.baton(['unit', '--name', 'kv', '--data-dir', '/srv/kv data/%i$HOME', '--', 'node', 'main.js', 'say "hi"\\']);
    expect(r.code, r.stderr).toBe(0);
    const words = execWords(unitLine(r.stdout, 'ExecStart'));
    expect(words.slice(words.indexOf('--data-dir'), words.indexOf('--data-dir') + 2)).toEqual(['--data-dir', '/srv/kv data/%i$HOME']);
    const app = words.slice(words.indexOf('--') + 1);
    expect(app.slice(1)).toEqual(['main.js', 'say "hi"\\']);
    expect(path.isAbsolute(app[0]!) && path.basename(app[0]!)).toBe('node');

    const refused: [string[], RegExp][] = [
      [['--', '/bin/true'], /--name NAME is required/],
      [['--name', 'a b', '--', '/bin/true'], /--name: expected 1-64 letters/],
      [['--name', 'kv'], /expected the app command after `--`/],
      [['--name', 'kv', '--', 'no-such-command-here'], /"no-such-command-here" is not on \$PATH; give its absolute path/],
      [['--name', 'kv', '--socket', '--', '/bin/true'], /--socket needs at least one --listen address/],
      [['--name', 'kv', '--socket', '--listen', 'tcp://127.0.0.1:0', '--', '/bin/true'], /listener l0 has port 0; systemd needs a fixed port/],
      [['--name', 'kv', '--listen', 'tcp://localhost:80', '--', '/bin/true'], /--listen: bad listen address "tcp:\/\/localhost:80"/],
      [['--name', 'kv', '--user', 'a;b', '--', '/bin/true'], /--user: expected a user or group name/],
      [['--name', 'kv', '--bogus', '--', '/bin/true'], /baton unit: Unknown option '--bogus'/],
      // Socket-activation options are checked as baton run checks them: a unit that could not start is never written.
      [['--name', 'kv', '--socket-activation', '--stop-signal', 'SIGFOO', '--', '/bin/true'], /socketActivation\.stopSignal: expected a signal name that stops a server.*\(got "SIGFOO"\)/],
      [['--name', 'kv', '--socket-activation', '--ready-http', 'healthz', '--', '/bin/true'], /socketActivation\.readyHttp: expected a URL path starting with "\/"/],
      [['--name', 'kv', '--socket-activation', '--stop-grace', 'soon', '--', '/bin/true'], /socketActivation\.stopGraceS: expected a number of seconds/],
      [['--name', 'kv', '--ready-after', '2', '--', '/bin/true'], /ready-after: expected only with --socket-activation/],
    ];
    for (const [args, msg] of refused) {
      const bad = await worlds.w.baton(['unit', ...args]);
      expect([args, bad.code, bad.stdout]).toEqual([args, 1, '']);
      expect(bad.stderr).toMatch(msg);
    }
  });

  it('--socket-activation: baton run gets the mode and its readiness and stop options, with systemd-bound sockets too', async () => {
    const args = ['unit', '--name', 'web', '--socket', '--socket-activation', '--ready-http', '/healthz', '--ready-after', '2', '--stop-signal', 'quit', '--stop-grace', '20', '--listen', 'http=tcp://127.0.0.1:8080', '--json', '--', '/usr/bin/gunicorn', '-w', '2', 'app:app'];
    const r = await worlds.w.baton(args);
    expect(r.code, r.stderr).toBe(0);
    const units = (JSON.parse(r.stdout) as { units: { file: string; content: string }[] }).units;
    expect(units.map((u) => u.file)).toEqual(['web.service', 'web.socket']);
    const words = execWords(unitLine(units[0]!.content, 'ExecStart'));
    const run = words.slice(words.indexOf('run'));
    expect(run).toEqual([
      'run', '--name', 'web', '--state-dir', '/var/lib/web/supervisor', '--data-dir', '/var/lib/web/data',
      '--socket-activation', '--ready-after', '2', '--ready-http', '/healthz', '--stop-signal', 'quit', '--stop-grace', '20', '--', '/usr/bin/gunicorn', '-w', '2', 'app:app',
    ]);
    expect(units[1]!.content).toMatch(/^ListenStream=127\.0\.0\.1:8080$/m);
    // What the unit starts parses as baton run reads it (the same checks as above, on the run side).
    const check = await worlds.w.baton(['run', ...run.slice(1, run.indexOf('--')), '--stop-signal', 'SIGFOO', '--', '/bin/true']);
    expect(check.code).toBe(1);
    expect(check.stderr).toMatch(/stopSignal/);
  });

  it('takes the name, listeners and command from --config, and passes the file on to baton run and upgrade', async () => {
    const dir = h.tempDir('baton-unit-');
    const config = path.join(dir, 'app.json');
    writeFileSync(config, JSON.stringify({ name: 'app', command: ['/srv/app/server'], listen: ['http=tcp://127.0.0.1:8081'], dataDir: 'data', stateDir: 'state' }));
    const r = await worlds.w.baton(['unit', '--config', config, '--socket', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const units = (JSON.parse(r.stdout) as { units: { file: string; content: string }[] }).units;
    expect(units.map((u) => u.file)).toEqual(['app.service', 'app.socket']);
    const words = execWords(unitLine(units[0]!.content, 'ExecStart'));
    expect(words.slice(words.indexOf('run'))).toEqual(['run', '--name', 'app', '--config', config, '--', '/srv/app/server']);
    expect(execWords(unitLine(units[0]!.content, 'ExecReload')).slice(-3)).toEqual(['upgrade', '--config', config]);
    expect(unitLine(units[1]!.content, 'ListenStream')).toBe('127.0.0.1:8081');
  });

  it('its ExecStart runs baton, and its ExecReload upgrades the service', async () => {
    const dir = h.tempDir('baton-unit-');
    const r = await worlds.w.baton(['unit', '--name', 'kv', '--state-dir', path.join(dir, 'state'), '--data-dir', path.join(dir, 'data'), '--listen', 'tcp://127.0.0.1:0', '--', ...PRIMITIVE]);
    expect(r.code, r.stderr).toBe(0);
    const [exe, ...args] = execWords(unitLine(r.stdout, 'ExecStart'));
    const run = h.spawn(exe!, args, { env: worlds.w.env() });
    const stateDir = path.join(dir, 'state');
    await pollUntil(async () => (await worlds.w.baton(['status', '--json', '--state-dir', stateDir])).code === 0, 'baton run from the unit to serve', 30_000, 100);
    const [rexe, ...rargs] = execWords(unitLine(r.stdout, 'ExecReload'));
    const reload = h.spawn(rexe!, rargs, { env: worlds.w.env() });
    const out = new LineReader(reload);
    expect(await exitOf(reload), out.stderr).toEqual({ code: 0, signal: null });
    expect(out.lines.at(-1)).toMatch(/^committed: generation 2 /);
    expect((await worlds.w.baton(['stop', '--state-dir', stateDir])).code).toBe(0);
    expect(await exitOf(run)).toEqual({ code: 0, signal: null });
  });
});

describe.skipIf(!canVerify)('baton unit, verified', () => {
  it('writes units that pass systemd-analyze verify (service alone; with --socket, one socket unit per listener); never replaces a file', async () => {
    const user = userInfo().username;
    const service = h.tempDir('baton-units-');
    const alone = await worlds.w.baton(['unit', '--name', 'kv', '--user', user, '--out-dir', service, '--listen', 'http=tcp://127.0.0.1:8080', '--', ...PRIMITIVE]);
    expect(alone.code, alone.stderr).toBe(0);
    expect(alone.stdout).toBe(`wrote ${path.join(service, 'kv.service')}\n`);
    const sockets = h.tempDir('baton-units-');
    const withSockets = await worlds.w.baton(['unit', '--name', 'kv', '--user', user, '--socket', '--out-dir', sockets, '--listen', 'http=tcp://[::1]:8080', '--listen', 'admin=unix:/run/kv/admin.sock?mode=0600', '--', ...PRIMITIVE]);
    expect(withSockets.code, withSockets.stderr).toBe(0);
    expect(readdirSync(sockets).sort()).toEqual(['kv-admin.socket', 'kv-http.socket', 'kv.service']);
    const unit = readFileSync(path.join(sockets, 'kv.service'), 'utf8');
    expect(unitLine(unit, 'Sockets')).toBe('kv-http.socket kv-admin.socket');
    expect(execWords(unitLine(unit, 'ExecStart'))).not.toContain('--listen'); // baton takes systemd's sockets
    expect(readFileSync(path.join(sockets, 'kv-admin.socket'), 'utf8')).toMatch(/^ListenStream=\/run\/kv\/admin\.sock\nSocketMode=0600\nFileDescriptorName=admin\nService=kv\.service$/m);
    expect(readFileSync(path.join(sockets, 'kv-http.socket'), 'utf8')).toMatch(/^ListenStream=\[::1\]:8080\nFileDescriptorName=http\n/m);
    for (const [dir, files] of [[service, ['kv.service']], [sockets, ['kv.service', 'kv-http.socket', 'kv-admin.socket']]] as const) {
      const r = spawnSync('systemd-analyze', ['verify', ...files], { cwd: dir, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr.split('\n').filter((l) => /kv[.-]/.test(l))).toEqual([]);
    }
    const again = await worlds.w.baton(['unit', '--name', 'kv', '--out-dir', service, '--', ...PRIMITIVE]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`baton unit: ${path.join(service, 'kv.service')} exists; remove it first`);
  });
});
