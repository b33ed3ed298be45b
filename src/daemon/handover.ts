import { BatonError, ConfigError } from '../os/errors.js';
import * as net from 'node:net';
import { adoptHandle, createServerHandleFromFd, formatAddress, type HeldListener, type ListenerSpec } from '../os/listeners.js';

/**
 * The contract between a running `baton run` and the one that replaces it (`baton
 * upgrade --self`, daemon/self-upgrade.ts): what the new supervisor inherits and the
 * messages the two exchange over Node's IPC channel (the new one's fd 3).
 *
 * Inherited: the listening sockets at fds 4.. (one per listener, in order), then the
 * serving app's stderr read end when there is one. Described by BATON_HANDOVER (JSON):
 *
 *   { v: 1, fromPid, jobId, listeners: [{ name, address, spec, ino? }], appStderr: bool,
 *     systemd: bool, stateDir, dataDir }
 *
 * Messages, each `{ baton: 'handover', type, ... }`:
 *   new → old  prepared   config read and valid, listeners held: ready to take over
 *   old → new  go         the old one is quiet (no admin socket, no scheduler, state flushed)
 *   new → old  serving    admin socket bound, app re-adopted: the old one may exit
 *              (`job`: the self-upgrade's job record, finished by the new one)
 *   new → old  failed     `code`, `message`: the new one gives up and exits; the old serves on
 */

export const HANDOVER_ENV = 'BATON_HANDOVER';
/** The IPC channel is the new supervisor's fd 3; listeners follow. */
export const HANDOVER_FIRST_FD = 4;
const MAX_ENV_BYTES = 64 * 1024;
const MAX_LISTENERS = 64;

export interface HandedListener {
  name: string;
  address: string;
  spec: ListenerSpec;
  /** unix listeners we bound: the socket file's inode (ours to unlink once we own it). */
  ino?: number;
}

export interface HandoverEnv {
  v: 1;
  fromPid: number;
  jobId: string;
  listeners: HandedListener[];
  appStderr: boolean;
  /** The listeners came from systemd socket activation (the configured ones were ignored). */
  systemd: boolean;
  /** The old supervisor's: ours must be the same (the journal, the admin socket, the lock are there). */
  stateDir: string;
  dataDir: string;
  /** The app runs in socket-activation mode (no protocol): the mode cannot change under it. */
  socketActivation: boolean;
}

export type HandoverMessage =
  | { baton: 'handover'; type: 'prepared'; pid: number }
  | { baton: 'handover'; type: 'go' }
  | { baton: 'handover'; type: 'serving'; pid: number; version: string; job: unknown }
  | { baton: 'handover'; type: 'failed'; code: string; message: string };

export function isHandoverMessage(m: unknown): m is HandoverMessage {
  const o = m as { baton?: unknown; type?: unknown } | null;
  return typeof o === 'object' && o !== null && o.baton === 'handover' && typeof o.type === 'string';
}

/** The env's description, validated (it comes from the process that started us, but a bad one must fail clearly). */
export function parseHandoverEnv(text: string | undefined): HandoverEnv | undefined {
  if (text === undefined) return undefined;
  const bad = (why: string): ConfigError => new ConfigError('E_BAD_ENV', `malformed ${HANDOVER_ENV}: ${why}`);
  if (Buffer.byteLength(text) > MAX_ENV_BYTES) throw bad(`longer than ${MAX_ENV_BYTES} bytes`);
  let v: Partial<HandoverEnv>;
  try {
    v = JSON.parse(text) as Partial<HandoverEnv>;
  } catch {
    throw bad('not JSON');
  }
  if (typeof v !== 'object' || v === null || v.v !== 1) throw bad('version is not 1');
  if (!Number.isInteger(v.fromPid) || (v.fromPid as number) <= 1) throw bad('fromPid is not a pid');
  if (typeof v.jobId !== 'string' || !/^[0-9a-f-]{36}$/.test(v.jobId)) throw bad('jobId is not a job id');
  if (!Array.isArray(v.listeners) || v.listeners.length > MAX_LISTENERS) throw bad(`listeners is not a list of at most ${MAX_LISTENERS}`);
  for (const l of v.listeners as HandedListener[]) {
    const s = l?.spec;
    if (typeof l?.name !== 'string' || typeof l.address !== 'string' || typeof s !== 'object' || s === null || s.name !== l.name || (s.kind !== 'tcp' && s.kind !== 'unix')) throw bad('a listener is malformed');
    if (l.ino !== undefined && !Number.isInteger(l.ino)) throw bad(`listener ${l.name}: ino is not an integer`);
  }
  if (typeof v.appStderr !== 'boolean' || typeof v.systemd !== 'boolean') throw bad('appStderr or systemd is not a boolean');
  if (typeof v.stateDir !== 'string' || typeof v.dataDir !== 'string') throw bad('stateDir or dataDir is not a path');
  if (typeof v.socketActivation !== 'boolean') throw bad('socketActivation is not a boolean');
  return v as HandoverEnv;
}

