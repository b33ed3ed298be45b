import { chmod, mkdir, rename, rm } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { exitProcess, sayHello, type AgentContext } from './agent.js';
import { ControlChannel } from './channel.js';
import { crashPoint } from './crashpoints.js';
import { BatonError, ProtocolError, errorMessage } from './errors.js';
import type { MessageOf } from './schema.js';
import { drive, type Machine, type Transitions } from './statemachine.js';
import type { DrainResult, SealResult } from './app.js';

/**
 * Incumbent states (PROTOCOL.md "Incumbent state machine"). Transient states
 * (DRAINING, SEALING, RESUMING, SHUTTING_DOWN) take no messages: the driver runs one
 * handler to completion before it reads the next frame.
 */
export type IncumbentState =
  | 'SERVING' // no supervisor attached
  | 'ATTACHED' // supervisor said HelloAck; nothing in progress
  | 'DRAINING'
  | 'DRAINED'
  | 'SEALING'
  | 'SEALED' // lock released, waiting for Commit or ResumeAfterAbort
  | 'RESUMING'
  | 'SHUTTING_DOWN'
  | 'COMMITTED'; // point of no return: exiting

/** How long a re-take of the lock waits per attempt while a live successor still holds it. */
const RELOCK_ATTEMPT_MS = 5_000;

export class Incumbent implements Machine<IncumbentState> {
  state: IncumbentState = 'SERVING';
  handoffId: string | undefined;
  private server: net.Server | undefined;
  private session: ControlChannel | undefined;

  constructor(readonly ctx: AgentContext) {}

  /**
   * Binds the control path atomically: listen on a temporary name, restrict it to
   * 0600, rename over the final path (the directory is 0700 and owned by the
   * supervisor's user). A new incumbent's rename replaces the old one's entry; the
   * old process keeps its now-unnamed socket until it exits.
   */
  async bind(): Promise<void> {
    const finalPath = this.ctx.controlPath;
    const tmpPath = path.join(path.dirname(finalPath), `.${path.basename(finalPath)}.${process.pid}.tmp`);
    await mkdir(path.dirname(finalPath), { recursive: true, mode: 0o700 });
    await rm(tmpPath, { force: true });
    const server = net.createServer((socket) => void this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(tmpPath, () => resolve());
    });
    await chmod(tmpPath, 0o600);
    await rename(tmpPath, finalPath);
    this.server = server;
    this.ctx.log.info({ event: 'incumbent.control_bound', path: finalPath }, 'serving the control socket');
  }

  private async accept(socket: net.Socket): Promise<void> {
    const ch = new ControlChannel(socket, { peer: 'supervisor', log: this.ctx.log, livenessMs: this.ctx.livenessMs });
    if (this.session || this.state !== 'SERVING') {
      ch.send({ type: 'Error', code: 'E_BUSY', message: `another supervisor connection is active (state ${this.state})` });
      ch.close('busy');
      return;
    }
    this.session = ch;
    let ended: BatonError;
    try {
      crashPoint(this.ctx.crash, 'incumbent.on_hello');
      this.handoffId = await sayHello(ch, this.ctx, 'incumbent');
      this.state = 'ATTACHED';
      ch.startHeartbeats(() => this.state.toLowerCase());
      this.ctx.log.info({ event: 'incumbent.attached', handoffId: this.handoffId }, 'supervisor attached');
      ended = await drive(ch, this, INCUMBENT_TRANSITIONS);
    } catch (err) {
      ended = err instanceof BatonError ? err : new BatonError('E_SESSION', errorMessage(err));
      // e.g. a HelloAck with a version we do not speak: say why before closing (PROTOCOL.md "Errors").
      ch.sendError(ended);
    }
    ch.close('session over');
    this.session = undefined;
    await this.supervisorLost(ended);
  }

  /** The supervisor connection ended; what that means depends on how far the handoff got. */
  private async supervisorLost(reason: BatonError): Promise<void> {
    const state = this.state;
    if (state === 'COMMITTED' || state === 'SHUTTING_DOWN') return;
    if (state === 'ATTACHED' || state === 'SERVING') {
      this.state = 'SERVING';
      this.handoffId = undefined;
      return;
    }
    // DRAINED or SEALED: nobody will tell us what to do; abort on our own.
    this.ctx.log.warn(
      { event: 'incumbent.self_abort', state, code: reason.code, reason: reason.message },
      'lost the supervisor mid-handoff; resuming on our own',
    );
    await this.resume();
    this.rememberAborted();
    this.state = 'SERVING';
    this.handoffId = undefined;
  }

  /** Handoffs this incumbent aborted: a late Commit for one of them gets Error{E_ABORTED}. */
  readonly abortedHandoffs: string[] = [];

  rememberAborted(): void {
    if (!this.handoffId) return;
    this.abortedHandoffs.push(this.handoffId);
    if (this.abortedHandoffs.length > 16) this.abortedHandoffs.shift();
  }

  /** Refuses the session's last frame and ends the session (we stay the incumbent). */
  reject(err: BatonError): void {
    this.session?.sendError(err);
    this.session?.close('after a refused frame');
  }

  /** Re-takes the lock if we released it, then tells the app to serve again. */
  async resume(): Promise<void> {
    this.state = 'RESUMING';
    crashPoint(this.ctx.crash, 'incumbent.on_resume');
    while (!this.ctx.lock.held) {
      try {
        await this.ctx.lock.acquire({ handoffId: this.handoffId ?? 'resume', waitMs: RELOCK_ATTEMPT_MS });
      } catch (err) {
        // A live successor still holds it; it gives it up when it loses the supervisor.
        this.ctx.log.warn({ event: 'incumbent.relock_wait', err: errorMessage(err) }, 'waiting to re-take the data-dir lock');
      }
    }
    crashPoint(this.ctx.crash, 'incumbent.after_relock');
    await this.ctx.rpc.call('resume');
    this.ctx.log.info({ event: 'incumbent.resumed', handoffId: this.handoffId }, 'serving again after abort');
  }

  send(msg: Parameters<ControlChannel['send']>[0]): void {
    this.session?.send(msg);
  }

  /** Stops accepting supervisor connections (does not wait for the current one: it may be the one asking us to exit). */
  close(): void {
    this.server?.close();
  }
}

