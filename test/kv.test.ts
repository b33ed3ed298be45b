/**
 * fixtures/kv: the store on real files (torn tails, corruption, revisions across
 * restarts, seal footers and fingerprints, resume after a successor appended), and
 * the seal check through a real Supervisor (a shard tampered with after the seal makes
 * the successor unhealthy, the handoff aborts and the incumbent serves on).
 */
import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdirSync, readdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeRecord, encodeRecord, FILE_HEADER_BYTES, RecordType } from '../fixtures/kv/record.js';
import { Shard, shardPath } from '../fixtures/kv/shard.js';
import { CorruptShardError, fingerprint, SealedError, Store, VerifyError } from '../fixtures/kv/store.js';
import { warmUp } from '../fixtures/kv/warmup.js';
import { request } from './support/engine.js';
import { Harness, pollUntil } from './support/harness.js';
import { KV, kvHealth } from './support/kv-load.js';
import { useWorlds } from './support/world.js';

process.env.BATON_LOG_LEVEL ??= 'warn';

const h = new Harness();
afterEach(() => h.cleanup());

const v = (s: string) => Buffer.from(s, 'utf8');

/** Keys that land in shard `shard` of a `count`-shard store. */
function keysIn(store: Store, shard: number, n: number): string[] {
  const keys: string[] = [];
  for (let i = 0; keys.length < n; i++) if (store.shardOf(`k${i}`) === shard) keys.push(`k${i}`);
  return keys;
}

async function filled(dir: string, shards = 2, n = 20): Promise<Store> {
  const s = new Store(dir, shards);
  await s.open();
  await Promise.all(Array.from({ length: n }, (_, i) => s.put(`k${i}`, v(`v${i}`))));
  return s;
}