/**
 * The handed-over listeners, held (never accepted on here), in order. A unix socket file
 * is not ours to unlink until `own()` is called on the result (after the old supervisor
 * is gone): a new supervisor that fails must leave the path to the old one.
 */
export function adoptHandedListeners(env: HandoverEnv): { listeners: HeldListener[]; own: () => HeldListener[] } {
  const wrapped = env.listeners.map((l, i) => {
    const fd = HANDOVER_FIRST_FD + i;
    const handle = createServerHandleFromFd(fd);
    if (typeof handle === 'number') throw new BatonError('E_BAD_ENV', `${HANDOVER_ENV}: fd ${fd} (listener ${l.name}) is not a socket this process can hold`);
    return { l, handle };
  });
  const listeners = wrapped.map(({ l, handle }) => adoptHandle(l.spec, handle, l.address));
  return {
    listeners,
    // Same fd, now with the path's ownership: the earlier wrappers are dropped unclosed.
    own: () => wrapped.map(({ l, handle }) => adoptHandle(l.spec, handle, l.address, l.ino)),
  };
}

/**
 * Reconciles the listeners handed over with the configuration now on disk: the same
 * name must keep its address (the app serves on those sockets: changing or removing one
 * needs a restart of the app, so it is refused naming the key); a new name is bound
 * afresh by the caller (it reaches the app at its next handoff). Listeners adopted from
 * systemd (the configured list was ignored) are kept as they are.
 */
/** The state and data dirs cannot move under a running app, nor can its mode change: refused naming the key. */
export function checkFixedConfig(h: HandoverEnv, cfg: { stateDir: string; dataDir: string; activation: unknown }): void {
  for (const key of ['stateDir', 'dataDir'] as const) {
    if (h[key] !== cfg[key]) throw new ConfigError('E_CONFIG_NOT_LIVE', `"${key}" changed from ${h[key]} to ${cfg[key]}; the running app uses the old one, so this needs a restart (baton stop, then baton run)`, { field: key });
  }
  if (h.socketActivation !== Boolean(cfg.activation)) {
    throw new ConfigError('E_CONFIG_NOT_LIVE', `"socketActivation" changed to ${String(Boolean(cfg.activation))}; the running app was started in the other mode, so this needs a restart (baton stop, then baton run)`, { field: 'socketActivation' });
  }
}

export function reconcileListeners(handed: readonly HandedListener[], configured: readonly ListenerSpec[], fromSystemd: boolean): { added: ListenerSpec[] } {
  if (fromSystemd) return { added: [] };
  const added: ListenerSpec[] = [];
  for (const h of handed) {
    const now = configured.find((c) => c.name === h.name);
    if (!now) throw new ConfigError('E_CONFIG_NOT_LIVE', `"listen": listener ${h.name} (${h.address}) is gone from the configuration; the app serves on it, so removing a listener needs a restart (baton stop, then baton run)`, { field: 'listen', name: h.name });
    if (!sameAddress(now, h)) throw new ConfigError('E_CONFIG_NOT_LIVE', `"listen": listener ${h.name} changed from ${h.address} to ${formatAddress(now)}; a listener's address cannot change while the app serves on it (baton stop, then baton run)`, { field: 'listen', name: h.name });
  }
  for (const c of configured) if (!handed.some((h) => h.name === c.name)) added.push(c);
  return { added };
}

function sameAddress(now: ListenerSpec, h: HandedListener): boolean {
  if (now.kind !== h.spec.kind) return false;
  if (now.kind === 'unix') return now.path === h.spec.path;
  // Port 0 was "any free port": the one bound then is the one meant now.
  if (now.port !== 0 && now.port !== h.spec.port) return false;
  return normalHost(now.host!) === normalHost(h.spec.host!);
}

function normalHost(host: string): string {
  return net.isIPv6(host) ? new net.SocketAddress({ address: host, family: 'ipv6' }).address : host;
}
