import type { LockState } from '../os/lock.js';
import type { MessageOf, RevisionMap } from '../wire/schema.js';

/**
 * The Ready check (PROTOCOL.md 7.3 step 5): why Ready is not acceptable, or undefined
 * when it is. The lock must be really held by the successor: the lock directory exists,
 * the owner record describes that directory (lockId) and names the successor's process
 * (pid and start time), and that process is alive.
 */
export function checkReady(
  ready: MessageOf<'Ready'>,
  sealed: RevisionMap,
  lock: LockState,
  successor: { pid: number; startTime?: string | undefined },
): string | undefined {
  if (!ready.healthzOk) return 'successor reported healthzOk=false';
  for (const [shard, rev] of Object.entries(sealed)) {
    const advertised = ready.advertisedRevisionPerShard[shard];
    if (advertised === undefined) return `successor does not advertise shard ${shard} (sealed at ${rev})`;
    if (advertised < rev) return `successor shard ${shard} at revision ${advertised}, behind sealed ${rev}`;
  }
  const who = `the successor (pid ${successor.pid})`;
  if (lock.lockId === undefined) return `the data-dir lock is not held: ${lock.lockPath} does not exist, so ${who} does not hold it`;
  const record = lock.record;
  if (!record) return `the data-dir lock ${lock.lockPath} has no readable owner record, so ${who} does not hold it`;
  if (record.lockId !== lock.lockId) {
    return `the data-dir lock's owner record describes lock ${record.lockId}, not the directory there now (${lock.lockId}), so ${who} does not hold it`;
  }
  if (record.pid !== successor.pid) return `data-dir lock owner is pid ${record.pid}, not ${who}`;
  if (successor.startTime !== undefined && record.startTime !== successor.startTime) {
    return `data-dir lock owner record names pid ${record.pid} with start time ${record.startTime}, not ${who} (start time ${successor.startTime})`;
  }
  if (!lock.holderAlive) return `data-dir lock holder ${who} is not alive`;
  return undefined;
}