describe('kv store on real files', () => {
  it('writes are group-committed, read back after reopen, and deletes are tombstones', async () => {
    const dir = h.tempDir('kv-');
    const s = await filled(dir, 2, 200);
    expect((await s.del('k3')).rev).toBeGreaterThan(0n);
    const info = s.shardInfo();
    // 200 concurrent writes to 2 shards took far fewer than 200 fsyncs.
    expect(info.reduce((a, x) => a + x.batches, 0)).toBeLessThan(100);
    const revs = s.revisionMap();
    await s.close();

    const t = new Store(dir, 2);
    await t.open();
    expect(t.get('k3')).toBeUndefined();
    expect(t.get('k7')?.value.toString()).toBe('v7');
    expect(t.keyCount).toBe(199);
    expect(t.revisionMap()).toEqual(revs);
    expect(Object.values(revs).reduce((a, b) => a + b, 0n)).toBe(201n);
    await t.close();
  });

  it('a torn tail is cut on reopen; what was acknowledged stays; appends go on after it', async () => {
    const dir = h.tempDir('kv-');
    const s = await filled(dir, 2, 20);
    const revs = s.revisionMap();
    await s.close();
    const file = shardPath(dir, 0);
    const good = statSync(file).size;
    // A crash mid-append: the first bytes of a record, never acknowledged.
    const rec = encodeRecord({ type: RecordType.Put, rev: revs['0']! + 1n, key: 'torn', value: v('x'.repeat(100)) });
    appendFileSync(file, rec.subarray(0, 40));
    // And a complete record whose checksum is wrong (torn inside its last page) on shard 1.
    const file1 = shardPath(dir, 1);
    const good1 = statSync(file1).size;
    const bad = encodeRecord({ type: RecordType.Put, rev: revs['1']! + 1n, key: 'torn', value: v('y') });
    bad[bad.length - 1]! ^= 0xff;
    appendFileSync(file1, bad);

    const t = new Store(dir, 2);
    const { truncatedBytes } = await t.open();
    expect(truncatedBytes).toBe(40 + bad.length);
    expect(statSync(file).size).toBe(good);
    expect(statSync(file1).size).toBe(good1);
    expect(t.revisionMap()).toEqual(revs);
    expect(t.get('torn')).toBeUndefined();
    for (let i = 0; i < 20; i++) expect(t.get(`k${i}`)?.value.toString()).toBe(`v${i}`);
    const after = await t.put('after', v('a'));
    expect(after.rev).toBe(revs[String(after.shard)]! + 1n);
    await t.close();

    const u = new Store(dir, 2);
    expect((await u.open()).truncatedBytes).toBe(0);
    expect(u.get('after')?.value.toString()).toBe('a');
    await u.close();
  });

  it('a damaged record followed by intact ones is corruption: open refuses and touches nothing', async () => {
    const dir = h.tempDir('kv-');
    const s = await filled(dir, 1, 10);
    await s.close();
    const file = shardPath(dir, 0);
    const bytes = readFileSync(file);
    bytes[FILE_HEADER_BYTES + 20]! ^= 0x55; // inside the first record
    writeFileSync(file, bytes);
    const t = new Store(dir, 1);
    await expect(t.open()).rejects.toBeInstanceOf(CorruptShardError);
    expect(readFileSync(file).equals(bytes)).toBe(true);
  });

  it('refuses a data dir made with another shard count', async () => {
    const dir = h.tempDir('kv-');
    await (await filled(dir, 4, 4)).close();
    await expect(new Store(dir, 2).open()).rejects.toBeInstanceOf(CorruptShardError);
    await expect(new Store(dir, 8).open()).rejects.toThrow(/header says shard \d of 4/);
  });

  it('revisions are monotonic across restarts and seals; an append after a footer is normal', async () => {
    const dir = h.tempDir('kv-');
    const keys = keysIn(new Store(dir, 2), 0, 30);
    let last = 0n;
    for (let round = 0; round < 3; round++) {
      const s = new Store(dir, 2);
      await s.open();
      expect(s.revisionMap()['0']).toBe(last);
      for (const k of keys.slice(round * 10, round * 10 + 10)) {
        const { shard, rev } = await s.put(k, v(`${k}@${round}`));
        expect(shard).toBe(0);
        expect(rev).toBe(last + 1n);
        last = rev;
      }
      if (round % 2 === 0) {
        const sealed = await s.seal();
        expect(sealed.revisions['0']).toBe(last);
        await expect(s.put(keys[0]!, v('late'))).rejects.toBeInstanceOf(SealedError);
      } else {
        await s.close();
      }
    }
    const s = new Store(dir, 2);
    await s.open();
    expect(s.revisionMap()['0']).toBe(30n);
    expect(s.get(keys[29]!)?.value.toString()).toBe(`${keys[29]}@2`);
    await s.close();
  });

  it('seal writes a footer per shard; a fresh open verifies revisions and fingerprint', async () => {
    const dir = h.tempDir('kv-');
    const s = await filled(dir, 4, 40);
    const sealed = await s.seal();
    for (let i = 0; i < 4; i++) {
      const bytes = readFileSync(shardPath(dir, i));
      const tail = bytes.subarray(bytes.length - 26); // a SEAL record: 18 + 8 bytes
      const footer = decodeRecord(tail, 0)?.record;
      expect(footer?.type).toBe(RecordType.Seal);
      expect(footer?.rev).toBe(sealed.revisions[String(i)]);
    }
    expect(sealed.fingerprint).toHaveLength(32);
    // Stable: recomputed from the heads, and by a reader of the files.
    expect(fingerprint(sealed.heads).equals(sealed.fingerprint)).toBe(true);
    const t = new Store(dir, 4);
    await t.open({ revisions: sealed.revisions, fingerprint: sealed.fingerprint });
    expect(fingerprint(t.heads()).equals(sealed.fingerprint)).toBe(true);
    expect(t.revisionMap()).toEqual(sealed.revisions);
    // Once the successor writes, the old seal no longer describes the data.
    await t.put('new', v('n'));
    await t.close();
    await expect(new Store(dir, 4).open({ revisions: sealed.revisions, fingerprint: sealed.fingerprint })).rejects.toBeInstanceOf(VerifyError);
  });

  it('the seal check catches tampering that keeps every record intact, and leaves the files alone', async () => {
    const dir = h.tempDir('kv-');
    const s = await filled(dir, 2, 20);
    const sealed = await s.seal();
    const file = shardPath(dir, 1);
    const bytes = readFileSync(file);
    // Rewrite the first record's value (same length) with a valid checksum: only the digest can tell.
    const first = decodeRecord(bytes, FILE_HEADER_BYTES)!;
    const forged = encodeRecord({ ...first.record, value: Buffer.from(first.record.value!.toString().replace(/v/, 'X')) });
    expect(forged.length).toBe(first.length);
    forged.copy(bytes, FILE_HEADER_BYTES);
    writeFileSync(file, bytes);
    const t = new Store(dir, 2);
    await expect(t.open({ revisions: sealed.revisions, fingerprint: sealed.fingerprint })).rejects.toThrow(/fingerprint/);

    // Garbage after the footer: a mismatch for the successor (not silently cut).
    const dir2 = h.tempDir('kv-');
    const s2 = await filled(dir2, 2, 20);
    const sealed2 = await s2.seal();
    appendFileSync(shardPath(dir2, 0), Buffer.from('garbage'));
    const size = statSync(shardPath(dir2, 0)).size;
    await expect(new Store(dir2, 2).open({ revisions: sealed2.revisions, fingerprint: sealed2.fingerprint })).rejects.toThrow(/after the last intact record/);
    expect(statSync(shardPath(dir2, 0)).size).toBe(size);
  });

  it('a successor that pre-read the logs while the incumbent wrote catches up and verifies', async () => {
    const dir = h.tempDir('kv-');
    const inc = await filled(dir, 4, 100);
    const suc = new Store(dir, 4);
    await suc.prefetch();
    await Promise.all(Array.from({ length: 100 }, (_, i) => inc.put(`later${i}`, v(`l${i}`))));
    await inc.del('k5');
    const sealed = await inc.seal();
    await suc.open({ revisions: sealed.revisions, fingerprint: sealed.fingerprint });
    expect(suc.get('later99')?.value.toString()).toBe('l99');
    expect(suc.get('k5')).toBeUndefined();
    expect(suc.keyCount).toBe(199);
    await suc.close();
  });

  it('a following successor reads the incumbent\'s appends as they land, then opens and verifies', async () => {
    const dir = h.tempDir('kv-');
    const inc = await filled(dir, 4, 50);
    const suc = new Store(dir, 4);
    await suc.prefetch();
    expect(suc.keyCount).toBe(50);
    suc.follow(5);
    await Promise.all(Array.from({ length: 50 }, (_, i) => inc.put(`later${i}`, v(`l${i}`))));
    await inc.del('k5');
    // Read-only, before any open: the follower alone brings the new keys in.
    await pollUntil(async () => (suc.keyCount === 99 ? true : undefined), 'the follower to read the new appends', 10_000, 5);
    expect(suc.get('later49')?.value.toString()).toBe('l49');
    const sealed = await inc.seal();
    await suc.open({ revisions: sealed.revisions, fingerprint: sealed.fingerprint });
    expect(suc.keyCount).toBe(99);
    expect(suc.revisionMap()).toEqual(sealed.revisions);
    // Writable after the open; the follower is gone (no round reads the file under us).
    await suc.put('mine', v('m'));
    expect(suc.get('mine')?.value.toString()).toBe('m');
    await suc.close();
  });

  it('resume after an abort re-reads what the successor appended after our footers', async () => {
    const dir = h.tempDir('kv-');
    const inc = await filled(dir, 2, 10);
    const sealed = await inc.seal();
    const suc = new Store(dir, 2);
    await suc.open({ revisions: sealed.revisions, fingerprint: sealed.fingerprint });
    await suc.put('from-successor', v('s'));
    await suc.del('k1');
    await suc.close(); // aborted: killed after it had acknowledged writes

    expect((await inc.reopen()).problem).toBeUndefined();
    expect(inc.get('from-successor')?.value.toString()).toBe('s');
    expect(inc.get('k1')).toBeUndefined();
    const total = Object.values(inc.revisionMap()).reduce((a, b) => a + b, 0n);
    expect(total).toBe(12n);
    await inc.put('k1', v('again'));
    expect((await inc.verify()).ok).toBe(true);

    // If the sealed bytes themselves changed while we were sealed, resume says so.
    await inc.seal();
    truncateSync(shardPath(dir, 0), statSync(shardPath(dir, 0)).size - 26); // cut our footer
    const { problem } = await inc.reopen();
    expect(problem).toMatch(/shard 0/);
    await inc.close();
  });
});

