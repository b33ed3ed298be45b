/**
 * Socket-activation mode: the handoff for an unmodified server (gunicorn, nginx, a Go
 * or Node server on fd 3) that speaks no control protocol. Like Einhorn and
 * Server::Starter: the supervisor holds the listening sockets, starts the new process
 * on the same sockets next to the old one, waits until it is ready
 * (activation-ready.ts), then sends the old one its graceful-stop signal and SIGKILLs
 * it after a grace. Both accept from the one shared accept queue meanwhile, so no
 * connection is refused. There is no drain, seal or lock pass: what the old process
 * still does with its data when the new one starts is the app's business
 * (docs/socket-activation.md says exactly what this mode does not give).
 *
 * The Supervisor runs this mode's table below instead of the protocol's (phases.ts) and
 * keeps everything around it: the flight, the journal, aborts and their reasons with
 * the new process's stderr, commits, builds and the bake window, restarts.
 */
import type { StdioOptions } from 'node:child_process';
import { withoutCrashEnv } from '../os/crashpoints.js';
import { BatonError, errorMessage } from '../os/errors.js';
import { bindListener, scrubInheritedEnv, stdioForListeners, type HeldListener } from '../os/listeners.js';
import type { Logger } from '../os/log.js';
import { awaitReady } from './activation-ready.js';
import { startProcess, type AppProcess } from './generation.js';
import type { ActivationOptions, HandoffSpec, Timeouts } from './options.js';
import type { SupervisorPhase } from './phases.js';

/**
 * This mode's handoff: spawning (the new process on the same sockets) → await_ready
 * (alive for readyAfter, ready-cmd, ready-http) → committing (the old process gets its
 * stop signal and is gone, SIGKILLed past the grace). A failure before committing
 * aborts: the new process is stopped, the old one never noticed anything.
 */
export const ACTIVATION_NEXT_PHASE: Record<SupervisorPhase, SupervisorPhase | undefined> = {
  idle: 'spawning',
  spawning: 'await_ready',
  await_ready: 'committing',
  committing: undefined,
  hello: undefined,
  draining: undefined,
  sealing: undefined,
  begin: undefined,
  aborting: undefined,
};

/**
 * systemd's LISTEN_PID must be the pid of the process that reads LISTEN_FDS (servers
 * check it and ignore the fds otherwise). Node cannot run code in the child between
 * fork and exec, so the pid is unknown until the process exists; a shell knows its own
 * (`$$`), and `exec` keeps that pid for the server it becomes: `$0 "$@"` is the command,
 * unchanged (no word splitting, no globbing).
 */
export const LISTEN_PID_SHIM: readonly string[] = ['/bin/sh', '-c', 'LISTEN_PID=$$ exec "$0" "$@"'];

/** LISTEN_FDNAMES name of the private readiness listener (the last fd; with readyHttp only). */
export const READY_LISTENER_NAME = 'baton-ready';

/** What this mode reads and sets on the Supervisor's handoff in flight. */
export interface ActivationFlight {
  readonly id: string;
  readonly spec: HandoffSpec;
  readonly deadline: number;
  readonly incumbent: AppProcess | undefined;
  successor: AppProcess | undefined;
  /** Set when the old process is sent its stop signal: from there it cannot serve again. */
  pointOfNoReturn: boolean;
}

/** What this mode needs from the Supervisor. */
export interface ActivationHost {
  readonly log: Logger;
  readonly options: ActivationOptions;
  readonly timeouts: Timeouts;
  readonly listeners: readonly HeldListener[];
  readonly stdout: 'inherit' | 'ignore';
  /** The generation the next process gets is this + 1. */
  generation(): number;
  baseEnv(): NodeJS.ProcessEnv;
  /** What a handoff starts: the build it names, else the configured command. */
  commandOf(spec: HandoffSpec): { command: readonly string[]; resolved?: readonly string[] };
  emit(event: string, ...args: unknown[]): boolean;
}

export class ActivationHandoff {
  /** The private readiness listener of the flight's new process; ours is closed once the check is over. */
  private readyListener: HeldListener | undefined;
  private startedAt = 0;

  constructor(private readonly host: ActivationHost) {}

  /** Phase → what is done in it (the order is ACTIVATION_NEXT_PHASE). */
  readonly steps: Record<SupervisorPhase, (f: ActivationFlight) => Promise<void>> = {
    idle: async () => undefined,
    spawning: (f) => this.spawn(f),
    await_ready: (f) => this.awaitReady(f),
    committing: (f) => this.stopOld(f),
    hello: unused,
    draining: unused,
    sealing: unused,
    begin: unused,
    aborting: unused,
  };

