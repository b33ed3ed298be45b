import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { lstatSync, mkdirSync, type Stats } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError } from '../os/errors.js';
import { readStateFile, setAside, tightenDir, UnsafePathError } from '../os/secure-fs.js';
import type { Logger } from '../os/log.js';

/**
 * Who may do what on the admin API: the roles read < write < admin, the role each route
 * needs, and the per-role tokens that carry a role (admin.ts authenticates a request
 * with them).
 */

export const ADMIN_ROLES = ['read', 'write', 'admin'] as const;
export type AdminRole = (typeof ADMIN_ROLES)[number];
const RANK: Record<AdminRole, number> = { read: 0, write: 1, admin: 2 };

/**
 * Routes that need more than the rule in requiredRole gives them. `stop` ends the
 * service (an upgrade keeps it serving), so it is admin; a monitoring token (read) or a
 * deploy token (write) cannot take the service down.
 */
export const ROLE_OVERRIDES: Readonly<Record<string, AdminRole>> = {
  'POST /v1/stop': 'admin',
};

/**
 * The role a route ("METHOD /pattern", as in AdminServerOptions.routes) needs: its
 * override, else read for GET/HEAD and write for every other method, so a route added
 * later is guarded the day it exists.
 */
export function requiredRole(routeKey: string): AdminRole {
  const o = ROLE_OVERRIDES[routeKey];
  if (o) return o;
  const method = routeKey.slice(0, routeKey.indexOf(' '));
  return method === 'GET' || method === 'HEAD' ? 'read' : 'write';
}

export function roleAllows(have: AdminRole, need: AdminRole): boolean {
  return RANK[have] >= RANK[need];
}

const TOKEN_RE = /^[\x21-\x7e]{32,512}$/;

/**
 * The per-role tokens: `<dir>/<role>.token` (dir 0700, files 0600), 32 random bytes as
 * hex, made at start when absent (an operator may also write their own: 32..512
 * printable characters). Only SHA-256 digests stay in memory; a presented token is
 * hashed and compared with every role's digest in constant time (timingSafeEqual on
 * equal-length digests, no early exit). Read at start: to rotate a token, replace its
 * file and restart `baton run`. Tokens are never logged.
 */
export class AdminTokens {
  private constructor(
    readonly dir: string,
    private readonly digests: ReadonlyMap<AdminRole, Buffer>,
  ) {}

  static async ensure(dir: string, log: Logger): Promise<AdminTokens> {
    prepareTokensDir(dir, log);
    const digests = new Map<AdminRole, Buffer>();
    const seen = new Map<string, AdminRole>();
    for (const role of ADMIN_ROLES) {
      const file = tokenPath(dir, role);
      // O_NOFOLLOW | O_NONBLOCK + fstat: a link, a FIFO, a device, another user's file or one
      // others may read is never read (nor chmod-ed): it is set aside and a new token made.
      let read = await readStateFile(file, MAX_TOKEN_FILE_BYTES, { private: true });
      if (read.kind === 'untrusted') {
        const aside = await setAside(file, 'untrusted');
        log.warn({ event: 'admin.token_untrusted', role, file, setAsideAs: aside, reason: read.reason }, `token file ${file} ${read.reason}: it cannot be trusted; set aside as ${aside}, making a new ${role} token`);
        read = { kind: 'missing' };
      }
      let created = false;
      if (read.kind === 'missing') {
        created = await createToken(file);
        read = await readStateFile(file, MAX_TOKEN_FILE_BYTES, { private: true });
        if (read.kind !== 'ok') throw new UnsafePathError('E_UNSAFE_PATH', `token file ${file}: ${read.kind === 'untrusted' ? read.reason : 'vanished'} right after it was made`, { path: file });
      }
      const token = read.text.trim();
      if (!TOKEN_RE.test(token)) {
        throw new ConfigError('E_CONFIG', `${file}: expected a token of 32..512 printable characters without spaces (baton writes 64 hex digits); delete the file to have a new one made`, { field: 'tokens' });
      }
      const digest = sha256(token);
      const dup = seen.get(digest.toString('hex'));
      if (dup) throw new ConfigError('E_CONFIG', `${file}: the same token as ${tokenPath(dir, dup)}; every role needs its own token`, { field: 'tokens' });
      seen.set(digest.toString('hex'), role);
      digests.set(role, digest);
      if (created) log.info({ event: 'admin.token_created', role, file }, `made the ${role} token ${file}`);
    }
    return new AdminTokens(dir, digests);
  }

  /** The role of a presented token, or undefined when it is none of ours. */
  roleOf(token: string): AdminRole | undefined {
    const d = sha256(token);
    let found: AdminRole | undefined;
    for (const role of ADMIN_ROLES) if (timingSafeEqual(d, this.digests.get(role)!) && found === undefined) found = role;
    return found;
  }
}

/** A token file is 32..512 characters and a newline: anything much larger is not one. */
const MAX_TOKEN_FILE_BYTES = 1024;

/**
 * The tokens dir: made 0700 when absent; refused when it is a link, not a directory or
 * not ours; tightened to 0700 (through an O_NOFOLLOW descriptor) when others may read it.
 */
function prepareTokensDir(dir: string, log: Logger): void {
  let st: Stats;
  try {
    st = lstatSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    mkdirSync(dir, { mode: 0o700 });
    st = lstatSync(dir);
  }
  const me = process.getuid?.();
  if (st.isSymbolicLink()) throw new UnsafePathError('E_UNSAFE_PATH', `token dir ${dir} is a symbolic link; refusing to use it (remove it to have a new one made)`, { path: dir });
  if (!st.isDirectory()) throw new UnsafePathError('E_UNSAFE_PATH', `token dir ${dir} is not a directory; refusing to use it`, { path: dir });
  if (me !== undefined && st.uid !== me) throw new UnsafePathError('E_UNSAFE_PATH', `token dir ${dir} is owned by uid ${st.uid}, not by this user (uid ${me}); refusing to use it`, { path: dir });
  const was = tightenDir(dir);
  if (was !== undefined) log.warn({ event: 'admin.tokens_dir_mode', dir, mode: was.toString(8) }, `token dir ${dir} was mode ${was.toString(8)}; set to 0700 (every token file in it is checked)`);
}

export function tokenPath(dir: string, role: AdminRole): string {
  return path.join(dir, `${role}.token`);
}

/** Creates the token file when absent ('wx': an existing token is never overwritten). */
async function createToken(file: string): Promise<boolean> {
  let fh;
  try {
    fh = await open(file, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
  try {
    await fh.writeFile(`${randomBytes(32).toString('hex')}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  return true;
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}
