/**
 * A real `baton run` supervisor in its own process, as a user runs it: listener on
 * 127.0.0.1 (port chosen by the kernel), data and state dirs in the scope's temp
 * dir, the supervisor's and the apps' logs (pino JSON on stderr) in a file so a
 * handoff's timeline can be read back across processes. Upgrades go through the
 * admin API (`POST /v1/upgrade`, what `baton upgrade` uses) or the CLI itself.
 *
 * The supervisor itself can be replaced: `kill()` (SIGKILL, the app left serving) then
 * `start()` again runs the same `baton run` on the same port and dirs; `upgradeSelf()`
 * is `baton upgrade --self`, after which the supervisor is a process this one did not
 * start: `pid` follows it, and `stop()` stops it through its admin socket.
 */
import type { ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { adminRequest } from '../../src/daemon/admin.js';
import type { JobRecord } from '../../src/daemon/jobs.js';
import { isAlive } from '../../src/os/proc.js';
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
  /** The last `baton run` this object started (after `upgradeSelf()`, no longer the supervisor). */
  child!: ChildProcess;
  /** The listener's port: chosen by the kernel at the first start, the same one after. */
  port = 0;
  /** The supervisor's pid: the child's, or the new supervisor's after `upgradeSelf()`. */
  private supervisorPid = 0;
  private closing = false;

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
    return this.supervisorPid;
  }

  /**
   * `baton run`; resolves once it serves. Started again (after `kill()` or `stop()`), it
   * runs on the same port, data and state dirs; `env` is added for this start only.
   */
  async start(env: Record<string, string> = {}): Promise<void> {
    const fd = openSync(this.logFile, 'a');
    const listen = `http=tcp://127.0.0.1:${this.port}`;
    this.child = this.scope.spawn(
      process.execPath,
      [...CLI_SHEBANG_ARGS, ...this.nodeArgs, CLI, 'run', '--listen', listen, '--data-dir', this.dataDir, '--state-dir', this.stateDir, '--', ...this.command],
      { stdio: ['ignore', 'ignore', fd], env: this.scope.env({ BATON_LOG_LEVEL: 'info', ...this.appEnv, ...env }) },
    );
    closeSync(fd);
    this.supervisorPid = this.child.pid!;
    if (!this.closing) {
      this.closing = true;
      this.scope.onClose(() => this.stop());
    }
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
  upgradeCli(): Promise<JobRecord> {
    return this.cliJob(['upgrade', '--json']);
  }

  /**
   * `baton upgrade --self --json`: the supervisor replaced by a new one, which `pid`
   * follows from then on when it succeeded. Resolves with the job record.
   */
  async upgradeSelf(): Promise<JobRecord> {
    const job = await this.cliJob(['upgrade', '--self', '--json']);
    if (job.state === 'SUCCEEDED' && job.supervisor) this.supervisorPid = job.supervisor.newPid;
    return job;
  }

  /** SIGKILL to the supervisor (the app it runs is left serving); resolves once it is gone. */
  async kill(): Promise<void> {
    const pid = this.supervisorPid;
    process.kill(pid, 'SIGKILL');
    if (pid === this.child.pid) await exited(this.child);
    else await waitFor(() => (isAlive(pid) ? undefined : true), `supervisor ${pid} to die`, 10_000, 5);
  }

  private async cliJob(args: string[]): Promise<JobRecord> {
    const child = this.scope.spawn(process.execPath, [CLI, ...args, '--state-dir', this.stateDir], {
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
      throw new Error(`baton ${args.join(' ')} exited ${code}: ${err || out}`);
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

  /** Graceful stop (`POST /v1/stop`, what `baton stop` does), then wait for the process; SIGKILL if it hangs. */
  async stop(): Promise<void> {
    if (!this.child) return;
    const pid = this.supervisorPid;
    if (pid === this.child.pid) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) return;
      await adminRequest(this.socket, 'POST', '/v1/stop', { timeoutS: 10 }, { timeoutMs: 15_000 }).catch(() => this.child.kill('SIGTERM'));
      const t = setTimeout(() => this.child.kill('SIGKILL'), 20_000);
      await exited(this.child);
      clearTimeout(t);
      return;
    }
    // A supervisor from `upgradeSelf()`: not our child, so its exit is seen in /proc.
    if (!isAlive(pid)) return;
    await adminRequest(this.socket, 'POST', '/v1/stop', { timeoutS: 10 }, { timeoutMs: 15_000 }).catch(() => process.kill(pid, 'SIGTERM'));
    await waitFor(() => (isAlive(pid) ? undefined : true), `supervisor ${pid} to exit`, 20_000, 20).catch(() => process.kill(pid, 'SIGKILL'));
  }
}
