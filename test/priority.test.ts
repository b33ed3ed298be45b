import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import type { Logger } from '../src/os/log.js';
import { cannotRestoreNice, setProcessNice } from '../src/os/priority.js';
import { BootPriority } from '../src/supervisor/boot-priority.js';
import { ROOT } from './support/engine.js';
import { Harness, LineReader } from './support/harness.js';
import { threadNices } from './support/nice.js';

const h = new Harness();
afterEach(() => h.cleanup());

/** A fake /proc/self with these capabilities (hex) and soft RLIMIT_NICE. */
function fakeProcSelf(capEff: string, niceLimit: string): string {
  const dir = path.join(h.tempDir('baton-prio-'), 'self');
  mkdirSync(dir);
  writeFileSync(path.join(dir, 'status'), `Name:\tnode\nCapInh:\t0000000000000000\nCapPrm:\t${capEff}\nCapEff:\t${capEff}\nCapBnd:\t000001ffffffffff\n`);
  writeFileSync(path.join(dir, 'limits'), `Limit                     Soft Limit           Hard Limit           Units     \nMax open files            1024                 4096                 files     \nMax nice priority         ${niceLimit}                    ${niceLimit}                    \n`);
  return dir;
}

const NO_CAPS = '0000000000000000';
const CAP_SYS_NICE_ONLY = (1n << 23n).toString(16).padStart(16, '0');
const ALL_BUT_SYS_NICE = (0x1ffffffffffn & ~(1n << 23n)).toString(16).padStart(16, '0');

function recordingLog(): Logger & { lines: { level: string; obj: Record<string, unknown> }[] } {
  const lines: { level: string; obj: Record<string, unknown> }[] = [];
  const at = (level: string) => (obj: Record<string, unknown>) => void lines.push({ level, obj });
  return { lines, info: at('info'), warn: at('warn'), error: at('error'), debug: at('debug') } as unknown as Logger & { lines: typeof lines };
}

