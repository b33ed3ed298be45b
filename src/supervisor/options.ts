/**
 * What a Supervisor is configured with: its options, timeouts and restart policy, and
 * what one handoff or stop is asked for.
 */
import { HELLO_TIMEOUT_MS, LIVENESS_TIMEOUT_MS } from '../wire/channel.js';
import type { CrashConfig, CrashPoint } from '../os/crashpoints.js';
import type { HeldListener } from '../os/listeners.js';
import type { Logger } from '../os/log.js';
import type { SupervisorPhase } from './phases.js';

export interface Timeouts {
  /** Wait for a peer's Hello after spawn/connect. */
  helloMs: number;
  /** Any receive: close the channel when nothing arrives for this long. */
  livenessMs: number;
  /** Default drain grace given to the incumbent. */
  drainGraceMs: number;
  /** Default overall deadline of a handoff. */
  deadlineMs: number;
  /**
   * Default budget from Begin to the successor's Ready. The incumbent has drained and
   * sealed by then, so this bounds how long a successor that hangs after Begin keeps
   * every client waiting (the overall deadline alone allowed minutes).
   */
  readyMs: number;
  /** SIGTERM → SIGKILL grace when killing an aborted successor. */
  killGraceMs: number;
  /** How long an aborted incumbent has to answer Resumed. */
  resumeMs: number;
  /** A handoff requested while a maintenance job runs waits this long for it, then cancels it (critical jobs: refused). */
  leaseWaitMs: number;
  /** After JobCancel: how long the app has to answer JobDone before the job's connection is closed. */
  cancelGraceMs: number;
  /** How long a probe request may take (incumbent connection included). */
  probeMs: number;
  /**
   * Bake window after a commit: a new build that crashes (or is reported CRITICAL) inside
   * it is rolled back to the last known-good build; one that lasts it is good. 0: none.
   */
  bakeMs: number;
}

export const DEFAULT_TIMEOUTS: Timeouts = {
  helloMs: HELLO_TIMEOUT_MS,
  livenessMs: LIVENESS_TIMEOUT_MS,
  drainGraceMs: 60_000,
  deadlineMs: 300_000,
  // An app's slow start-up work belongs before Hello (warmUp), where the incumbent still
  // serves; after Begin it only takes the lock and opens what it pre-read. 10 s covers a
  // large open on a busy machine and keeps a hung build's blackout to seconds.
  readyMs: 10_000,
  killGraceMs: 2_000,
  resumeMs: 30_000,
  leaseWaitMs: 30_000,
  cancelGraceMs: 5_000,
  probeMs: 2_000,
  // Long enough for a crash on the first real traffic and three health checks at the
  // default 10 s interval; short enough that the next deploy rarely waits on it.
  bakeMs: 30_000,
};

export interface RestartPolicy {
  enabled: boolean;
  baseMs: number;
  maxMs: number;
  /** More restarts than this within windowMs is a crash loop. */
  maxRestarts: number;
  windowMs: number;
}

export const DEFAULT_RESTART: RestartPolicy = { enabled: true, baseMs: 100, maxMs: 10_000, maxRestarts: 5, windowMs: 60_000 };

export interface SupervisorOptions {
  /** Command of the app; a function is re-evaluated on every spawn (so a symlink swap upgrades). */
  command: readonly string[] | (() => readonly string[]);
  listeners: readonly HeldListener[];
  dataDir: string;
  /** Private state: control socket dir (0700), journal. */
  stateDir: string;
  env?: NodeJS.ProcessEnv;
  timeouts?: Partial<Timeouts>;
  log?: Logger;
  /** App stdout: inherited by default. */
  appStdout?: 'inherit' | 'ignore';
  /** What to do when the incumbent exits outside a handoff. */
  restart?: Partial<RestartPolicy>;
  /** Spare listener copies per app (re-listen after an abort); default 4. */
  listenerSpares?: number;
  /** Give apps Node's IPC channel for fresh listener copies (PROTOCOL.md §2); default true. */
  listenerCopies?: boolean;
  /**
   * Awaited on entering every phase, before the phase's work (tests and tools that must
   * act at an exact point, e.g. inspect the data dir between SealComplete and Begin).
   * Its time counts in the phase and against the deadline.
   */
  phaseGate?: (phase: SupervisorPhase, handoffId: string) => Promise<void>;
  /** This supervisor's own crash point (tests); default from BATON_CRASH_POINT. */
  crash?: CrashConfig;
  /**
   * Socket-activation mode (activation.ts): the app is an unmodified server that gets the
   * listeners the systemd way and speaks no control protocol. Absent: protocol mode.
   */
  activation?: Partial<ActivationOptions>;
}

/** How a socket-activated app is judged ready and stopped (docs/socket-activation.md). */
export interface ActivationOptions {
  /** A new process is ready once it has been alive this long (and the checks below pass). */
  readyAfterMs: number;
  /** Run with `sh -c` until it exits 0 (env BATON_APP_PID, BATON_GENERATION); none: not checked. */
  readyCmd: string | undefined;
  /**
   * `GET` this path on a private listener only the new process gets (the last fd, named
   * `baton-ready`) until it answers 2xx; none: no private listener, not checked.
   */
  readyHttp: string | undefined;
  /** The app's graceful-stop signal: sent to the old process after the new one is ready, and on stop. */
  stopSignal: NodeJS.Signals;
  /** After the stop signal, SIGKILL (process group included) past this. */
  stopGraceMs: number;
}

export const DEFAULT_ACTIVATION: ActivationOptions = {
  // Like Server::Starter's default: a server that is still up after a second has bound its
  // inherited socket and got past its start-up errors, for most servers.
  readyAfterMs: 1_000,
  readyCmd: undefined,
  readyHttp: undefined,
  stopSignal: 'SIGTERM',
  stopGraceMs: 30_000,
};

export interface HandoffSpec {
  command?: readonly string[];
  /** Start this build (a restart of the build that served, or a rollback); overrides `command`. */
  build?: { command: readonly string[]; resolved: readonly string[] };
  /** This handoff goes back to an earlier build (see Supervisor.rollback). */
  rollback?: RollbackInfo;
  deadlineMs?: number;
  drainGraceMs?: number;
  /** Begin → Ready budget for this handoff (default timeouts.readyMs). */
  readyMs?: number;
  /** Extra env for the successor only. */
  successorEnv?: Record<string, string>;
  /** Make the successor crash at this point (tests). */
  successorCrashPoint?: CrashPoint;
  crashMarkerDir?: string;
  /** A maintenance job holds the lease: wait this long for it before cancelling it (default timeouts.leaseWaitMs). */
  leaseWaitMs?: number;
}

/** A build as results name it. */
export interface BuildRef {
  generation: number;
  buildId: string;
  resolved: string[];
}

/** Why and from what to what a handoff rolled back. */
export interface RollbackInfo {
  reason: string;
  /** Started by baton itself (crash or CRITICAL inside the bake window), not asked for. */
  automatic: boolean;
  from: BuildRef | undefined;
  to: BuildRef;
}

/** Shutdown.reason (PROTOCOL.md 7.7): who asked for the stop. */
export type ShutdownReason = 'graceful' | 'signal' | 'admin' | 'error';
