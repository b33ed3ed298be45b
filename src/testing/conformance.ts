/**
 * The Drainable conformance check of `baton/testing`: runs an app through real
 * handoffs under a Supervisor and judges each rule of the Drainable contract from
 * the outside (connections, the data dir, the lock, the supervisor's events).
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { HEARTBEAT_INTERVAL_MS } from '../wire/channel.js';
import { errorMessage } from '../os/errors.js';
import { lockHolder } from '../os/lock.js';
import type { MessageOf } from '../wire/schema.js';
import type { HandoffResult } from '../supervisor/results.js';
import type { SupervisorPhase } from '../supervisor/phases.js';
import { Harness, httpRequest, PROBE_TIMEOUT_MS, type AppProbe, type HarnessOptions, type ProbeRequest } from './harness.js';

/** The rules, with what each one means. */
export const CONFORMANCE_RULES = {
  'drain-stops-accepting':
    'after Drained the incumbent accepts no new connection (acceptClosed is true; a connection opened after Drained waits in the backlog and is served by the successor)',
  'drain-reports-honestly': "Drained's openConnsRemaining is the number of connections still open when drain returned",
  'nothing-written-after-seal':
    'between SealComplete and Begin the data dir does not change, and a write arriving after the seal is not acknowledged',
  'resume-after-abort-restores-service':
    'after an abort (mid-drain, after the seal, with the lock held by a dead successor) the same incumbent holds the lock, answers, acknowledges new writes and still has every earlier one; the next handoff commits',
  'readiness-reports-sealed-revisions':
    "the successor's Ready advertises every sealed shard at no less than its sealed revision (the supervisor's Ready check passes), and writes acknowledged before the handoff are readable after it",
  'heartbeats-while-main-thread-blocks': "while the incumbent's seal blocks its main thread, heartbeats keep arriving at least every 3 s and the handoff commits",
} as const;

export type ConformanceRule = keyof typeof CONFORMANCE_RULES;
export const CONFORMANCE_RULE_NAMES = Object.keys(CONFORMANCE_RULES) as ConformanceRule[];

export interface ConformanceOptions extends Pick<HarnessOptions, 'command' | 'env' | 'timeouts' | 'probe' | 'appStdout' | 'logLevel'> {
  /** Check only these rules (default: all). */
  rules?: ConformanceRule[];
  /**
   * A knob that makes your app's seal() block its main thread for about `ms` (needed
   * for 'heartbeats-while-main-thread-blocks'; the rule is skipped without it), e.g.
   * `{ env: { MY_APP_SEAL_BLOCK_MS: '5000' }, ms: 5000 }`. Only one incumbent gets it.
   */
  sealBlock?: { env: Record<string, string>; ms: number };
  /** Drain grace given to the incumbent in every handoff (default 1500 ms). */
  drainGraceMs?: number;
  /** How long the kit holds Begin back after SealComplete while watching the data dir (default 500 ms). */
  sealWindowMs?: number;
}

export interface RuleResult {
  rule: ConformanceRule;
  ok: boolean;
  /** Not checked (e.g. no sealBlock knob); `ok` is true. */
  skipped: boolean;
  /** What was observed: why it failed, or what passing looked like. */
  detail: string;
}

export interface ConformanceReport {
  /** Every checked rule held. */
  ok: boolean;
  rules: RuleResult[];
  /** App processes that had to be killed at the end (they did not exit on a graceful stop). */
  leftovers: number[];
}

type Partial5 = Partial<Record<ConformanceRule, Omit<RuleResult, 'rule' | 'skipped'>>>;

/**
 * Runs your app (`command`) through handoffs under a real Supervisor and checks the
 * Drainable contract rule by rule. Never throws for a broken app: the report says
 * which rule failed and why. Takes ~10–20 s (plus `sealBlock.ms`).
 */
