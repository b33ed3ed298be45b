import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { BatonError, errorMessage } from './errors.js';
import { adoptHandle, formatAddress, type HeldListener, type ListenerSpec } from './listeners.js';

/**
 * Taking the listening sockets back from a live process that holds them: the app a
 * supervisor left behind when it died. JS cannot receive a file descriptor from an
 * unrelated process, so a small helper does it: Linux's `pidfd_getfd(2)` (5.6+) copies
 * each listening socket of that process into the helper, which hands it to us over
 * Node's child-process IPC channel as a `net.Native` handle (the same SCM_RIGHTS
 * message Node itself sends for `child.send(msg, handle)`; baton's listener copies use
 * it too). The helper is Python's standard library (`os.pidfd_open`, ctypes for the
 * syscall), run with `-I -S`: no compiler, no package, and optional. Without python3,
 * on an older kernel, or without the right to copy (`pidfd_getfd` needs ptrace access:
 * root, CAP_SYS_PTRACE, or the same user with `kernel.yama.ptrace_scope` 0) the caller
 * falls back to stopping that app gracefully and binding anew (ARCHITECTURE.md,
 * "Supervisor continuity").
 *
 * Every socket the helper sends is checked here too: a stream socket in LISTEN state
 * whose address is one of the configured listeners. What matches is held like a
 * listener we bound (never accepted on in this process); the rest is closed.
 */

/** Python ≥ 3.9. argv: PID. Sends one NODE_HANDLE per distinct listening socket, then a summary. */
const RECLAIM_HELPER = String.raw`
import array, ctypes, errno, json, os, socket, stat, sys
chan = socket.socket(fileno=int(os.environ['NODE_CHANNEL_FD']))
inbox = b''
def send(obj, fd=None):
    line = (json.dumps(obj) + '\n').encode()
    if fd is None:
        chan.sendall(line)
    else:
        chan.sendmsg([line], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [fd]))])
def wait_ack():
    global inbox
    while b'\n' not in inbox:
        chunk = chan.recv(65536)
        if not chunk:
            sys.exit(3)
        inbox += chunk
    line, _, inbox = inbox.partition(b'\n')
    return json.loads(line).get('cmd') == 'NODE_HANDLE_ACK'
def fail(code, message):
    send({'baton': 'reclaim-error', 'code': code, 'message': message})
    sys.exit(0)
pid = int(sys.argv[1])
try:
    pidfd = os.pidfd_open(pid)
except AttributeError:
    fail('ENOSYS', 'this python3 has no os.pidfd_open (needs Python 3.9 and Linux 5.3)')
except OSError as e:
    fail(errno.errorcode.get(e.errno, str(e.errno)), 'pidfd_open(%d): %s' % (pid, e.strerror))
libc = ctypes.CDLL(None, use_errno=True)
SYS_pidfd_getfd = 438  # the same number on every architecture (the unified table for new syscalls)
seen = set()
sent = 0
denied = None
try:
    names = os.listdir('/proc/%d/fd' % pid)
except OSError as e:
    fail(errno.errorcode.get(e.errno, str(e.errno)), 'cannot list /proc/%d/fd: %s' % (pid, e.strerror))
for name in sorted(names, key=int):
    try:
        if not os.readlink('/proc/%d/fd/%s' % (pid, name)).startswith('socket:'):
            continue
    except OSError:
        continue
    fd = libc.syscall(SYS_pidfd_getfd, pidfd, int(name), 0)
    if fd < 0:
        err = ctypes.get_errno()
        if err in (errno.EPERM, errno.EACCES, errno.ENOSYS):
            denied = (errno.errorcode.get(err, str(err)), os.strerror(err))
            break
        continue
    try:
        st = os.fstat(fd)
        s = socket.socket(fileno=fd)
        try:
            listening = s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
            kind = s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
            family = s.family
            addr = s.getsockname()
        finally:
            s.detach()
        if listening and kind == socket.SOCK_STREAM and st.st_ino not in seen and family in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
            seen.add(st.st_ino)
            if family == socket.AF_UNIX:
                where = {'family': 'unix', 'path': addr if isinstance(addr, str) else addr.decode('utf-8', 'replace')}
            else:
                where = {'family': 'tcp', 'host': addr[0], 'port': addr[1]}
            send({'cmd': 'NODE_HANDLE', 'type': 'net.Native', 'msg': dict(baton='reclaim', fd=int(name), **where)}, fd)
            if wait_ack():
                sent += 1
    except OSError:
        pass
    os.close(fd)
if denied and sent == 0:
    fail(denied[0], 'pidfd_getfd on pid %d: %s' % (pid, denied[1]))
send({'baton': 'reclaim-done', 'sent': sent})
`;

/** Generous: the app serves meanwhile, and a python3 start alone took 1.3–1.6 s on a loaded 2-core machine (BENCHMARKS.md). */
const HELPER_TIMEOUT_MS = 30_000;

export interface ReclaimOptions {
  /** The python interpreter (default `python3` on PATH; `BATON_PYTHON` overrides). */
  python?: string;
  timeoutMs?: number;
}

interface ReclaimedSocket {
  where: { family: 'tcp'; host: string; port: number } | { family: 'unix'; path: string };
  fd: number;
  handle: { fd: number; close(): void };
}

