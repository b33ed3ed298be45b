import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import type { Socket } from 'node:net';
import { withoutCrashEnv, CRASH_ENV, CRASH_MARKER_ENV } from '../os/crashpoints.js';
import { BatonError } from '../os/errors.js';
import { listenerEnv, scrubInheritedEnv, stdioForListeners, type HeldListener } from '../os/listeners.js';
import type { Logger } from '../os/log.js';
import { isAlive, isGroupLeader, killGroup, processStartTime, waitForExit } from '../os/proc.js';
import { ENV } from '../wire/roles.js';
import { resolveCommand, type BuildInfo } from './builds.js';
import { serveListenerCopies } from './listener-copies.js';
import { StderrTail } from './stderr-tail.js';

export interface ExitStatus {
  code: number | undefined;
  signal: string | undefined;
}

/**
 * One app process (a "generation") as the supervisor sees it. A generation the
 * supervisor spawned is its child and is reaped through `exited`; one adopted after a
 * supervisor restart is watched by pid + start time instead.
 */
export class AppProcess {
  private exitStatus: ExitStatus | undefined;
  readonly exited: Promise<ExitStatus>;
  /** It leads its own process group (we spawned it in a new session, or an adopted one does). */
  private readonly groupLeader: boolean;
  /** Hello.features of this process (from its successor Hello, else its first incumbent session); undefined until known. */
  features: readonly string[] | undefined;
  /** What it was started from (spawned processes; an adopted one: from the build records, if any). */
  build: BuildInfo | undefined;
  /** Its stderr's last lines (spawned processes only). */
  stderr: StderrTail | undefined;

  constructor(
    readonly pid: number,
    readonly startTime: string | undefined,
    readonly generation: number,
    child: ChildProcess | undefined,
    /** Supervisor end of the successor control socketpair (spawned processes only). */
    readonly control: Socket | undefined,
  ) {
    this.groupLeader = child !== undefined || isGroupLeader(pid);
    this.exited = child ? childExit(child).then((s) => (this.exitStatus = s)) : pollExit(pid, startTime).then((s) => (this.exitStatus = s));
  }

  /** Its stderr's last lines, once its exit was seen and its stderr drained (≤ 500 ms more); '' if none. */
  async stderrTail(): Promise<string> {
    if (!this.stderr) return '';
    if (this.exitStatus) await this.stderr.drained(500);
    return this.stderr.text();
  }

  get alive(): boolean {
    return this.exitStatus === undefined && isAlive(this.pid, this.startTime);
  }

  get exit(): ExitStatus | undefined {
    return this.exitStatus;
  }

  /**
   * Waits `exitWaitMs` for it to exit by itself, then `stopSignal` (SIGTERM; a
   * socket-activated server's own graceful-stop signal), then SIGKILL after `graceMs`;
   * resolves once it is gone (and reaped, if ours), its process group swept.
   */
  async terminate(graceMs: number, exitWaitMs = 0, stopSignal: NodeJS.Signals = 'SIGTERM'): Promise<ExitStatus | undefined> {
    if (this.exitStatus) return this.exitStatus;
    if (!(exitWaitMs > 0 && (await this.exitWithin(exitWaitMs)))) {
      this.signal(stopSignal);
      if (!(await this.exitWithin(graceMs))) this.signal('SIGKILL');
    }
    const status = await this.exited;
    // Its own children go with it (a wrapper script's `sleep`, the app's workers): a
    // generation baton ended leaves nothing behind, like systemd's control-group kill.
    if (this.groupLeader) killGroup(this.pid);
    return status;
  }

  /** Once it exited: SIGKILLs what is left of its process group (a server's orphaned workers). */
  sweepGroup(): void {
    if (this.exitStatus && this.groupLeader) killGroup(this.pid);
  }

  private async exitWithin(ms: number): Promise<boolean> {
    const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms).unref());
    return (await Promise.race([this.exited, timer])) !== 'timeout';
  }

  signal(sig: NodeJS.Signals): void {
    try {
      if (this.exitStatus === undefined && isAlive(this.pid, this.startTime)) process.kill(this.pid, sig);
    } catch {
      // Already gone.
    }
  }
}

/** Resolves when our child has exited (and is reaped): 'exit', or 'error' if it never ran. */
function childExit(child: ChildProcess): Promise<ExitStatus> {
  return new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code: code ?? undefined, signal: signal ?? undefined }));
    child.once('error', () => resolve({ code: undefined, signal: undefined }));
  });
}

async function pollExit(pid: number, startTime: string | undefined): Promise<ExitStatus> {
  while (!(await waitForExit(pid, 60_000, startTime)));
  return { code: undefined, signal: undefined };
}

