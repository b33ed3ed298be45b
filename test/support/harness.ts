import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

/**
 * Test harness for suites that spawn real processes: every child started through a
 * Harness is SIGKILLed and reaped, and every temp dir removed, in `cleanup()` (call it
 * from afterEach) — also when the test failed half-way.
 */
export class Harness {
  private readonly children = new Set<ChildProcess>();
  private readonly dirs: string[] = [];

  tempDir(prefix = 'baton-test-'): string {
    const dir = mkdtempSync(path.join(tmpdir(), prefix));
    this.dirs.push(dir);
    return dir;
  }

  spawn(command: string, args: string[], options: SpawnOptions = {}): ChildProcess {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /** Spawn `node <script> ...args`. */
  node(script: string, args: string[] = [], options: SpawnOptions = {}): ChildProcess {
    return this.spawn(process.execPath, [script, ...args], options);
  }

  async cleanup(): Promise<void> {
    const pending = [...this.children].map(async (child) => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = exitOf(child);
        try {
          child.kill('SIGKILL');
        } catch {
          /* already gone */
        }
        await exited;
      }
    });
    await Promise.all(pending);
    this.children.clear();
    for (const dir of this.dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  }
}

export function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

/** Poll `check` until it returns a value other than undefined/false; fail after `timeoutMs`. */
export async function pollUntil<T>(
  check: () => T | undefined | false | Promise<T | undefined | false>,
  what: string,
  timeoutMs = 10_000,
  intervalMs = 10,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/**
 * Collects a child's stdout as lines; `next(pred)` waits for a matching line (JSON lines
 * are parsed). Lets tests wait for a fixture to report "acquired" etc. instead of sleeping.
 */
export class LineReader {
  readonly lines: unknown[] = [];
  private waiters: Array<() => void> = [];
  private buffered = '';
  stderr = '';

  constructor(readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      this.buffered += chunk;
      let nl: number;
      while ((nl = this.buffered.indexOf('\n')) >= 0) {
        const line = this.buffered.slice(0, nl);
        this.buffered = this.buffered.slice(nl + 1);
        let parsed: unknown = line;
        try {
          parsed = JSON.parse(line);
        } catch {
          /* plain text line */
        }
        this.lines.push(parsed);
      }
      this.wake();
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => (this.stderr += chunk));
    child.once('exit', () => this.wake());
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  async next<T = Record<string, unknown>>(pred: (line: T) => boolean, what: string, timeoutMs = 10_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = (this.lines as T[]).find((l) => l !== null && pred(l));
      if (hit !== undefined) return hit;
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`child exited (${this.child.exitCode ?? this.child.signalCode}) before ${what}; stderr:\n${this.stderr}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; stderr:\n${this.stderr}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}
