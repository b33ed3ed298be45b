/**
 * Builds: which program each committed generation ran, and whether it has proven itself.
 *
 * A build is the app command with every path in it resolved (symlinks followed): with
 * releases side by side behind a symlink (`/srv/app/current -> releases/v7`), the
 * configured command stays `node /srv/app/current/main.js` while each build resolves to
 * its own release. That is what lets a restart restart the build that was serving (not
 * whatever the symlink names by now), and a rollback start the previous one. A deploy
 * that overwrites files in place has one resolved command for every build: baton says
 * so rather than "rolling back" to the same files.
 *
 * Each committed generation is a record: `baking` for the bake window after its commit,
 * then `good` (the last known-good build is the newest good one), or `bad` when it
 * crashed or went CRITICAL inside the window. Kept in <stateDir>/builds.json (the newest
 * MAX_RECORDS), read as hostile input like every state file.
 */
import { accessSync, constants, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { loadStateList, writeFileAtomic } from '../os/atomic-file.js';
import { errorMessage } from '../os/errors.js';
import type { Logger } from '../os/log.js';

export type BuildState = 'baking' | 'good' | 'bad';

/** What a process was started from. */
export interface BuildInfo {
  /** The command as configured (or as a rollback gave it). */
  command: string[];
  /** The same with the program and every existing path argument resolved to a real path. */
  resolved: string[];
  /** The build id the app announced in its Hello ('' if none). */
  buildId: string;
}

export interface BuildRecord extends BuildInfo {
  generation: number;
  pid: number;
  /** ISO time of the commit. */
  committedAt: string;
  state: BuildState;
  /** ISO time the bake window ends (state 'baking'). */
  bakeEndsAt?: string | undefined;
  /** Why it is bad. */
  reason?: string | undefined;
}

const MAX_RECORDS = 20;
const MAX_ARG_CHARS = 4096;
const MAX_ARGS = 256;

/**
 * `command` with its program looked up on PATH and every argument that names an
 * existing file or directory made absolute with symlinks resolved. Never throws: what
 * cannot be resolved stays as it was (the spawn reports a missing program).
 */
export function resolveCommand(command: readonly string[], env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): string[] {
  return command.map((arg, i) => {
    if (i === 0) return resolveProgram(arg, env, cwd) ?? arg;
    if (!arg.includes('/') && !existsRelative(arg, cwd)) return arg; // a flag or a word
    try {
      return realpathSync(path.resolve(cwd, arg));
    } catch {
      return arg;
    }
  });
}

function existsRelative(arg: string, cwd: string): boolean {
  if (arg.startsWith('-') || arg === '') return false;
  try {
    statSync(path.resolve(cwd, arg));
    return true;
  } catch {
    return false;
  }
}

function resolveProgram(program: string, env: NodeJS.ProcessEnv, cwd: string): string | undefined {
  const candidates = program.includes('/') ? [path.resolve(cwd, program)] : (env.PATH ?? '').split(':').filter(Boolean).map((dir) => path.join(dir, program));
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      if (!statSync(candidate).isFile()) continue;
      return realpathSync(candidate);
    } catch {
      /* not this one */
    }
  }
  return undefined;
}

/** The same build: the same resolved command (the build id is the app's word, not baton's). */
export function sameBuild(a: { readonly resolved: readonly string[] }, b: { readonly resolved: readonly string[] }): boolean {
  return a.resolved.length === b.resolved.length && a.resolved.every((x, i) => x === b.resolved[i]);
}

/** One line for logs and messages: `build abc123 (node /srv/app/releases/v7/main.js)`. */
export function describeBuild(b: Pick<BuildInfo, 'resolved' | 'buildId'>): string {
  return `${b.buildId ? `build ${b.buildId}` : 'build'} (${b.resolved.join(' ')})`;
}

