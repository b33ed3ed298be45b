import { SealMismatchError } from '../os/errors.js';
import type { BeginInfo, SealResult } from './app.js';

/**
 * The successor's check of the data it opened against what the incumbent sealed. Call
 * it after `begin()` and opening the data, before serving, with the same summary of the
 * opened data that the app's `seal()` returns (`lastRevisionPerShard`,
 * `dataDirFingerprint`):
 *
 *   const begin = await baton.begin();
 *   const db = openStore(baton.dataDir);
 *   verifyOpened(begin, db.summary());   // throws SealMismatchError on a stale or other copy
 *
 * Between the incumbent's seal and this check nobody writes, so the two must be equal:
 * the same shards, each at the same revision, and the same fingerprint, byte for byte.
 * The supervisor checks revisions only in Ready, and only that none is behind (a
 * successor may write before Ready); the fingerprint is the app's to check, here.
 *
 * Returns true when it compared, false when nothing was sealed (a cold start, a
 * standalone run, or an incumbent that died: `begin` carries no revisions and an empty
 * fingerprint). Throws SealMismatchError (E_SEAL_MISMATCH) naming the first field that
 * differs and both values; thrown before Ready, it ends the successor and the handoff
 * aborts with that line as its reason, the old process serving on.
 */
export function verifyOpened(begin: Pick<BeginInfo, 'sealedRevisionPerShard' | 'sealedFingerprint'>, opened: SealResult): boolean {
  const sealedRevs = begin.sealedRevisionPerShard;
  if (begin.sealedFingerprint.length === 0 && Object.keys(sealedRevs).length === 0) return false;
  const openedRevs = opened.lastRevisionPerShard;
  const shards = [...new Set([...Object.keys(sealedRevs), ...Object.keys(openedRevs)])].sort();
  for (const shard of shards) {
    // BigInt(): an app in JavaScript may count in numbers.
    const sealed = asBig(sealedRevs[shard]);
    const have = asBig(openedRevs[shard]);
    if (sealed === have) continue;
    const why =
      sealed === undefined
        ? 'a shard the incumbent did not seal'
        : have === undefined
          ? `no shard ${shard} here`
          : have < sealed
            ? 'behind: a stale copy'
            : 'ahead: another copy';
    throw mismatch(`lastRevisionPerShard.${shard}`, text(sealed), text(have), why);
  }
  const sealedFp = Buffer.from(begin.sealedFingerprint);
  const openedFp = Buffer.from(opened.dataDirFingerprint);
  if (!sealedFp.equals(openedFp)) {
    throw mismatch('dataDirFingerprint', hex(sealedFp), hex(openedFp), 'at the same revisions: a copy whose history diverged, or one the incumbent did not write');
  }
  return true;
}

function mismatch(field: string, sealed: string, opened: string, why: string): SealMismatchError {
  return new SealMismatchError(field, sealed, opened, `the data this process opened is not what the incumbent sealed: ${field} sealed ${sealed}, opened ${opened} (${why})`);
}

const asBig = (rev: bigint | number | undefined): bigint | undefined => (rev === undefined ? undefined : BigInt(rev));
const text = (rev: bigint | undefined): string => (rev === undefined ? 'none' : rev.toString());
const hex = (b: Buffer): string => (b.length === 0 ? 'none' : b.toString('hex'));