describe('priority: may a lowered priority be restored?', () => {
  it('yes with CAP_SYS_NICE, or with an RLIMIT_NICE reaching the old value; no otherwise, saying why and what to raise', () => {
    expect(cannotRestoreNice(0, fakeProcSelf(CAP_SYS_NICE_ONLY, '0'))).toBeUndefined();
    expect(cannotRestoreNice(0, fakeProcSelf(NO_CAPS, '20'))).toBeUndefined();
    expect(cannotRestoreNice(0, fakeProcSelf(NO_CAPS, 'unlimited'))).toBeUndefined();
    expect(cannotRestoreNice(5, fakeProcSelf(NO_CAPS, '15'))).toBeUndefined();
    // Every capability but CAP_SYS_NICE, the default limit: no (root in a container without it).
    expect(cannotRestoreNice(0, fakeProcSelf(ALL_BUT_SYS_NICE, '0'))).toMatch(/no CAP_SYS_NICE, and RLIMIT_NICE 0 allows no nice below 20 \(raise it to 20, e\.g\. systemd LimitNICE=\+0\)/);
    expect(cannotRestoreNice(4, fakeProcSelf(NO_CAPS, '15'))).toMatch(/RLIMIT_NICE 15 allows no nice below 5 \(raise it to 16/);
    expect(cannotRestoreNice(0, path.join(h.tempDir('baton-prio-'), 'missing'))).toMatch(/cannot read/);
  });

  it('where it may not, successors are not lowered at all (said once), so none is left at a low priority', () => {
    const log = recordingLog();
    const boot = new BootPriority(10, log, fakeProcSelf(NO_CAPS, '0'));
    const a = h.spawn('sleep', ['30']);
    const b = h.spawn('sleep', ['30']);
    expect(boot.lower(a.pid!, 60_000)).toBe(false);
    expect(boot.lower(b.pid!, 60_000)).toBe(false);
    expect(os.getPriority(a.pid!)).toBe(os.getPriority());
    expect(os.getPriority(b.pid!)).toBe(os.getPriority());
    expect(log.lines.map((l) => l.obj.event)).toEqual(['handoff.boot_priority_off']);
    expect(String(log.lines[0]!.obj.reason)).toMatch(/RLIMIT_NICE 0/);
  });
});

/** Root that can drop CAP_SYS_NICE for a child (setpriv): the case of a capability the kernel does not honour. */
const canDropSysNice = (() => {
  if (process.getuid?.() !== 0) return false;
  try {
    execFileSync('setpriv', ['--inh-caps=-sys_nice', '--bounding-set=-sys_nice', 'true'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

describe('priority: a check that says yes where the kernel says no', () => {
  it.skipIf(!canDropSysNice)('the first successor proves the way back: when it fails, nothing is lowered (that one keeps nice + 1 on its main thread)', () => {
    // A supervisor process without CAP_SYS_NICE whose /proc check is told it has it (as in a user namespace).
    const script = `
      const os = require('node:os');
      const { spawn } = require('node:child_process');
      import(${JSON.stringify(path.join(ROOT, 'dist/src/supervisor/boot-priority.js'))}).then(({ BootPriority }) => {
        const lines = [];
        const log = { info: (o) => lines.push(o.event), warn: (o) => lines.push(o.event) };
        const boot = new BootPriority(10, log, process.argv[1]);
        const a = spawn('sleep', ['30']);
        const b = spawn('sleep', ['30']);
        const out = { lowered: [boot.lower(a.pid, 60000), boot.lower(b.pid, 60000)], nices: [os.getPriority(a.pid), os.getPriority(b.pid)], base: os.getPriority(), lines };
        a.kill('SIGKILL');
        b.kill('SIGKILL');
        console.log(JSON.stringify(out));
      });`;
    const out = JSON.parse(execFileSync('setpriv', ['--inh-caps=-sys_nice', '--bounding-set=-sys_nice', process.execPath, '-e', script, fakeProcSelf(CAP_SYS_NICE_ONLY, '0')], { encoding: 'utf8' })) as {
      lowered: boolean[];
      nices: number[];
      base: number;
      lines: string[];
    };
    expect(out.lowered).toEqual([false, false]);
    expect(out.nices).toEqual([Math.min(19, out.base + 1), out.base]);
    expect(out.lines).toEqual(['handoff.boot_priority_off']);
  });
});

describe('priority: a whole process', () => {
  it('setProcessNice sets every thread, and threads started later inherit the value', async () => {
    const base = os.getPriority();
    // A node process with a worker thread started on "go" (after the change), printing its thread count.
    const child = h.spawn(process.execPath, [
      '-e',
      `const { Worker } = require('node:worker_threads');
       console.log('up');
       process.stdin.once('data', () => { new Worker('setInterval(() => {}, 1000)', { eval: true }).on('online', () => console.log('worker')); });
       setInterval(() => {}, 1000);`,
    ], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out = new LineReader(child);
    await out.next<string>((l) => l === 'up', 'up');
    const before = threadNices(child.pid!).length;
    expect(before).toBeGreaterThan(1); // node's own threads (V8 platform, libuv)
    const r = setProcessNice(child.pid!, Math.min(19, base + 3));
    expect(r.error).toBeUndefined();
    expect(r.threads).toBe(before);
    expect(new Set(threadNices(child.pid!))).toEqual(new Set([Math.min(19, base + 3)]));
    child.stdin!.write('go\n');
    await out.next<string>((l) => l === 'worker', 'worker online');
    expect(threadNices(child.pid!).length).toBeGreaterThan(before);
    expect(new Set(threadNices(child.pid!))).toEqual(new Set([Math.min(19, base + 3)]));
    // A process that is gone is no error.
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(setProcessNice(child.pid!, base).error).toBeUndefined();
  });
});
