/**
 * Hands the supervisor's free heap pages back to the OS after a handoff.
 *
 * A handoff churns through short-lived objects (a child process, two control
 * channels, frames, job records), and V8 keeps the old-space pages it grew into:
 * measured over 300 back-to-back handoffs, the supervisor's RSS rose 56.7 → 68.9 MiB
 * while its live heap stayed ≈ 8 MiB (BENCHMARKS.md, "Past 100 handoffs"). One full
 * GC once the handoff's garbage is garbage (the old process gone, its channels
 * destroyed) compacts and releases them: 63.1 MiB after 300 handoffs. It costs a few
 * ms of the supervisor's main thread at an idle moment; a new handoff within the
 * delay postpones it.
 *
 * `gc` is not exposed without `--expose-gc`; setting that flag at run time and taking
 * `gc` from a fresh context is the documented-to-work way to get it without asking
 * every caller to pass the flag (it works on Node 20, 22 and 24).
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import type { Logger } from '../os/log.js';

/** How long after a handoff ends the full GC runs (the old process exits within ~1 s of Commit). */
export const COMPACT_DELAY_MS = 1_000;

let fullGc: (() => void) | undefined;

function getFullGc(): () => void {
  if (!fullGc) {
    v8.setFlagsFromString('--expose-gc');
    fullGc = vm.runInNewContext('gc') as () => void;
  }
  return fullGc;
}

export class HeapCompactor {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly log: Logger,
    private readonly delayMs = COMPACT_DELAY_MS,
  ) {}

  /** A handoff just ended: compact once things are quiet. */
  afterHandoff(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.compact(), this.delayMs);
    this.timer.unref();
  }

  compact(): void {
    const before = process.memoryUsage.rss();
    const t0 = performance.now();
    getFullGc()();
    const after = process.memoryUsage.rss();
    this.log.debug(
      { event: 'memory.compacted', rssBefore: before, rssAfter: after, gcMs: Math.round((performance.now() - t0) * 10) / 10 },
      `full GC after a handoff: RSS ${(before / 2 ** 20).toFixed(1)} → ${(after / 2 ** 20).toFixed(1)} MiB`,
    );
  }

  close(): void {
    clearTimeout(this.timer);
  }
}
