import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, utimesSync, renameSync, rmSync, readdirSync, writeFileSync } from 'node:fs';
import { isAlive, processStartTime } from '../src/os/proc.js';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { DataDirLock, LOCK_DIR_NAME, lockHolder, prepareLock, readLockOwner } from '../src/os/lock.js';
import { LockError } from '../src/os/errors.js';
import { Harness, LineReader, exitOf, pollUntil } from './support/harness.js';

const FIXTURE = path.resolve('test/fixtures-lock/lock-holder.mjs');
const h = new Harness();
afterEach(() => h.cleanup());

type Line = { event: string; pid: number; t: number; code?: string; holderPid?: number; held?: boolean; message?: string; ms?: number };
interface Holder {
  pid: number;
  out: LineReader;
  send(cmd: string): void;
  next(event: string, timeoutMs?: number): Promise<Line>;
}

function startHolder(cfg: { dataDir: string; staleMs?: number; updateMs?: number; waitMs?: number; worker?: boolean; handoffId?: string }): Holder {
  const child = h.node(FIXTURE, [JSON.stringify(cfg)], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, BATON_LOG_LEVEL: 'warn' } });
  const out = new LineReader(child);
  let seen = 0;
  return {
    pid: child.pid!,
    out,
    send: (cmd) => child.stdin!.write(cmd + '\n'),
    // Events are consumed in order, so a second `status` waits for a new line.
    async next(event, timeoutMs = 10_000) {
      const line = await out.next<Line>((l) => l.event === event && out.lines.indexOf(l) >= seen, event, timeoutMs);
      seen = out.lines.indexOf(line) + 1;
      return line;
    },
  };
}

async function acquired(cfg: Parameters<typeof startHolder>[0]): Promise<Holder & { acquired: Line }> {
  const holder = startHolder(cfg);
  return Object.assign(holder, { acquired: await holder.next('acquired') });
}

const lockDirAge = (dataDir: string): number => Date.now() - statSync(path.join(dataDir, LOCK_DIR_NAME)).mtimeMs;

function memoryLogger(): { log: pino.Logger; events: () => string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  return { log: pino({ level: 'debug' }, sink), events: () => lines.map((l) => (JSON.parse(l) as { event: string }).event) };
}

/** A lock dir whose owner record names a process that was SIGKILLed holding it; returns its lockId. */
async function deadHolderLock(dataDir: string): Promise<string> {
  const holder = await acquired({ dataDir, staleMs: 30_000 });
  process.kill(holder.pid, 'SIGKILL');
  await pollUntil(() => (isAlive(holder.pid) ? undefined : true), 'the holder to die', 5_000);
  return lockIdAt(dataDir);
}

function lockIdAt(dataDir: string): string {
  const st = statSync(path.join(dataDir, LOCK_DIR_NAME), { bigint: true });
  return `${st.ino}:${st.birthtimeNs}`;
}

async function caught(p: Promise<unknown>): Promise<LockError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(LockError);
  return err as LockError;
}

