/**
 * The chaos runner's world: the listener it holds, the supervisor-host process (its
 * event lines), the invariants after a step, and the app processes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bindListener, parseListenAddress, type HeldListener } from '../../src/os/listeners.js';
import { lockHolder } from '../../src/os/lock.js';
import { isAlive } from '../../src/os/proc.js';
import { request } from '../lib/http.js';
import { Casualties, Coverage, type HandoffResultLine, type Truth } from './checks.js';
import { signal, sleep, tagged, Violation, within } from './util.js';

export type { HandoffResultLine } from './checks.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The checkout: bench/chaos/ under it when run from source (vitest), dist/bench/chaos/ when built. */
const ROOT = existsSync(path.join(HERE, '../../package.json')) ? path.resolve(HERE, '../..') : path.resolve(HERE, '../../..');
const KV = [process.execPath, path.join(ROOT, 'dist/fixtures/kv/main.js')];
const HOST = path.join(ROOT, 'dist/fixtures/supervisor-host.js');

export interface HostEvent {
  event: string;
  [k: string]: unknown;
}

/** One supervisor-host process: its event lines, indexed, and a wait for one of them. */
export class Host {
  readonly events: HostEvent[] = [];
  private waiters: (() => void)[] = [];
  private buffered = '';
  readonly exited: Promise<void>;
  dead = false;

  /** `onResult` runs the moment a result line is parsed (before anything else the runner does). */
  constructor(
    readonly child: ChildProcess,
    private readonly onResult: (ev: HostEvent) => void = () => undefined,
  ) {
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      this.buffered += chunk;
      let nl: number;
      while ((nl = this.buffered.indexOf('\n')) >= 0) {
        const line = this.buffered.slice(0, nl);
        this.buffered = this.buffered.slice(nl + 1);
        try {
          const ev = JSON.parse(line) as HostEvent;
          this.events.push(ev);
          if (ev.event === 'result') this.onResult(ev);
        } catch {
          this.events.push({ event: 'text', line });
        }
      }
      this.wake();
    });
    child.stdin!.on('error', () => undefined); // EPIPE once it is dead
    this.exited = new Promise((resolve) =>
      child.once('exit', () => {
        this.dead = true;
        this.wake();
        resolve();
      }),
    );
  }

  get pid(): number {
    return this.child.pid!;
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  send(cmd: unknown): number {
    const at = this.events.length;
    if (!this.dead) this.child.stdin!.write(`${JSON.stringify(cmd)}\n`);
    return at;
  }

  /** First event at index >= from matching pred; 'exit' if the host died first; 'timeout'. */
  async wait(from: number, pred: (e: HostEvent) => boolean, timeoutMs: number): Promise<{ ev: HostEvent; index: number } | 'exit' | 'timeout'> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (let i = from; i < this.events.length; i++) if (pred(this.events[i]!)) return { ev: this.events[i]!, index: i };
      if (this.dead) return 'exit';
      const left = deadline - Date.now();
      if (left <= 0) return 'timeout';
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}

export const isOutcome = (e: HostEvent): boolean => e.event === 'result' || e.event === 'error';

// ---------------------------------------------------------------------------- the world

export interface Options {
  seed: number;
  iterations: number;
  conns: number;
  thinkMs: number;
  skip: string[];
  only: string[];
  keep: boolean;
  summaryFile?: string | undefined;
  quiet: boolean;
}

export const UNHEALTHY = { KV_SHARDS: '3' }; // the data dir has 4 shards: open refuses, Ready says unhealthy
export const LIVENESS_MS = 5_000;
export const SETTLE_MS = 30_000;
/** Longest acceptable stretch with no answer to the load (beyond a SIGSTOP's own length). */
export const OUTAGE_BOUND_MS = 15_000;
export const HANDOFF_BOUND_MS = 120_000;

export class World {
  readonly tag = `chaos-${randomUUID()}`;
  readonly dir = mkdtempSync(path.join(tmpdir(), 'baton-chaos-'));
  readonly dataDir = path.join(this.dir, 'data');
  readonly stateDir = path.join(this.dir, 'state');
  readonly markers = path.join(this.dir, 'markers');
  readonly logFile = path.join(this.dir, 'supervisor.log');
  readonly listener: HeldListener = bindListener(parseListenAddress('tcp://127.0.0.1:0'));
  readonly port = Number(this.listener.address.split(':').pop());
  host!: Host;
  hostStarts = 0;
  recoveries: unknown[] = [];
  /** Processes this run killed or stopped, and the crash points that fired. */
  readonly casualties = new Casualties();
  readonly coverage = new Coverage();
  /** The step running now (0 before the first, schedule length + 1 for the end of the run) and when it started. */
  step = 0;
  stepStartedAt = Date.now();
  private readonly stepStarts: { step: number; at: number }[] = [];
  /** What each app pid was, as the handoff results named it (for violation messages). */
  readonly roles = new Map<number, string>();
  /** Handoff results with what was true when each arrived, not yet judged. */
  private results: { result: HandoffResultLine; truth: Promise<Truth>; step: number }[] = [];

