import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { getSystemErrorName } from 'node:util';
import { BatonError, ConfigError } from './errors.js';

/**
 * Listening sockets the supervisor holds for its whole life WITHOUT accepting on them;
 * app processes get them at fds 3.. and serve them with `server.listen({ fd })`.
 *
 * Node has no public API for "a listening socket nobody in this process accepts on".
 * We use the internal `net._createServerHandle(address, port, addressType)` (what
 * cluster uses): it returns a BOUND handle with a `.fd` — but, contrary to what one
 * might expect, it does NOT call listen(2), and libuv defers EADDRINUSE from bind(2)
 * to listen(2). A bound, non-listening socket refuses connections. So bindListener
 * then has a short-lived helper process (inheriting the fds) call listen(2) on the
 * shared socket and exit before its event loop ever runs: from then on the socket is
 * in LISTEN state for as long as the supervisor keeps its fd, connections queue in the
 * kernel backlog while no app serves it, and the supervisor's own event loop never
 * watches it (so it can never steal a connection). The helper is also where bind
 * errors (EADDRINUSE) surface. Cost: one `node` start (~80 ms) per bindListeners call.
 */

export interface ListenerSpec {
  name: string;
  kind: 'tcp' | 'unix';
  host?: string;
  port?: number;
  path?: string;
  /** unix only: permission bits of the socket file (default 0o660). */
  mode?: number;
}

export interface HeldListener {
  readonly name: string;
  readonly spec: ListenerSpec;
  readonly fd: number;
  /** `tcp://127.0.0.1:8080`, `tcp://[::1]:8080` (real port if 0 was asked), `unix:/path`, or `fd:3`. */
  readonly address: string;
  /**
   * The socket's own handle (a TCP or Pipe wrap), for `child.send(msg, handle)`: Node
   * passes it over the child-process IPC channel as a new fd in the child (SCM_RIGHTS).
   */
  readonly handle: object;
  /** unix listeners whose socket file is ours to unlink on close: its inode. */
  readonly ownedInode?: number | undefined;
  close(): void;
}

/** The internal handle we hold (TCP or Pipe wrap). */
interface ServerHandle {
  fd: number;
  close(cb?: () => void): void;
  getsockname?(out: { address?: string; port?: number; family?: string }): number;
}

type CreateServerHandle = (address: string | null, port: number, addressType: number, fd?: number) => ServerHandle | number;

const NAME_RE = /^[A-Za-z0-9_.-]+$/;
const DEFAULT_UNIX_MODE = 0o660;
/** sun_path is 108 bytes including the terminating NUL. */
const MAX_UNIX_PATH_BYTES = 107;

/** Fail at start-up, with a clear message, if this Node lacks the internal API we rely on. */
export function assertListenerSupport(): void {
  createServerHandleFn();
}

function createServerHandleFn(): CreateServerHandle {
  const fn = (net as unknown as { _createServerHandle?: unknown })._createServerHandle;
  if (typeof fn !== 'function') {
    throw new BatonError(
      'E_NO_LISTENER_SUPPORT',
      `this Node.js (${process.version}) has no net._createServerHandle, which baton uses to hold listening sockets without accepting on them; use a Node.js version baton supports (20, 22, 24)`,
    );
  }
  return fn as CreateServerHandle;
}

// ---------------------------------------------------------------- address parsing

/**
 * Parse `[name=]tcp://HOST:PORT` (HOST an IPv4 literal or [IPv6 literal]) or
 * `[name=]unix:PATH[?mode=0660]` (a relative PATH is resolved against the current
 * directory now, so every process agrees on it). Without `name=`, the name is
 * `defaultName` if a string, else `l<defaultName>` (l0, l1, ...).
 */