const worlds = useWorlds();

describe('kv warm-up (fixtures/kv/warmup.ts)', () => {
  it('runs requests, writes, a seal and a verified open in a private dir, then leaves the data dir as it was', async () => {
    const dataDir = h.tempDir('kv-');
    const s = await filled(dataDir, 2, 10);
    await s.close();
    const before = readdirSync(dataDir).sort();
    const deadPid = spawnSync('true').pid!;
    mkdirSync(path.join(dataDir, `.kv-warmup-${deadPid}`));
    writeFileSync(path.join(dataDir, `.kv-warmup-${deadPid}`, 'shard-000.log'), 'left by a process killed mid-warm-up');
    const live = path.join(dataDir, `.kv-warmup-${process.ppid}`);
    mkdirSync(live);

    const r = await warmUp(dataDir);
    expect(r.error).toBeUndefined();
    expect(r.ms).toBeGreaterThan(0);
    // The dead process's dir is swept, a live one's is not, ours is gone.
    expect(readdirSync(dataDir).sort()).toEqual([...before, `.kv-warmup-${process.ppid}`].sort());
    const t = new Store(dataDir, 2);
    await t.open();
    expect(t.keyCount).toBe(10);
    await t.close();
  });

  it('a warm-up that cannot create its dir reports the error instead of throwing', async () => {
    const file = path.join(h.tempDir('kv-'), 'not-a-dir');
    writeFileSync(file, '');
    const r = await warmUp(file);
    expect(r.error).toMatch(/ENOTDIR|EEXIST|not a directory/i);
  });
});

