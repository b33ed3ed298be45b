/** What a Supervisor reports (handoff and recovery results) and journals. */
import type { RollbackInfo } from './options.js';
import type { SupervisorPhase } from './phases.js';

export type HandoffOutcome = 'committed' | 'aborted';
export interface HandoffResult {
  id: string;
  outcome: HandoffOutcome;
  /** Abort reason, or a note on how the commit happened (e.g. promotion). */
  reason?: string;
  code?: string;
  /** The incumbent died mid-handoff and the successor was promoted. */
  promoted?: boolean;
  /** Drained.openConnsRemaining when it was not 0: connections the old incumbent closed at Commit. */
  openConnsAtDrain?: number;
  startedAt: number;
  endedAt: number;
  /** Milliseconds spent in each phase, in order. */
  phases: { phase: SupervisorPhase; ms: number }[];
  oldPid: number | undefined;
  newPid: number | undefined;
  generation: number;
  /**
   * After an abort that left nobody serving: the cold start that brought the service
   * back, and why the incumbent did not serve again (`lostIncumbent`).
   */
  restoredBy?: { handoffId: string; outcome: HandoffOutcome; pid: number | undefined; lostIncumbent: string };
  /** The last lines the successor wrote to stderr, when it failed (aborted handoffs). */
  successorStderr?: string;
  /** The build the handoff started (its resolved command and announced build id). */
  build?: { buildId: string; resolved: string[] };
  /** This handoff was a rollback to an earlier build. */
  rollback?: RollbackInfo;
}

export interface RecoveryReport {
  handoffId: string;
  /** Phase the crashed supervisor was in. */
  phase: SupervisorPhase;
  /** The process adopted as the incumbent, if any survived. */
  survivor?: { pid: number; role: 'incumbent' | 'successor'; generation: number } | undefined;
  /** Orphans of ours that were killed. */
  killed: number[];
}

/** What is persisted before each phase so a restarted supervisor knows what was in flight. */
export interface JournalRecord {
  handoffId: string;
  /** Phase when the record was written (it is rewritten only when the processes change). */
  phase: SupervisorPhase;
  generation: number;
  incumbent?: { pid: number; startTime?: string | undefined };
  successor?: { pid: number; startTime?: string | undefined };
  at: number;
}