describe('DataDirLock across processes', () => {
  it('a second process is refused with E_LOCK_HELD naming the holder pid', async () => {
    const dataDir = h.tempDir();
    const a = await acquired({ dataDir });
    const b = startHolder({ dataDir });
    const refused = await b.next('refused');
    expect(refused.code).toBe('E_LOCK_HELD');
    expect(refused.holderPid).toBe(a.pid);
    expect(refused.message).toContain(`pid ${a.pid}`);
    expect((await exitOf(b.out.child)).code).toBe(3);
    const holder = await lockHolder(dataDir);
    expect(holder?.owner.pid).toBe(a.pid);
    expect(holder?.alive).toBe(true);
  });

  it('after SIGKILL of the holder a waiting contender takes over at once, not after staleMs', async () => {
    const dataDir = h.tempDir();
    const a = await acquired({ dataDir, staleMs: 30_000 });
    const b = startHolder({ dataDir, staleMs: 30_000, waitMs: 20_000 });
    await b.next('trying');
    const killedAt = Date.now();
    process.kill(a.pid, 'SIGKILL');
    const got = await b.next('acquired');
    const takeoverMs = got.t - killedAt;
    console.log(`takeover after SIGKILL: ${takeoverMs} ms (staleMs 30000)`);
    expect(takeoverMs).toBeLessThan(5_000);
    expect((await readLockOwner(dataDir))?.pid).toBe(b.pid);
    // A fresh process after the holder died (record names a dead pid) is immediate too.
    const c = startHolder({ dataDir, staleMs: 30_000 });
    expect((await c.next('refused')).holderPid).toBe(b.pid);
    process.kill(b.pid, 'SIGKILL');
    await exitOf(b.out.child);
    const d = await acquired({ dataDir, staleMs: 30_000 });
    console.log(`fresh process after the holder was SIGKILLed: acquired in ${d.acquired.ms} ms`);
    expect(d.acquired.ms).toBeLessThan(5_000);
  });

  it('SIGTERM of a process holding the lock in a worker does not block the next holder', async () => {
    const dataDir = h.tempDir();
    const a = await acquired({ dataDir, staleMs: 30_000, worker: true });
    process.kill(a.pid, 'SIGTERM');
    expect((await exitOf(a.out.child)).signal).toBe('SIGTERM');
    const line = (await acquired({ dataDir, staleMs: 30_000 })).acquired;
    console.log(`takeover after SIGTERM (worker holder): ${line.ms} ms; lock dir was left behind: ${existsSync(path.join(dataDir, LOCK_DIR_NAME))}`);
    expect(line.ms).toBeLessThan(5_000);
  });

  it('never steals from a SIGSTOPped holder, even with a stale mtime; it still holds after SIGCONT', async () => {
    const dataDir = h.tempDir();
    const a = await acquired({ dataDir, staleMs: 2000, updateMs: 1000 });
    process.kill(a.pid, 'SIGSTOP');
    try {
      await pollUntil(() => lockDirAge(dataDir) > 3000, 'lock mtime older than staleMs', 10_000, 50);
      const b = startHolder({ dataDir, staleMs: 2000, waitMs: 300 });
      const refused = await b.next('refused');
      expect(refused.code).toBe('E_LOCK_HELD');
      expect(refused.holderPid).toBe(a.pid);
    } finally {
      process.kill(a.pid, 'SIGCONT');
    }
    a.send('status');
    expect((await a.next('status')).held).toBe(true);
    expect((await readLockOwner(dataDir))?.pid).toBe(a.pid);
    await pollUntil(() => lockDirAge(dataDir) < 1500, 'refresh to resume', 5000, 50);
    a.send('status');
    expect((await a.next('status')).held).toBe(true);
    expect(a.out.lines.some((l) => (l as Line).event === 'compromised')).toBe(false);
  });

  it('a lock held in a Worker stays fresh while the main thread busy-loops past staleMs', async () => {
    const dataDir = h.tempDir();
    const a = await acquired({ dataDir, staleMs: 2000, updateMs: 1000, worker: true });
    a.send('busy 5000');
    const ages: number[] = [];
    const until = Date.now() + 4500;
    while (Date.now() < until) {
      ages.push(lockDirAge(dataDir));
      await new Promise((r) => setTimeout(r, 100));
    }
    const b = startHolder({ dataDir, staleMs: 2000 });
    expect((await b.next('refused')).holderPid).toBe(a.pid);
    await a.next('busy-done');
    a.send('status');
    expect((await a.next('status')).held).toBe(true);
    console.log(`worker holder, main blocked 5 s: max lock mtime age ${Math.round(Math.max(...ages))} ms`);
    expect(Math.max(...ages)).toBeLessThan(2000);
    expect(a.out.lines.some((l) => (l as Line).event === 'compromised')).toBe(false);
  });

  it('a main-thread holder blocked past staleMs goes stale but is still not stolen (owner alive)', async () => {
    const dataDir = h.tempDir();
    const a = await acquired({ dataDir, staleMs: 2000, updateMs: 1000 });
    a.send('busy 4000');
    await pollUntil(() => lockDirAge(dataDir) > 2500, 'mtime past staleMs', 10_000, 50);
    const b = startHolder({ dataDir, staleMs: 2000 });
    expect((await b.next('refused')).holderPid).toBe(a.pid);
    await a.next('busy-done');
    a.send('status');
    expect((await a.next('status')).held).toBe(true);
  });

  it('release then acquire by another process', async () => {
    const dataDir = h.tempDir();
    const a = await acquired({ dataDir });
    const b = startHolder({ dataDir, waitMs: 10_000 });
    await b.next('trying');
    a.send('release');
    const released = await a.next('released');
    expect(released.held).toBe(false);
    const got = await b.next('acquired');
    console.log(`release → acquire by a waiting process: ${got.t - released.t} ms`);
    expect((await readLockOwner(dataDir))?.pid).toBe(b.pid);
    a.send('status');
    expect((await a.next('status')).held).toBe(false);
  });

  it('contenders racing for a dead holder: exactly one wins', async () => {
    for (let round = 0; round < 3; round++) {
      const dataDir = h.tempDir();
      const a = await acquired({ dataDir, staleMs: 30_000 });
      const racers = Array.from({ length: 4 }, () => startHolder({ dataDir, staleMs: 30_000, waitMs: 1500 }));
      await Promise.all(racers.map((r) => r.next('trying')));
      process.kill(a.pid, 'SIGKILL');
      const results = await Promise.all(
        racers.map((r) => r.out.next<Line>((l) => l.event === 'acquired' || l.event === 'refused', 'outcome', 10_000)),
      );
      const winners = results.filter((r) => r.event === 'acquired');
      expect(winners).toHaveLength(1);
      const winnerPid = winners[0]!.pid;
      // A loser names the winner, or nobody if it gave up between the winner's mkdir and its owner record (a loaded machine).
      for (const r of results.filter((x) => x.event === 'refused')) expect([winnerPid, undefined]).toContain(r.holderPid);
      expect((await lockHolder(dataDir))?.owner.pid).toBe(winnerPid);
      expect(readdirSync(dataDir).filter((n) => n.includes('reaped') || n.includes('.tmp-'))).toEqual([]);
      await h.cleanup();
    }
  });
});

