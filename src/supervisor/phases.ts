export type SupervisorPhase =
  | 'idle'
  | 'spawning'
  | 'hello'
  | 'draining'
  | 'sealing'
  | 'begin'
  | 'await_ready'
  | 'committing'
  | 'aborting';

/**
 * Supervisor-side handoff sequence (PROTOCOL.md "Supervisor state machine"): each
 * phase names the next one; any failure before the incumbent's Committed goes to
 * ABORTING. Written as a table so the order is visible in one place.
 */
export const NEXT_PHASE: Record<SupervisorPhase, SupervisorPhase | undefined> = {
  idle: 'spawning',
  spawning: 'hello',
  hello: 'draining',
  draining: 'sealing',
  sealing: 'begin',
  begin: 'await_ready',
  await_ready: 'committing',
  committing: undefined,
  aborting: undefined,
};