export async function checkDrainableConformance(options: ConformanceOptions): Promise<ConformanceReport> {
  const want = new Set(options.rules ?? CONFORMANCE_RULE_NAMES);
  const found: Partial5 = {};
  const ctx: Ctx = { drainGraceMs: options.drainGraceMs ?? 1_500, sealWindowMs: options.sealWindowMs ?? 500, n: 0 };
  const h = new Harness({ ...options, restart: { enabled: false } });
  const scenarios: [ConformanceRule[], () => Promise<Partial5>][] = [
    [['drain-stops-accepting', 'drain-reports-honestly', 'readiness-reports-sealed-revisions'], () => committedHandoff(h, ctx)],
    [['nothing-written-after-seal'], () => sealWindow(h, ctx)],
    [['resume-after-abort-restores-service'], () => aborts(h, ctx)],
    [['heartbeats-while-main-thread-blocks'], () => blockedSeal(h, ctx, options.sealBlock)],
  ];
  try {
    const cold = await h.start();
    if (cold.outcome !== 'committed') throw new Error(`the app did not start under baton (${cold.code}: ${cold.reason})`);
    for (const [rules, run] of scenarios) {
      if (!rules.some((r) => want.has(r))) continue;
      if (rules.includes('heartbeats-while-main-thread-blocks') && !options.sealBlock) continue;
      try {
        Object.assign(found, await run());
      } catch (err) {
        for (const r of rules) found[r] ??= { ok: false, detail: `the scenario failed: ${errorMessage(err)}` };
      }
    }
  } catch (err) {
    for (const r of want) found[r] ??= { ok: false, detail: errorMessage(err) };
  } finally {
    ctx.leftovers = (await h.close()).leftovers;
  }
  const rules: RuleResult[] = CONFORMANCE_RULE_NAMES.filter((r) => want.has(r)).map((rule) => {
    const f = found[rule];
    if (f) return { rule, skipped: false, ...f };
    return { rule, ok: true, skipped: true, detail: 'skipped: no sealBlock knob given (options.sealBlock), so the main thread could not be blocked' };
  });
  return { ok: rules.every((r) => r.ok), rules, leftovers: ctx.leftovers ?? [] };
}

interface Ctx {
  drainGraceMs: number;
  sealWindowMs: number;
  /** Key counter. */
  n: number;
  leftovers?: number[];
}

// ---------------------------------------------------------------- scenario: one committed handoff, watched

