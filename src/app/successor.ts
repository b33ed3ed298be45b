import net from 'node:net';
import { exitProcess, sayHello, type AgentContext } from './agent.js';
import { ControlChannel } from '../wire/channel.js';
import { crashPoint } from '../os/crashpoints.js';
import { BatonError, errorMessage } from '../os/errors.js';
import { Incumbent } from './incumbent.js';
import { waitForExit } from '../os/proc.js';
import { DEFAULT_STALE_MS, DEFAULT_UPDATE_MS, ownerlessStaleMs } from '../os/lock.js';
import type { MessageOf } from '../wire/schema.js';
import { drive, type Machine, type Transitions } from '../wire/statemachine.js';
import type { BeginInfo, DrainResult, Readiness } from './app.js';

/** Successor states (PROTOCOL.md "Successor state machine"). */
export type SuccessorState =
  | 'STARTING'
  | 'HELLO'
  | 'WAIT_BEGIN'
  | 'OPENING' // lock taken, the app opens its data
  | 'READY_SENT'
  | 'COMMITTED' // now the incumbent
  | 'ABORTED';

/** After losing the supervisor post-Ready: how long to wait for a committed incumbent to exit. */
export const INCUMBENT_EXIT_WAIT_MS = 3_000;
/**
 * An aborted successor that was sent Begin may be serving: it drains (stops accepting,
 * lets requests finish, closes keep-alive connections cleanly) for at most this long
 * before it releases the lock and exits, so no client sees a reset (PROTOCOL.md 7.4).
 * The supervisor waits a little longer than this before SIGTERM.
 */
export const SUCCESSOR_ABORT_DRAIN_MS = 2_000;

export class Successor implements Machine<SuccessorState> {
  state: SuccessorState = 'STARTING';
  handoffId: string | undefined;
  incumbentPid = 0;
  /** What our Ready said: only a healthy successor may commit on its own (PROTOCOL.md 7.5). */
  readyHealthy = false;
  channel!: ControlChannel;

  constructor(
    readonly ctx: AgentContext,
    private readonly controlFd: number,
    readonly role: 'cold' | 'successor',
  ) {}

  /** Runs the successor side until it is the incumbent (returns it) or exits the process. */
  async run(): Promise<Incumbent> {
    const { ctx } = this;
    const socket = new net.Socket({ fd: this.controlFd, readable: true, writable: true });
    this.channel = new ControlChannel(socket, { peer: 'supervisor', log: ctx.log, livenessMs: ctx.livenessMs });
    let ended: BatonError;
    try {
      crashPoint(ctx.crash, 'successor.before_hello');
      this.state = 'HELLO';
      this.handoffId = await sayHello(this.channel, ctx, 'successor');
      crashPoint(ctx.crash, 'successor.after_hello');
      this.state = 'WAIT_BEGIN';
      this.channel.startHeartbeats(() => this.state.toLowerCase());
      ended = await drive(this.channel, this, SUCCESSOR_TRANSITIONS);
    } catch (err) {
      ended = err instanceof BatonError ? err : new BatonError((err as { code?: string }).code ?? 'E_SESSION', errorMessage(err));
      this.channel.sendError(ended);
    }
    if (this.state === 'COMMITTED') return this.becomeIncumbent();
    return this.supervisorLost(ended);
  }

  /**
   * Lost the supervisor before Commit. After a healthy Ready we hold the lock: if the
   * incumbent is gone (it answered Committed and exited, or died) we are the only one who
   * can serve, so we commit on our own; if it is alive it will resume, so we step aside.
   * A successor whose Ready said unhealthy never commits on its own (it would hold the lock
   * without serving): it steps aside at once, and a dead incumbent is then a cold start.
   */
  private async supervisorLost(reason: BatonError): Promise<never | Incumbent> {
    const { ctx } = this;
    ctx.log.warn({ event: 'successor.supervisor_lost', state: this.state, code: reason.code, reason: reason.message }, 'lost the supervisor before Commit');
    if (this.state === 'READY_SENT' && ctx.lock.held && this.readyHealthy) {
      const incumbentGone = this.incumbentPid === 0 || (await waitForExit(this.incumbentPid, INCUMBENT_EXIT_WAIT_MS));
      if (incumbentGone) {
        ctx.log.warn({ event: 'successor.self_commit', incumbentPid: this.incumbentPid }, 'incumbent is gone; committing on our own');
        this.state = 'COMMITTED';
        return this.becomeIncumbent();
      }
    }
    return this.abort(`supervisor lost in ${this.state}: ${reason.message}`);
  }

  async abort(reason: string): Promise<never> {
    const mayServe = this.state === 'OPENING' || this.state === 'READY_SENT';
    this.state = 'ABORTED';
    if (mayServe) await this.stopServing(reason);
    if (this.ctx.lock.held) await this.ctx.lock.release().catch(() => undefined);
    this.channel.close('aborted');
    return exitProcess(this.ctx, 0, `successor aborted: ${reason}`);
  }