  async startHost(): Promise<void> {
    const log = openSync(this.logFile, 'a');
    const child = spawn(process.execPath, [HOST], {
      stdio: ['pipe', 'pipe', log, this.listener.fd],
      env: {
        ...process.env,
        BATON_TEST_TAG: this.tag,
        BATON_LOG_LEVEL: 'warn',
        KV_LOG_LEVEL: 'warn',
        BATON_HOST_CONFIG: JSON.stringify({
          dataDir: this.dataDir,
          stateDir: this.stateDir,
          command: KV,
          appEnv: { BATON_TEST_TAG: this.tag, BATON_LIVENESS_MS: String(LIVENESS_MS), KV_IDLE_GRACE_MS: '200' },
          timeouts: { livenessMs: LIVENESS_MS },
          // Chaos kills incumbents far more often than a crash loop allows (5 in 60 s).
          restart: { baseMs: 100, maxMs: 2_000, maxRestarts: 1_000_000, windowMs: 60_000 },
        }),
      },
    });
    closeSync(log);
    this.host = new Host(child, (ev) => {
      const r = ev.result as HandoffResultLine;
      this.results.push({ result: r, truth: this.truth(r), step: this.step });
      const id = r.id.slice(0, 8);
      if (r.oldPid !== undefined && !this.roles.has(r.oldPid)) this.roles.set(r.oldPid, `incumbent before handoff ${id}`);
      if (r.outcome === 'committed' && r.newPid !== undefined) this.roles.set(r.newPid, `incumbent from handoff ${id}${r.promoted ? ' (promoted)' : ''}`);
      if (r.restoredBy?.pid !== undefined) this.roles.set(r.restoredBy.pid, `cold start after handoff ${id}`);
    });
    this.hostStarts++;
    const ready = await this.host.wait(0, (e) => e.event === 'ready', 60_000);
    if (typeof ready === 'string') throw new Violation(`the supervisor did not become ready (${ready}); see ${this.logFile}`);
    const rec = this.host.events.find((e) => e.event === 'recovered');
    if (rec) this.recoveries.push(rec.report);
  }

  /** After the host died: start a new one on the same state dir and listener (it recovers from the journal). */
  async restartHost(): Promise<string> {
    await this.host.exited;
    await this.startHost();
    const rec = this.host.events.find((e) => e.event === 'recovered') as { report?: { survivor?: { pid: number; role: string }; killed?: number[] } } | undefined;
    if (!rec) return 'supervisor restarted (no journal)';
    const s = rec.report?.survivor;
    return `supervisor restarted, recovered ${s ? `${s.role} ${s.pid}` : 'nobody (cold start)'}${rec.report?.killed?.length ? `, killed ${rec.report.killed.join(',')}` : ''}`;
  }

  async status(): Promise<{ incumbentPid?: number; incumbentAlive: boolean; phase: string; busy: boolean }> {
    const from = this.host.send({ op: 'status' });
    const r = await this.host.wait(from, (e) => e.event === 'status', 5_000);
    if (typeof r === 'string') throw new Error(`no status from the supervisor (${r})`);
    return r.ev as unknown as { incumbentPid?: number; incumbentAlive: boolean; phase: string; busy: boolean };
  }

  async appPids(): Promise<{ pid: number; generation: number | undefined }[]> {
    return (await tagged(this.tag)).filter((p) => p.app);
  }

  /** The pid answering /healthz (200, ok) right now. */
  async servingPid(): Promise<number | string> {
    const r = await request(this.port, 'GET', '/healthz', undefined, undefined, 2_000);
    if (r.status !== 200) return `healthz ${r.status}`;
    return (JSON.parse(r.body) as { pid: number }).pid;
  }

  /**
   * The invariants after a step: one live lock holder, answering /healthz, the only app
   * process, the supervisor's incumbent, and the supervisor idle. Returns the holder.
   */
  async settled(): Promise<number> {
    return within(SETTLE_MS, 'one live lock holder answering HTTP, the only app process, supervised', async () => {
      if (this.host.dead) return 'the supervisor is not running';
      const holder = await lockHolder(this.dataDir);
      if (!holder) return 'nobody holds the data-dir lock';
      if (!holder.alive) return `lock holder ${holder.owner.pid} is dead`;
      const serving = await this.servingPid().catch((err: Error) => `healthz: ${err.message}`);
      if (serving !== holder.owner.pid) return `lock holder ${holder.owner.pid}, /healthz answered by ${serving}`;
      const apps = await this.appPids();
      if (apps.length !== 1) return `app processes ${apps.map((a) => a.pid).join(',')} (holder ${holder.owner.pid})`;
      const st = await this.status();
      if (st.busy || st.phase !== 'idle') return `supervisor busy (phase ${st.phase})`;
      if (st.incumbentPid !== holder.owner.pid || !st.incumbentAlive) {
        return `supervisor's incumbent is ${st.incumbentPid ?? 'nobody'}${st.incumbentAlive ? '' : ' (not alive)'}, lock holder and server is ${holder.owner.pid}`;
      }
      return holder.owner.pid;
    });
  }

