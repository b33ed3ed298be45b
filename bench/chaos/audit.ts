/**
 * After each step (and at the end of the run): harvest the crash markers, judge every
 * handoff result that arrived, and put every failed request down to a kill or stop of
 * this run — or report it. These violations are collected; the run goes on (unlike a
 * broken invariant, after which the world cannot be trusted).
 */
import { isAlive } from '../../src/os/proc.js';
import { attribute, judgeResult } from './checks.js';
import type { ChaosLoad } from './load.js';
import { REQUEST_TIMEOUT_MS } from './load.js';
import type { World } from './world.js';

export interface ChaosViolation {
  /** `failed-request:<error kind>`, `false-commit`, `false-abort`, `coverage`, or `invariant` (fatal). */
  kind: string;
  step: number;
  label: string;
  message: string;
  /** Failed requests folded into this entry (same step, kind and connection owner). */
  count?: number;
}

export interface AuditStats {
  failures: number;
  /** Failures seen by the last audit (for the step line). */
  lastFailures: number;
  attributedByPid: number;
  attributedByWindow: number;
  results: number;
  /** Results neither true nor false as far as the run can tell (judgeResult's `unjudged`), with why. */
  unjudged: string[];
}

/** A connection that never answered, failing within this long after a kill, is put down to it. */
export const WINDOW_MS = 3_000;

export function newAuditStats(): AuditStats {
  return { failures: 0, lastFailures: 0, attributedByPid: 0, attributedByWindow: 0, results: 0, unjudged: [] };
}

/** What the run knows about a pid, for a violation's message. */
function whoIs(w: World, pid: number): string {
  const notes: string[] = [];
  const role = w.roles.get(pid);
  if (role) notes.push(role);
  const recovered = w.recoveries as { killed?: number[] }[];
  if (recovered.some((r) => r.killed?.includes(pid))) notes.push("killed by a restarted supervisor's recovery");
  notes.push(isAlive(pid) ? 'alive now' : 'dead now, not killed by this run');
  return notes.join(', ');
}

export async function audit(w: World, load: ChaosLoad | undefined, labelOf: (step: number) => string, stats: AuditStats): Promise<ChaosViolation[]> {
  const out: ChaosViolation[] = [];
  w.harvestMarkers();
  for (const { result, truth, step } of await w.takeResults()) {
    stats.results++;
    const v = judgeResult(result, truth, w.casualties);
    if (v?.kind === 'unjudged') stats.unjudged.push(`step ${step}: handoff ${result.id.slice(0, 8)}: ${v.message}`);
    else if (v) out.push({ kind: v.kind, step, label: labelOf(step), message: `handoff ${result.id.slice(0, 8)}: ${v.message}` });
  }
  if (!load) return out;
  const groups = new Map<string, ChaosViolation>();
  const failures = load.takeFailures();
  stats.lastFailures = failures.length;
  for (const f of failures) {
    stats.failures++;
    const a = attribute(f, w.casualties, { requestTimeoutMs: REQUEST_TIMEOUT_MS, windowMs: WINDOW_MS, alive: isAlive });
    if (a) {
      if (a.by === 'pid') stats.attributedByPid++;
      else stats.attributedByWindow++;
      continue;
    }
    const step = w.stepAt(f.at);
    const owner =
      f.pid !== undefined
        ? `on a connection of pid ${f.pid} (${whoIs(w, f.pid)})`
        : `on a connection that never answered, with no kill of this run in the ${WINDOW_MS} ms before`;
    const key = `${step}|${f.kind}|${owner}`;
    const g = groups.get(key);
    if (g) {
      g.count = (g.count ?? 1) + 1;
      continue;
    }
    const v: ChaosViolation = { kind: `failed-request:${f.kind}`, step, label: labelOf(step), message: `${f.kind} ${owner}; first: ${f.what ?? '?'}${f.reused ? ' (reused connection)' : ''}`, count: 1 };
    groups.set(key, v);
    out.push(v);
  }
  return out;
}
