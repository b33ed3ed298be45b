/**
 * Driving the real `baton` binary (dist/src/cli.js) in tests: one-shot commands with
 * their exit code and output, and a `baton run` daemon with its state dir, port and
 * stderr. Every process carries BATON_TEST_TAG so the suite can prove none is left.
 */
import type { ChildProcess } from 'node:child_process';
import { writeFileSync, renameSync, chmodSync } from 'node:fs';
import path from 'node:path';
import { afterEach, expect } from 'vitest';
import { shebangNodeArgs } from '../../bench/lib/shebang.js';
import type { JobRecord } from '../../src/daemon/jobs.js';
import { killTagged, newTag, PRIMITIVE, ROOT, taggedPids } from './engine.js';
import { exitOf, Harness, LineReader, pollUntil } from './harness.js';

export const CLI = path.join(ROOT, 'dist/src/cli.js');
/** The node flags in the bin's shebang: tests run the supervisor as installed. */
export const CLI_NODE_ARGS = shebangNodeArgs(CLI);

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface DaemonHandle {
  child: ChildProcess;
  out: LineReader;
  dir: string;
  stateDir: string;
  dataDir: string;
  port: number;
}

export class CliWorld {
  constructor(
    readonly h: Harness,
    readonly tag: string,
  ) {}

  env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
    return { ...process.env, BATON_TEST_TAG: this.tag, BATON_LOG_LEVEL: process.env.BATON_TEST_LOG_LEVEL ?? 'warn', ...extra };
  }

  /** Runs `baton ARGS` to completion. */
  async baton(args: string[], extraEnv: Record<string, string> = {}, timeoutMs = 60_000): Promise<CliResult> {
    const child = this.h.spawn(process.execPath, [...CLI_NODE_ARGS, CLI, ...args], { env: this.env(extraEnv) });
    return collect(child, timeoutMs);
  }

  /** Starts `baton baton run ...` in the background (not awaited). */
  spawnBaton(args: string[], extraEnv: Record<string, string> = {}): ChildProcess {
    return this.h.spawn(process.execPath, [...CLI_NODE_ARGS, CLI, ...args], { env: this.env(extraEnv) });
  }

  /**
   * `baton run --listen tcp://127.0.0.1:0 --data-dir D --state-dir S [extra] -- COMMAND`,
   * waiting until `baton status` answers with generation ≥ 1.
   */
  async startDaemon(opts: { extraArgs?: string[]; env?: Record<string, string>; command?: string[]; dir?: string; /** null: no --listen (the config file's "listen") */ listen?: string | null; /** false: no --data-dir/--state-dir (the config file names them as dir/data and dir/state) */ dirFlags?: boolean } = {}): Promise<DaemonHandle> {
    const dir = opts.dir ?? this.h.tempDir('baton-cli-');
    const stateDir = path.join(dir, 'state');
    const dataDir = path.join(dir, 'data');
    const child = this.h.spawn(
      process.execPath,
      [...CLI_NODE_ARGS, CLI, 'run', ...(opts.listen === null ? [] : ['--listen', opts.listen ?? 'tcp://127.0.0.1:0']), ...(opts.dirFlags === false ? [] : ['--data-dir', dataDir, '--state-dir', stateDir]), ...(opts.extraArgs ?? []), '--', ...(opts.command ?? PRIMITIVE)],
      { env: this.env(opts.env) },
    );
    const out = new LineReader(child);
    const status = await pollUntil(
      async () => {
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`baton run exited (${child.exitCode ?? child.signalCode}): ${out.stderr}`);
        const r = await this.baton(['status', '--json', '--state-dir', stateDir]);
        if (r.code !== 0) return undefined;
        const s = JSON.parse(r.stdout) as Status;
        return s.app && s.app.generation >= 1 ? s : undefined;
      },
      'baton run to serve',
      30_000,
      100,
    );
    const port = Number(status.listeners[0]!.address.split(':').pop());
    return { child, out, dir, stateDir, dataDir, port };
  }

  /** `baton stop`, which must answer "stopped" and make `baton run` exit 0. */
  async stop(d: DaemonHandle): Promise<void> {
    const r = await this.baton(['stop', '--state-dir', d.stateDir]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('stopped');
    expect(await exitOf(d.child)).toEqual({ code: 0, signal: null });
  }

  /** `baton history --json`: the job records, newest first. */
  async history(d: DaemonHandle, limit = 100): Promise<JobRecord[]> {
    const r = await this.baton(['history', '--json', '--limit', String(limit), '--state-dir', d.stateDir]);
    expect(r.code, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as { jobs: JobRecord[] }).jobs;
  }

  async status(d: DaemonHandle): Promise<Status> {
    const r = await this.baton(['status', '--json', '--state-dir', d.stateDir]);
    if (r.code !== 0) throw new Error(`baton status failed (${r.code}): ${r.stderr}`);
    return JSON.parse(r.stdout) as Status;
  }
}

export interface Status {
  supervisor: { pid: number; uptimeS: number; stateDir: string };
  app: { pid: number; generation: number } | null;
  health: { status: string; detail: string };
  phase: string;
  listeners: { name: string; address: string }[];
  lock: { pid: number; alive: boolean } | null;
  lastHandoff: { state: string; trigger: string; handoff?: { newPid: number; generation: number } } | null;
}

export function collect(child: ChildProcess, timeoutMs = 60_000): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr?.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return exitOf(child).then(({ code, signal }) => {
    clearTimeout(timer);
    return { code, signal, stdout, stderr };
  });
}

/** Writes an executable shell script atomically (rename over the old one): a "deploy". */
export function writeScript(file: string, body: string): void {
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, `#!/bin/sh\n${body}\n`);
  chmodSync(tmp, 0o755);
  renameSync(tmp, file);
}

/**
 * A fresh CliWorld (and env tag) per test; after each test, waits for every process
 * carrying the tag to exit (killing stragglers), cleans up, and fails the test if
 * anything had to be killed.
 */
export function useCliWorlds(h: Harness): { readonly w: CliWorld; readonly tag: string } {
  const state = { tag: newTag(), w: undefined as unknown as CliWorld };
  state.w = new CliWorld(h, state.tag);
  afterEach(async () => {
    const tag = state.tag;
    const leftovers = await pollUntil(async () => ((await taggedPids(tag)).length === 0 ? [] : undefined), 'no tagged process left', 15_000).catch(() =>
      killTagged(tag),
    );
    await h.cleanup();
    state.tag = newTag();
    state.w = new CliWorld(h, state.tag);
    expect(leftovers).toEqual([]);
  });
  return state;
}
