import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { LockOptions } from 'proper-lockfile';
import { pino } from 'pino';
import { writeFileAtomicSync } from './atomic-file.js';
import { LockError, errorMessage } from './errors.js';
import { createLogger, type Logger } from './log.js';
import { isAlive, processStartTime } from './proc.js';

/**
 * The data-dir lock: exactly one process may hold it at any time.
 *
 * The lock itself is proper-lockfile's mkdir lock `<dataDir>/.baton.lock` (mkdir is
 * atomic; the dir's mtime is refreshed every `updateMs`). Beside it,
 * `<dataDir>/.baton.lock.owner` records who holds it: pid + start time (a pid alone is
 * reused), boot id, handoff id, and `lockId` — the identity (inode + birth time) of
 * the lock dir generation it describes. A record whose lockId differs from the
 * current lock dir describes an older generation and is ignored; that is what makes
 * a leftover record harmless and lets release/takeover run without a global mutex.
 *
 * Rules on acquire, when `.baton.lock` exists:
 *  - record valid, holder provably dead (pid gone, zombie, other start time, other
 *    boot) → reap the dir at once and take it (milliseconds; no staleness wait);
 *  - record valid, holder alive → NEVER take it, however old the mtime (a SIGSTOPped
 *    or badly stalled holder still holds it); retry until `waitMs`, then E_LOCK_HELD;
 *  - no valid record (holder died between mkdir and writing the record, or a foreign
 *    lock) → take it once its mtime is older than ownerlessStaleMs() (a few refresh periods).
 * proper-lockfile itself is never allowed to remove a lock dir (its stale check is
 * replaced by the rules above); all removal goes through `reap()`.
 *
 * Designed to run inside a worker_threads Worker so a blocked main thread cannot let
 * the refresh lapse. Notes on proper-lockfile (4.1.2) there: signal-exit loads in the
 * worker but signals are only delivered to the main thread, so on SIGTERM/SIGKILL the
 * dir stays behind — the owner record then names a dead process and the next acquirer
 * takes over immediately. `process.exit()` inside the worker removes the dir (its exit
 * hook runs); `worker.terminate()` does not. Either way the owning process must treat
 * the worker's end as losing the lock.
 *
 * The file operations on the acquire and release paths are synchronous. They sit inside
 * a handoff's write blackout (release → SealComplete → Begin → acquire), and there each
 * async fs call costs a thread-pool round trip (≈ 0.3–0.5 ms on 2 busy cores; an
 * acquire is ~10 of them: 4.7 ms p50, BENCHMARKS.md) while the syscalls themselves take
 * microseconds on a local disk. The worker thread that owns the lock has nothing else
 * to do in that moment; a file system that hangs would hang an async acquire as well
 * (and the supervisor's liveness timeout covers both).
 *
 * Error codes (LockError): E_LOCK_HELD, E_LOCK_ALREADY_HELD, E_NOT_HELD,
 * E_LOCK_COMPROMISED (passed to onCompromised), E_LOCK_IO.
 */

export const LOCK_DIR_NAME = '.baton.lock';
export const LOCK_OWNER_NAME = '.baton.lock.owner';

/**
 * Defaults. With the owner record, staleness only matters for a lock dir WITHOUT a valid
 * record (the holder died in the ~1 ms between mkdir and the record write, or a foreign
 * lock), and as proper-lockfile's refresh threshold. 30 s is 3× the 10 s liveness
 * timeout: by then the supervisor has long declared a silent holder dead and killed it,
 * and a worker that stalls for less never looks stale. A live holder is never stolen
 * from, whatever the mtime, so a large value costs nothing in a handoff. 2 s refresh:
 * a lost lock dir (removed or replaced behind our back) is noticed within 2 s, well
 * inside the liveness timeout; a refresh is one stat + one utimes.
 */
export const DEFAULT_STALE_MS = 30_000;
/**
 * A lock dir with no owner record is someone's acquire that never finished: a live
 * taker writes its record within milliseconds of its mkdir (and refreshes the mtime
 * every updateMs after). So an ownerless dir is abandoned after a few refresh periods,
 * not the full staleMs (a successor killed between mkdir and its record cost a 30 s
 * outage: RELIABILITY.md B4). Only a taker stopped between the two steps for longer
 * than this can lose its lock.
 */