/**
 * Copies the listening sockets of process `pid` and returns one HeldListener per spec,
 * in the specs' order. Throws `E_RECLAIM_FAILED` (with `details.reason`) when the helper
 * cannot run or copy, or when a spec has no matching socket in that process; nothing is
 * left open then.
 */
export async function reclaimListeners(pid: number, specs: readonly ListenerSpec[], opts: ReclaimOptions = {}): Promise<HeldListener[]> {
  if (process.platform !== 'linux') throw reclaimFailed(pid, 'pidfd_getfd is Linux only', 'EPLATFORM');
  const got = await runHelper(pid, opts);
  const held: HeldListener[] = [];
  const used = new Set<ReclaimedSocket>();
  try {
    for (const spec of specs) {
      const match = got.find((s) => !used.has(s) && matches(spec, s));
      if (!match) {
        const have = got.map((s) => (s.where.family === 'unix' ? `unix:${s.where.path}` : `tcp://${s.where.host}:${s.where.port}`));
        throw reclaimFailed(pid, `it holds no listening socket on ${formatAddress(spec)} (listener ${spec.name}; it listens on: ${have.join(', ') || 'nothing'})`, 'ENOMATCH');
      }
      used.add(match);
      held.push(adoptHandle(spec, match.handle, formatAddress(spec), unixInode(spec)));
    }
  } catch (err) {
    for (const h of held) h.close();
    for (const s of got) if (!used.has(s)) s.handle.close();
    throw err;
  }
  for (const s of got) if (!used.has(s)) s.handle.close();
  return held;
}

function matches(spec: ListenerSpec, s: ReclaimedSocket): boolean {
  if (spec.kind === 'unix') return s.where.family === 'unix' && s.where.path === spec.path;
  if (s.where.family !== 'tcp' || s.where.port !== spec.port) return false;
  return canonicalHost(s.where.host) === canonicalHost(spec.host!);
}

/** `::`, `0:0::0` and `[::]` are one host; IPv4 stays as written. */
function canonicalHost(host: string): string {
  const h = host.replace(/^\[|\]$/g, '');
  if (net.isIPv6(h)) {
    const sock = new net.SocketAddress({ address: h, family: 'ipv6' });
    return sock.address;
  }
  return h;
}

/** A unix listener we take back is ours to unlink on close, as long as the path is still that socket. */
function unixInode(spec: ListenerSpec): number | undefined {
  if (spec.kind !== 'unix') return undefined;
  try {
    return fs.lstatSync(spec.path!).ino;
  } catch {
    return undefined;
  }
}

function runHelper(pid: number, opts: ReclaimOptions): Promise<ReclaimedSocket[]> {
  const python = opts.python ?? process.env.BATON_PYTHON ?? 'python3';
  return new Promise((resolve, reject) => {
    const got: ReclaimedSocket[] = [];
    let stderr = '';
    let settled = false;
    const child = spawn(python, ['-I', '-S', '-c', RECLAIM_HELPER, String(pid)], {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    });
    const finish = (err: BatonError | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      if (err) {
        for (const s of got) s.handle.close();
        reject(err);
      } else resolve(got);
    };
    const timer = setTimeout(() => finish(reclaimFailed(pid, `the helper did not finish within ${opts.timeoutMs ?? HELPER_TIMEOUT_MS} ms`, 'ETIMEDOUT')), opts.timeoutMs ?? HELPER_TIMEOUT_MS);
    child.stderr?.setEncoding('utf8').on('data', (c: string) => (stderr = (stderr + c).slice(-2000)));
    child.on('error', (err: NodeJS.ErrnoException) => finish(reclaimFailed(pid, `cannot run ${python}: ${errorMessage(err)}`, err.code ?? 'ESPAWN')));
    child.on('message', (msg: unknown, handle: unknown) => {
      const m = msg as { baton?: string; family?: string; host?: string; port?: number; path?: string; fd?: number; code?: string; message?: string };
      if (m?.baton === 'reclaim' && handle && typeof (handle as { fd?: unknown }).fd === 'number') {
        const h = handle as ReclaimedSocket['handle'];
        if (m.family === 'tcp' && typeof m.host === 'string' && Number.isInteger(m.port)) got.push({ where: { family: 'tcp', host: m.host, port: m.port! }, fd: m.fd ?? -1, handle: h });
        else if (m.family === 'unix' && typeof m.path === 'string') got.push({ where: { family: 'unix', path: m.path }, fd: m.fd ?? -1, handle: h });
        else h.close();
      } else if (handle) {
        (handle as { close?: () => void }).close?.();
      } else if (m?.baton === 'reclaim-error') {
        finish(reclaimFailed(pid, String(m.message ?? 'the helper failed'), String(m.code ?? 'EHELPER')));
      } else if (m?.baton === 'reclaim-done') {
        finish(undefined);
      }
    });
    child.on('exit', (code, signal) => {
      // 'reclaim-done' arrives before the exit; an exit without it is a failure.
      setImmediate(() => finish(reclaimFailed(pid, `the helper exited (code ${code ?? '-'}, signal ${signal ?? '-'})${stderr ? `: ${stderr.trim().split('\n').pop()}` : ''}`, 'EHELPER')));
    });
  });
}

function reclaimFailed(pid: number, why: string, reason: string): BatonError {
  return new BatonError('E_RECLAIM_FAILED', `cannot take the listeners back from pid ${pid}: ${why}`, { pid, reason });
}
