import os from 'node:os';
import { errorMessage } from '../os/errors.js';
import type { Logger } from '../os/log.js';
import { cannotRestoreNice, groupMembers, setProcessNice } from '../os/priority.js';

/**
 * A successor boots at a lower CPU priority while the incumbent still serves, and gets
 * its priority back when it is sent Begin (BENCHMARKS.md "Tail latency during
 * upgrades": the boot competes with the serving incumbent for the CPUs). It starts at
 * the supervisor's own nice + `delta` (at most 19), and returns to the supervisor's.
 *
 * Only where the way back is allowed: raising a priority needs CAP_SYS_NICE or an
 * RLIMIT_NICE reaching the old value (priority.ts). Where neither is there (an
 * unprivileged service user with the default limit), successors start at normal
 * priority, said once at info level. The first successor confirms it for real (one
 * step down and back on its main thread before lowering it): a capability held only
 * in a user namespace passes the /proc check but not the kernel's.
 */
export class BootPriority {
  private readonly base = os.getPriority();
  /** Why successors are not lowered; undefined while they are. */
  private unavailable: string | undefined;
  private confirmed = false;
  private told = false;
  /** The successor lowered and not yet fully restored (one handoff runs at a time). */
  private loweredPid: number | undefined;
  private restoreTimer: NodeJS.Timeout | undefined;

  constructor(
    /** How much lower (nice steps); 0 turns it off. */
    readonly delta: number,
    private readonly log: Logger,
    /** Where our capabilities and limits are read (tests). */
    procSelf?: string,
  ) {
    if (delta <= 0) this.unavailable = 'turned off (handoff.successorNice 0)';
    else if (this.base >= 19) this.unavailable = `the supervisor already runs at nice ${this.base}`;
    else this.unavailable = cannotRestoreNice(this.base, procSelf);
  }

  /** The nice value a successor boots at. */
  get bootNice(): number {
    return Math.min(19, this.base + this.delta);
  }

  /**
   * Right after the successor's spawn: lower it, if its priority can be restored later.
   * If Begin has not come `maxMs` later, it gets its priority back anyway: on a machine
   * saturated by other work a low-priority boot could take long enough to miss the
   * Hello timeout, and a slow handoff is better than an aborted one.
   */
  lower(pid: number, maxMs: number): boolean {
    if (!this.unavailable && !this.confirmed) {
      // One step down and back on its main thread proves the way back before relying on
      // it (if the way back fails, this one successor keeps nice + 1 on its main thread).
      const down = setProcessNiceOne(pid, this.base + 1);
      const back = down === undefined ? setProcessNiceOne(pid, this.base) : undefined;
      if (down !== undefined) this.unavailable = `lowering a priority failed (${down})`;
      else if (back !== undefined) this.unavailable = `restoring a priority failed (${back})`;
      else this.confirmed = true;
    }
    if (this.unavailable) {
      if (!this.told && this.delta > 0) {
        this.told = true;
        this.log.info({ event: 'handoff.boot_priority_off', reason: this.unavailable }, `successors start at normal CPU priority: ${this.unavailable}`);
      }
      return false;
    }
    this.loweredPid = pid;
    clearTimeout(this.restoreTimer);
    this.restoreTimer = setTimeout(() => {
      this.log.info({ event: 'handoff.boot_priority_timeout', pid, afterMs: maxMs }, `successor (pid ${pid}) back to normal CPU priority: no Begin within ${maxMs} ms`);
      this.restore(pid);
    }, maxMs);
    this.restoreTimer.unref();
    const r = setProcessNice(pid, this.bootNice);
    if (r.error) this.log.warn({ event: 'handoff.boot_priority_failed', pid, err: errorMessage(r.error) }, 'could not lower the successor\'s CPU priority');
    return r.threads > 0;
  }

  /**
   * When Begin is sent: every thread of the successor back to the supervisor's
   * priority (a /proc/<pid>/task listing and a syscall per thread: well under 1 ms).
   */
  restore(pid: number): void {
    if (this.loweredPid !== pid) return;
    clearTimeout(this.restoreTimer);
    const r = setProcessNice(pid, this.base);
    if (r.error) this.log.warn({ event: 'handoff.boot_priority_restore_failed', pid, err: errorMessage(r.error) }, 'could not restore the successor\'s CPU priority');
  }

  /**
   * After the commit, off the write blackout: processes the successor started meanwhile
   * (a wrapper's server, workers) inherited the lower priority; they get it back too.
   */
  async restoreGroup(pgid: number): Promise<void> {
    if (this.loweredPid !== pgid) return;
    this.loweredPid = undefined;
    for (const pid of await groupMembers(pgid)) {
      const r = setProcessNice(pid, this.base);
      if (r.error) this.log.warn({ event: 'handoff.boot_priority_restore_failed', pid, err: errorMessage(r.error) }, 'could not restore the CPU priority of a process of the app');
    }
  }
}

/** The main thread only; returns the error text, or undefined when it worked (or the process is gone). */
function setProcessNiceOne(pid: number, nice: number): string | undefined {
  try {
    os.setPriority(pid, nice);
    return undefined;
  } catch (err) {
    const code = (err as { info?: { code?: string } }).info?.code;
    return code === 'ESRCH' ? undefined : `${code ?? ''} ${errorMessage(err)}`.trim();
  }
}