  /** The app drains like an incumbent would, bounded by SUCCESSOR_ABORT_DRAIN_MS (a hung app is not waited for). */
  private async stopServing(reason: string): Promise<void> {
    const { ctx } = this;
    ctx.log.info({ event: 'successor.abort_drain', reason }, 'aborted after Begin: draining before exit');
    const drained = ctx.rpc.call<DrainResult>('drain', { deadlineMs: Date.now() + SUCCESSOR_ABORT_DRAIN_MS }).then(
      (r) => ctx.log.info({ event: 'successor.abort_drained', ...r }, 'drained after abort'),
      (err: unknown) => ctx.log.warn({ event: 'successor.abort_drain_failed', err: errorMessage(err) }, 'drain after abort failed'),
    );
    const timer = new Promise<void>((r) => setTimeout(r, SUCCESSOR_ABORT_DRAIN_MS + 200).unref());
    await Promise.race([drained, timer]);
  }

  private async becomeIncumbent(): Promise<Incumbent> {
    const inc = new Incumbent(this.ctx);
    await inc.bind();
    crashPoint(this.ctx.crash, 'successor.after_bind_control');
    this.channel.close('committed');
    await this.ctx.rpc.call('committed');
    return inc;
  }
}

/**
 * How long the successor waits for the data-dir lock after Begin (PROTOCOL.md 8.3): a
 * second longer than an ownerless lock dir takes to count as abandoned (6 s), so a dir
 * left by a process killed between its mkdir and its owner record (or mid-release)
 * never fails a start that came just after it.
 */
export const SUCCESSOR_LOCK_WAIT_MS = ownerlessStaleMs(DEFAULT_STALE_MS, DEFAULT_UPDATE_MS) + 1_000;

/**
 * Begin: take the lock, let the app open its data, send Ready. This runs beside the
 * driver, not inside it: an app that hangs while opening must still hear Abort (and
 * notice a lost supervisor), so it can drain the connections it may already serve and
 * exit instead of being killed with them open.
 */
async function onBegin(s: Successor, msg: MessageOf<'Begin'>): Promise<void> {
  crashPoint(s.ctx.crash, 'successor.on_begin');
  s.state = 'OPENING';
  s.incumbentPid = msg.incumbentPid;
  void openAfterBegin(s, msg).catch((err: unknown) => {
    if (s.state !== 'OPENING') return; // aborted meanwhile
    // Say why (e.g. E_LOCK_HELD) and hang up: the driver then ends and the successor aborts (drains, exits).
    s.channel.sendError(err instanceof BatonError ? err : new BatonError((err as { code?: string }).code ?? 'E_OPEN_FAILED', errorMessage(err)));
    s.channel.close('open failed');
  });
}

async function openAfterBegin(s: Successor, msg: MessageOf<'Begin'>): Promise<void> {
  const { ctx } = s;
  // The incumbent released the lock before SealComplete, or is provably dead (promotion).
  await ctx.lock.acquire({ handoffId: msg.handoffId, waitMs: SUCCESSOR_LOCK_WAIT_MS });
  if (s.state !== 'OPENING') return;
  crashPoint(ctx.crash, 'successor.after_lock');
  const info: BeginInfo = {
    role: s.role,
    handoffId: msg.handoffId,
    sealedRevisionPerShard: msg.sealedRevisionPerShard,
    sealedFingerprint: msg.sealedFingerprint,
    incumbentPid: msg.incumbentPid,
  };
  const readiness = await ctx.rpc.call<Readiness>('begin', info);
  if (s.state !== 'OPENING') return;
  crashPoint(ctx.crash, 'successor.before_ready');
  s.state = 'READY_SENT';
  s.readyHealthy = readiness.healthzOk;
  s.channel.send({ type: 'Ready', handoffId: msg.handoffId, ...readiness, buildId: ctx.buildId });
  crashPoint(ctx.crash, 'successor.after_ready');
}

async function onCommit(s: Successor, msg: MessageOf<'Commit'>): Promise<void> {
  crashPoint(s.ctx.crash, 'successor.on_commit');
  s.state = 'COMMITTED';
  s.channel.send({ type: 'Committed', handoffId: msg.handoffId });
  crashPoint(s.ctx.crash, 'successor.after_committed');
}

async function onAbort(s: Successor, msg: MessageOf<'Abort'>): Promise<void> {
  crashPoint(s.ctx.crash, 'successor.on_abort');
  await s.abort(msg.reason);
}

export const SUCCESSOR_TRANSITIONS: Transitions<SuccessorState, Successor> = {
  WAIT_BEGIN: { Begin: onBegin, Abort: onAbort },
  OPENING: { Abort: onAbort },
  READY_SENT: { Commit: onCommit, Abort: onAbort },
};