  private async spawn(f: ActivationFlight): Promise<void> {
    const { options, listeners, log } = this.host;
    const { command, resolved } = this.host.commandOf(f.spec);
    if (command.length === 0) throw new BatonError('E_NO_COMMAND', 'no command to start');
    const ready = options.readyHttp !== undefined ? bindListener({ name: READY_LISTENER_NAME, kind: 'tcp', host: '127.0.0.1', port: 0 }) : undefined;
    this.readyListener = ready;
    const passed = ready ? [...listeners, ready] : listeners;
    const generation = this.host.generation() + 1;
    const env: NodeJS.ProcessEnv = {
      ...withoutCrashEnv(scrubInheritedEnv(this.host.baseEnv())),
      LISTEN_FDS: String(passed.length),
      LISTEN_FDNAMES: passed.map((l) => l.name).join(':'),
      ...f.spec.successorEnv,
    };
    // fds 3.. are the listeners in --listen order (then the private readiness one): nothing
    // else, no control fd and no IPC channel. stderr through us for its tail (abort reasons).
    const stdio: StdioOptions = ['ignore', this.host.stdout, 'pipe', ...stdioForListeners(passed)];
    const [file, ...args] = [...LISTEN_PID_SHIM, ...command];
    let app: AppProcess;
    try {
      app = startProcess(file!, args, stdio, env, { command, resolved, role: f.incumbent ? 'successor' : 'cold', generation, baseEnv: this.host.baseEnv(), log });
    } catch (err) {
      this.closeReadyListener();
      throw err;
    }
    this.startedAt = Date.now();
    app.features = []; // it opens no control session: no probes, jobs or notices are asked of it
    f.successor = app;
    this.host.emit('spawned', app.pid, app.generation, f.id);
  }

  private async awaitReady(f: ActivationFlight): Promise<void> {
    const { options, timeouts } = this.host;
    const app = f.successor!;
    const budgetMs = Math.min(f.spec.readyMs ?? timeouts.readyMs, f.deadline - this.startedAt);
    try {
      await awaitReady({
        app,
        startedAt: this.startedAt,
        readyAfterMs: options.readyAfterMs,
        readyCmd: options.readyCmd,
        readyUrl: this.readyListener && options.readyHttp !== undefined ? `http://${this.readyListener.address.replace(/^tcp:\/\//, '')}${options.readyHttp}` : undefined,
        env: { ...withoutCrashEnv(this.host.baseEnv()), BATON_APP_PID: String(app.pid), BATON_GENERATION: String(app.generation) },
        budgetMs,
      });
    } finally {
      this.closeReadyListener(); // the new process keeps its own copy; nobody else may reach it
    }
    this.host.log.info({ event: 'activation.ready', pid: app.pid, generation: app.generation, afterMs: Date.now() - this.startedAt }, `new process (pid ${app.pid}) is ready`);
  }

  /**
   * The commit: the old process gets its graceful-stop signal and has the grace to exit
   * (SIGKILL and a group sweep after it). The new one must outlive that: if it dies
   * meanwhile, the handoff is aborted with nothing serving (the Supervisor cold-starts).
   */
  private async stopOld(f: ActivationFlight): Promise<void> {
    const old = f.incumbent;
    const app = f.successor!;
    if (!app.alive) throw new BatonError('E_PEER_DIED', `new process (pid ${app.pid}) exited after it was ready, before the old one was stopped`);
    if (!old) return; // a cold start: nothing to stop
    f.pointOfNoReturn = true;
    const { stopSignal, stopGraceMs } = this.host.options;
    this.host.log.info({ event: 'activation.stop_old', pid: old.pid, signal: stopSignal, graceMs: stopGraceMs }, `stopping the old process (pid ${old.pid}) with ${stopSignal}`);
    const t0 = Date.now();
    const stopped = this.stop(old, stopGraceMs);
    const died = app.exited.then((s) => {
      throw new BatonError('E_PEER_DIED', `new process (pid ${app.pid}) exited (code ${s.code ?? '-'}, signal ${s.signal ?? '-'}) while the old one was stopping`);
    });
    died.catch(() => undefined);
    const status = await Promise.race([stopped, died]);
    const killed = Date.now() - t0 >= stopGraceMs;
    this.host.log[killed ? 'warn' : 'info'](
      { event: 'activation.old_stopped', pid: old.pid, ms: Date.now() - t0, killed, ...status },
      killed ? `the old process (pid ${old.pid}) did not stop within ${stopGraceMs} ms of ${stopSignal}: killed` : `the old process (pid ${old.pid}) stopped`,
    );
  }

  /** Stops a process the way this mode stops apps: its stop signal, SIGKILL (and the group) past `graceMs`. */
  stop(app: AppProcess, graceMs: number): ReturnType<AppProcess['terminate']> {
    return app.terminate(graceMs, 0, this.host.options.stopSignal);
  }

  /** An aborted new process: it may already serve, so it gets the same graceful stop as an old one. */
  stopFailed(app: AppProcess): ReturnType<AppProcess['terminate']> {
    return this.stop(app, this.host.options.stopGraceMs);
  }

  private closeReadyListener(): void {
    try {
      this.readyListener?.close();
    } catch (err) {
      this.host.log.warn({ event: 'activation.ready_listener_close_failed', err: errorMessage(err) }, 'could not close the readiness listener');
    }
    this.readyListener = undefined;
  }
}

async function unused(): Promise<void> {
  throw new BatonError('E_INTERNAL', 'not a phase of a socket-activation handoff');
}
