import { constants } from 'node:fs';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { BatonError, errorMessage } from './errors.js';

/**
 * The state dir and the files in it, opened so that nothing another local user can
 * plant steers the supervisor (issue #21, items 2 and 6). The rules (ARCHITECTURE.md,
 * "Threat model"):
 *
 *  - Every component of the state dir's path is checked with lstat from `/` down:
 *    a directory owned by root or by us, not writable by group/other unless it has the
 *    sticky bit (`/tmp`). A symbolic link on the way is followed only when root or we own
 *    it (its target is then checked the same way); the state dir itself must not be a
 *    link and must be ours. Missing components are created 0700, one at a time.
 *  - The state dir must not be writable by anyone else (else files could have been
 *    planted in it): refused, never chmod-ed. A dir that is merely readable by others
 *    is tightened to 0700 through a descriptor opened with O_NOFOLLOW (fchmod), so the
 *    chmod can never land on another file.
 *  - State files are opened with O_NOFOLLOW (a link is refused) and O_NONBLOCK (a FIFO
 *    cannot hang the start), then checked with fstat on that descriptor: a regular file,
 *    ours, not writable by others, within a size limit.
 */
export class UnsafePathError extends BatonError {}

const O_NOFOLLOW = constants.O_NOFOLLOW;
const O_NONBLOCK = constants.O_NONBLOCK;
const O_DIRECTORY = constants.O_DIRECTORY;

function myUid(): number | undefined {
  return process.getuid?.();
}

function trustedOwner(uid: number, me: number | undefined): boolean {
  return me === undefined || uid === me || uid === 0;
}

const mode8 = (m: number): string => (m & 0o7777).toString(8).padStart(4, '0');

/**
 * Makes `dir` (and missing parents, 0700) and checks every component as described above.
 * Returns the path as given (absolute). Throws UnsafePathError (code E_UNSAFE_PATH) naming
 * the component and what is wrong with it.
 */