export interface SpawnSpec {
  command: readonly string[];
  /** The command resolved (builds.ts); computed from `command` when not given. */
  resolved?: readonly string[];
  role: 'cold' | 'successor';
  generation: number;
  listeners: readonly HeldListener[];
  /** Spare copies of each listener (see LISTENER_SPARES_ENV). */
  spares: number;
  /** Pass Node's IPC channel and serve listener copies over it. */
  listenerCopies: boolean;
  controlPath: string;
  dataDir: string;
  baseEnv: NodeJS.ProcessEnv;
  /** Extra env for this process only (e.g. a crash point for tests). */
  extraEnv?: Record<string, string>;
  stdout: 'inherit' | 'ignore';
  log: Logger;
}

/**
 * Starts an app with the listeners at fds 3.. and the control socketpair right after
 * them. Inherited systemd LISTEN_* and our own crash-point selection are removed from
 * its env; BATON_* role variables are set.
 */
export function spawnApp(spec: SpawnSpec): AppProcess {
  const [file, ...args] = spec.command;
  if (!file) throw new BatonError('E_NO_COMMAND', 'no command to start');
  const listenerFds = stdioForListeners([...spec.listeners]);
  // Layout: listeners at 3..3+n-1, then `spares` more copies of the same sockets, then the control fd.
  const spareFds = Array.from({ length: spec.spares }, () => listenerFds).flat();
  const controlFd = 3 + listenerFds.length + spareFds.length;
  const env: NodeJS.ProcessEnv = {
    ...withoutCrashEnv(scrubInheritedEnv(spec.baseEnv)),
    ...listenerEnv([...spec.listeners]),
    [ENV.listenSpares]: String(spec.spares),
    [ENV.role]: spec.role,
    [ENV.controlFd]: String(controlFd),
    [ENV.controlPath]: spec.controlPath,
    [ENV.dataDir]: spec.dataDir,
    [ENV.generation]: String(spec.generation),
    ...spec.extraEnv,
  };
  // After the control fd, Node's IPC channel (NODE_CHANNEL_FD), over which a Node app asks
  // for fresh listener copies after an abort (listener-copies.ts); other apps ignore it.
  const stdio: StdioOptions = ['ignore', spec.stdout, 'pipe', ...listenerFds, ...spareFds, 'pipe', ...(spec.listenerCopies ? ['ipc' as const] : [])];
  return startProcess(file, args, stdio, env, spec, (child) => {
    if (spec.listenerCopies) serveListenerCopies(child, spec.listeners, spec.log);
    return child.stdio[controlFd] as Socket | undefined;
  });
}

/**
 * Spawns one generation with `stdio` and `env` as given (protocol mode: spawnApp; socket
 * activation: activation.ts) and wraps it as an AppProcess: its stderr through us with
 * its tail kept, its build, the `app.spawned` log line. `attach` runs on the child
 * before it is wrapped and returns its control socket, if any.
 */
export function startProcess(
  file: string,
  args: readonly string[],
  stdio: StdioOptions,
  env: NodeJS.ProcessEnv,
  spec: Pick<SpawnSpec, 'command' | 'resolved' | 'role' | 'generation' | 'baseEnv' | 'log'>,
  attach: (child: ChildProcess) => Socket | undefined = () => undefined,
): AppProcess {
  // node:child_process rather than execa: the supervisor only needs spawn + exit, and
  // loading execa costs ≈ 8 MiB of RSS in a process whose budget is 60 MB (BENCHMARKS.md).
  // stderr through us: passed on to ours, its tail kept for abort reasons (stderr-tail.ts).
  const child = spawn(file, [...args], {
    stdio,
    env,
    // Its own process group: a Ctrl-C at baton's terminal (SIGINT to the foreground group)
    // must reach baton, which then stops the app gracefully (drain, seal), not the app itself.
    detached: true,
  });
  // A command that cannot be started (ENOENT, EACCES) reports it as an 'error' event.
  let spawnError: Error | undefined;
  child.on('error', (err) => (spawnError ??= err));
  const pid = child.pid;
  if (pid === undefined) throw new BatonError('E_SPAWN_FAILED', `could not start ${file}${spawnError ? `: ${spawnError.message}` : ''}`);
  const control = attach(child);
  const app = new AppProcess(pid, processStartTime(pid), spec.generation, child, control);
  app.stderr = child.stderr ? new StderrTail(child.stderr) : undefined;
  app.build = { command: [...spec.command], resolved: spec.resolved ? [...spec.resolved] : resolveCommand(spec.command, spec.baseEnv), buildId: '' };
  spec.log.info(
    { event: 'app.spawned', pid, generation: spec.generation, role: spec.role, command: spec.command },
    `started generation ${spec.generation} (pid ${pid})`,
  );
  return app;
}

/** Env for one app process carrying a crash point (tests only). */
export function crashEnv(point: string | undefined, markerDir: string | undefined): Record<string, string> {
  const env: Record<string, string> = {};
  if (point) env[CRASH_ENV] = point;
  if (markerDir) env[CRASH_MARKER_ENV] = markerDir;
  return env;
}