async function committedHandoff(h: Harness, ctx: Ctx): Promise<Partial5> {
  const acked = await writeSome(h, ctx, 4);
  const oldPid = h.supervisor.incumbent!.pid;
  const readPath = h.probe.writeRequest('conformance-probe', '').path;
  const conns = [await HeldConn.idle(h.url, readPath), await HeldConn.idle(h.url, readPath), await HeldConn.midRequest(h.url, h.probe, `conformance-stuck-${ctx.n++}`, readPath)];
  let drained: { msg: MessageOf<'Drained'>; at: number } | undefined;
  let committingAt = Infinity;
  let afterDrain: Promise<{ pid?: number | undefined; err?: string }> | undefined;
  const onDrained = (msg: MessageOf<'Drained'>): void => {
    drained = { msg, at: Date.now() };
    // It waits in the backlog until the successor serves: allow the rest of the handoff.
    afterDrain = h.probe.pid(h.url, 60_000).then(
      (pid) => ({ pid }),
      (err: unknown) => ({ err: errorMessage(err) }),
    );
  };
  const onPhase = (p: SupervisorPhase): void => {
    if (p === 'committing') committingAt = Math.min(committingAt, Date.now());
  };
  h.supervisor.on('drained', onDrained);
  h.supervisor.on('phase', onPhase);
  let result: HandoffResult;
  try {
    result = await h.handoff({ drainGraceMs: ctx.drainGraceMs });
  } finally {
    h.supervisor.off('drained', onDrained);
    h.supervisor.off('phase', onPhase);
  }
  const answer = await afterDrain;
  for (const c of conns) c.destroy();
  const aborted = result.outcome === 'aborted' ? `the handoff aborted (${result.code}: ${result.reason})` : undefined;
  const out: Partial5 = {};

  // drain-stops-accepting
  if (!drained) out['drain-stops-accepting'] = { ok: false, detail: `no Drained: ${aborted ?? 'the incumbent never reported it'}` };
  else if (!drained.msg.acceptClosed) out['drain-stops-accepting'] = { ok: false, detail: 'drain() returned acceptClosed: false' };
  else if (answer?.err) out['drain-stops-accepting'] = { ok: false, detail: `a connection opened after Drained got no answer: ${answer.err}` };
  else if (answer?.pid === oldPid) {
    out['drain-stops-accepting'] = { ok: false, detail: `a connection opened after Drained was served by the incumbent (pid ${oldPid}): it still accepts after drain() returned` };
  } else if (answer?.pid === undefined) {
    out['drain-stops-accepting'] = { ok: true, detail: 'acceptClosed is true (the probe cannot tell pids, so who served the next connection was not checked)' };
  } else if (aborted) out['drain-stops-accepting'] = { ok: false, detail: aborted };
  else {
    out['drain-stops-accepting'] = { ok: true, detail: `a connection opened after Drained waited in the backlog and was served by the successor (pid ${answer.pid})` };
  }

  // drain-reports-honestly: the truth lies between what we saw open at Drained and shortly after
  // (a FIN may still be in flight; the app may close more after reporting, until it exits at commit).
  if (drained) {
    const upper = conns.filter((c) => c.openAt(drained!.at)).length;
    const lower = conns.filter((c) => c.openAt(Math.min(drained!.at + 300, committingAt))).length;
    const reported = drained.msg.openConnsRemaining;
    const held = `the kit held ${conns.length} connections (2 idle keep-alive, 1 mid-request); ${upper} were still open at Drained${lower !== upper ? `, ${lower} 300 ms later` : ''}`;
    out['drain-reports-honestly'] =
      reported >= lower && reported <= upper
        ? { ok: true, detail: `Drained said ${reported} open; ${held}` }
        : { ok: false, detail: `Drained said ${reported} connection(s) open, but ${held}` };
  } else out['drain-reports-honestly'] = { ok: false, detail: `no Drained: ${aborted ?? 'never reported'}` };

  // readiness-reports-sealed-revisions
  if (result.outcome === 'committed') {
    const lost = await lostKeys(h, acked);
    out['readiness-reports-sealed-revisions'] =
      lost.length > 0
        ? { ok: false, detail: `the handoff committed, but ${lost.length} write(s) acknowledged before it are missing: ${lost.join(', ')}` }
        : { ok: true, detail: `the supervisor accepted Ready against the sealed revisions; all ${acked.size} writes acknowledged before the handoff read back` };
  } else {
    out['readiness-reports-sealed-revisions'] = {
      ok: false,
      detail: result.code === 'E_READY_REJECTED' ? `the supervisor rejected Ready: ${result.reason}` : `the handoff aborted before Ready was judged (${result.code}: ${result.reason})`,
    };
  }
  return out;
}

// ---------------------------------------------------------------- scenario: the data dir between SealComplete and Begin

async function sealWindow(h: Harness, ctx: Ctx): Promise<Partial5> {
  await writeSome(h, ctx, 2);
  const readPath = h.probe.writeRequest('conformance-probe', '').path;
  const late = await HeldConn.midRequest(h.url, h.probe, `conformance-late-${ctx.n++}`, readPath);
  let changes: string[] | undefined;
  let lateSent = false;
  const onPhase = (p: SupervisorPhase): void => {
    if (p !== 'begin' || changes) return;
    // Synchronous on purpose: the supervisor sends Begin only after this returns.
    const before = snapshot(h.dataDir);
    lateSent = late.finish();
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ctx.sealWindowMs);
    changes = diff(before, snapshot(h.dataDir));
  };
  h.supervisor.on('phase', onPhase);
  let result: HandoffResult;
  try {
    result = await h.handoff({ drainGraceMs: ctx.drainGraceMs });
  } finally {
    h.supervisor.off('phase', onPhase);
  }
  const status = lateSent ? await late.lastStatus(3_000) : undefined;
  late.destroy();
  const rule = 'nothing-written-after-seal';
  if (!changes) return { [rule]: { ok: false, detail: `the handoff never reached Begin (${result.code}: ${result.reason})` } };
  const problems: string[] = [];
  if (changes.length > 0) problems.push(`the data dir changed in the ${ctx.sealWindowMs} ms after SealComplete: ${changes.join('; ')}`);
  if (status !== undefined && status >= 200 && status < 300) {
    problems.push(`a write that arrived after the seal (on a connection held open through the drain) was acknowledged with HTTP ${status}`);
  }
  if (problems.length > 0) return { [rule]: { ok: false, detail: problems.join('; ') } };
  const lateNote = lateSent
    ? `a write completed after the seal was answered ${status ?? 'nothing (connection closed)'}, not acknowledged`
    : 'the late write was not exercised (the app had closed that connection by the seal)';
  return { [rule]: { ok: true, detail: `the data dir did not change in the ${ctx.sealWindowMs} ms after SealComplete; ${lateNote}` } };
}

