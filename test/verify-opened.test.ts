/**
 * verifyOpened (src/app/verify-opened.ts), the successor's check of the data it opened
 * against what the incumbent sealed: equal revisions and fingerprint pass, nothing sealed
 * is not checked, and every kind of difference is a SealMismatchError (E_SEAL_MISMATCH)
 * naming the field and both values. Imported from the package's entry point, as an app
 * does. (Under a real supervisor: test/examples.test.ts, the LMDB example.)
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { BatonError, SealMismatchError, verifyOpened, type BeginInfo, type SealResult } from '../src/index.js';

const fp = (s: string): Buffer => createHash('sha256').update(s).digest();
const begin = (revs: Record<string, bigint>, fingerprint: Uint8Array): Pick<BeginInfo, 'sealedRevisionPerShard' | 'sealedFingerprint'> => ({ sealedRevisionPerShard: revs, sealedFingerprint: fingerprint });
const opened = (revs: Record<string, bigint>, fingerprint: Uint8Array): SealResult => ({ lastRevisionPerShard: revs, dataDirFingerprint: fingerprint });

/** The SealMismatchError verifyOpened throws (fails the test when it throws nothing). */
function mismatchOf(f: () => unknown): SealMismatchError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(SealMismatchError);
    return err as SealMismatchError;
  }
  throw new Error('verifyOpened threw nothing');
}

describe('verifyOpened', () => {
  it('passes (true) when the revisions and the fingerprint are the ones sealed', () => {
    expect(verifyOpened(begin({ '0': 120n }, fp('a')), opened({ '0': 120n }, fp('a')))).toBe(true);
    expect(verifyOpened(begin({ a: 3n, b: 0n }, fp('x')), opened({ b: 0n, a: 3n }, new Uint8Array(fp('x'))))).toBe(true);
  });

  it('checks nothing (false) when nothing was sealed: a cold start, a standalone run, an incumbent that died', () => {
    expect(verifyOpened(begin({}, new Uint8Array(0)), opened({ '0': 7n }, fp('anything')))).toBe(false);
  });

  it('a stale copy: names the shard, both revisions, and says it is behind', () => {
    const e = mismatchOf(() => verifyOpened(begin({ '0': 950n }, fp('new')), opened({ '0': 279n }, fp('old'))));
    expect(e).toBeInstanceOf(BatonError);
    expect(e.code).toBe('E_SEAL_MISMATCH');
    expect([e.field, e.sealed, e.opened]).toEqual(['lastRevisionPerShard.0', '950', '279']);
    expect(e.details).toEqual({ field: 'lastRevisionPerShard.0', sealed: '950', opened: '279' });
    expect(e.message).toBe('the data this process opened is not what the incumbent sealed: lastRevisionPerShard.0 sealed 950, opened 279 (behind: a stale copy)');
  });

  it('a copy ahead of the seal, a missing shard, a shard the incumbent did not seal', () => {
    expect(mismatchOf(() => verifyOpened(begin({ '0': 5n }, fp('a')), opened({ '0': 6n }, fp('a')))).message).toMatch(/lastRevisionPerShard\.0 sealed 5, opened 6 \(ahead: another copy\)$/);
    const missing = mismatchOf(() => verifyOpened(begin({ '0': 5n, '1': 2n }, fp('a')), opened({ '0': 5n }, fp('a'))));
    expect([missing.field, missing.sealed, missing.opened]).toEqual(['lastRevisionPerShard.1', '2', 'none']);
    expect(missing.message).toMatch(/\(no shard 1 here\)$/);
    const extra = mismatchOf(() => verifyOpened(begin({ '0': 5n }, fp('a')), opened({ '0': 5n, '7': 0n }, fp('a'))));
    expect([extra.field, extra.sealed, extra.opened]).toEqual(['lastRevisionPerShard.7', 'none', '0']);
    expect(extra.message).toMatch(/\(a shard the incumbent did not seal\)$/);
  });

  it('the same revisions with another fingerprint (a diverged copy): names the field and both fingerprints in hex', () => {
    const e = mismatchOf(() => verifyOpened(begin({ '0': 40n }, fp('ours')), opened({ '0': 40n }, fp('theirs'))));
    expect([e.field, e.sealed, e.opened]).toEqual(['dataDirFingerprint', fp('ours').toString('hex'), fp('theirs').toString('hex')]);
    expect(e.message).toMatch(/dataDirFingerprint sealed [0-9a-f]{64}, opened [0-9a-f]{64} \(at the same revisions: a copy whose history diverged/);
    // A sealed fingerprint and an opened store that has none.
    expect(mismatchOf(() => verifyOpened(begin({}, fp('ours')), opened({}, new Uint8Array(0)))).opened).toBe('none');
  });

  it('revisions counted in numbers (an app in JavaScript) compare by value', () => {
    const numbers = { '0': 12 } as unknown as Record<string, bigint>;
    expect(verifyOpened(begin({ '0': 12n }, fp('a')), opened(numbers, fp('a')))).toBe(true);
    expect(mismatchOf(() => verifyOpened(begin({ '0': 13n }, fp('a')), opened(numbers, fp('a')))).opened).toBe('12');
  });
});