async function onPrepare(inc: Incumbent, msg: MessageOf<'PrepareHandoff'>): Promise<void> {
  const { ctx } = inc;
  crashPoint(ctx.crash, 'incumbent.on_prepare');
  inc.state = 'DRAINING';
  const deadlineMs = Math.min(Number(msg.deadlineMs), Date.now() + msg.drainGraceMs);
  ctx.log.info({ event: 'incumbent.drain', handoffId: msg.handoffId, successorPid: msg.successorPid }, 'draining');
  const draining = ctx.rpc.call<DrainResult>('drain', { deadlineMs });
  crashPoint(ctx.crash, 'incumbent.mid_drain');
  try {
    const result = await draining;
    inc.send({ type: 'Drained', handoffId: msg.handoffId, ...result });
    inc.state = 'DRAINED';
    crashPoint(ctx.crash, 'incumbent.after_drained');
  } catch (err) {
    ctx.log.error({ event: 'incumbent.drain_failed', err: errorMessage(err) }, 'drain failed; resuming');
    await inc.resume();
    inc.state = 'ATTACHED';
    inc.send({ type: 'DrainFailed', handoffId: msg.handoffId, error: errorMessage(err) });
  }
}

async function onSealRequest(inc: Incumbent, msg: MessageOf<'SealRequest'>): Promise<void> {
  const { ctx } = inc;
  crashPoint(ctx.crash, 'incumbent.on_seal_request');
  inc.state = 'SEALING';
  ctx.log.info({ event: 'incumbent.seal', handoffId: msg.handoffId }, 'sealing');
  const sealing = ctx.rpc.call<SealResult>('seal');
  crashPoint(ctx.crash, 'incumbent.mid_seal');
  let result: SealResult;
  try {
    result = await sealing;
  } catch (err) {
    ctx.log.error({ event: 'incumbent.seal_failed', err: errorMessage(err) }, 'seal failed; resuming');
    await inc.resume();
    inc.state = 'ATTACHED';
    const partialState = (err as { partialState?: Record<string, bigint> }).partialState ?? {};
    inc.send({ type: 'SealFailed', handoffId: msg.handoffId, error: errorMessage(err), partialState });
    return;
  }
  crashPoint(ctx.crash, 'incumbent.after_seal_before_release');
  // Invariant 2: the lock is released only after a successful seal, right before SealComplete.
  await ctx.lock.release();
  crashPoint(ctx.crash, 'incumbent.after_lock_release');
  inc.state = 'SEALED';
  inc.send({ type: 'SealComplete', handoffId: msg.handoffId, ...result });
  crashPoint(ctx.crash, 'incumbent.after_seal_complete');
}

