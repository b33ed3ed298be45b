import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { crashConfigFromEnv, crashPoint } from '../os/crashpoints.js';
import { BatonError, errorMessage } from '../os/errors.js';
import type { HeldListener } from '../os/listeners.js';
import type { Logger } from '../os/log.js';
import { shebangNodeArgs } from '../os/shebang.js';
import type { Supervisor } from '../supervisor/supervisor.js';
import { HANDOVER_ENV, isHandoverMessage, type HandoverEnv, type HandoverMessage } from './handover.js';
import type { JobRecord, JobStore, Requester } from './jobs.js';

/**
 * `baton upgrade --self` (and SIGUSR2), the running supervisor's side: start the `baton`
 * now on disk with the same command line (so the configuration now on disk), hand it
 * the listening sockets and the app's stderr, go quiet (no admin socket, no scheduler,
 * state flushed) once it is ready, and exit once it serves. The app is not touched: the
 * new supervisor re-adopts it from the journal over its control socket, like a
 * supervisor restarted after a crash, but with nothing refused and nothing lost.
 *
 * Any failure before the new one says `serving` (it exits, says `failed`, or is silent
 * past the deadline) ends with it killed and this supervisor serving on, reopened: the
 * job is FAILED and `baton upgrade --self` exits 2. Steps and messages: handover.ts.
 */

/** What the self-upgrade needs from the Daemon. */
export interface SelfUpgradeHost {
  readonly log: Logger;
  sup(): Supervisor;
  jobs(): JobStore;
  listeners(): readonly HeldListener[];
  /** What cannot change under a running app (checked by the new supervisor: checkFixedConfig). */
  readonly fixedConfig: { stateDir: string; dataDir: string; activation: unknown };
  /** The listeners came from systemd socket activation. */
  listenersFromSystemd(): boolean;
  /** Why a self-upgrade cannot start now (a handoff or job runs, stopping), or undefined. */
  busy(): string | undefined;
  /** No admin socket or TCP listener, no metrics listener, no scheduler or health check; state files flushed. */
  quiesce(): Promise<void>;
  /** The reverse of quiesce, after a failed handover. */
  reopen(): Promise<void>;
  /** The new supervisor serves: exit now, leaving the app, the listeners and the state files to it. */
  handedOver(): void;
}

export interface SelfUpgradeEvents {
  onEvent?: (line: Record<string, unknown>) => void;
}

/** How long the new supervisor may take to read its configuration and say `prepared`, then to serve after `go`. */
export const SELF_UPGRADE_TIMEOUTS = { preparedMs: 30_000, servingMs: 60_000 };

export class SelfUpgrade {
  private running: Promise<JobRecord> | undefined;
  private readonly crash = crashConfigFromEnv();

  constructor(private readonly host: SelfUpgradeHost) {}

  get underWay(): boolean {
    return this.running !== undefined;
  }

  run(trigger: 'admin' | 'signal', who: Requester | undefined, ev: SelfUpgradeEvents = {}): Promise<JobRecord> {
    const jobs = this.host.jobs();
    const refusal = this.running ? 'a supervisor self-upgrade is already running' : this.host.busy();
    if (refusal) {
      const job = jobs.create('supervisor', trigger, who);
      return jobs.finish(job, 'SKIPPED', { code: 'E_HANDOFF_IN_PROGRESS', reason: `refused: ${refusal}` });
    }
    this.running = this.perform(trigger, who, ev).finally(() => (this.running = undefined));
    return this.running;
  }

  private async perform(trigger: 'admin' | 'signal', who: Requester | undefined, ev: SelfUpgradeEvents): Promise<JobRecord> {
    const { log } = this.host;
    const jobs = this.host.jobs();
    const job = jobs.create('supervisor', trigger, who);
    await jobs.start(job);
    ev.onEvent?.({ type: 'accepted', jobId: job.id });
    const t0 = Date.now();
    const phase = (name: string): void => {
      log.info({ event: 'self_upgrade.phase', jobId: job.id, phase: name, elapsedMs: Date.now() - t0 }, `self-upgrade: ${name}`);
      ev.onEvent?.({ type: 'phase', phase: name, elapsedMs: Date.now() - t0 });
    };
    let handover: ReturnType<Supervisor['handOver']>;
    try {
      handover = this.host.sup().handOver();
    } catch (err) {
      return jobs.finish(job, 'SKIPPED', { code: 'E_HANDOFF_IN_PROGRESS', reason: `refused: ${errorMessage(err)}` });
    }
    let child: ChildProcess | undefined;
    let quiet = false;
    try {
      phase('starting');
      child = this.spawnNew(job.id, handover.stderrFd);
      const channel = new HandoverChannel(child);
      const prepared = await channel.next(SELF_UPGRADE_TIMEOUTS.preparedMs, 'read its configuration');
      if (prepared.type !== 'prepared') throw new HandoverFailed('E_SELF_UPGRADE_PROTOCOL', `the new supervisor sent ${prepared.type} before prepared`);
      phase('handing-over');
      quiet = true; // a quiesce that fails half-way is reopened too
      await this.host.quiesce();
      channel.send({ baton: 'handover', type: 'go' });
      crashPoint(this.crash, 'handover.old_after_go');
      const serving = await channel.next(SELF_UPGRADE_TIMEOUTS.servingMs, 'take over');
      if (serving.type !== 'serving') throw new HandoverFailed('E_SELF_UPGRADE_PROTOCOL', `the new supervisor sent ${serving.type} instead of serving`);
      phase('serving');
      log.info({ event: 'self_upgrade.done', jobId: job.id, newPid: serving.pid, version: serving.version, durationMs: Date.now() - t0 }, `the new supervisor (pid ${serving.pid}, ${serving.version}) serves; this one (pid ${process.pid}) exits`);
      channel.close();
      // The new supervisor finished the job in its own store (jobs.json is its now): reply with its record.
      const record = (serving.job ?? { ...job, state: 'SUCCEEDED' }) as JobRecord;
      setImmediate(() => this.host.handedOver());
      return record;
    } catch (err) {
      const failure = err instanceof HandoverFailed ? err : new HandoverFailed('E_SELF_UPGRADE_FAILED', errorMessage(err));
      if (child && child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await new Promise((r) => child!.once('exit', r));
      }
      // Only now, with the new one gone, can the admin socket path and the ports be ours again.
      if (quiet) await this.host.reopen();
      handover.resume();
      log.error({ event: 'self_upgrade.aborted', jobId: job.id, code: failure.code, err: failure.message }, `self-upgrade aborted: ${failure.message}; this supervisor (pid ${process.pid}) serves on`);
      return jobs.finish(job, 'FAILED', { code: failure.code, reason: `${failure.message}; the old supervisor (pid ${process.pid}) serves on` });
    }
  }