export function ensureSecureDir(dir: string, what = 'state dir'): string {
  const abs = path.resolve(dir);
  const me = myUid();
  const refuse = (p: string, why: string): never => {
    throw new UnsafePathError('E_UNSAFE_PATH', `${what} ${abs}: ${p} ${why}; refusing to use it (another user could steer baton's files through it)`, { path: p });
  };
  const queue = abs.split('/').filter((c) => c !== '');
  let cur = '/';
  let hops = 0;
  let final: fs.Stats | undefined;
  const rootSt = fs.lstatSync('/');
  if (!trustedOwner(rootSt.uid, me)) refuse('/', `is owned by uid ${rootSt.uid}`);
  while (queue.length > 0) {
    const name = queue.shift()!;
    if (name === '.') continue;
    if (name === '..') {
      cur = path.dirname(cur);
      continue;
    }
    const next = path.join(cur, name);
    const last = queue.length === 0;
    let st: fs.Stats;
    try {
      st = fs.lstatSync(next);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return refuse(next, `cannot be checked (${errorMessage(err)})`);
      try {
        fs.mkdirSync(next, { mode: 0o700 });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new UnsafePathError('E_UNSAFE_PATH', `${what} ${abs}: cannot create ${next} (${errorMessage(e)})`, { path: next });
      }
      st = fs.lstatSync(next);
    }
    if (st.isSymbolicLink()) {
      if (last) return refuse(next, 'is a symbolic link');
      if (!trustedOwner(st.uid, me)) return refuse(next, `is a symbolic link owned by uid ${st.uid}`);
      if (++hops > 40) return refuse(next, 'has too many levels of symbolic links');
      const target = fs.readlinkSync(next);
      queue.unshift(...target.split('/').filter((c) => c !== ''));
      if (target.startsWith('/')) cur = '/';
      continue;
    }
    if (!st.isDirectory()) return refuse(next, 'is not a directory');
    if (last) {
      if (me !== undefined && st.uid !== me) return refuse(next, `is owned by uid ${st.uid}, not by this user (uid ${me})`);
      if ((st.mode & 0o022) !== 0) return refuse(next, `is writable by group or others (mode ${mode8(st.mode)}): files in it cannot be trusted; make it 0700 and check its contents`);
      final = st;
    } else {
      if (!trustedOwner(st.uid, me)) return refuse(next, `is owned by uid ${st.uid} (only root or uid ${me} may own a directory on the way)`);
      if ((st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0) return refuse(next, `is writable by group or others without the sticky bit (mode ${mode8(st.mode)})`);
    }
    cur = next;
  }
  if (final === undefined) return refuse(abs, 'is the root directory');
  return abs;
}

/**
 * Tightens a directory that ensureSecureDir accepted but that others may read (e.g.
 * 0755) to 0700 through an O_NOFOLLOW descriptor, checking it is the same directory.
 * Returns the previous mode when it changed it.
 */
export function tightenDir(dir: string): number | undefined {
  const fd = fs.openSync(dir, constants.O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  try {
    const st = fs.fstatSync(fd);
    const me = myUid();
    if (!st.isDirectory() || (me !== undefined && st.uid !== me)) throw new UnsafePathError('E_UNSAFE_PATH', `${dir} changed while it was checked`, { path: dir });
    if ((st.mode & 0o077) === 0) return undefined;
    fs.fchmodSync(fd, 0o700);
    return st.mode & 0o7777;
  } finally {
    fs.closeSync(fd);
  }
}

/** Why a file that exists cannot be trusted, from fstat of a descriptor opened O_NOFOLLOW; undefined when it can. */
export function untrustedReason(st: fs.Stats, opts: { private?: boolean } = {}): string | undefined {
  const me = myUid();
  if (!st.isFile()) return `is not a regular file (${kindOf(st)})`;
  if (me !== undefined && st.uid !== me) return `is owned by uid ${st.uid}, not by this user (uid ${me})`;
  if ((st.mode & (opts.private ? 0o077 : 0o022)) !== 0) return `has mode ${mode8(st.mode)} (${opts.private ? 'others may read it' : 'others may write it'})`;
  if (st.nlink > 1) return `has ${st.nlink} hard links`;
  return undefined;
}

function kindOf(st: fs.Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSymbolicLink()) return 'a symbolic link';
  return 'not a file';
}

/** The result of opening a state file for reading. */
export type StateFileRead = { kind: 'missing' } | { kind: 'ok'; text: string } | { kind: 'untrusted'; reason: string };

/**
 * Reads a state file: O_NOFOLLOW | O_NONBLOCK, then fstat on the descriptor; at most
 * `maxBytes` (more is "untrusted": baton never writes that much). A link, a FIFO, a
 * device, a directory, another user's file, one others may write (or read, with
 * `private`) is reported as untrusted with the reason, never read.
 */
export async function readStateFile(file: string, maxBytes: number, opts: { private?: boolean } = {}): Promise<StateFileRead> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, constants.O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { kind: 'missing' };
    if (code === 'ELOOP') return { kind: 'untrusted', reason: 'is a symbolic link' };
    throw new BatonError('E_STATE_FILE', `${file}: cannot open it (${errorMessage(err)})`, { path: file });
  }
  try {
    const st = await fh.stat();
    const why = untrustedReason(st, opts);
    if (why) return { kind: 'untrusted', reason: why };
    if (st.size > maxBytes) return { kind: 'untrusted', reason: `is ${st.size} bytes (at most ${maxBytes} expected)` };
    const buf = Buffer.alloc(Math.min(maxBytes + 1, st.size + 1));
    let n = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, null);
      if (bytesRead === 0) break;
      n += bytesRead;
      if (n >= buf.length) return { kind: 'untrusted', reason: `grew past ${maxBytes} bytes while read` };
    }
    return { kind: 'ok', text: buf.subarray(0, n).toString('utf8') };
  } catch (err) {
    throw new BatonError('E_STATE_FILE', `${file}: cannot read it (${errorMessage(err)})`, { path: file });
  } finally {
    await fh.close();
  }
}

/** Renames an untrusted entry (a link is moved, never followed) to `<file>.<tag>-<ms>`; returns the new name. */
export async function setAside(file: string, tag: string): Promise<string> {
  const aside = `${file}.${tag}-${Date.now()}`;
  await fsp.rename(file, aside);
  return aside;
}

/**
 * A file for appending (the audit log): created 0600 or opened O_NOFOLLOW; an existing
 * entry that is not our private regular file is set aside (logged by the caller) and a
 * new one made. Returns the handle and what was set aside, if anything.
 */
export async function openAppendPrivate(file: string): Promise<{ fh: fsp.FileHandle; setAside?: { to: string; reason: string } }> {
  let moved: { to: string; reason: string } | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    let fh: fsp.FileHandle | undefined;
    try {
      fh = await fsp.open(file, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | O_NOFOLLOW | O_NONBLOCK, 0o600);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ELOOP' && code !== 'EISDIR' && code !== 'ENXIO') throw new BatonError('E_STATE_FILE', `${file}: cannot open it (${errorMessage(err)})`, { path: file });
      moved = { to: await setAside(file, 'untrusted'), reason: code === 'ELOOP' ? 'is a symbolic link' : code === 'EISDIR' ? 'is a directory' : 'is a FIFO or socket' };
      continue;
    }
    const st = await fh.stat();
    const why = untrustedReason(st, { private: true });
    if (!why) return { fh, ...(moved && { setAside: moved }) };
    await fh.close();
    moved = { to: await setAside(file, 'untrusted'), reason: why };
  }
  throw new UnsafePathError('E_UNSAFE_PATH', `${file}: cannot be opened safely (entries keep appearing in its place)`, { path: file });
}