export function parseListenAddress(text: string, defaultName: string | number = 0): ListenerSpec {
  const bad = (why: string): ConfigError =>
    new ConfigError('E_BAD_ADDRESS', `bad listen address ${JSON.stringify(text)}: ${why}; expected [name=]tcp://HOST:PORT (e.g. tcp://127.0.0.1:8080, tcp://[::1]:8080) or [name=]unix:/path/to.sock`, { address: text });
  let name = typeof defaultName === 'string' ? defaultName : `l${defaultName}`;
  let rest = text.trim();
  const named = /^([^=:/]+)=(.*)$/.exec(rest);
  if (named) {
    if (!NAME_RE.test(named[1]!)) throw bad(`listener name ${JSON.stringify(named[1])} may only contain letters, digits, '_', '.', '-'`);
    name = named[1]!;
    rest = named[2]!;
  }
  if (rest.startsWith('tcp://')) {
    const hostPort = rest.slice('tcp://'.length);
    const m = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d+)$/.exec(hostPort);
    if (!m) throw bad('TCP addresses need HOST:PORT, with IPv6 hosts in brackets');
    const host = m[1] ?? m[2]!;
    const port = Number(m[3]);
    if (host === '') throw bad('the host is empty; use 0.0.0.0 or [::] for all interfaces');
    const family = net.isIP(host);
    if (family === 0) throw bad(`host ${JSON.stringify(host)} is not an IP literal (names are not resolved)`);
    if (family === 6 && m[1] === undefined) throw bad('IPv6 hosts must be in brackets');
    if (family === 4 && m[1] !== undefined) throw bad('only IPv6 hosts go in brackets');
    if (!Number.isInteger(port) || port > 65535) throw bad(`port ${m[3]} is out of range 0..65535`);
    return { name, kind: 'tcp', host, port };
  }
  if (rest.startsWith('unix:')) {
    let p = rest.slice('unix:'.length);
    let mode = DEFAULT_UNIX_MODE;
    const qi = p.indexOf('?');
    if (qi >= 0) {
      // Only ?mode=OCTAL (0000..0777); anything else after a "?" is an error, not part of the file name.
      const q = /^\?mode=(0?[0-7]{3})$/.exec(p.slice(qi));
      if (!q) throw bad(`${JSON.stringify(p.slice(qi))}: the only option is ?mode=OCTAL, a file mode in 000..777 (e.g. ?mode=0660)`);
      mode = parseInt(q[1]!, 8);
      p = p.slice(0, qi);
    }
    if (p === '') throw bad('the socket path is empty');
    if (p.includes('\0')) throw bad('the socket path contains a NUL byte');
    const abs = path.resolve(p);
    if (Buffer.byteLength(abs) > MAX_UNIX_PATH_BYTES) throw bad(`the socket path is ${Buffer.byteLength(abs)} bytes; the limit is ${MAX_UNIX_PATH_BYTES}`);
    return { name, kind: 'unix', path: abs, mode };
  }
  throw bad('unknown scheme');
}

/** Parse several addresses; default names l0, l1, ...; names must be unique. */
export function parseListenAddresses(texts: readonly string[]): ListenerSpec[] {
  const specs = texts.map((t, i) => parseListenAddress(t, i));
  const seen = new Set<string>();
  for (const s of specs) {
    if (seen.has(s.name)) throw new ConfigError('E_BAD_ADDRESS', `listener name ${JSON.stringify(s.name)} is used twice; names must be unique`, { name: s.name });
    seen.add(s.name);
  }
  return specs;
}

export function formatAddress(spec: ListenerSpec, port = spec.port): string {
  if (spec.kind === 'unix') return `unix:${spec.path}`;
  return net.isIPv6(spec.host!) ? `tcp://[${spec.host}]:${port}` : `tcp://${spec.host}:${port}`;
}

// ---------------------------------------------------------------- binding

/** Bind one listener and put it into LISTEN state (see the module comment). */
export function bindListener(spec: ListenerSpec): HeldListener {
  return bindListeners([spec])[0]!;
}

/** Bind several listeners (one helper start for all of them). All or nothing. */
export function bindListeners(specs: readonly ListenerSpec[]): HeldListener[] {
  const bound: BoundListener[] = [];
  try {
    for (const spec of specs) bound.push(spec.kind === 'tcp' ? bindTcp(spec) : bindUnix(spec));
    const failures = listenViaHelper(bound.map((b) => b.handle.fd));
    failures.forEach((code, i) => {
      if (code !== null) throw bindFailed(bound[i]!.spec, code);
    });
    return bound.map((b) => {
      if (b.unixTempPath !== undefined) publishUnixSocket(b);
      return toHeld(b);
    });
  } catch (err) {
    for (const b of bound) closeBound(b);
    throw err;
  }
}

interface BoundListener {
  spec: ListenerSpec;
  handle: ServerHandle;
  address: string;
  /** unix: bound here first, renamed to spec.path once listening and chmod-ed. */
  unixTempPath?: string;
  /** Inode of the published socket file: close() unlinks the path only while it is still ours. */
  publishedIno?: number;
}