async function onCommit(inc: Incumbent, msg: MessageOf<'Commit'>): Promise<void> {
  crashPoint(inc.ctx.crash, 'incumbent.on_commit');
  inc.state = 'COMMITTED';
  inc.send({ type: 'Committed', handoffId: msg.handoffId });
  crashPoint(inc.ctx.crash, 'incumbent.after_committed');
  inc.close();
  await exitProcess(inc.ctx, 0, `handoff ${msg.handoffId} committed`);
}

async function onResume(inc: Incumbent, msg: MessageOf<'ResumeAfterAbort'> | MessageOf<'Abort'>): Promise<void> {
  await inc.resume();
  inc.rememberAborted();
  inc.state = 'ATTACHED';
  inc.send({ type: 'Resumed', handoffId: msg.handoffId });
}

/** Nothing to undo (e.g. DrainFailed already resumed); confirm. */
async function onResumeIdle(inc: Incumbent, msg: MessageOf<'ResumeAfterAbort'> | MessageOf<'Abort'>): Promise<void> {
  inc.send({ type: 'Resumed', handoffId: msg.handoffId });
}

async function onShutdown(inc: Incumbent, msg: MessageOf<'Shutdown'>): Promise<void> {
  const { ctx } = inc;
  inc.state = 'SHUTTING_DOWN';
  ctx.log.info({ event: 'incumbent.shutdown', reason: msg.reason, timeoutMs: msg.timeoutMs }, 'shutting down');
  try {
    await ctx.rpc.call<DrainResult>('drain', { deadlineMs: Date.now() + msg.timeoutMs / 2 });
    await ctx.rpc.call<SealResult>('seal');
    await ctx.lock.release();
  } catch (err) {
    ctx.log.error({ event: 'incumbent.shutdown_failed', err: errorMessage(err) }, 'shutdown seal failed');
    await exitProcess(ctx, 1, `shutdown (${msg.reason}) failed: ${errorMessage(err)}`);
  }
  inc.close();
  await exitProcess(ctx, 0, `shutdown (${msg.reason})`);
}

/** Commit with nothing sealed: refused (E_ABORTED if we aborted that handoff); we never exit on it. */
async function onStrayCommit(inc: Incumbent, msg: MessageOf<'Commit'>): Promise<void> {
  const aborted = inc.abortedHandoffs.includes(msg.handoffId);
  inc.reject(
    aborted
      ? new ProtocolError('E_ABORTED', `handoff ${msg.handoffId} was aborted; this process serves on`)
      : new ProtocolError('E_UNEXPECTED_MESSAGE', `Commit is not accepted in state ${inc.state}`),
  );
}

export const INCUMBENT_TRANSITIONS: Transitions<IncumbentState, Incumbent> = {
  ATTACHED: {
    PrepareHandoff: onPrepare,
    Shutdown: onShutdown,
    ResumeAfterAbort: onResumeIdle,
    Abort: onResumeIdle,
    Commit: onStrayCommit,
  },
  DRAINED: { SealRequest: onSealRequest, ResumeAfterAbort: onResume, Abort: onResume },
  SEALED: { Commit: onCommit, ResumeAfterAbort: onResume, Abort: onResume },
};