  /** The `baton` now on disk, as this one was started: same node, the bin's own shebang flags, the same arguments. */
  private spawnNew(jobId: string, stderrFd: number | undefined): ChildProcess {
    const listeners = this.host.listeners();
    const bin = process.argv[1]!;
    const description: HandoverEnv = {
      v: 1,
      fromPid: process.pid,
      jobId,
      listeners: listeners.map((l) => ({ name: l.name, address: l.address, spec: l.spec, ...(l.ownedInode !== undefined && { ino: l.ownedInode }) })),
      appStderr: stderrFd !== undefined,
      systemd: this.host.listenersFromSystemd(),
      stateDir: this.host.fixedConfig.stateDir,
      dataDir: this.host.fixedConfig.dataDir,
      socketActivation: Boolean(this.host.fixedConfig.activation),
    };
    const env: NodeJS.ProcessEnv = { ...process.env, [HANDOVER_ENV]: JSON.stringify(description) };
    // systemd's per-process variables are this process's: the new one is not socket-activated
    // (it gets the sockets from us), and its watchdog pings come from it as the new MAINPID.
    for (const k of ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES', 'WATCHDOG_PID']) delete env[k];
    const stdio: StdioOptions = ['ignore', 'inherit', 'inherit', 'ipc', ...listeners.map((l) => l.fd), ...(stderrFd !== undefined ? [stderrFd] : [])];
    const child = spawn(process.execPath, [...safeShebangArgs(bin), bin, ...process.argv.slice(2)], { stdio, env });
    this.host.log.info({ event: 'self_upgrade.spawned', pid: child.pid, bin }, `started the new supervisor (pid ${child.pid}) from ${bin}`);
    child.on('error', () => undefined); // reported through the channel's exit
    return child;
  }
}

function safeShebangArgs(bin: string): string[] {
  try {
    return shebangNodeArgs(bin);
  } catch {
    return process.execArgv;
  }
}

/** Why a self-upgrade did not hand over (its `code` ends up in the job record). */
class HandoverFailed extends BatonError {}

/** The old supervisor's end of the IPC channel: the next handover message, or why none came. */
class HandoverChannel {
  private queue: HandoverMessage[] = [];
  private waiter: ((m: HandoverMessage | Error) => void) | undefined;
  private gone: Error | undefined;

  constructor(private readonly child: ChildProcess) {
    child.on('message', (m: unknown, handle: unknown) => {
      if (handle) (handle as { close?: () => void }).close?.();
      if (!isHandoverMessage(m)) return;
      this.push(m);
    });
    child.once('exit', (code, signal) => this.fail(new HandoverFailed('E_SELF_UPGRADE_FAILED', `the new supervisor (pid ${child.pid}) exited (code ${code ?? '-'}, signal ${signal ?? '-'}) before it served`)));
  }

  private push(m: HandoverMessage): void {
    if (m.type === 'failed') return this.fail(new HandoverFailed(m.code || 'E_SELF_UPGRADE_FAILED', `the new supervisor failed: ${m.message}`));
    if (this.waiter) this.waiter(m);
    else this.queue.push(m);
  }

  private fail(err: Error): void {
    if (this.gone) return;
    this.gone = err;
    this.waiter?.(err);
  }

  async next(timeoutMs: number, what: string): Promise<HandoverMessage> {
    const queued = this.queue.shift();
    if (queued) return queued;
    if (this.gone) throw this.gone;
    let timer: NodeJS.Timeout | undefined;
    const got = await new Promise<HandoverMessage | Error>((resolve) => {
      this.waiter = resolve;
      timer = setTimeout(() => resolve(new HandoverFailed('E_SELF_UPGRADE_TIMEOUT', `the new supervisor (pid ${this.child.pid}) did not ${what} within ${timeoutMs} ms`)), timeoutMs);
    });
    clearTimeout(timer);
    this.waiter = undefined;
    if (got instanceof Error) throw got;
    return got;
  }

  send(m: HandoverMessage): void {
    if (this.child.connected) this.child.send(m);
  }

  close(): void {
    if (this.child.connected) this.child.disconnect();
  }
}