describe('kv under a real Supervisor', () => {
  it('hands off with data, deletes and revisions intact', async () => {
    const w = await worlds.start({ supervisor: { command: KV }, appEnv: { KV_SHARDS: '4' } });
    for (let i = 0; i < 20; i++) expect((await request(w.port, 'PUT', `/kv/k${i}`, `v${i}`)).status).toBe(200);
    expect((await request(w.port, 'DELETE', '/kv/k0')).status).toBe(200);
    expect((await request(w.port, 'DELETE', '/kv/k0')).status).toBe(404);
    const before = await kvHealth(w.port);
    const r = await w.sup.performHandoff();
    expect(r.outcome, r.reason).toBe('committed');
    const after = await kvHealth(w.port);
    expect(after.pid).toBe(r.newPid);
    expect(after.ok).toBe(true);
    expect(after.revisions).toEqual(before.revisions);
    expect(after.generation).toBe(before.generation + 1);
    expect((await request(w.port, 'GET', '/kv/k0')).status).toBe(404);
    expect(JSON.parse((await request(w.port, 'GET', '/kv/k7')).body).value).toBe('v7');
  });

  it('aborted between the drain and SealRequest: the early seal is undone, nothing lost, the incumbent serves on', async () => {
    let sealedAtGate: (RecordType | undefined)[] = [];
    let armed = false;
    const w = worlds.create({
      supervisor: {
        command: KV,
        // 'sealing' is entered once Drained is in, before SealRequest goes out: the kv
        // (drained with no connection left) is already sealing by itself. Wait for its
        // footers, then fail the phase: the supervisor aborts instead of sending Seal.
        phaseGate: async (phase) => {
          if (phase !== 'sealing' || !armed) return;
          armed = false;
          sealedAtGate = await pollUntil(
            async () => {
              const types = await Promise.all([0, 1].map(async (i) => {
                const s = new Shard(w.dataDir, i, 2);
                await s.load();
                return s.lastType;
              }));
              return types.every((t) => t === RecordType.Seal) ? types : undefined;
            },
            'the incumbent\'s early seal footers',
            10_000,
            10,
          );
          throw new Error('test: abort between Drained and SealRequest');
        },
      },
      appEnv: { KV_SHARDS: '2' },
    });
    expect((await w.sup.start()).outcome).toBe('committed');
    const incumbent = await w.settledServer();
    for (let i = 0; i < 10; i++) expect((await request(w.port, 'PUT', `/kv/k${i}`, `v${i}`)).status).toBe(200);
    const before = await kvHealth(w.port);
    armed = true;
    const r = await w.sup.performHandoff();
    expect(r.outcome).toBe('aborted');
    expect(sealedAtGate).toEqual([RecordType.Seal, RecordType.Seal]);
    expect(await w.settledServer()).toBe(incumbent);
    const after = await kvHealth(w.port);
    expect(after.ok).toBe(true);
    expect(after.problems).toEqual([]);
    expect(after.revisions).toEqual(before.revisions);
    for (let i = 0; i < 10; i++) expect(JSON.parse((await request(w.port, 'GET', `/kv/k${i}`)).body).value).toBe(`v${i}`);
    // Writable again, after its own footers; and the next handoff (not gated) commits.
    expect((await request(w.port, 'PUT', '/kv/after', 'a')).status).toBe(200);
    const next = await w.sup.performHandoff();
    expect(next.outcome, next.reason).toBe('committed');
    expect(JSON.parse((await request(w.port, 'GET', '/kv/after')).body).value).toBe('a');
  });

  for (const tamper of ['garbage after the footer', 'a forged record after the footer'] as const) {
    it(`a shard tampered with after the seal (${tamper}): successor unhealthy → abort → the incumbent serves on`, async () => {
      // The successor's "cannot open the data" error is expected here: keep it off the output.
      const w = await worlds.start({ supervisor: { command: KV }, appEnv: { KV_SHARDS: '2', KV_LOG_LEVEL: 'fatal' } });
      const incumbent = await w.settledServer();
      for (let i = 0; i < 10; i++) expect((await request(w.port, 'PUT', `/kv/k${i}`, `v${i}`)).status).toBe(200);
      const before = await kvHealth(w.port);
      // Between SealComplete and Begin (the 'phase' event fires before Begin is sent).
      let tampered = false;
      w.sup.on('phase', (phase: string) => {
        if (phase !== 'begin' || tampered) return;
        tampered = true;
        const file = shardPath(w.dataDir, 0);
        if (tamper === 'garbage after the footer') appendFileSync(file, Buffer.from('not a record'));
        else appendFileSync(file, encodeRecord({ type: RecordType.Put, rev: BigInt(before.revisions['0']!) + 1n, key: 'forged', value: v('x') }));
      });
      const r = await w.sup.performHandoff();
      expect(tampered).toBe(true);
      expect(r.outcome).toBe('aborted');
      expect(r.code).toBe('E_READY_REJECTED');
      expect(await w.settledServer()).toBe(incumbent);
      for (let i = 0; i < 10; i++) expect(JSON.parse((await request(w.port, 'GET', `/kv/k${i}`)).body).value).toBe(`v${i}`);
      expect((await request(w.port, 'PUT', '/kv/after', 'a')).status).toBe(200);
      // Garbage is a torn tail to the resumed incumbent (cut); a forged intact record reads as data.
      const health = await kvHealth(w.port);
      expect(health.pid).toBe(incumbent);
      expect(health.ok).toBe(true);
      // The next handoff, with nobody tampering, commits.
      const next = await w.sup.performHandoff();
      expect(next.outcome, next.reason).toBe('committed');
      expect(JSON.parse((await request(w.port, 'GET', '/kv/after')).body).value).toBe('a');
    });
  }
});
