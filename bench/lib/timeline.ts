/**
 * One handoff's anatomy, put together from three clocks that agree (all Date.now()
 * epoch ms on one machine): the supervisor's job record and phase log lines, the
 * apps' own log lines (incumbent drain/seal, lock released/acquired, kv opened), and
 * the load client's write acknowledgements (performance.timeOrigin + now).
 * Log times have 1 ms resolution.
 */
import { performance } from 'node:perf_hooks';
import type { JobRecord } from '../../src/daemon/jobs.js';
import type { LogEvent } from './daemon.js';
import type { KvLoad } from './kv-load.js';

export interface Anatomy {
  oldPid: number;
  newPid: number;
  /** Job start → end (trigger → commit), ms. */
  total: number;
  /** spawning + hello phases: successor spawned → its Hello (and the incumbent's) in. */
  startup: number;
  drain: number;
  seal: number;
  /** Incumbent's lock released → successor's lock acquired. */
  lockPass?: number;
  /** SealComplete at the supervisor (begin phase starts) → successor's lock acquired. */
  sealToLock?: number;
  /** The successor's own figure for taking the lock (its lock.acquired `ms`). */
  lockAcquire?: number;
  /** The incumbent's own seal figure (kv.sealed `ms`). */
  kvSeal?: number;
  /** begin + await_ready phases: Begin sent → Ready accepted. */
  ready: number;
  /** The successor's kv open after Begin (its own figure). */
  open?: number;
  commit: number;
  /** Last write acknowledged by the old process → first by the new one. */
  blackout?: number;
  /** The blackout cut into consecutive segments at the events in it (ms each). */
  segments?: Record<BlackoutSegment, number>;
  /** The longest per-connection write stall over the writer connections of bench/lib/write-probe (ms). */
  stall?: number;
  /** Drain starts at the incumbent → its last write acknowledgement (it keeps answering, with `Connection: close`). */
  drainToLastAck?: number;
}

export const BLACKOUT_SEGMENTS = [
  'rest of drain: last old ack → Drained',
  'seal: Drained → SealComplete',
  'lock pass: SealComplete → successor holds the lock',
  'open: lock → kv opened (data verified)',
  'listen + first write: kv opened → first new ack',
] as const;
export type BlackoutSegment = (typeof BLACKOUT_SEGMENTS)[number];

const epoch = (t: number) => performance.timeOrigin + t;

export function anatomy(job: JobRecord, events: LogEvent[], load?: KvLoad): Anatomy | undefined {
  const h = job.handoff;
  if (!h || h.outcome !== 'committed' || !h.oldPid || !h.newPid) return undefined;
  const phase = (p: string) => h.phases.filter((x) => x.phase === p).reduce((a, x) => a + x.ms, 0);
  const mine = events.filter((e) => e.handoffId === h.handoffId);
  const phaseAt = (p: string) => mine.find((e) => e.event === 'handoff.phase' && e.phase === p)?.time;
  const startedAt = Date.parse(job.startedAt ?? job.createdAt);
  const after = events.filter((e) => e.time >= startedAt - 1);
  const at = (pid: number, event: string) => after.find((e) => e.pid === pid && e.event === event);
  // `at`: the event's own time (the line is written just after it, off the blackout).
  const eventTime = (e: LogEvent | undefined) => e && Number(e.at ?? e.time);
  const released = eventTime(at(h.oldPid, 'lock.released'));
  const acquiredEv = mine.find((e) => e.pid === h.newPid && e.event === 'lock.acquired');
  const acquired = eventTime(acquiredEv);
  const kvSealed = at(h.oldPid, 'kv.sealed');
  const opened = at(h.newPid, 'kv.opened');
  const drainAt = mine.find((e) => e.pid === h.oldPid && e.event === 'incumbent.drain')?.time ?? phaseAt('draining');
  const drainedAt = phaseAt('sealing');
  const sealedAt = phaseAt('begin');
  const a: Anatomy = {
    oldPid: h.oldPid,
    newPid: h.newPid,
    total: job.durationMs ?? Date.parse(job.endedAt!) - startedAt,
    startup: phase('spawning') + phase('hello'),
    drain: phase('draining'),
    seal: phase('sealing'),
    ready: phase('begin') + phase('await_ready'),
    commit: phase('committing'),
  };
  if (released !== undefined && acquired !== undefined) a.lockPass = acquired - released;
  if (sealedAt !== undefined && acquired !== undefined) a.sealToLock = acquired - sealedAt;
  if (opened) a.open = Number(opened.ms);
  if (acquiredEv) a.lockAcquire = Number(acquiredEv.ms);
  if (kvSealed) a.kvSeal = Number(kvSealed.ms);
  const oldAcks = load?.acksByPid.get(h.oldPid);
  const newAcks = load?.acksByPid.get(h.newPid);
  if (oldAcks && newAcks) {
    a.blackout = newAcks.first - oldAcks.last;
    const lastOld = epoch(oldAcks.last);
    const firstNew = epoch(newAcks.first);
    if (drainAt !== undefined) a.drainToLastAck = lastOld - drainAt;
    const cuts = [lastOld, drainedAt, sealedAt, acquired, opened && Number(opened.openedAt ?? opened.time), firstNew];
    if (cuts.every((c) => c !== undefined)) {
      const c = cuts as number[];
      a.segments = Object.fromEntries(BLACKOUT_SEGMENTS.map((name, i) => [name, c[i + 1]! - c[i]!])) as Record<BlackoutSegment, number>;
    }
  }
  return a;
}