export function ownerlessStaleMs(staleMs: number, updateMs: number): number {
  return Math.min(staleMs, Math.max(3 * updateMs, 5_000));
}
export const DEFAULT_UPDATE_MS = 2_000;
/** Poll interval while waiting for a held lock (`waitMs` > 0). */
const RETRY_INTERVAL_MS = 25;

export interface LockOwner {
  pid: number;
  /** Field 22 of /proc/<pid>/stat: with pid, identifies the process. */
  startTime: string;
  /** /proc/sys/kernel/random/boot_id: a record from before a reboot names a dead process. */
  bootId: string;
  handoffId: string;
  /** ISO time the lock was taken. */
  acquiredAt: string;
  /** Identity of the lock dir generation this record describes (inode:birth-time-ns). */
  lockId: string;
}

export interface DataDirLockOptions {
  staleMs?: number;
  updateMs?: number;
  log?: Logger;
  /** The lock was lost to someone else (or vanished): stop writing to the data dir now. */
  onCompromised?: (err: LockError) => void;
}

export interface AcquireOptions {
  /** Recorded in the owner record. */
  handoffId?: string;
  /** Keep retrying a held lock this long (default 0: one attempt). */
  waitMs?: number;
}

type State = 'idle' | 'acquiring' | 'held' | 'releasing';
type Release = () => Promise<void>;
type Refusal = { holder: LockOwner | undefined; mtimeAgeMs: number | undefined };

export class DataDirLock {
  readonly dataDir: string;
  readonly lockPath: string;
  readonly ownerPath: string;
  readonly staleMs: number;
  readonly updateMs: number;
  /** See ownerlessStaleMs(). */
  readonly ownerlessStaleMs: number;
  private readonly log: Logger;
  private readonly onCompromisedCb: ((err: LockError) => void) | undefined;
  private state: State = 'idle';
  private lockId: string | undefined;
  private releaseLockfile: Release | undefined;
  /** While proper-lockfile's lock() runs: it must not remove any lock dir. */
  private insideLockCall = false;
  /** Set during a re-take: mkdir of our own, still-existing lock dir counts as success. */
  private adoptLockId: string | undefined;
  private readonly guardedFs: typeof fs;
  /** The leftover sweep started by the last acquire (see take()). */
  private sweeping: Promise<void> | undefined;

  constructor(dataDir: string, opts: DataDirLockOptions = {}) {
    this.dataDir = path.resolve(dataDir);
    this.lockPath = path.join(this.dataDir, LOCK_DIR_NAME);
    this.ownerPath = path.join(this.dataDir, LOCK_OWNER_NAME);
    // proper-lockfile clamps: stale ≥ 2000, 1000 ≤ update ≤ stale/2. Apply the same here so
    // our staleness checks agree with its refresh threshold.
    this.staleMs = Math.max(opts.staleMs ?? DEFAULT_STALE_MS, 2000);
    this.updateMs = Math.max(Math.min(opts.updateMs ?? DEFAULT_UPDATE_MS, this.staleMs / 2), 1000);
    this.ownerlessStaleMs = ownerlessStaleMs(this.staleMs, this.updateMs);
    this.log = opts.log ?? createLogger('baton-lock');
    this.onCompromisedCb = opts.onCompromised;
    this.guardedFs = this.makeGuardedFs();
  }

  get held(): boolean {
    return this.state === 'held';
  }

