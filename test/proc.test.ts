import { afterEach, describe, expect, it } from 'vitest';
import { isAlive, processStartTime, waitForExit } from '../src/proc.js';
import { Harness, LineReader } from './support/harness.js';

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

  it('rejects pids that would address process groups', () => {
    expect(isAlive(0)).toBe(false);
    expect(isAlive(-1)).toBe(false);
    expect(isAlive(1.5)).toBe(false);
    expect(processStartTime(0)).toBeUndefined();
    expect(isAlive(process.pid)).toBe(true);
    expect(isAlive(2 ** 22 + 12345)).toBe(false);
  });
});
