/**
 * baton's public API.
 * - App side: `startBaton`, the `Drainable` contract and its result types, `verifyOpened`.
 * - Supervisor side: `Supervisor`, listeners, the lock inspection helpers.
 * - Protocol: codec and schema, for tools and other-language peers' tests.
 * Every type a public signature uses is exported here or from testing.ts, so a
 * TypeScript user can name it (test/package.test.ts checks the built declarations).
 */
export { startBaton, BatonApp } from './app/app.js';
export type { Drainable, DrainResult, SealResult, SealProgress, Readiness, StateSnapshot, BeginInfo, BatonAppOptions, InheritedListener } from './app/app.js';
export type { TaskHandler, TaskProgress, TaskInfo, Urgency, ProbeFn, ProbeResult, ProbeStatus, ProbeReportEntry } from './app/app.js';
export type { StartupCompletedEvent, ShutdownRequestedEvent, ShutdownCompletedEvent, ShutdownReason } from './app/app.js';
export type { ListenTarget, AcceptCopy } from './app/app.js';
export { verifyOpened } from './app/verify-opened.js';
export { detectRole, ENV } from './wire/roles.js';
export type { Role, RoleInfo } from './wire/roles.js';
export { Supervisor } from './supervisor/supervisor.js';
export { DEFAULT_TIMEOUTS, DEFAULT_RESTART } from './supervisor/options.js';
export { checkReady } from './supervisor/ready-check.js';
export type { SupervisorOptions, HandoffSpec, Timeouts, RestartPolicy, BuildRef, RollbackInfo, ActivationOptions } from './supervisor/options.js';
export type { BuildInfo, BuildLedger, BuildRecord, BuildState } from './supervisor/builds.js';
export type { StderrTail } from './supervisor/stderr-tail.js';
export type { HandoffResult, HandoffOutcome, RecoveryReport } from './supervisor/results.js';
export type { SupervisorPhase } from './supervisor/phases.js';
export type { AppProcess, ExitStatus } from './supervisor/generation.js';
export type { JobSpec, JobResult, JobOutcome, JobProgressSnapshot } from './supervisor/lease.js';
export type { ProbeEntry, ProbeState } from './supervisor/probes.js';
export { bindListener, bindListeners, parseListenAddress, parseListenAddresses, adoptSystemdListeners } from './os/listeners.js';
export type { HeldListener, ListenerSpec } from './os/listeners.js';
export { DataDirLock, readLockOwner, lockHolder } from './os/lock.js';
export type { LockOwner, LockState, DataDirLockOptions, AcquireOptions } from './os/lock.js';
export { encodeFrame, FrameDecoder, negotiateVersion } from './wire/codec.js';
export type { DecodedFrame } from './wire/codec.js';
export { validateMessage } from './wire/messages.js';
export type { ValidateOptions } from './wire/messages.js';
export { SCHEMA, PROTOCOL_VERSION, PROTO_MIN, PROTO_MAX, MAX_FRAME_LENGTH } from './wire/schema.js';
export type { Message, MessageOf, MessageType, RevisionMap } from './wire/schema.js';
export { CRASH_POINTS, CRASH_POINT_NAMES } from './os/crashpoints.js';
export type { CrashPoint, CrashConfig } from './os/crashpoints.js';
export { BatonError, ProtocolError, LockError, HandoffError, ConfigError, HttpAdapterError, SealMismatchError } from './os/errors.js';