  async acquire(opts: AcquireOptions = {}): Promise<void> {
    if (this.state !== 'idle') {
      throw new LockError('E_LOCK_ALREADY_HELD', `data-dir lock ${this.lockPath} is already ${this.state === 'held' ? 'held' : `being ${this.state.replace('ing', 'ed')}`} by this DataDirLock`, { lockPath: this.lockPath });
    }
    const started = Date.now();
    const deadline = started + (opts.waitMs ?? 0);
    this.state = 'acquiring';
    try {
      for (;;) {
        const refusal = await this.tryAcquire(opts.handoffId ?? '');
        if (refusal === undefined) {
          this.state = 'held';
          const at = Date.now();
          this.afterwards(() => this.log.info({ event: 'lock.acquired', lockPath: this.lockPath, handoffId: opts.handoffId, ms: at - started, at }, 'data-dir lock acquired'));
          return;
        }
        const left = deadline - Date.now();
        if (left <= 0) throw this.heldError(refusal);
        await sleep(Math.min(RETRY_INTERVAL_MS, left));
      }
    } catch (err) {
      this.state = 'idle';
      throw err;
    }
  }

  /**
   * Runs `fn` once the caller has gone on (setImmediate): a log line costs 0.2–0.5 ms,
   * and both ends of a handoff's lock pass are inside its write blackout (the successor
   * hands Begin to its app, the incumbent sends SealComplete). The line carries `at`,
   * the time of the event itself.
   */
  private afterwards(fn: () => void): void {
    setImmediate(fn);
  }

  async release(): Promise<void> {
    if (this.state !== 'held') {
      throw new LockError('E_NOT_HELD', `cannot release data-dir lock ${this.lockPath}: this process does not hold it (state: ${this.state})`, { lockPath: this.lockPath });
    }
    this.state = 'releasing';
    const lockId = this.lockId!;
    try {
      await this.sweeping;
      // The dir is the lock: remove it first, so a crash from here on leaves at most a
      // record describing a generation that no longer exists (inert).
      await this.releaseLockfile?.().catch((err: NodeJS.ErrnoException) => {
        // ERELEASED/ENOTACQUIRED: it was compromised concurrently; nothing left to remove.
        if (err.code !== 'ERELEASED' && err.code !== 'ENOTACQUIRED') throw err;
        this.log.warn({ event: 'lock.release_lost', lockPath: this.lockPath, code: err.code }, 'lock was already lost when releasing');
      });
      this.removeOwnerRecordIfOurs(lockId);
      const at = Date.now();
      this.afterwards(() => this.log.info({ event: 'lock.released', lockPath: this.lockPath, at }, 'data-dir lock released'));
    } catch (err) {
      throw new LockError('E_LOCK_IO', `releasing data-dir lock ${this.lockPath} failed: ${errorMessage(err)}`, { lockPath: this.lockPath }, { cause: err });
    } finally {
      this.state = 'idle';
      this.lockId = undefined;
      this.releaseLockfile = undefined;
    }
  }

  /** One attempt. Resolves undefined when the lock is ours, else why not. */
  private async tryAcquire(handoffId: string): Promise<Refusal | undefined> {
    const current = statLockDir(this.lockPath);
    if (current !== undefined) {
      const id = lockIdOf(current);
      const owner = readLockOwnerSync(this.dataDir);
      const record = owner?.lockId === id ? owner : undefined;
      if (record !== undefined) {
        if (record.pid === process.pid && record.startTime === selfStartTime()) {
          throw new LockError('E_LOCK_ALREADY_HELD', `data-dir lock ${this.lockPath} is already held by this process (pid ${process.pid}, handoff ${record.handoffId || '-'})`, { lockPath: this.lockPath, owner: record });
        }
        if (ownerAlive(record)) return { holder: record, mtimeAgeMs: mtimeAge(current) };
        this.log.warn({ event: 'lock.dead_holder', lockPath: this.lockPath, holderPid: record.pid, holderHandoffId: record.handoffId }, `data-dir lock holder pid ${record.pid} is dead; taking over`);
      } else if (mtimeAge(current) <= this.ownerlessStaleMs) {
        return { holder: undefined, mtimeAgeMs: mtimeAge(current) };
      } else {
        this.log.warn({ event: 'lock.stale', lockPath: this.lockPath, ageMs: mtimeAge(current) }, 'data-dir lock has no owner record and is stale; taking over');
      }
      this.reap(id);
    }
    return this.take(handoffId);
  }

