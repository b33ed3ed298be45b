import { existsSync, readdirSync, readFileSync } from 'node:fs';

/**
 * Process identity and liveness from /proc (Linux).
 *
 * A pid alone is not an identity: pids are reused. A (pid, start time) pair is:
 * field 22 of /proc/<pid>/stat is the start time in clock ticks since boot and
 * never changes for the life of a process.
 */

interface ProcStat {
  /** Field 3: R, S, D, T, t, Z, X, ... */
  state: string;
  /** Field 22, kept as a decimal string (it can exceed 2^53 on long uptimes in theory). */
  startTime: string;
  /** Process group id (field 5). */
  pgrp: number;
}

const procfsMounted = existsSync('/proc/self/stat');

function readProcStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // Field 2 (comm) is "(name)" and the name may itself contain spaces and ')':
  // everything after the LAST ')' is space-separated fields 3, 4, ...
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  const fields = text.slice(close + 1).trim().split(/\s+/);
  const state = fields[0];
  const startTime = fields[22 - 3];
  if (state === undefined || startTime === undefined || !/^\d+$/.test(startTime)) return undefined;
  return { state, startTime, pgrp: Number(fields[5 - 3]) };
}

function isValidPid(pid: number): boolean {
  // pid 0 / negative pids address process groups in kill(2): never probe those.
  return Number.isSafeInteger(pid) && pid > 0;
}

/** Start time (field 22 of /proc/<pid>/stat) or undefined if the process does not exist. */
export function processStartTime(pid: number): string | undefined {
  if (!isValidPid(pid)) return undefined;
  return readProcStat(pid)?.startTime;
}

/** True if `pid` leads its own process group (an app baton started: it runs in a session of its own). */
export function isGroupLeader(pid: number): boolean {
  if (!isValidPid(pid)) return false;
  return readProcStat(pid)?.pgrp === pid;
}

/**
 * SIGKILLs what is left of the process group `pgid` (the app's own children: a shell's
 * `sleep`, worker processes). Only call it for a group baton started and whose leader
 * has just been seen to exit, so the id cannot have been reused. False if nobody was left.
 */
export function killGroup(pgid: number): boolean {
  if (!isValidPid(pgid)) return false;
  try {
    process.kill(-pgid, 'SIGKILL');
    return true;
  } catch {
    return false;
  }
}

/**
 * True if `pid` names a running (not zombie) process, or one whose threads are still
 * exiting (see threadsStillExiting); with `startTime`, also that it is
 * the same process that had that start time (guards against pid reuse).
 * EPERM from kill(pid, 0) means "exists, owned by someone else": alive.
 */
export function isAlive(pid: number, startTime?: string): boolean {
  if (!isValidPid(pid)) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ESRCH') return false;
    if (code !== 'EPERM') throw err;
  }
  if (!procfsMounted) return true; // cannot refine without /proc; kill(0) said it exists
  const stat = readProcStat(pid);
  if (stat === undefined) return false; // vanished between kill() and the read
  if (startTime !== undefined && stat.startTime !== startTime) return false; // pid reused
  if (stat.state === 'Z' || stat.state === 'X') return threadsStillExiting(pid); // exited, not yet reaped
  return true;
}

/**
 * /proc/<pid>/stat shows the thread-group leader. It turns Z as soon as the main
 * thread has exited, while the process's other threads (a Node worker, libuv's pool,
 * one in the middle of an fsync) may still be on their way out. They share the fd
 * table, which is released by the last of them: until then the process's listening
 * sockets are still bound (a rebind fails with EADDRINUSE, seen in cli.test's
 * takeover under load) and a write a thread had started can still land. So a zombie
 * leader counts as gone only once it is the only task left.
 */
function threadsStillExiting(pid: number): boolean {
  try {
    return readdirSync(`/proc/${pid}/task`).some((tid) => tid !== String(pid));
  } catch {
    return false; // reaped meanwhile
  }
}

/**
 * Poll until the process is gone (see isAlive). Resolves true when it exited,
 * false if it was still alive after `timeoutMs`.
 */
export async function waitForExit(pid: number, timeoutMs: number, startTime?: string): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let delay = 5;
  for (;;) {
    if (!isAlive(pid, startTime)) return true;
    const left = deadline - Date.now();
    if (left <= 0) return false;
    await new Promise((resolve) => setTimeout(resolve, Math.min(delay, left)));
    delay = Math.min(delay * 2, 50);
  }
}