  beginStep(step: number): void {
    this.step = step;
    this.stepStartedAt = Date.now();
    this.stepStarts.push({ step, at: this.stepStartedAt });
  }

  /** The step that was running at time `t`. */
  stepAt(t: number): number {
    let step = 0;
    for (const s of this.stepStarts) if (s.at <= t) step = s.step;
    return step;
  }

  /**
   * What is true right now about the processes a result names: liveness is read at
   * once (before any await), the lock owner record just after.
   */
  private async truth(r: HandoffResultLine): Promise<Truth> {
    const at = Date.now();
    const alive = new Map<number, boolean>();
    for (const pid of [r.oldPid, r.newPid, r.restoredBy?.pid]) if (pid !== undefined) alive.set(pid, isAlive(pid));
    const holder = await lockHolder(this.dataDir).catch(() => undefined);
    return { at, alive, lockPid: holder?.owner.pid, lockAlive: holder?.alive ?? false };
  }

  /** The results that arrived since the last call, with their truth. */
  async takeResults(): Promise<{ result: HandoffResultLine; truth: Truth; step: number }[]> {
    const taken = this.results.splice(0);
    return Promise.all(taken.map(async (r) => ({ result: r.result, truth: await r.truth, step: r.step })));
  }

  crashed(point: string): boolean {
    return existsSync(this.markers) && readdirSync(this.markers).some((f) => f.startsWith(`${point}.`));
  }

  /**
   * Every crash marker written since the last call (`<point>.<pid>`, holding the time of
   * the crash) becomes a casualty and counts as the point reached; the files are removed.
   * An incumbent point armed in an earlier step may fire late: it is harvested all the same.
   */
  harvestMarkers(): { point: string; pid: number }[] {
    if (!existsSync(this.markers)) return [];
    const found: { point: string; pid: number }[] = [];
    for (const f of readdirSync(this.markers)) {
      const dot = f.lastIndexOf('.');
      const point = f.slice(0, dot);
      const pid = Number(f.slice(dot + 1));
      const file = path.join(this.markers, f);
      const at = Number(readFileSync(file, 'utf8').trim()) || Date.now();
      rmSync(file, { force: true });
      if (!Number.isInteger(pid)) continue;
      this.casualties.add({ pid, how: `crash:${point}`, at, step: this.step, stepStartedAt: Math.min(this.stepStartedAt, at) });
      this.coverage.reach(point);
      found.push({ point, pid });
    }
    return found;
  }

  /** Signals `pid` and records it as this step's casualty. */
  hit(pid: number, sig: 'SIGKILL' | 'SIGSTOP', stopMs?: number): boolean {
    const at = Date.now();
    if (!signal(pid, sig)) return false;
    this.casualties.add({ pid, how: sig, at, step: this.step, stepStartedAt: this.stepStartedAt, ...(stopMs !== undefined && { stopMs }) });
    return true;
  }

  /** The successor of a running handoff: the app process with the highest generation that is not `incumbent`. */
  async successorPid(incumbent: number | undefined, timeoutMs = 2_000): Promise<number | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const others = (await this.appPids()).filter((p) => p.pid !== incumbent).sort((a, b) => (b.generation ?? 0) - (a.generation ?? 0));
      if (others[0]) return others[0].pid;
      if (Date.now() > deadline) return undefined;
      await sleep(10);
    }
  }

  /** Sends a handoff and waits for its outcome line (or the host's death). */
  async handoff(spec: Record<string, unknown> = {}): Promise<HostEvent | 'exit'> {
    const from = this.host.send({ op: 'handoff', spec });
    return this.outcome(from);
  }

  async outcome(from: number): Promise<HostEvent | 'exit'> {
    const r = await this.host.wait(from, isOutcome, HANDOFF_BOUND_MS);
    if (r === 'timeout') throw new Violation(`a handoff did not finish within ${HANDOFF_BOUND_MS} ms`);
    return r === 'exit' ? 'exit' : r.ev;
  }

  async teardown(keep: boolean): Promise<number[]> {
    if (!this.host.dead) {
      const from = this.host.send({ op: 'stop' });
      await this.host.wait(from, (e) => e.event === 'stopped', 30_000);
    }
    const deadline = Date.now() + 10_000;
    let left = await tagged(this.tag);
    while (left.length > 0 && Date.now() < deadline) {
      await sleep(100);
      left = await tagged(this.tag);
    }
    for (const p of left) signal(p.pid, 'SIGKILL');
    this.listener.close();
    if (!keep) rmSync(this.dir, { recursive: true, force: true });
    return left.map((p) => p.pid);
  }
}

export function describeOutcome(ev: HostEvent | 'exit'): string {
  if (ev === 'exit') return 'supervisor died';
  if (ev.event === 'error') return `refused ${String(ev.code)}`;
  const r = ev.result as HandoffResultLine;
  if (r.outcome === 'committed') return r.promoted ? 'committed (promoted)' : 'committed';
  return `aborted ${r.code ?? ''}${r.restoredBy ? ` → cold start ${r.restoredBy.outcome}` : ''}`.trim();
}
