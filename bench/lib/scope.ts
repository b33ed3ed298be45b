/**
 * Everything one benchmark starts, so it can all be taken down: child processes
 * (tracked, and tagged with BATON_BENCH_TAG in their env so grandchildren such as a
 * PM2 daemon and its workers can be found in /proc), temp dirs, and cleanup hooks.
 * `close()` runs the hooks, stops the children (SIGTERM, then SIGKILL), kills any
 * tagged process that is still alive (by pid, and reports it), and removes the dirs.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The checkout root (dist/bench/lib → ../../..). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const DIST = path.join(ROOT, 'dist');
export const CLI = path.join(DIST, 'src/cli.js');
export const KV_APP = path.join(DIST, 'fixtures/kv/main.js');
export const HELLO_APP = path.join(DIST, 'bench/apps/hello.js');

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const open = new Set<Scope>();

export class Scope {
  readonly tag = randomUUID();
  private readonly children = new Set<ChildProcess>();
  private readonly dirs: string[] = [];
  private readonly hooks: (() => Promise<void> | void)[] = [];
  /** Pids that were still alive at close and had to be killed. */
  leftovers: number[] = [];

  constructor(readonly name: string) {
    open.add(this);
  }

  env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
    return { ...process.env, BATON_BENCH_TAG: this.tag, ...extra };
  }

  spawn(command: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn(command, args, { stdio: 'ignore', ...opts, env: { ...(opts.env ?? process.env), BATON_BENCH_TAG: this.tag } });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    child.once('error', () => this.children.delete(child));
    return child;
  }

  tempDir(prefix = 'baton-bench-'): string {
    const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
    this.dirs.push(dir);
    return dir;
  }

  /** Runs at close, before the processes are stopped (newest first). */
  onClose(fn: () => Promise<void> | void): void {
    this.hooks.unshift(fn);
  }

  async close(): Promise<void> {
    if (!open.delete(this)) return;
    for (const fn of this.hooks) {
      try {
        await fn();
      } catch (err) {
        console.error(`[${this.name}] cleanup: ${(err as Error).message}`);
      }
    }
    for (const child of this.children) child.kill('SIGTERM');
    const until = Date.now() + 5_000;
    while (this.children.size > 0 && Date.now() < until) await sleep(20);
    for (const child of this.children) child.kill('SIGKILL');
    // Whatever still carries our tag (a PM2 daemon, an app a dead supervisor left): by pid.
    for (let i = 0; i < 50; i++) {
      const pids = await taggedPids(this.tag);
      if (pids.length === 0) break;
      if (i === 10) {
        this.leftovers = pids;
        for (const pid of pids) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone
          }
        }
      }
      await sleep(50);
    }
    for (const dir of this.dirs) rmSync(dir, { recursive: true, force: true });
  }
}

/** Closes every scope still open (Ctrl-C, a crashed benchmark). */
export async function closeAllScopes(): Promise<void> {
  for (const s of [...open]) await s.close();
}

/** Live (non-zombie) processes whose environment carries BATON_BENCH_TAG=tag. */
export async function taggedPids(tag: string): Promise<number[]> {
  const pids: number[] = [];
  const want = `BATON_BENCH_TAG=${tag}`;
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const envText = await readFile(`/proc/${entry}/environ`, 'latin1');
      if (!envText.split('\0').includes(want)) continue;
      const stat = await readFile(`/proc/${entry}/stat`, 'latin1');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) continue;
      pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** Exit of a child as a promise (resolves at once if it already exited). */
export function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

/** Polls `fn` until it returns a value other than undefined; throws after `timeoutMs`. */
export async function waitFor<T>(fn: () => Promise<T | undefined> | T | undefined, what: string, timeoutMs = 30_000, everyMs = 20): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await sleep(everyMs);
  }
}

/** A port that was free a moment ago (for the apps that bind their own listener). */
export async function freePort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export function rssKb(pid: number): Promise<number> {
  return readFile(`/proc/${pid}/status`, 'utf8').then((t) => Number(/VmRSS:\s+(\d+)/.exec(t)?.[1] ?? NaN));
}

export function fdCount(pid: number): Promise<number> {
  return readdir(`/proc/${pid}/fd`).then((l) => l.length);
}
