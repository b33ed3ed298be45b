/**
 * baton's public API.
 * - App side: `startBaton`, the `Drainable` contract and its result types.
 * - Supervisor side: `Supervisor`, listeners, the lock inspection helpers.
 * - Protocol: codec and schema, for tools and other-language peers' tests.
 */
export { startBaton, BatonApp } from './app.js';
export type { Drainable, DrainResult, SealResult, Readiness, StateSnapshot, BeginInfo, BatonAppOptions, InheritedListener } from './app.js';
export { detectRole, ENV } from './roles.js';
export type { Role, RoleInfo } from './roles.js';
export { Supervisor, checkReady, DEFAULT_TIMEOUTS, DEFAULT_RESTART } from './supervisor.js';
export type { SupervisorOptions, HandoffSpec, HandoffResult, HandoffOutcome, Timeouts, RestartPolicy, RecoveryReport, SupervisorPhase } from './supervisor.js';
export { bindListener, bindListeners, parseListenAddress, parseListenAddresses, adoptSystemdListeners } from './listeners.js';
export type { HeldListener, ListenerSpec } from './listeners.js';
export { DataDirLock, readLockOwner, lockHolder } from './lock.js';
export type { LockOwner } from './lock.js';
export { encodeFrame, FrameDecoder, negotiateVersion } from './codec.js';
export { validateMessage } from './messages.js';
export { SCHEMA, PROTOCOL_VERSION, PROTO_MIN, PROTO_MAX, MAX_FRAME_LENGTH } from './schema.js';
export type { Message, MessageOf, MessageType, RevisionMap } from './schema.js';
export { CRASH_POINTS, CRASH_POINT_NAMES } from './crashpoints.js';
export type { CrashPoint } from './crashpoints.js';
export { BatonError, ProtocolError, LockError, HandoffError, ConfigError } from './errors.js';
