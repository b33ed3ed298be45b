import { readdirSync, readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import os from 'node:os';

/**
 * CPU priority (nice value) of another process (Linux). Nice is per thread on Linux:
 * `setpriority(PRIO_PROCESS, pid)` (os.setPriority) changes only the thread whose id
 * is `pid`, and a new thread starts with its creator's value. So a whole process is
 * set thread by thread (/proc/<pid>/task), its main thread first: the threads it
 * creates afterwards inherit the value.
 *
 * Lowering one's own processes' priority (raising nice) is always allowed; raising it
 * back needs CAP_SYS_NICE, or an RLIMIT_NICE that reaches the old value (sched(7):
 * an unprivileged thread may go down to nice 20 − RLIMIT_NICE; the default limit 0
 * allows no decrease at all).
 */

/** CAP_SYS_NICE's bit in /proc/<pid>/status CapEff (linux/capability.h). */
const CAP_SYS_NICE = 23n;

/**
 * Why a nice value raised above `base` could not be set back to `base` by this
 * process, or undefined when it can (as far as /proc/self tells: CAP_SYS_NICE in our
 * effective set, or a soft RLIMIT_NICE of at least 20 − base). A capability held only
 * in a user namespace does not count for the kernel's check; callers confirm with a
 * real restore (see BootPriority).
 */
export function cannotRestoreNice(base: number, procSelf = '/proc/self'): string | undefined {
  if (process.platform !== 'linux') return `not on Linux (${process.platform})`;
  let status: string;
  let limits: string;
  try {
    status = readFileSync(`${procSelf}/status`, 'utf8');
    limits = readFileSync(`${procSelf}/limits`, 'utf8');
  } catch (err) {
    return `cannot read ${procSelf}: ${(err as Error).message}`;
  }
  const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
  if (capEff && (BigInt(`0x${capEff}`) >> CAP_SYS_NICE) & 1n) return undefined;
  const soft = /^Max nice priority\s+(\S+)/m.exec(limits)?.[1];
  if (soft === 'unlimited' || (soft !== undefined && 20 - Number(soft) <= base)) return undefined;
  return `no CAP_SYS_NICE, and RLIMIT_NICE ${soft ?? 'unknown'} allows no nice below ${soft === undefined ? '?' : 20 - Number(soft)} (raise it to ${20 - base}, e.g. systemd LimitNICE=${base >= 0 ? '+' : ''}${base})`;
}

/**
 * Sets every thread of `pid` to `nice`, its main thread first. Returns how many
 * threads were set and the first error (EACCES: not allowed; ESRCH: the process or a
 * thread is gone, which is not an error and is skipped).
 */
export function setProcessNice(pid: number, nice: number): { threads: number; error?: NodeJS.ErrnoException } {
  let threads = 0;
  let error: NodeJS.ErrnoException | undefined;
  const set = (tid: number) => {
    try {
      os.setPriority(tid, nice);
      threads++;
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { info?: { code?: string } };
      if (e.info?.code !== 'ESRCH' && e.code !== 'ESRCH') error ??= e;
    }
  };
  set(pid);
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    // gone, or no procfs: the main thread was all we could do
  }
  for (const t of tids) if (Number(t) !== pid) set(Number(t));
  return { threads, ...(error && { error }) };
}

/**
 * The other processes of process group `pgid` (e.g. the server a wrapper script or
 * `npm start` started), by a scan of /proc: several ms on a busy machine, so callers
 * keep it off latency-critical paths.
 */
export async function groupMembers(pgid: number): Promise<number[]> {
  const out: number[] = [];
  for (const e of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(e) || Number(e) === pgid) continue;
    try {
      const stat = await readFile(`/proc/${e}/stat`, 'latin1');
      // Fields after the last ')': state, ppid, pgrp, …
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]) === pgid) out.push(Number(e));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}
