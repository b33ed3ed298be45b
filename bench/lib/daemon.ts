/**
 * A real `baton run` supervisor in its own process, as a user runs it: listener on
 * 127.0.0.1 (port chosen by the kernel), data and state dirs in the scope's temp
 * dir, the supervisor's and the apps' logs (pino JSON on stderr) in a file so a
 * handoff's timeline can be read back across processes. Upgrades go through the
 * admin API (`POST /v1/upgrade`, what `baton upgrade` uses) or the CLI itself.
 */
import type { ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { adminRequest } from '../../src/daemon/admin.js';
import type { JobRecord } from '../../src/daemon/jobs.js';
import { shebangNodeArgs } from './shebang.js';
import { CLI, exited, fdCount, rssKb, type Scope, waitFor } from './scope.js';

/** The node flags in the `baton` bin's shebang: `baton run` is measured as installed. */
export const CLI_SHEBANG_ARGS: string[] = shebangNodeArgs(CLI);

export interface LogEvent {
  time: number;
  pid: number;
  event?: string;
  [k: string]: unknown;
}

export class BatonDaemon {
  readonly dir: string;
  readonly stateDir: string;
  readonly dataDir: string;
  readonly logFile: string;
  readonly socket: string;
  child!: ChildProcess;
  port = 0;

  constructor(
    private readonly scope: Scope,
    private readonly command: string[],
    private readonly appEnv: Record<string, string> = {},
    /** Node options for the supervisor process itself (not the apps). */
    private readonly nodeArgs: string[] = [],
  ) {
    this.dir = scope.tempDir('baton-bench-');
    this.stateDir = path.join(this.dir, 'state');
    this.dataDir = path.join(this.dir, 'data');
    this.logFile = path.join(this.dir, 'baton.log');
    this.socket = path.join(this.stateDir, 'admin.sock');
  }

  get pid(): number {
    return this.child.pid!;
  }

  async start(): Promise<void> {
    const fd = openSync(this.logFile, 'a');
    this.child = this.scope.spawn(
      process.execPath,
      [...CLI_SHEBANG_ARGS, ...this.nodeArgs, CLI, 'run', '--listen', 'http=tcp://127.0.0.1:0', '--data-dir', this.dataDir, '--state-dir', this.stateDir, '--', ...this.command],
      { stdio: ['ignore', 'ignore', fd], env: this.scope.env({ BATON_LOG_LEVEL: 'info', ...this.appEnv }) },
    );
    closeSync(fd);
    this.scope.onClose(() => this.stop());
    const status = await waitFor(
      async () => {
        if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`baton run exited (${this.child.exitCode ?? this.child.signalCode}); log: ${this.logFile}`);
        const r = await adminRequest(this.socket, 'GET', '/v1/status', undefined, { timeoutMs: 5_000 });
        const s = r.body as { app?: { generation: number } | null; listeners: { address: string }[] };
        return s.app && s.app.generation >= 1 ? s : undefined;
      },
      'baton run to serve generation 1',
      30_000,
      50,
    );
    this.port = Number(status.listeners[0]!.address.split(':').pop());
  }

  /** One upgrade through the admin API; resolves with the job record. */
  async upgrade(): Promise<JobRecord> {
    const r = await adminRequest(this.socket, 'POST', '/v1/upgrade', {}, { timeoutMs: 120_000 });
    const job = r.body.job as JobRecord | undefined;
    if (!job) throw new Error(`upgrade: no job in the reply (HTTP ${r.status}): ${JSON.stringify(r.body)}`);
    return job;
  }

  /** One upgrade through `baton upgrade --json` (the CLI a user or systemd's ExecReload runs). */
  async upgradeCli(): Promise<JobRecord> {
    const child = this.scope.spawn(process.execPath, [CLI, 'upgrade', '--json', '--state-dir', this.stateDir], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: this.scope.env({ BATON_LOG_LEVEL: 'warn' }),
    });
    let out = '';
    let err = '';
    child.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
    const { code } = await exited(child);
    try {
      return JSON.parse(out) as JobRecord;
    } catch {
      throw new Error(`baton upgrade --json exited ${code}: ${err || out}`);
    }
  }

  async status(): Promise<Record<string, unknown>> {
    return (await adminRequest(this.socket, 'GET', '/v1/status', undefined, { timeoutMs: 10_000 })).body;
  }

  /** The running app's pid. */
  async appPid(): Promise<number> {
    const s = (await this.status()) as { app?: { pid: number } | null };
    if (!s.app) throw new Error('no app is running');
    return s.app.pid;
  }

  rssKb(): Promise<number> {
    return rssKb(this.pid);
  }

  fdCount(): Promise<number> {
    return fdCount(this.pid);
  }

  /** Every JSON line of the supervisor's and apps' logs so far. */
  events(): LogEvent[] {
    const out: LogEvent[] = [];
    for (const line of readFileSync(this.logFile, 'utf8').split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        out.push(JSON.parse(line) as LogEvent);
      } catch {
        // a torn last line
      }
    }
    return out;
  }

  /** Graceful stop (`POST /v1/stop`), then wait for the process; SIGKILL if it hangs. */
  async stop(): Promise<void> {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return;
    await adminRequest(this.socket, 'POST', '/v1/stop', { timeoutS: 10 }, { timeoutMs: 15_000 }).catch(() => this.child.kill('SIGTERM'));
    const t = setTimeout(() => this.child.kill('SIGKILL'), 20_000);
    await exited(this.child);
    clearTimeout(t);
  }
}