/** The builds of committed generations, newest last, persisted in builds.json. */
export class BuildLedger {
  private records: BuildRecord[] = [];
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly filePath: string,
    private readonly log: Logger,
  ) {}

  async load(): Promise<void> {
    const list = await loadStateList<BuildRecord>(this.filePath, 'builds', isBuildRecord, (reason) =>
      this.log.error({ event: 'builds.unreadable', path: this.filePath, reason }, `build records unreadable (${reason}); starting with none`),
    );
    // A record left 'baking' by a supervisor that stopped or died stays baking: an adopted
    // process finishes its window (Supervisor.recover), a restarted one gets a new one.
    this.records = (list ?? []).slice(-MAX_RECORDS);
  }

  list(): readonly BuildRecord[] {
    return this.records;
  }

  /** The record of the serving generation (the newest committed one). */
  current(): BuildRecord | undefined {
    return this.records[this.records.length - 1];
  }

  /** The newest good build other than `except` (by resolved command). */
  lastGood(except?: Pick<BuildInfo, 'resolved'>): BuildRecord | undefined {
    for (let i = this.records.length - 1; i >= 0; i--) {
      const r = this.records[i]!;
      if (r.state === 'good' && !(except && sameBuild(r, except))) return r;
    }
    return undefined;
  }

  /** A generation committed: its build bakes for `bakeMs` (0: good at once). */
  committed(build: BuildInfo, generation: number, pid: number, bakeMs: number): BuildRecord {
    const now = Date.now();
    const record: BuildRecord = {
      ...build,
      generation,
      pid,
      committedAt: new Date(now).toISOString(),
      state: bakeMs > 0 ? 'baking' : 'good',
      ...(bakeMs > 0 && { bakeEndsAt: new Date(now + bakeMs).toISOString() }),
    };
    this.records.push(record);
    if (this.records.length > MAX_RECORDS) this.records.splice(0, this.records.length - MAX_RECORDS);
    void this.persist();
    return record;
  }

  /** A baking generation lasted its window: its build is good. False if it is not baking (a verdict is given once). */
  proven(generation: number): boolean {
    const r = this.records.find((x) => x.generation === generation);
    if (r?.state !== 'baking') return false;
    this.judge(r, 'good');
    return true;
  }

  /** Judges a generation's build bad whatever its state (a rollback left it, it crash-looped). */
  condemn(generation: number, reason: string): void {
    const r = this.records.find((x) => x.generation === generation);
    if (r) this.judge(r, 'bad', reason);
  }

  private judge(r: BuildRecord, state: 'good' | 'bad', reason?: string): void {
    r.state = state;
    r.bakeEndsAt = undefined;
    if (reason !== undefined) r.reason = reason;
    void this.persist();
  }

  persist(): Promise<void> {
    const text = `${JSON.stringify({ version: 1, builds: this.records })}\n`;
    this.writing = this.writing.then(() =>
      writeFileAtomic(this.filePath, text).catch((err: unknown) => {
        this.log.error({ event: 'builds.write_failed', path: this.filePath, err: errorMessage(err) }, 'could not write the build records');
      }),
    );
    return this.writing;
  }
}

function isStringList(v: unknown): v is string[] {
  return Array.isArray(v) && v.length > 0 && v.length <= MAX_ARGS && v.every((x) => typeof x === 'string' && x.length > 0 && x.length <= MAX_ARG_CHARS);
}

function isBuildRecord(r: BuildRecord): boolean {
  return (
    isStringList(r.command) &&
    isStringList(r.resolved) &&
    typeof r.buildId === 'string' &&
    r.buildId.length <= 256 &&
    Number.isSafeInteger(r.generation) &&
    Number.isSafeInteger(r.pid) &&
    typeof r.committedAt === 'string' &&
    (r.state === 'baking' || r.state === 'good' || r.state === 'bad')
  );
}

/** A Hello's buildId (bytes) as text: UTF-8, control characters dropped, at most 128 characters. */
export function buildIdText(raw: Uint8Array | string | undefined): string {
  if (raw === undefined) return '';
  const text = typeof raw === 'string' ? raw : Buffer.from(raw).toString('utf8');
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f]/g, '').slice(0, 128);
}
