import type { ControlChannel } from '../wire/channel.js';
import { HELLO_TIMEOUT_MS } from '../wire/channel.js';
import { negotiateVersion } from '../wire/codec.js';
import type { CrashConfig } from '../os/crashpoints.js';
import type { DataDirLock } from '../os/lock.js';
import type { Logger } from '../os/log.js';
import { PROTO_MAX, PROTO_MIN } from '../wire/schema.js';
import type { Rpc } from './worker-rpc.js';

/**
 * What the incumbent and successor machines (inside the app's baton worker thread)
 * work with. The worker owns the control connections and the data-dir lock so that
 * heartbeats and lock refreshes go on while the app's main thread is blocked.
 */
export interface AgentContext {
  /** Calls into the app's main thread: drain, seal, resume, begin, committed, exit. */
  rpc: Rpc;
  lock: DataDirLock;
  crash: CrashConfig;
  log: Logger;
  controlPath: string;
  buildId: Uint8Array;
  livenessMs: number;
  /** Set by the incumbent: progress notes from the app's main thread for the running job. */
  onJobProgress?: ((p: JobProgressNote) => void) | undefined;
  /** Set by the incumbent: the app's seal progress (Drainable.seal's callback). */
  onSealProgress?: ((done: number, total: number) => void) | undefined;
}

/** What the app's main thread reports for a running task (numbers; the worker encodes them as u64). */
export interface JobProgressNote {
  jobId: string;
  done: number;
  total: number;
  counters: Record<string, number>;
}

/** Capabilities this agent implements beyond handoffs (Hello.features). */
export const AGENT_FEATURES = ['jobs', 'probes', 'lifecycle'];

/**
 * App side of the handshake: we speak first (Hello), the supervisor answers HelloAck
 * with the handoff id and the version. Returns the handoff id.
 */
export async function sayHello(ch: ControlChannel, ctx: AgentContext, role: 'incumbent' | 'successor'): Promise<string> {
  // Features on the successor channel too: S knows what the app does before it is the incumbent
  // (and so never opens a probe session to an app without probes: PROTOCOL.md 7.9).
  ch.send({ type: 'Hello', role, pid: process.pid, buildId: ctx.buildId, protoMin: PROTO_MIN, protoMax: PROTO_MAX, features: AGENT_FEATURES });
  const ack = await ch.expect(['HelloAck'], HELLO_TIMEOUT_MS);
  // The supervisor picked the version; it must be one we speak.
  ch.setVersion(negotiateVersion(ack.protoVersion, ack.protoVersion));
  return ack.handoffId;
}

/** The app's main thread is told to exit; if it cannot (blocked), the worker ends the process. */
export async function exitProcess(ctx: AgentContext, code: number, reason: string): Promise<never> {
  ctx.log.info({ event: 'agent.exit', code, reason }, `exiting: ${reason}`);
  setTimeout(() => process.kill(process.pid, 'SIGKILL'), 3_000).unref();
  await ctx.rpc.call('exit', { code, reason }).catch(() => undefined);
  // The main thread calls process.exit; this line is reached only if it did not.
  return new Promise<never>(() => undefined);
}