// ---------------------------------------------------------------- scenario: aborts

async function aborts(h: Harness, ctx: Ctx): Promise<Partial5> {
  const rule = 'resume-after-abort-restores-service';
  const pid = h.supervisor.incumbent!.pid;
  const acked = new Map<string, string>();
  const variants: { name: string; run: () => Promise<HandoffResult> }[] = [
    {
      name: 'the successor was SIGKILLed while the incumbent drained',
      run: async () => {
        // A mid-request connection keeps the drain busy for its whole grace, so the kill lands in it.
        const stuck = await HeldConn.midRequest(h.url, h.probe, `conformance-stuck-${ctx.n++}`, h.probe.writeRequest('conformance-probe', '').path);
        const kill = h.signalAt('draining', 'successor', 'SIGKILL');
        kill.catch(() => undefined);
        const result = await h.handoff({ drainGraceMs: ctx.drainGraceMs });
        await kill.catch(() => undefined);
        stuck.destroy();
        return result;
      },
    },
    { name: 'the successor died on Begin (after the seal, the lock free)', run: () => h.handoff({ successorCrashPoint: 'successor.on_begin', crashMarkerDir: h.markerDir }) },
    { name: 'the successor died holding the lock', run: () => h.handoff({ successorCrashPoint: 'successor.after_lock', crashMarkerDir: h.markerDir }) },
  ];
  for (const v of variants) {
    for (const [k, val] of await writeSome(h, ctx, 1)) acked.set(k, val);
    const result = await v.run();
    if (result.outcome !== 'aborted') return { [rule]: { ok: false, detail: `${v.name}, yet the handoff ${result.outcome}: could not provoke an abort` } };
    const problem = await servesAgain(h, pid, acked);
    if (problem) return { [rule]: { ok: false, detail: `after an abort (${v.name}; ${result.code}): ${problem}` } };
    try {
      for (const [k, val] of await writeSome(h, ctx, 1)) acked.set(k, val);
    } catch (err) {
      return { [rule]: { ok: false, detail: `after an abort (${v.name}): the incumbent does not acknowledge new writes: ${errorMessage(err)}` } };
    }
  }
  const next = await h.handoff({ drainGraceMs: ctx.drainGraceMs });
  if (next.outcome !== 'committed') return { [rule]: { ok: false, detail: `after ${variants.length} aborts the next handoff did not commit (${next.code}: ${next.reason})` } };
  const lost = await lostKeys(h, acked);
  if (lost.length > 0) return { [rule]: { ok: false, detail: `after the aborts and a committed handoff, ${lost.length} acknowledged write(s) are missing: ${lost.join(', ')}` } };
  return {
    [rule]: {
      ok: true,
      detail: `after each of ${variants.length} aborts (${variants.map((v) => v.name).join('; ')}) pid ${pid} held the lock, answered, acknowledged a new write and kept the earlier ones; the next handoff committed`,
    },
  };
}