  /** mkdir through proper-lockfile (which then keeps it fresh), then write our owner record. */
  private async take(handoffId: string): Promise<Refusal | undefined> {
    let release: Release;
    try {
      release = await this.callLockfile();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // ELOCKED: someone else's mkdir won. EBATON_NO_REMOVE: it saw a stale dir and wanted
      // to remove it; our rules decide that. Either way: re-inspect on the next attempt.
      if (code === 'ELOCKED' || code === 'EBATON_NO_REMOVE') return this.describeHolder();
      throw new LockError('E_LOCK_IO', `cannot create data-dir lock ${this.lockPath}: ${errorMessage(err)}`, { lockPath: this.lockPath }, { cause: err });
    }
    try {
      this.lockId = lockIdOf(statLockDir(this.lockPath)!);
      const record: LockOwner = {
        pid: process.pid,
        startTime: selfStartTime(),
        bootId: bootId(),
        handoffId,
        acquiredAt: new Date().toISOString(),
        lockId: this.lockId,
      };
      // Not fsynced (the write-blackout of a handoff runs through here): the record only
      // matters among processes of this boot. After a power cut its bootId marks it dead,
      // and a lost record leaves an ownerless dir, taken once stale (ownerlessStaleMs).
      writeFileAtomicSync(this.ownerPath, JSON.stringify(record) + '\n', { durable: false });
    } catch (err) {
      await release().catch(() => undefined);
      throw new LockError('E_LOCK_IO', `cannot write data-dir lock owner record ${this.ownerPath}: ${errorMessage(err)}`, { lockPath: this.lockPath }, { cause: err });
    }
    this.releaseLockfile = release;
    // Off the critical path (a data dir may hold many files): release() waits for it.
    this.sweeping = this.sweepLeftovers().catch((err: unknown) => this.log.warn({ event: 'lock.sweep_failed', err: errorMessage(err) }, 'could not sweep lock leftovers'));
    return undefined;
  }

  /** Remove reap/release/temp leftovers of processes that died mid-operation, and reap claims of generations that are gone. */
  private async sweepLeftovers(): Promise<void> {
    const leftover = /^\.baton\.lock\.(?:reaped|owner\.released|owner\.tmp|warmup)-(\d+)-[0-9a-f]+$/;
    const names = await fsp.readdir(this.dataDir).catch(() => [] as string[]);
    for (const name of names) {
      const m = leftover.exec(name);
      if (m && !isAlive(Number(m[1]))) await fsp.rm(path.join(this.dataDir, name), { recursive: true, force: true }).catch(() => undefined);
    }
    const current = this.lockId;
    for (const name of names) {
      const m = REAP_CLAIM.exec(name);
      if (m && `${m[1]}:${m[2]}` !== current) removeReapClaims(this.dataDir, `${m[1]}:${m[2]}`);
    }
  }

  private async callLockfile(): Promise<Release> {
    const { lock } = await loadProperLockfile();
    const options: LockOptions = {
      lockfilePath: this.lockPath,
      stale: this.staleMs,
      update: this.updateMs,
      realpath: false,
      retries: 0,
      fs: this.guardedFs,
      onCompromised: (err) => {
        // Must never throw: proper-lockfile's default rethrows and kills the process.
        this.handleCompromise(err).catch((e: unknown) => this.log.error({ event: 'lock.compromise_handler_failed', err: errorMessage(e) }, 'compromise handler failed'));
      },
    };
    this.insideLockCall = true;
    try {
      return await lock(this.dataDir, options);
    } finally {
      this.insideLockCall = false;
    }
  }

