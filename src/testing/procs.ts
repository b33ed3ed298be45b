/**
 * Leftover-process detection for tests, by an env tag: every process a test starts
 * (directly or through a Supervisor) carries `BATON_TEST_TAG=<tag>` in its
 * environment, and /proc tells us which live processes still do. The one
 * implementation behind `baton/testing` and baton's own suites
 * (test/support/engine.ts re-exports it). Linux only (/proc).
 */
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';

/** The env variable that marks the processes of one test. */
export const TEST_TAG_ENV = 'BATON_TEST_TAG';

export function newTag(): string {
  return randomUUID();
}

/** A live (not zombie) process carrying the tag, with its environment and parent. */
export interface TaggedProcess {
  pid: number;
  ppid: number;
  env: Record<string, string>;
}

function parse(pid: number, environ: string, stat: string, tag: string): TaggedProcess | undefined {
  const entries = environ.split('\0');
  if (!entries.includes(`${TEST_TAG_ENV}=${tag}`)) return undefined;
  // Fields after the last ')' (comm may contain anything): state, ppid, ...
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (fields[0] === 'Z' || fields[0] === 'X') return undefined;
  const env: Record<string, string> = {};
  for (const e of entries) {
    const eq = e.indexOf('=');
    if (eq > 0) env[e.slice(0, eq)] = e.slice(eq + 1);
  }
  return { pid, ppid: Number(fields[1]), env };
}

/** Live processes whose environment carries BATON_TEST_TAG=tag. */
export async function taggedProcesses(tag: string): Promise<TaggedProcess[]> {
  const found: TaggedProcess[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const environ = await readFile(`/proc/${entry}/environ`, 'latin1');
      if (!environ.includes(tag)) continue;
      const p = parse(Number(entry), environ, await readFile(`/proc/${entry}/stat`, 'latin1'), tag);
      if (p) found.push(p);
    } catch {
      // Gone meanwhile, or not ours to read.
    }
  }
  return found;
}

/** The same, synchronously (for a process 'exit' handler). */
export function taggedProcessesSync(tag: string): TaggedProcess[] {
  const found: TaggedProcess[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const environ = readFileSync(`/proc/${entry}/environ`, 'latin1');
      if (!environ.includes(tag)) continue;
      const p = parse(Number(entry), environ, readFileSync(`/proc/${entry}/stat`, 'latin1'), tag);
      if (p) found.push(p);
    } catch {
      // Gone meanwhile, or not ours to read.
    }
  }
  return found;
}

/** Pids of live processes whose environment carries BATON_TEST_TAG=tag. */
export async function taggedPids(tag: string): Promise<number[]> {
  return (await taggedProcesses(tag)).map((p) => p.pid);
}

/** SIGKILLs whatever still carries the tag (SIGCONT first does not matter: SIGKILL ends a stopped process too); returns those pids. */
export async function killTagged(tag: string): Promise<number[]> {
  const pids = await taggedPids(tag);
  for (const pid of pids) kill(pid, 'SIGKILL');
  return pids;
}

export function killTaggedSync(tag: string): number[] {
  const pids = taggedProcessesSync(tag).map((p) => p.pid);
  for (const pid of pids) kill(pid, 'SIGKILL');
  return pids;
}

function kill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}
