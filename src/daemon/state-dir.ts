import { lstat } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../os/log.js';
import { ensureSecureDir, tightenDir, UnsafePathError } from '../os/secure-fs.js';

/** The state dir of `baton run`: the paths baton keeps in it, and making it safe to use. */

export function adminSocketPath(stateDir: string): string {
  return path.join(stateDir, 'admin.sock');
}

/** Per-role admin tokens: <stateDir>/tokens/{read,write,admin}.token (admin.ts AdminTokens). */
export function adminTokensDir(stateDir: string): string {
  return path.join(stateDir, 'tokens');
}

/**
 * Creates the state dir 0700 and checks every component of its path (secure-fs.ts
 * ensureSecureDir: lstat from / down, root's or ours, no link we did not make, nothing
 * writable by others but sticky dirs); refuses a state dir others may write; tightens
 * one others may only read, through an O_NOFOLLOW descriptor. Entries baton makes inside
 * it that are directories (control/, tokens/) must be ours and not links.
 */
export async function prepareStateDir(dir: string, log: Logger): Promise<void> {
  ensureSecureDir(dir, '"stateDir":');
  const was = tightenDir(dir);
  if (was !== undefined) log.warn({ event: 'daemon.state_dir_mode', dir, mode: was.toString(8) }, `state dir ${dir} was mode ${was.toString(8)}; set to 0700`);
  const control = path.join(dir, 'control');
  const st = await lstat(control).catch(() => undefined);
  const me = process.getuid?.();
  if (st && (st.isSymbolicLink() || !st.isDirectory() || (me !== undefined && st.uid !== me))) {
    throw new UnsafePathError('E_UNSAFE_PATH', `${control} is ${st.isSymbolicLink() ? 'a symbolic link' : !st.isDirectory() ? 'not a directory' : `owned by uid ${st.uid}`}; refusing to use it (remove it to have a new one made)`, { path: control });
  }
}