  /**
   * proper-lockfile gave up on its refresh (mtime changed under us, dir vanished, or a
   * refresh error past the stale threshold). If the dir is still the generation we
   * created and the record still names us, nobody else has it: adopt it again without
   * ever letting go. Otherwise the lock is lost: tell the app to stop writing.
   */
  private async handleCompromise(cause: Error): Promise<void> {
    if (this.state !== 'held') return; // released meanwhile
    this.releaseLockfile = undefined;
    const lockId = this.lockId!;
    if (await this.stillOurs(lockId)) {
      try {
        const now = new Date();
        await fsp.utimes(this.lockPath, now, now); // fresh before anyone looks at its age
        this.adoptLockId = lockId;
        const release = await this.callLockfile();
        if (this.state === 'held' && this.lockId === lockId) {
          this.releaseLockfile = release;
          this.log.warn({ event: 'lock.retaken', lockPath: this.lockPath, cause: errorMessage(cause) }, 'data-dir lock refresh was compromised but nobody else took it; re-taken');
          return;
        }
        await release().catch(() => undefined);
        return;
      } catch (err) {
        this.log.error({ event: 'lock.retake_failed', err: errorMessage(err) }, 're-taking the data-dir lock failed');
      } finally {
        this.adoptLockId = undefined;
      }
    }
    if (this.state !== 'held') return;
    this.state = 'idle';
    this.lockId = undefined;
    const err = new LockError('E_LOCK_COMPROMISED', `data-dir lock ${this.lockPath} was lost (${errorMessage(cause)}); stop writing to ${this.dataDir}`, { lockPath: this.lockPath }, { cause });
    this.log.error({ event: 'lock.compromised', lockPath: this.lockPath, cause: errorMessage(cause) }, err.message);
    try {
      this.onCompromisedCb?.(err);
    } catch (e) {
      this.log.error({ event: 'lock.on_compromised_threw', err: errorMessage(e) }, 'onCompromised callback threw');
    }
  }

  private async stillOurs(lockId: string): Promise<boolean> {
    let current: fs.BigIntStats | undefined;
    try {
      current = statLockDir(this.lockPath);
    } catch {
      return false;
    }
    if (current === undefined || lockIdOf(current) !== lockId) return false;
    const owner = readLockOwnerSync(this.dataDir);
    return owner?.lockId === lockId && owner.pid === process.pid && owner.startTime === selfStartTime();
  }

  /**
   * Remove the lock dir generation `lockId` and nothing else (PROTOCOL.md 12 "Reap").
   * First claim that generation exclusively: create `.baton.lock.reap-<lockId>-<k>`
   * with link(2) (never replaces), k = 0, 1, ...; a slot whose claimer is alive means
   * someone else reaps it (leave it; the caller re-inspects), a dead claimer's slot is
   * skipped. Holding the claim, look again: only if `.baton.lock` is still that
   * generation, rename it aside and remove it. No other process can remove that
   * generation meanwhile (its holder is dead, and every other reaper needs the claim),
   * so no reaper ever moves a newer lock dir: there is nothing to put back.
   */
  private reap(lockId: string): void {
    if (!this.claimReap(lockId)) {
      this.log.info({ event: 'lock.reap_claimed', lockPath: this.lockPath, lockId }, 'another live process is reaping the abandoned data-dir lock');
      return;
    }
    try {
      const current = statLockDir(this.lockPath);
      if (current === undefined || lockIdOf(current) !== lockId) return; // reaped, or replaced, before we claimed it
      const aside = path.join(this.dataDir, `${LOCK_DIR_NAME}.reaped-${process.pid}-${randomBytes(4).toString('hex')}`);
      fs.renameSync(this.lockPath, aside);
      fs.rmSync(aside, { recursive: true, force: true });
      this.log.info({ event: 'lock.reaped', lockPath: this.lockPath }, 'removed abandoned data-dir lock');
    } catch (err) {
      throw new LockError('E_LOCK_IO', `cannot remove stale data-dir lock ${this.lockPath}: ${errorMessage(err)}`, { lockPath: this.lockPath }, { cause: err });
    } finally {
      removeReapClaims(this.dataDir, lockId);
    }
  }

