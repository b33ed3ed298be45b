/**
 * `@baton-sh/baton/testing`: prove that YOUR app survives handoffs, crashes at any named point
 * and signals mid-handoff, from your own test suite (vitest, node:test, anything).
 *
 *   import { createHarness, checkDrainableConformance, CRASH_POINTS } from '@baton-sh/baton/testing';
 *
 * - `createHarness({ command })`: your app under a real Supervisor in a temp dir on a
 *   free 127.0.0.1 port; `handoff`, `handoffWithCrash(point)`, `waitForPhase`,
 *   `signalAt(phase, role, sig)`, `signal(role, sig)`, `checkInvariants({ readBack })`, `close()`.
 * - `checkDrainableConformance({ command })`: the Drainable contract, rule by rule.
 * - `CRASH_POINTS`: every named crash point with its meaning.
 * Linux only (process checks read /proc). See docs/testing.md.
 */
export { createHarness, Harness, InvariantViolation, DEFAULT_PROBE, httpRequest } from './testing/harness.js';
export type { HarnessOptions, AppProbe, ProbeRequest, Role, Signal, CrashHandoff, InvariantOptions, InvariantReport } from './testing/harness.js';
export { checkDrainableConformance, CONFORMANCE_RULES, CONFORMANCE_RULE_NAMES } from './testing/conformance.js';
export type { ConformanceOptions, ConformanceReport, ConformanceRule, RuleResult } from './testing/conformance.js';
export { CRASH_POINTS, CRASH_POINT_NAMES } from './os/crashpoints.js';
export type { CrashPoint } from './os/crashpoints.js';
export { TEST_TAG_ENV, taggedPids, killTagged } from './testing/procs.js';
export type { HandoffSpec, Timeouts } from './supervisor/options.js';
export type { HandoffResult } from './supervisor/results.js';
export type { SupervisorPhase } from './supervisor/phases.js';