function bindTcp(spec: ListenerSpec): BoundListener {
  const create = createServerHandleFn();
  const family = net.isIPv6(spec.host!) ? 6 : 4;
  const handle = create(spec.host!, spec.port!, family);
  if (typeof handle === 'number') throw bindFailed(spec, errName(handle));
  // libuv defers EADDRINUSE from bind(2); getsockname then reports it. An unbound socket
  // must never reach listen(2): the kernel would bind it to a random port.
  const out: { port?: number } = {};
  const err = handle.getsockname?.(out) ?? 0;
  if (err !== 0 || !out.port) {
    handle.close();
    throw bindFailed(spec, err !== 0 ? errName(err) : 'EADDRNOTAVAIL');
  }
  return { spec, handle, address: formatAddress(spec, out.port) };
}

/**
 * unix: bind a temporary name in the same directory, chmod it, and (after listen)
 * rename it over the final path, so the path never exists with the wrong permissions
 * and clients never see a path that refuses connections. process.umask is not used:
 * it is process-wide (racy with other threads) and cannot be changed in a worker.
 */
function bindUnix(spec: ListenerSpec): BoundListener {
  const final = spec.path!;
  refuseLiveUnixSocket(spec);
  const tmp = path.join(path.dirname(final), `.${path.basename(final)}.${process.pid}.${Math.random().toString(36).slice(2, 8)}`);
  if (Buffer.byteLength(tmp) > MAX_UNIX_PATH_BYTES) throw bindFailed(spec, 'ENAMETOOLONG', `temporary socket name ${tmp} is too long; use a shorter path`);
  const handle = createServerHandleFn()(tmp, -1, -1);
  if (typeof handle === 'number') throw bindFailed(spec, errName(handle));
  try {
    fs.chmodSync(tmp, spec.mode ?? DEFAULT_UNIX_MODE);
  } catch (err) {
    handle.close();
    fs.rmSync(tmp, { force: true });
    throw bindFailed(spec, (err as NodeJS.ErrnoException).code ?? 'EIO');
  }
  return { spec, handle, address: formatAddress(spec), unixTempPath: tmp };
}

function publishUnixSocket(b: BoundListener): void {
  fs.renameSync(b.unixTempPath!, b.spec.path!);
  b.unixTempPath = undefined;
  b.publishedIno = fs.lstatSync(b.spec.path!).ino;
}

/**
 * An existing file at the path: a socket nothing answers on (ECONNREFUSED) is stale and
 * will be replaced; a socket someone serves, or a non-socket, is an error — unlinking a
 * path another process serves would break it.
 */
function refuseLiveUnixSocket(spec: ListenerSpec): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(spec.path!);
  } catch {
    return;
  }
  if (!st.isSocket()) throw bindFailed(spec, 'EEXIST', `${spec.path} exists and is not a socket; refusing to replace it`);
  const answer = probeUnixSocket(spec.path!);
  if (answer !== 'ECONNREFUSED' && answer !== 'ENOENT') {
    throw bindFailed(spec, 'EADDRINUSE', `${spec.path} is in use (a process answers on it: ${answer})`);
  }
}

/**
 * Holds a listening socket handle that came from elsewhere (taken back from a process,
 * handed over by the supervisor before us). `publishedIno`: the unix socket file is ours
 * to unlink on close, while the path is still that inode.
 */
export function adoptHandle(spec: ListenerSpec, handle: { fd: number; close(): void }, address: string, publishedIno?: number): HeldListener {
  return toHeld({ spec, handle: handle as ServerHandle, address, ...(publishedIno !== undefined && { publishedIno }) });
}

function toHeld(b: BoundListener): HeldListener {
  let closed = false;
  return {
    name: b.spec.name,
    spec: b.spec,
    fd: b.handle.fd,
    address: b.address,
    handle: b.handle,
    ownedInode: b.publishedIno,
    close: () => {
      if (closed) return;
      closed = true;
      closeBound(b);
    },
  };
}

function closeBound(b: BoundListener): void {
  b.handle.close();
  // Only the supervisor owns the path; children never unlink it.
  if (b.unixTempPath !== undefined) fs.rmSync(b.unixTempPath, { force: true });
  if (b.publishedIno !== undefined) {
    try {
      if (fs.lstatSync(b.spec.path!).ino === b.publishedIno) fs.unlinkSync(b.spec.path!);
    } catch {
      /* already gone */
    }
  }
}

