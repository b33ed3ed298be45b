import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isAlive, processStartTime, waitForExit } from '../src/os/proc.js';
import { Harness, LineReader, pollUntil } from './support/harness.js';

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1', () => {
      sock.destroy();
      resolve(true);
    });
    sock.on('error', () => resolve(false));
  });
}

const h = new Harness();
afterEach(() => h.cleanup());

describe('proc', () => {
  it('reads the start time even when comm contains spaces and parens', async () => {
    const child = h.spawn(process.execPath, ['-e', `process.title = 'x) y (z) '; console.log('ready'); setInterval(() => {}, 1000)`]);
    await new LineReader(child).next<string>(() => true, 'ready');
    const st = processStartTime(child.pid!);
    expect(st).toMatch(/^\d+$/);
    expect(processStartTime(process.pid)).toMatch(/^\d+$/);
    expect(isAlive(child.pid!, st)).toBe(true);
    expect(isAlive(child.pid!, String(BigInt(st!) + 1n))).toBe(false); // "pid reused"
  });

  it('a zombie (killed, never reaped) counts as dead; waitForExit sees it', async () => {
    // `sleep 30 &` becomes a child of `sleep 60` after the exec; sleep never calls wait(),
    // so once killed it stays a zombie for as long as its parent lives.
    const parent = h.spawn('sh', ['-c', 'sleep 30 & echo $!; exec sleep 60']);
    const pid = Number(await new LineReader(parent).next<string>((l) => /^\d+$/.test(String(l)), 'grandchild pid'));
    const st = processStartTime(pid);
    expect(isAlive(pid, st)).toBe(true);
    expect(await waitForExit(pid, 50, st)).toBe(false);
    process.kill(pid, 'SIGKILL');
    expect(await waitForExit(pid, 5000, st)).toBe(true);
    expect(processStartTime(pid)).toBe(st); // still in /proc: a zombie, yet not alive
    expect(() => process.kill(pid, 0)).not.toThrow();
    expect(isAlive(pid)).toBe(false);
  });

  it('a process whose main thread exited while another thread still runs is alive (its sockets are still bound) until that thread ends', async () => {
    // The main thread leaves with pthread_exit (not exit_group): /proc/<pid>/stat turns Z,
    // but the other thread keeps the shared fd table, and with it the listening socket.
    const release = path.join(h.tempDir('proc-'), 'release');
    const py = [
      'import ctypes, os, socket, sys, threading, time',
      "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(8)",
      'print(s.getsockname()[1], flush=True)',
      'def hold():',
      '    while not os.path.exists(sys.argv[1]): time.sleep(0.01)',
      'threading.Thread(target=hold).start()',
      'ctypes.CDLL(None).pthread_exit(None)',
    ].join('\n');
    const child = h.spawn('python3', ['-c', py, release]);
    const port = Number(await new LineReader(child).next<string>((l) => /^\d+$/.test(String(l)), 'port'));
    const pid = child.pid!;
    const st = processStartTime(pid);
    await pollUntil(async () => readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.startsWith('Z') || undefined, 'the main thread to exit (state Z)', 5000);
    expect(isAlive(pid, st)).toBe(true);
    expect(await waitForExit(pid, 100, st)).toBe(false);
    expect(await canConnect(port)).toBe(true); // still listening: a rebind would fail
    writeFileSync(release, '');
    expect(await waitForExit(pid, 5000, st)).toBe(true);
    expect(await canConnect(port)).toBe(false);
  });

  it('rejects pids that would address process groups', () => {
    expect(isAlive(0)).toBe(false);
    expect(isAlive(-1)).toBe(false);
    expect(isAlive(1.5)).toBe(false);
    expect(processStartTime(0)).toBeUndefined();
    expect(isAlive(process.pid)).toBe(true);
    expect(isAlive(2 ** 22 + 12345)).toBe(false);
  });
});