describe('DataDirLock in-process', () => {
  it('E_NOT_HELD on release without acquire; E_LOCK_ALREADY_HELD on re-acquire', async () => {
    const dataDir = h.tempDir();
    const lock = new DataDirLock(dataDir, { log: memoryLogger().log });
    expect((await caught(lock.release())).code).toBe('E_NOT_HELD');
    await lock.acquire({ handoffId: 'h1' });
    expect(lock.held).toBe(true);
    expect((await caught(lock.acquire())).code).toBe('E_LOCK_ALREADY_HELD');
    const other = new DataDirLock(dataDir, { log: memoryLogger().log });
    expect((await caught(other.acquire())).code).toBe('E_LOCK_ALREADY_HELD');
    const owner = await readLockOwner(dataDir);
    expect(owner).toMatchObject({ pid: process.pid, handoffId: 'h1' });
    await lock.release();
    expect(lock.held).toBe(false);
    expect((await caught(lock.release())).code).toBe('E_NOT_HELD');
    expect(existsSync(path.join(dataDir, LOCK_DIR_NAME))).toBe(false);
    expect(await readLockOwner(dataDir)).toBeUndefined();
    expect(await lockHolder(dataDir)).toBeUndefined();
  });

  it('prepareLock runs one acquire/release cycle in a private dir beside the lock and removes it; the real lock is untouched', async () => {
    const dataDir = h.tempDir();
    const lock = new DataDirLock(dataDir, { log: memoryLogger().log });
    await lock.acquire();
    await prepareLock(dataDir);
    expect(readdirSync(dataDir).sort()).toEqual(['.baton.lock', '.baton.lock.owner']);
    expect(lock.held).toBe(true);
    expect((await lockHolder(dataDir))?.owner.pid).toBe(process.pid);
    await lock.release();
  });

  it('reaping is claimed per lock generation: a live claimer makes others wait, a dead one is skipped, the claims go with the generation', async () => {
    const dataDir = h.tempDir();
    const dead = await deadHolderLock(dataDir);
    const sleeper = h.spawn('sleep', ['30']);
    const claim = path.join(dataDir, `${LOCK_DIR_NAME}.reap-${dead.replace(':', '-')}-0`);
    writeFileSync(claim, `${sleeper.pid} ${processStartTime(sleeper.pid!)} ${readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()}\n`);
    const lock = new DataDirLock(dataDir, { log: memoryLogger().log });
    // A live process holds the claim: it is the one reaping; we do not touch that generation.
    expect((await caught(lock.acquire({ waitMs: 400 }))).code).toBe('E_LOCK_HELD');
    expect(lockIdAt(dataDir)).toBe(dead);
    sleeper.kill('SIGKILL');
    await exitOf(sleeper);
    // Its slot is skipped; slot 1 is ours; once the generation is gone every claim of it is removed.
    await lock.acquire({ waitMs: 2_000 });
    expect(lockIdAt(dataDir)).not.toBe(dead);
    expect(readdirSync(dataDir).filter((n) => n.includes('.reap-'))).toEqual([]);
    await lock.release();
  });

  it('reads an owner record written in another form (key order, whitespace, extra keys, no optional fields): PROTOCOL.md 12', async () => {
    const dataDir = h.tempDir();
    const lock = new DataDirLock(dataDir, { log: memoryLogger().log });
    await lock.acquire({ handoffId: 'h1' });
    const written = JSON.parse(readFileSync(path.join(dataDir, '.baton.lock.owner'), 'utf8')) as Record<string, unknown>;
    expect(Object.keys(written)).toEqual(['pid', 'startTime', 'bootId', 'handoffId', 'acquiredAt', 'lockId']);
    const other = { lockId: written.lockId, extra: { nested: [1] }, startTime: written.startTime, pid: written.pid };
    writeFileSync(path.join(dataDir, '.baton.lock.owner'), JSON.stringify(other, null, 2));
    expect(await lockHolder(dataDir)).toMatchObject({ owner: { pid: process.pid, bootId: '', handoffId: '' }, alive: true });
    await lock.release();
  });

  it('a reaper that arrives after the generation was reaped and the lock re-taken never moves the new lock dir', async () => {
    const dataDir = h.tempDir();
    const dead = await deadHolderLock(dataDir);
    const winner = new DataDirLock(dataDir, { log: memoryLogger().log });
    await winner.acquire(); // reaps `dead`, takes a new generation
    const taken = statSync(path.join(dataDir, LOCK_DIR_NAME), { bigint: true });
    // A slow contender saw `dead` before the winner reaped it and reaps it only now.
    const late = new DataDirLock(dataDir, { log: memoryLogger().log });
    (late as unknown as { reap(lockId: string): void }).reap(dead);
    const after = statSync(path.join(dataDir, LOCK_DIR_NAME), { bigint: true });
    // Not moved at all (a rename aside and back would change its ctime), and still the winner's.
    expect([after.ino, after.birthtimeNs, after.ctimeNs]).toEqual([taken.ino, taken.birthtimeNs, taken.ctimeNs]);
    expect((await lockHolder(dataDir))?.owner.pid).toBe(process.pid);
    expect(readdirSync(dataDir).filter((n) => n.includes('.reap-') || n.includes('reaped'))).toEqual([]);
    await winner.release();
  });

  it('sweeps leftovers of processes that died mid-reap/mid-release/mid-warm-up', async () => {
    const dataDir = h.tempDir();
    const deadPid = spawnSync('true').pid!;
    mkdirSync(path.join(dataDir, `${LOCK_DIR_NAME}.reaped-${deadPid}-ab12`));
    writeFileSync(path.join(dataDir, `.baton.lock.owner.released-${deadPid}-cd34`), '{}');
    writeFileSync(path.join(dataDir, `.baton.lock.owner.tmp-${deadPid}-ef56`), '{');
    mkdirSync(path.join(dataDir, `${LOCK_DIR_NAME}.warmup-${deadPid}-0a1b2c3d`, LOCK_DIR_NAME), { recursive: true });
    writeFileSync(path.join(dataDir, `.baton.lock.owner.tmp-${process.pid}-0000`), 'live writer: keep');
    const lock = new DataDirLock(dataDir, { log: memoryLogger().log });
    await lock.acquire();
    // The sweep runs after acquire returns (off the handoff's critical path).
    const expected = ['.baton.lock', '.baton.lock.owner', `.baton.lock.owner.tmp-${process.pid}-0000`];
    await pollUntil(() => (readdirSync(dataDir).sort().join() === expected.join() ? true : undefined), 'leftovers swept', 5_000);
    expect(readdirSync(dataDir).sort()).toEqual(expected);
    await lock.release();
  });

  it('a lock dir without owner record is respected until stale (staleness fallback)', async () => {
    const dataDir = h.tempDir();
    const lockDir = path.join(dataDir, LOCK_DIR_NAME);
    mkdirSync(lockDir);
    const lock = new DataDirLock(dataDir, { staleMs: 2000, log: memoryLogger().log });
    const err = await caught(lock.acquire());
    expect(err.code).toBe('E_LOCK_HELD');
    expect(err.message).toMatch(/unknown process/);
    const old = new Date(Date.now() - 5000);
    utimesSync(lockDir, old, old);
    await lock.acquire();
    expect(lock.held).toBe(true);
    await lock.release();
  });

  it('with the default 30 s staleMs, an ownerless lock dir (taker died before its record) is taken after a few refresh periods (B4)', async () => {
    const dataDir = h.tempDir();
    // Timed from the dir's making (its mtime is what ages), not from after the refused try below.
    const t0 = Date.now();
    mkdirSync(path.join(dataDir, LOCK_DIR_NAME));
    const lock = new DataDirLock(dataDir, { log: memoryLogger().log });
    expect(lock.staleMs).toBe(30_000);
    // Refused meanwhile, with the age that counts (issue 21 item 8: the message cited the 30 s staleMs).
    const refused = await caught(new DataDirLock(dataDir, { log: memoryLogger().log }).acquire({ waitMs: 100 }));
    expect(refused.message).toMatch(new RegExp(`abandoned once not refreshed for ${lock.ownerlessStaleMs} ms`));
    await lock.acquire({ waitMs: 20_000 });
    const ms = Date.now() - t0;
    expect(ms).toBeGreaterThanOrEqual(lock.ownerlessStaleMs - 100);
    expect(ms).toBeLessThan(15_000);
    await lock.release();
  });

  it('a refresh that finds its mtime changed, while the dir and record are still ours, re-takes silently', async () => {
    const dataDir = h.tempDir();
    const { log, events } = memoryLogger();
    const compromised: LockError[] = [];
    const lock = new DataDirLock(dataDir, { staleMs: 2000, updateMs: 1000, log, onCompromised: (e) => compromised.push(e) });
    await lock.acquire();
    const when = new Date(Date.now() - 60_000);
    utimesSync(path.join(dataDir, LOCK_DIR_NAME), when, when);
    await pollUntil(() => events().includes('lock.retaken'), 'lock.retaken', 10_000, 50);
    expect(lock.held).toBe(true);
    expect(compromised).toEqual([]);
    await pollUntil(() => lockDirAge(dataDir) < 1500, 'refresh after re-take', 5000, 50);
    await lock.release();
    expect(existsSync(path.join(dataDir, LOCK_DIR_NAME))).toBe(false);
  });

  it('a lock replaced behind our back is reported through onCompromised (E_LOCK_COMPROMISED)', async () => {
    const dataDir = h.tempDir();
    const compromised: LockError[] = [];
    const lock = new DataDirLock(dataDir, { staleMs: 2000, updateMs: 1000, log: memoryLogger().log, onCompromised: (e) => compromised.push(e) });
    await lock.acquire();
    const lockDir = path.join(dataDir, LOCK_DIR_NAME);
    renameSync(lockDir, lockDir + '.gone');
    mkdirSync(lockDir); // someone else's generation
    await pollUntil(() => compromised.length > 0, 'onCompromised', 10_000, 50);
    expect(compromised[0]!.code).toBe('E_LOCK_COMPROMISED');
    expect(lock.held).toBe(false);
    expect((await caught(lock.release())).code).toBe('E_NOT_HELD');
    expect(existsSync(lockDir)).toBe(true); // not ours to remove
    rmSync(lockDir + '.gone', { recursive: true });
  });
});