/** Why the incumbent `pid` does not serve again (polled up to 10 s), or undefined. */
async function servesAgain(h: Harness, pid: number, acked: Map<string, string>): Promise<string | undefined> {
  const until = Date.now() + 10_000;
  let why = '';
  for (;;) {
    const holder = await lockHolder(h.dataDir).catch(() => undefined);
    const answering = await h.probe.pid(h.url, PROBE_TIMEOUT_MS).catch((err: unknown) => errorMessage(err));
    if (!holder?.alive || holder.owner.pid !== pid) why = `the data-dir lock is held by ${holder ? `pid ${holder.owner.pid}${holder.alive ? '' : ' (dead)'}` : 'nobody'}, not the incumbent (pid ${pid})`;
    else if (typeof answering === 'string') why = `nobody answers: ${answering}`;
    else if (answering !== undefined && answering !== pid) why = `pid ${answering} answers, not the incumbent (pid ${pid})`;
    else break;
    if (Date.now() > until) return why;
    await sleep(100);
  }
  const lost = await lostKeys(h, acked);
  return lost.length > 0 ? `acknowledged write(s) missing: ${lost.join(', ')}` : undefined;
}

// ---------------------------------------------------------------- scenario: a seal that blocks the main thread

async function blockedSeal(h: Harness, ctx: Ctx, block: ConformanceOptions['sealBlock']): Promise<Partial5> {
  const rule = 'heartbeats-while-main-thread-blocks';
  if (!block) return {};
  // Only the next incumbent carries the knob: start it, then hand off from it.
  const arming = await h.handoff({ successorEnv: block.env, drainGraceMs: ctx.drainGraceMs });
  if (arming.outcome !== 'committed') return { [rule]: { ok: false, detail: `could not start an incumbent with the sealBlock env (${arming.code}: ${arming.reason})` } };
  const gaps: number[] = [];
  let sealing = false;
  const onPhase = (p: SupervisorPhase): void => void (sealing = p === 'sealing');
  const onBeat = (peer: string, gap: number): void => void (sealing && peer === 'incumbent' && gaps.push(gap));
  h.supervisor.on('phase', onPhase);
  h.supervisor.on('heartbeat', onBeat);
  let result: HandoffResult;
  try {
    result = await h.handoff({ drainGraceMs: ctx.drainGraceMs });
  } finally {
    h.supervisor.off('phase', onPhase);
    h.supervisor.off('heartbeat', onBeat);
  }
  const sealMs = result.phases.find((p) => p.phase === 'sealing')?.ms ?? 0;
  const maxGap = Math.max(0, ...gaps);
  const limit = HEARTBEAT_INTERVAL_MS + 1_000;
  const expected = Math.max(1, Math.floor(sealMs / HEARTBEAT_INTERVAL_MS) - 1);
  if (result.outcome !== 'committed') return { [rule]: { ok: false, detail: `the handoff with a blocked seal aborted (${result.code}: ${result.reason})` } };
  if (sealMs < block.ms * 0.8) return { [rule]: { ok: false, detail: `the seal took ${sealMs} ms: sealBlock.env did not block it for ~${block.ms} ms, so nothing was shown` } };
  if (gaps.length < expected || maxGap >= limit) {
    return { [rule]: { ok: false, detail: `during a ${sealMs} ms seal the incumbent sent ${gaps.length} frame(s) (expected ≥ ${expected}), longest gap ${maxGap} ms (limit ${limit} ms)` } };
  }
  return { [rule]: { ok: true, detail: `during a ${sealMs} ms blocking seal: ${gaps.length} heartbeats, longest gap ${maxGap} ms; committed` } };
}

// ---------------------------------------------------------------- helpers

async function writeSome(h: Harness, ctx: Ctx, count: number): Promise<Map<string, string>> {
  const acked = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    const key = `conformance-${ctx.n++}`;
    const value = `value-${key}-${Date.now()}`;
    const r = await httpRequest(h.url, h.probe.writeRequest(key, value));
    if (r.status < 200 || r.status > 299) throw new Error(`the write ${key} was not acknowledged (HTTP ${r.status}: ${r.body.slice(0, 200)})`);
    acked.set(key, value);
  }
  return acked;
}

async function lostKeys(h: Harness, acked: Map<string, string>): Promise<string[]> {
  const lost: string[] = [];
  for (const [k, v] of acked) if ((await h.probe.read(h.url, k).catch(() => undefined)) !== v) lost.push(k);
  return lost;
}

/**
 * A raw connection the kit holds open through a drain: `idle` (one request answered,
 * then silent keep-alive) or `midRequest` (a request answered — so the incumbent has
 * surely accepted it — then a write whose body is only half sent).
 */