function bindFailed(spec: ListenerSpec, code: string, detail?: string): ConfigError {
  const address = formatAddress(spec);
  return new ConfigError('E_BIND_FAILED', `cannot listen on ${address} (listener ${spec.name}): ${detail ?? code}`, { address, name: spec.name, errno: code });
}

function errName(err: number): string {
  try {
    return getSystemErrorName(err);
  } catch {
    return `errno ${err}`;
  }
}

// ---------------------------------------------------------------- helper process

// Runs with the sockets at fds 3..; listen(2) happens synchronously inside listen(), and
// 'listening'/'error' are emitted on process.nextTick — before the event loop could
// ever accept — so the helper exits without having taken a connection.
const LISTEN_HELPER = `
const net = require('node:net');
const n = Number(process.argv[1]);
const codes = new Array(n).fill(undefined);
let left = n;
const done = (i, code) => { codes[i] = code; if (--left === 0) { process.stdout.write(JSON.stringify(codes)); process.exit(0); } };
for (let i = 0; i < n; i++) {
  const s = net.createServer();
  s.once('error', (e) => done(i, e.code || String(e)));
  s.listen({ fd: 3 + i, backlog: 511 }, () => done(i, null));
}
`;

const PROBE_HELPER = `
const s = require('node:net').connect(process.argv[1]);
s.on('connect', () => { process.stdout.write('CONNECTED'); process.exit(0); });
s.on('error', (e) => { process.stdout.write(e.code || 'ERROR'); process.exit(0); });
setTimeout(() => { process.stdout.write('ETIMEDOUT'); process.exit(0); }, 2000);
`;

/** listen(2) on each fd in a helper process; returns an error code per fd (null = ok). */
function listenViaHelper(fds: number[]): (string | null)[] {
  if (fds.length === 0) return [];
  const r = spawnSync(process.execPath, ['-e', LISTEN_HELPER, String(fds.length)], {
    stdio: ['ignore', 'pipe', 'pipe', ...fds],
    encoding: 'utf8',
    timeout: 30_000,
    env: { PATH: process.env.PATH ?? '' },
  });
  try {
    const codes = JSON.parse(r.stdout) as (string | null)[];
    if (Array.isArray(codes) && codes.length === fds.length) return codes;
  } catch {
    /* fall through */
  }
  throw new BatonError('E_LISTEN_HELPER', `the helper that puts listeners into LISTEN state failed (status ${r.status}, signal ${r.signal}): ${r.error?.message ?? r.stderr}`);
}

/** 'CONNECTED' or the connect error code (ECONNREFUSED = nobody serves the path). */
function probeUnixSocket(p: string): string {
  const r = spawnSync(process.execPath, ['-e', PROBE_HELPER, p], { encoding: 'utf8', timeout: 10_000, env: { PATH: process.env.PATH ?? '' } });
  return r.stdout || 'EPROBE';
}

/** Wraps an inherited listening fd (no bind, no listen); an errno number when it is not a socket. */
export function createServerHandleFromFd(fd: number): { fd: number; close(): void } | number {
  return createServerHandleFn()(null, 0, 0, fd);
}

// ---------------------------------------------------------------- systemd socket activation

/**
 * Listeners passed by systemd socket activation (fds 3..3+LISTEN_FDS-1), if they are
 * meant for this process (LISTEN_PID). Names from LISTEN_FDNAMES, else l0, l1, ...
 * Call scrubInheritedEnv for every child's env: the LISTEN_* vars are not for them.
 */