  /** Takes the first free reap slot of generation `lockId`; false when a live process holds one. */
  private claimReap(lockId: string): boolean {
    const record = `${process.pid} ${selfStartTime()} ${bootId()}\n`;
    for (let k = 0; k < MAX_REAP_SLOTS; k++) {
      const slot = path.join(this.dataDir, reapClaimName(lockId, k));
      const tmp = path.join(this.dataDir, `${LOCK_OWNER_NAME}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
      fs.writeFileSync(tmp, record, { flag: 'wx' });
      try {
        fs.linkSync(tmp, slot); // atomic, never replaces, and the slot is born complete
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      } finally {
        fs.rmSync(tmp, { force: true });
      }
      if (reapClaimerAlive(slot)) return false;
    }
    return false;
  }

  /** Remove the owner record only if it still describes our generation; never a successor's. */
  private removeOwnerRecordIfOurs(lockId: string): void {
    // read-compare-unlink could delete the record a successor wrote just after our rmdir;
    // moving the record aside first makes the compare about a file nobody else can touch.
    const aside = `${this.ownerPath}.released-${process.pid}-${randomBytes(4).toString('hex')}`;
    try {
      fs.renameSync(this.ownerPath, aside);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    const record = readOwnerFile(aside);
    if (!(record?.lockId === lockId && record.pid === process.pid)) {
      try {
        fs.linkSync(aside, this.ownerPath); // someone else's: put it back, never over a newer one
      } catch {
        /* a newer record is in place: leave it */
      }
    }
    fs.rmSync(aside, { force: true });
    // No fsync of the dir: see take() — durability of lock state across a power cut buys nothing.
  }

  /** Who is in the way right now (for the E_LOCK_HELD message after losing a mkdir race). */
  private describeHolder(): Refusal {
    const current = statLockDir(this.lockPath);
    if (current === undefined) return { holder: undefined, mtimeAgeMs: undefined };
    const owner = readLockOwnerSync(this.dataDir);
    return { holder: owner?.lockId === lockIdOf(current) ? owner : undefined, mtimeAgeMs: mtimeAge(current) };
  }

  private heldError(refusal: Refusal): LockError {
    const { holder, mtimeAgeMs } = refusal;
    if (holder !== undefined) {
      return new LockError(
        'E_LOCK_HELD',
        `data dir ${this.dataDir} is locked by pid ${holder.pid} (handoff ${holder.handoffId || '-'}, since ${holder.acquiredAt}); that process is alive, so the lock is not taken from it`,
        { lockPath: this.lockPath, pid: holder.pid, handoffId: holder.handoffId, acquiredAt: holder.acquiredAt },
      );
    }
    const age = mtimeAgeMs === undefined ? '' : `, refreshed ${Math.round(mtimeAgeMs)} ms ago`;
    return new LockError(
      'E_LOCK_HELD',
      `data dir ${this.dataDir} is locked by an unknown process (lock dir without a valid owner record${age}); it counts as abandoned once not refreshed for ${this.ownerlessStaleMs} ms`,
      { lockPath: this.lockPath, pid: undefined, mtimeAgeMs },
    );
  }

  /**
   * node:fs as proper-lockfile sees it: synchronous syscalls behind its callback API
   * (callbacks still run asynchronously, on the next tick; see the class comment), no
   * lock-dir removal while acquiring, and re-take support.
   */
  private makeGuardedFs(): typeof fs {
    const lockPath = this.lockPath;
    const mkdir = (p: string, cb: Callback<void>): void =>
      viaSync(() => {
        try {
          fs.mkdirSync(p);
        } catch (err) {
          const adopt = this.adoptLockId;
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || p !== lockPath || adopt === undefined) throw err;
          const st = fs.statSync(p, { bigint: true, throwIfNoEntry: false });
          if (st === undefined || lockIdOf(st) !== adopt) throw err;
        }
      }, cb);
    const rmdir = (p: string, cb: Callback<void>): void =>
      viaSync(() => {
        if (p === lockPath && this.insideLockCall) {
          throw Object.assign(new Error(`refusing to remove ${p} inside lock()`), { code: 'EBATON_NO_REMOVE' });
        }
        fs.rmdirSync(p);
      }, cb);
    const stat = (p: string, cb: Callback<fs.Stats>): void => viaSync(() => fs.statSync(p), cb);
    const utimes = (p: string, atime: Date, mtime: Date, cb: Callback<void>): void => viaSync(() => fs.utimesSync(p, atime, mtime), cb);
    return { ...fs, mkdir, rmdir, stat, utimes } as unknown as typeof fs;
  }
}

type Callback<T> = (err: NodeJS.ErrnoException | null, value?: T) => void;

/** Runs a synchronous fs call and reports it the way node:fs callbacks do (never synchronously). */
function viaSync<T>(fn: () => T, cb: Callback<T>): void {
  let value: T;
  try {
    value = fn();
  } catch (err) {
    process.nextTick(cb, err as NodeJS.ErrnoException);
    return;
  }
  process.nextTick(cb, null, value);
}

/** Reap slots per lock generation: more would mean that many reapers died mid-reap. */
const MAX_REAP_SLOTS = 64;
/** `.baton.lock.reap-<inode>-<birth ns>-<k>`: a claim to reap lock generation `<inode>:<birth ns>`. */
const REAP_CLAIM = /^\.baton\.lock\.reap-(\d+)-(\d+)-(\d+)$/;

function reapClaimName(lockId: string, slot: number): string {
  return `${LOCK_DIR_NAME}.reap-${lockId.replace(':', '-')}-${slot}`;
}

/** A claim file names its claimer: "<pid> <startTime> <bootId>". An unreadable one counts as dead (it is born complete, by link). */
function reapClaimerAlive(slot: string): boolean {
  let text: string;
  try {
    text = fs.readFileSync(slot, 'utf8');
  } catch {
    return false;
  }
  const [pid, startTime, boot] = text.trim().split(' ');
  if (!pid || !/^\d+$/.test(pid)) return false;
  return ownerAlive({ pid: Number(pid), startTime: startTime ?? '', bootId: boot ?? '', handoffId: '', acquiredAt: '', lockId: '' });
}

/**
 * Removes every reap claim of generation `lockId`, but only once that generation is no
 * longer the lock dir: a late claimer then finds nothing to reap when it looks again.
 */
function removeReapClaims(dataDir: string, lockId: string): void {
  try {
    const current = statLockDir(path.join(dataDir, LOCK_DIR_NAME));
    if (current !== undefined && lockIdOf(current) === lockId) return;
    const prefix = `${LOCK_DIR_NAME}.reap-${lockId.replace(':', '-')}-`;
    for (const name of fs.readdirSync(dataDir)) if (name.startsWith(prefix)) fs.rmSync(path.join(dataDir, name), { force: true });
  } catch {
    /* leftovers are swept by the next holder */
  }
}

/** The owner record as written (it may describe an older lock generation), or undefined. */
export async function readLockOwner(dataDir: string): Promise<LockOwner | undefined> {
  try {
    return parseOwner(await fsp.readFile(path.join(dataDir, LOCK_OWNER_NAME), 'utf8'));
  } catch {
    return undefined;
  }
}

function readLockOwnerSync(dataDir: string): LockOwner | undefined {
  return readOwnerFile(path.join(dataDir, LOCK_OWNER_NAME));
}

function readOwnerFile(file: string): LockOwner | undefined {
  try {
    return parseOwner(fs.readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
}

/** Who holds the lock now: the lock dir exists and its owner record describes it. */
export async function lockHolder(dataDir: string): Promise<{ owner: LockOwner; alive: boolean } | undefined> {
  const current = statLockDir(path.join(dataDir, LOCK_DIR_NAME));
  if (current === undefined) return undefined;
  const owner = await readLockOwner(dataDir);
  if (owner === undefined || owner.lockId !== lockIdOf(current)) return undefined;
  return { owner, alive: ownerAlive(owner) };
}

/** What is on disk for the lock, piece by piece (for a check that must say which piece is wrong). */
export interface LockState {
  lockPath: string;
  /** The lock directory's identity; undefined when there is no lock directory. */
  lockId: string | undefined;
  /** The owner record as written (it may describe another lock generation). */
  record: LockOwner | undefined;
  /** The record is valid (describes this directory) and its holder is alive. */
  holderAlive: boolean;
}

/** Reads the lock directory and the owner record (synchronously: a stat and a small read). */
export function inspectLock(dataDir: string): LockState {
  const lockPath = path.join(dataDir, LOCK_DIR_NAME);
  let current: fs.BigIntStats | undefined;
  try {
    current = statLockDir(lockPath);
  } catch {
    current = undefined;
  }
  const lockId = current && lockIdOf(current);
  const record = readLockOwnerSync(dataDir);
  return { lockPath, lockId, record, holderAlive: lockId !== undefined && record?.lockId === lockId && ownerAlive(record) };
}

function parseOwner(text: string): LockOwner | undefined {
  try {
    const v = JSON.parse(text) as Partial<LockOwner>;
    if (typeof v.pid === 'number' && typeof v.startTime === 'string' && typeof v.lockId === 'string') {
      return { pid: v.pid, startTime: v.startTime, bootId: String(v.bootId ?? ''), handoffId: String(v.handoffId ?? ''), acquiredAt: String(v.acquiredAt ?? ''), lockId: v.lockId };
    }
  } catch {
    /* torn or foreign: no valid record */
  }
  return undefined;
}

function ownerAlive(owner: LockOwner): boolean {
  const ours = bootId();
  if (owner.bootId !== '' && ours !== '' && owner.bootId !== ours) return false;
  return isAlive(owner.pid, owner.startTime === '' ? undefined : owner.startTime);
}

function statLockDir(p: string): fs.BigIntStats | undefined {
  try {
    return fs.statSync(p, { bigint: true, throwIfNoEntry: false });
  } catch (err) {
    throw new LockError('E_LOCK_IO', `cannot stat ${p}: ${errorMessage(err)}`, { path: p }, { cause: err });
  }
}

/**
 * Inode + birth time: a new lock dir never has the identity of a removed one, even when
 * the inode number is reused. (On a file system without birth times this degrades to the
 * inode number.)
 */
function lockIdOf(st: fs.BigIntStats): string {
  return `${st.ino}:${st.birthtimeNs}`;
}

function mtimeAge(st: fs.BigIntStats): number {
  return Date.now() - Number(st.mtimeMs);
}

let cachedStartTime: string | undefined;
function selfStartTime(): string {
  return (cachedStartTime ??= processStartTime(process.pid) ?? '');
}

let cachedBootId: string | undefined;
function bootId(): string {
  if (cachedBootId === undefined) {
    try {
      cachedBootId = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    } catch {
      cachedBootId = '';
    }
  }
  return cachedBootId;
}

// Loaded on first acquire only: importing proper-lockfile installs signal-exit hooks, which
// modules that merely inspect the lock (lockHolder, the supervisor) should not get.
let properLockfile: Promise<typeof import('proper-lockfile')> | undefined;
function loadProperLockfile(): Promise<typeof import('proper-lockfile')> {
  return (properLockfile ??= import('proper-lockfile'));
}

/**
 * Makes the next acquire and release fast: loads the lock implementation and runs one
 * acquire/release cycle on a private dir. The first run of this code (ours and
 * proper-lockfile's: parsing, compiling, the mtime-precision probe) takes several times
 * longer than later ones, and in a handoff the incumbent's release and the successor's
 * acquire both sit inside the write blackout. Every app's agent calls this at start-up.
 *
 * The private dir is `<dataDir>/.baton.lock.warmup-<pid>-<hex>`, on the same file system
 * as the real lock; one left by a process killed meanwhile is removed by the next
 * acquire of the real lock (sweepLeftovers).
 */
export async function prepareLock(dataDir: string): Promise<void> {
  await loadProperLockfile();
  bootId();
  selfStartTime();
  fs.mkdirSync(dataDir, { recursive: true });
  const dir = path.join(dataDir, `${LOCK_DIR_NAME}.warmup-${process.pid}-${randomBytes(4).toString('hex')}`);
  fs.mkdirSync(dir);
  try {
    // Logs go nowhere, but through the same code as the real lock's (also cold until used).
    const lock = new DataDirLock(dir, { log: pino({ level: 'info' }, { write: () => undefined }) });
    await lock.acquire({ handoffId: 'warm-up' });
    await lock.release();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