class HeldConn {
  closedAt: number | undefined;
  private data = '';
  private rest = '';

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (c: string) => (this.data += c));
    const closed = (): void => void (this.closedAt ??= Date.now());
    socket.on('end', closed);
    socket.on('close', closed);
    socket.on('error', closed);
  }

  static async idle(url: string, readPath: string): Promise<HeldConn> {
    const u = new URL(url);
    const socket = net.connect(Number(u.port), u.hostname);
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const c = new HeldConn(socket);
    socket.write(`GET ${readPath} HTTP/1.1\r\nHost: ${u.host}\r\n\r\n`);
    await c.statuses(1, 10_000);
    return c;
  }

  static async midRequest(url: string, probe: AppProbe, key: string, readPath: string): Promise<HeldConn> {
    const c = await HeldConn.idle(url, readPath);
    const req: ProbeRequest = probe.writeRequest(key, `late-${key}`);
    const body = Buffer.from(req.body.length >= 2 ? req.body : `${req.body}--`);
    const headers = Object.entries({ ...req.headers, host: new URL(url).host, 'content-length': String(body.length) })
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('');
    c.socket.write(`${req.method} ${req.path} HTTP/1.1\r\n${headers}\r\n`);
    c.socket.write(body.subarray(0, 1));
    c.rest = body.subarray(1).toString('latin1');
    return c;
  }

  openAt(t: number): boolean {
    return this.closedAt === undefined || this.closedAt > t;
  }

  /** Sends the rest of the half-sent write; false if the connection is gone. */
  finish(): boolean {
    if (this.closedAt !== undefined || this.socket.destroyed) return false;
    this.socket.write(this.rest, 'latin1');
    return true;
  }

  /** Status of the response to the second request on this connection (the held write), if one comes. */
  async lastStatus(timeoutMs: number): Promise<number | undefined> {
    return (await this.statuses(2, timeoutMs).catch(() => []))[1];
  }

  private async statuses(n: number, timeoutMs: number): Promise<number[]> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const found = [...this.data.matchAll(/HTTP\/1\.[01] (\d{3})/g)].map((m) => Number(m[1]));
      if (found.length >= n) return found;
      if (this.closedAt !== undefined && this.data.length > 0 && found.length < n) {
        // Closed: give late bytes a moment, then report what there is.
        await sleep(20);
        return [...this.data.matchAll(/HTTP\/1\.[01] (\d{3})/g)].map((m) => Number(m[1]));
      }
      if (this.closedAt !== undefined || Date.now() > until) throw new Error(`no HTTP answer on a held connection (${this.closedAt !== undefined ? 'closed' : 'timeout'})`);
      await sleep(10);
    }
  }

  destroy(): void {
    this.socket.destroy();
  }
}

interface FileState {
  size: number;
  mtimeMs: number;
  hash: string;
}

/** Every file under dir (the lock's own files excepted): size, mtime, SHA-256. */
function snapshot(dir: string): Map<string, FileState> {
  const out = new Map<string, FileState>();
  const walk = (d: string): void => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (e.name.startsWith('.baton.lock')) continue;
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        try {
          const st = statSync(p);
          out.set(path.relative(dir, p), { size: st.size, mtimeMs: st.mtimeMs, hash: createHash('sha256').update(readFileSync(p)).digest('hex') });
        } catch {
          // Removed meanwhile: shows up as removed.
        }
      }
    }
  };
  walk(dir);
  return out;
}

function diff(a: Map<string, FileState>, b: Map<string, FileState>): string[] {
  const changes: string[] = [];
  for (const [f, s] of b) {
    const old = a.get(f);
    if (!old) changes.push(`${f} created (${s.size} bytes)`);
    else if (old.hash !== s.hash || old.size !== s.size) changes.push(`${f} ${old.size} → ${s.size} bytes${old.size === s.size ? ' (content changed)' : ''}`);
    else if (old.mtimeMs !== s.mtimeMs) changes.push(`${f} touched (mtime changed)`);
  }
  for (const f of a.keys()) if (!b.has(f)) changes.push(`${f} removed`);
  return changes;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
