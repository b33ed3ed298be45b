/** The chaos schedule: one seeded PRNG draws every step up front, so a seed replays. */
import { CRASH_POINT_NAMES, type CrashPoint } from '../../src/os/crashpoints.js';
import { Rng } from '../lib/prng.js';

export type Role = 'incumbent' | 'successor' | 'supervisor';
export const HANDOFF_PHASES = ['spawning', 'hello', 'draining', 'sealing', 'begin', 'await_ready', 'committing'] as const;
export type Phase = 'idle' | (typeof HANDOFF_PHASES)[number];

export type Step =
  | { kind: 'handoff' }
  /** `abort`: the successor is unhealthy, so the handoff aborts (reaches abort-only points). */
  | { kind: 'crash'; role: Role; point: CrashPoint; abort: boolean }
  | { kind: 'kill'; role: Role; phase: Phase; afterMs: number }
  | { kind: 'stop'; role: Role; phase: Phase; afterMs: number; stopMs: number }
  | { kind: 'concurrent'; phase: Phase | 'at-once' }
  | { kind: 'bad-start'; how: 'exit' | 'bad-env' | 'unhealthy' }
  | { kind: 'delay'; ms: number };

/** Points that are reached only when the handoff aborts. */
export const ABORT_ONLY = new Set<string>(['incumbent.on_resume', 'incumbent.after_relock', 'successor.on_abort', 'supervisor.during_abort']);
/** Points that are reached only when the handoff gets to Commit: an `+abort` step (unhealthy successor) never reaches them. */
export const COMMIT_ONLY = new Set<string>([
  'supervisor.after_commit_incumbent',
  'supervisor.after_commit_successor',
  'incumbent.on_commit',
  'incumbent.after_committed',
  'successor.on_commit',
  'successor.after_committed',
  'successor.after_bind_control',
]);

export function label(s: Step): string {
  switch (s.kind) {
    case 'handoff':
      return 'handoff';
    case 'crash':
      return `crash:${s.point}${s.abort ? '+abort' : ''}`;
    case 'kill':
      return `kill:${s.role}:${s.phase}+${s.afterMs}ms`;
    case 'stop':
      return `stop:${s.role}:${s.phase}+${s.afterMs}ms:${s.stopMs}ms`;
    case 'concurrent':
      return `concurrent:${s.phase}`;
    case 'bad-start':
      return `bad-start:${s.how}`;
    case 'delay':
      return `delay:${s.ms}ms`;
  }
}

/**
 * Crash points are dealt, not drawn: every point once in a seeded shuffled order, then
 * reshuffled, so each one comes up once per CRASH_POINT_NAMES.length crash steps (a
 * 500-step run deals each 4–5 times; random draws left points out of long runs).
 */
class Deck {
  private cards: CrashPoint[] = [];

  constructor(private readonly rng: Rng) {}

  deal(): CrashPoint {
    if (this.cards.length === 0) {
      this.cards = [...CRASH_POINT_NAMES];
      for (let i = this.cards.length - 1; i > 0; i--) {
        const j = this.rng.int(0, i);
        [this.cards[i], this.cards[j]] = [this.cards[j]!, this.cards[i]!];
      }
    }
    return this.cards.pop()!;
  }
}

function drawStep(rng: Rng, deck: Deck): Step {
  const kind = rng.weighted({ handoff: 12, crash: 28, kill: 16, stop: 10, concurrent: 8, 'bad-start': 8, delay: 4 });
  switch (kind) {
    case 'handoff':
      return { kind };
    case 'crash': {
      const point = deck.deal();
      const role = point.slice(0, point.indexOf('.')) as Role;
      // The coin is tossed for a commit-only point too (and ignored), so every later draw stays as it was.
      const coin = ABORT_ONLY.has(point) || rng.chance(0.1);
      return { kind, role, point, abort: coin && !COMMIT_ONLY.has(point) };
    }
    case 'kill':
    case 'stop': {
      const role = rng.weighted<Role>({ incumbent: 6, successor: 5, supervisor: 5 });
      const phase: Phase = role !== 'successor' && rng.chance(0.3) ? 'idle' : rng.pick(HANDOFF_PHASES);
      // Most phases of a kv handoff last tens of ms: a long delay mostly lands after the
      // handoff ended, so most draws are short.
      const afterMs = rng.chance(0.7) ? rng.int(0, 40) : rng.int(0, 300);
      if (kind === 'kill') return { kind, role, phase, afterMs };
      return { kind, role, phase, afterMs, stopMs: rng.int(300, 7_000) };
    }
    case 'concurrent':
      return { kind, phase: rng.chance(0.3) ? 'at-once' : rng.pick(HANDOFF_PHASES) };
    case 'bad-start':
      return { kind, how: rng.pick(['exit', 'bad-env', 'unhealthy'] as const) };
    case 'delay':
      return { kind, ms: rng.int(0, 1_500) };
  }
}

/**
 * The whole schedule, drawn up front from the seed. Steps whose label starts with one of
 * `skip` (or, with `only`, does not start with one of `only`) are drawn again
 * (deterministically), so a run with --skip/--only replays too.
 */
export function makeSchedule(seed: number, iterations: number, skip: readonly string[] = [], only: readonly string[] = []): Step[] {
  const rng = new Rng(seed);
  const deck = new Deck(rng);
  const steps: Step[] = [];
  const drop = (s: Step): boolean => skip.some((p) => label(s).startsWith(p)) || (only.length > 0 && !only.some((p) => label(s).startsWith(p)));
  while (steps.length < iterations) {
    let step = drawStep(rng, deck);
    for (let tries = 0; drop(step); tries++) {
      if (tries > 100_000) throw new Error(`--skip/--only leave nothing to draw`);
      step = drawStep(rng, deck);
    }
    steps.push(step);
  }
  return steps;
}
