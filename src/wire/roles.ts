import { BatonError } from '../os/errors.js';

/**
 * Environment contract between the supervisor and the apps it starts
 * (PROTOCOL.md "Channels"). Listener variables (BATON_LISTEN_*) live in listeners.ts.
 */
export const ENV = {
  role: 'BATON_ROLE',
  controlFd: 'BATON_CONTROL_FD',
  controlPath: 'BATON_CONTROL_PATH',
  dataDir: 'BATON_DATA_DIR',
  generation: 'BATON_GENERATION',
  /**
   * Spare copies of each listener follow the listeners (fds 3+n .. 3+n+n*spares-1).
   * Node cannot stop accepting on a listening fd without closing it, so an app that
   * closes its listener to drain re-listens on a spare after an abort.
   */
  listenSpares: 'BATON_LISTEN_SPARES',
} as const;

/**
 * cold: first generation (no incumbent; a handoff "from nobody").
 * successor: started to replace a live incumbent.
 * standalone: not started by baton (no control channel); the app runs alone.
 */
export type Role = 'cold' | 'successor' | 'standalone';

export interface RoleInfo {
  role: Role;
  /** fd of the socketpair to the supervisor (cold and successor). */
  controlFd?: number;
  /** Unix path this process binds once it is committed as the incumbent. */
  controlPath?: string;
  dataDir?: string;
  generation: number;
}

/** Reads the role from the environment; a malformed baton env is an error, not a guess. */
export function detectRole(env: NodeJS.ProcessEnv = process.env): RoleInfo {
  const role = env[ENV.role];
  if (role === undefined || role === '') {
    return { role: 'standalone', dataDir: env[ENV.dataDir], generation: 0 };
  }
  if (role !== 'cold' && role !== 'successor') {
    throw new BatonError('E_BAD_ENV', `${ENV.role}=${role}: expected "cold" or "successor"`);
  }
  const controlFd = Number(env[ENV.controlFd]);
  if (!Number.isInteger(controlFd) || controlFd < 3) {
    throw new BatonError('E_BAD_ENV', `${ENV.controlFd}=${env[ENV.controlFd]}: expected an fd number >= 3`);
  }
  const controlPath = env[ENV.controlPath];
  if (!controlPath) throw new BatonError('E_BAD_ENV', `${ENV.controlPath} is not set`);
  const generation = Number(env[ENV.generation] ?? '1');
  return { role, controlFd, controlPath, dataDir: env[ENV.dataDir], generation };
}