export function adoptSystemdListeners(env: NodeJS.ProcessEnv = process.env, pid: number = process.pid): HeldListener[] | undefined {
  if (env.LISTEN_PID === undefined || env.LISTEN_FDS === undefined) return undefined;
  if (Number(env.LISTEN_PID) !== pid) return undefined;
  const count = Number(env.LISTEN_FDS);
  if (!Number.isInteger(count) || count < 0) {
    throw new ConfigError('E_BAD_ENV', `LISTEN_FDS=${JSON.stringify(env.LISTEN_FDS)} is not a non-negative integer`);
  }
  const names = env.LISTEN_FDNAMES ? env.LISTEN_FDNAMES.split(':') : [];
  const create = createServerHandleFn();
  const held: HeldListener[] = [];
  for (let i = 0; i < count; i++) {
    const fd = 3 + i;
    const name = names[i] && NAME_RE.test(names[i]!) ? names[i]! : `l${i}`;
    // With an fd, _createServerHandle only wraps it (no bind, no listen).
    const handle = create(null, 0, 0, fd);
    if (typeof handle === 'number') {
      for (const h of held) h.close();
      throw new ConfigError('E_BAD_ENV', `systemd passed fd ${fd} (${name}) but it is not a socket Node can listen on: ${errName(handle)}`);
    }
    const out: { address?: string; port?: number } = {};
    let spec: ListenerSpec;
    let address: string;
    if (typeof handle.getsockname === 'function' && handle.getsockname(out) === 0 && out.address !== undefined) {
      spec = { name, kind: 'tcp', host: out.address, port: out.port ?? 0 };
      address = formatAddress(spec);
    } else {
      spec = { name, kind: 'unix' }; // Pipe handles have no getsockname in Node
      address = `fd:${fd}`;
    }
    // Not ours to unlink on close: systemd owns activated unix socket paths.
    held.push(toHeld({ spec, handle, address }));
  }
  return held;
}

// ---------------------------------------------------------------- passing to children

/** Env for an app child that gets `listeners` at stdio indexes 3.. (see stdioForListeners). */
export function listenerEnv(listeners: readonly HeldListener[]): Record<string, string> {
  return {
    BATON_LISTEN_FDS: String(listeners.length),
    BATON_LISTEN_FDNAMES: listeners.map((l) => l.name).join(':'),
    BATON_LISTEN_ADDRS: JSON.stringify(listeners.map((l) => l.address)),
  };
}

/** What to put in spawn's `stdio` array from index 3 on. */
export function stdioForListeners(listeners: readonly HeldListener[]): number[] {
  return listeners.map((l) => l.fd);
}

/**
 * A copy of `env` without systemd's LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES: a child can
 * never satisfy LISTEN_PID (Node cannot set it between fork and exec), and a child that
 * honoured stale values would misread its fds.
 */
export function scrubInheritedEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const copy = { ...env };
  delete copy.LISTEN_PID;
  delete copy.LISTEN_FDS;
  delete copy.LISTEN_FDNAMES;
  return copy;
}

/** App side: the listeners baton passed at fds 3.., by name. Empty if none. */
export function inheritedListeners(env: NodeJS.ProcessEnv = process.env): Map<string, { fd: number; address: string }> {
  const result = new Map<string, { fd: number; address: string }>();
  if (env.BATON_LISTEN_FDS === undefined) return result;
  const bad = (why: string): ConfigError => new ConfigError('E_BAD_ENV', `malformed BATON_LISTEN_* environment: ${why}`, { BATON_LISTEN_FDS: env.BATON_LISTEN_FDS, BATON_LISTEN_FDNAMES: env.BATON_LISTEN_FDNAMES, BATON_LISTEN_ADDRS: env.BATON_LISTEN_ADDRS });
  const count = Number(env.BATON_LISTEN_FDS);
  if (!/^\d+$/.test(env.BATON_LISTEN_FDS) || count > 1000) throw bad(`BATON_LISTEN_FDS=${JSON.stringify(env.BATON_LISTEN_FDS)} is not a count`);
  const names = count === 0 ? [] : (env.BATON_LISTEN_FDNAMES ?? '').split(':');
  if (names.length !== count) throw bad(`BATON_LISTEN_FDNAMES has ${names.length} names for ${count} fds`);
  let addrs: unknown;
  try {
    addrs = JSON.parse(env.BATON_LISTEN_ADDRS ?? '[]');
  } catch {
    throw bad('BATON_LISTEN_ADDRS is not JSON');
  }
  if (!Array.isArray(addrs) || addrs.length !== count || !addrs.every((a) => typeof a === 'string')) {
    throw bad(`BATON_LISTEN_ADDRS must be a JSON array of ${count} strings`);
  }
  names.forEach((name, i) => {
    if (!NAME_RE.test(name)) throw bad(`listener name ${JSON.stringify(name)} is invalid`);
    if (result.has(name)) throw bad(`listener name ${JSON.stringify(name)} appears twice`);
    result.set(name, { fd: 3 + i, address: addrs[i] as string });
  });
  return result;
}
