/**
 * systemd integration through the real binary: the exact sd_notify sequence for start,
 * a committed and an aborted upgrade, and stop (against a fake NOTIFY_SOCKET, a unix
 * datagram receiver in Python since Node cannot open one; messages are sent by the
 * real systemd-notify), the watchdog, and `systemd-analyze verify` on the example units.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { healthz, PRIMITIVE, ROOT } from './support/engine.js';
import { exitOf, Harness, LineReader, pollUntil } from './support/harness.js';
import { CLI, useCliWorlds, writeScript } from './support/cli.js';

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
