/**
 * Chaos runner (issue 7): random schedules against fixtures/kv under keep-alive load,
 * with baton's invariants checked after every step and every acknowledged write read
 * back at the end.
 *
 *   npm run chaos -- --iterations 500 --seed 42
 *
 * One seeded PRNG (mulberry32) draws the whole schedule up front — action, role,
 * crash point, phase, delays, stop durations — so `--seed S --iterations N` replays the
 * same schedule (process timing is not deterministic; the schedule is). The schedule of
 * N iterations is a prefix of the schedule of any longer run with the same seed, so a
 * violation at step K replays with `--seed S --iterations K`.
 *
 * The world: a TCP listener on 127.0.0.1 bound here (held outside the supervisor, as
 * systemd holds socket-activated listeners), a Supervisor in its own process
 * (fixtures/supervisor-host.ts, the listener inherited at fd 3) running fixtures/kv.
 * A supervisor that dies (SIGKILL or one of its crash points) is restarted on the same
 * state dir and listener and recovers from its journal, like test/recovery.test.ts.
 *
 * Actions: a plain handoff; a crash point in any role (incumbent: armed at its start,
 * then hit by the next handoff; successor: HandoffSpec.successorCrashPoint; supervisor:
 * the host's "arm" command); SIGKILL or SIGSTOP (for a random time, then SIGCONT) of a
 * random role at a random phase; two upgrade requests at once (the second must be
 * refused with E_HANDOFF_IN_PROGRESS); a successor that fails to start or is unhealthy;
 * a random delay.
 *
 * After every step: within a bound, exactly one live process holds the data-dir lock,
 * it answers /healthz on the listener, it is the only app process left, and the
 * supervisor knows it as its incumbent and is idle; the load saw no wrong answer (an
 * acknowledged value missing or stale, a deleted key readable) and was never left
 * without any answer for longer than 15 s (plus the SIGSTOP's length for a stop step).
 * At the end: a last handoff commits, every acknowledged write reads back (deleted keys
 * 404), the supervisor stops, no process is left. Exit 1 on the first violation, with
 * the seed and the step to replay it; the temp dir (with the supervisor's log) is kept.
 *
 * --skip / --only leave actions out / focus on some (by label prefix, e.g.
 * kill:supervisor); the known engine bugs each one hits are in RELIABILITY.md.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CRASH_ENV, CRASH_MARKER_ENV, CRASH_POINT_NAMES, type CrashPoint } from '../src/crashpoints.js';
import { bindListener, parseListenAddress, type HeldListener } from '../src/listeners.js';
import { lockHolder } from '../src/lock.js';
import { isAlive } from '../src/proc.js';
import { request } from './lib/http.js';
import { LoadLoops } from './lib/load-loops.js';
import { Rng } from './lib/prng.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The checkout: bench/ under it when run from source (vitest), dist/bench/ when built. */
const ROOT = existsSync(path.join(HERE, '../package.json')) ? path.resolve(HERE, '..') : path.resolve(HERE, '../..');
const KV = [process.execPath, path.join(ROOT, 'dist/fixtures/kv/main.js')];
const HOST = path.join(ROOT, 'dist/fixtures/supervisor-host.js');

// ---------------------------------------------------------------------------- schedule

type Role = 'incumbent' | 'successor' | 'supervisor';
const HANDOFF_PHASES = ['spawning', 'hello', 'draining', 'sealing', 'begin', 'await_ready', 'committing'] as const;
type Phase = 'idle' | (typeof HANDOFF_PHASES)[number];

export type Step =
  | { kind: 'handoff' }
  /** `abort`: the successor is unhealthy, so the handoff aborts (reaches abort-only points). */
  | { kind: 'crash'; role: Role; point: CrashPoint; abort: boolean }
  | { kind: 'kill'; role: Role; phase: Phase; afterMs: number }
  | { kind: 'stop'; role: Role; phase: Phase; afterMs: number; stopMs: number }
  | { kind: 'concurrent'; phase: Phase | 'at-once' }
  | { kind: 'bad-start'; how: 'exit' | 'bad-env' | 'unhealthy' }
  | { kind: 'delay'; ms: number };

/** Points that are reached only when the handoff aborts. */
const ABORT_ONLY = new Set<string>(['incumbent.on_resume', 'incumbent.after_relock', 'successor.on_abort', 'supervisor.during_abort']);

export function label(s: Step): string {
  switch (s.kind) {
    case 'handoff':
      return 'handoff';
    case 'crash':
      return `crash:${s.point}${s.abort ? '+abort' : ''}`;
    case 'kill':
      return `kill:${s.role}:${s.phase}+${s.afterMs}ms`;
    case 'stop':
      return `stop:${s.role}:${s.phase}+${s.afterMs}ms:${s.stopMs}ms`;
    case 'concurrent':
      return `concurrent:${s.phase}`;
    case 'bad-start':
      return `bad-start:${s.how}`;
    case 'delay':
      return `delay:${s.ms}ms`;
  }
}

function drawStep(rng: Rng): Step {
  const kind = rng.weighted({ handoff: 12, crash: 28, kill: 16, stop: 10, concurrent: 8, 'bad-start': 8, delay: 4 });
  switch (kind) {
    case 'handoff':
      return { kind };
    case 'crash': {
      const role = rng.weighted<Role>({ incumbent: 10, successor: 10, supervisor: 8 });
      const point = rng.pick(CRASH_POINT_NAMES.filter((p) => p.startsWith(`${role}.`)));
      return { kind, role, point, abort: ABORT_ONLY.has(point) || rng.chance(0.1) };
    }
    case 'kill':
    case 'stop': {
      const role = rng.weighted<Role>({ incumbent: 6, successor: 5, supervisor: 5 });
      const phase: Phase = role !== 'successor' && rng.chance(0.3) ? 'idle' : rng.pick(HANDOFF_PHASES);
      // Most phases of a kv handoff last tens of ms: a long delay mostly lands after the
      // handoff ended, so most draws are short.
      const afterMs = rng.chance(0.7) ? rng.int(0, 40) : rng.int(0, 300);
      if (kind === 'kill') return { kind, role, phase, afterMs };
      return { kind, role, phase, afterMs, stopMs: rng.int(300, 7_000) };
    }
    case 'concurrent':
      return { kind, phase: rng.chance(0.3) ? 'at-once' : rng.pick(HANDOFF_PHASES) };
    case 'bad-start':
      return { kind, how: rng.pick(['exit', 'bad-env', 'unhealthy'] as const) };
    case 'delay':
      return { kind, ms: rng.int(0, 1_500) };
  }
}

/**
 * The whole schedule, drawn up front from the seed. Steps whose label starts with one of
 * `skip` (or, with `only`, does not start with one of `only`) are drawn again
 * (deterministically), so a run with --skip/--only replays too.
 */
export function makeSchedule(seed: number, iterations: number, skip: readonly string[] = [], only: readonly string[] = []): Step[] {
  const rng = new Rng(seed);
  const steps: Step[] = [];
  const drop = (s: Step): boolean => skip.some((p) => label(s).startsWith(p)) || (only.length > 0 && !only.some((p) => label(s).startsWith(p)));
  while (steps.length < iterations) {
    let step = drawStep(rng);
    for (let tries = 0; drop(step); tries++) {
      if (tries > 100_000) throw new Error(`--skip/--only leave nothing to draw`);
      step = drawStep(rng);
    }
    steps.push(step);
  }
  return steps;
}

// ---------------------------------------------------------------------------- helpers

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

class Violation extends Error {}

/** Polls `check` until it returns a value; on timeout throws a Violation with the last observation. */
async function within<T>(ms: number, what: string, check: () => Promise<T | string>, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + ms;
  let last = '';
  for (;;) {
    const r = await check().catch((err: unknown) => `error: ${(err as Error).message}`);
    if (typeof r !== 'string') return r;
    last = r;
    if (Date.now() > deadline) throw new Violation(`${what} not reached within ${ms} ms (last seen: ${last})`);
    await sleep(intervalMs);
  }
}

/** Live (non-zombie) processes whose env carries BATON_TEST_TAG=tag, with their generation. */
async function tagged(tag: string): Promise<{ pid: number; generation: number | undefined; app: boolean }[]> {
  const out: { pid: number; generation: number | undefined; app: boolean }[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const env = (await readFile(`/proc/${entry}/environ`, 'latin1')).split('\0');
      if (!env.includes(`BATON_TEST_TAG=${tag}`)) continue;
      if (!isAlive(Number(entry))) continue;
      const gen = env.find((e) => e.startsWith('BATON_GENERATION='));
      out.push({ pid: Number(entry), generation: gen ? Number(gen.split('=')[1]) : undefined, app: env.some((e) => e.startsWith('BATON_ROLE=')) });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

function signal(pid: number | undefined, sig: NodeJS.Signals): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------- load

/**
 * Keep-alive load like bench/lib/kv-load.ts, but exact under failures: a key one of whose
 * writes (PUT or DELETE) got no answer is retired — never written or checked again —
 * since that write may still be applied later (kv-load keeps such keys and checks a GET
 * of a key whose DELETE failed, which under chaos reports a 404 as a lost write). A
 * wrong answer about a key whose every write was acknowledged is a violation. Seeded,
 * so the load's own choices replay too.
 */
class ChaosLoad extends LoadLoops {
  readonly expected = new Map<string, string | null>();
  readonly uncertain = new Set<string>();
  readonly wrong: string[] = [];
  acked = 0;
  /** When the service last answered a request (200 or 404: a process that serves). */
  lastAnswer = Date.now();
  /** Longest time without any answer since resetGap(). */
  private maxGap = 0;

  constructor(
    private readonly port: number,
    conns: number,
    private readonly thinkMs: number,
    seed: number,
  ) {
    super();
    for (let i = 0; i < conns; i++) this.loops.push(this.loop(i, new Rng((seed ^ 0x5bd1e995) + i * 7919)));
  }

  private async loop(id: number, rng: Rng): Promise<void> {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    /** Keys whose acknowledged state is a value / a deletion. */
    const live: string[] = [];
    const deleted: string[] = [];
    // A write whose answer we did not get (reset, timeout, 503...) may still be applied
    // later (e.g. a request buffered in a SIGSTOPped server), possibly after a newer write
    // to the same key: such a key is retired for good, never written or checked again.
    const retire = (key: string): void => {
      this.uncertain.add(key);
      for (const list of [live, deleted]) if (list.includes(key)) list.splice(list.indexOf(key), 1);
    };
    let n = 0;
    while (this.running) {
      const r = rng.next();
      const op = live.length === 0 || r < 0.35 ? 'put' : r < 0.45 ? 'overwrite' : r < 0.55 ? 'delete' : deleted.length > 0 && r < 0.62 ? 'getDeleted' : 'get';
      const key = op === 'put' ? `c${id}-${n++}` : op === 'getDeleted' ? rng.pick(deleted) : rng.pick(live);
      try {
        if (op === 'put' || op === 'overwrite') {
          const value = `v-${key}-${n}-${rng.int(0, 1e9)}`;
          const res = await request(this.port, 'PUT', `/kv/${key}`, value, agent);
          this.answered(res.status);
          if (res.status === 200) {
            this.acked++;
            this.expected.set(key, value);
            if (op === 'put') live.push(key);
          } else {
            this.fail(`put_${res.status}`);
            retire(key);
          }
        } else if (op === 'delete') {
          const res = await request(this.port, 'DELETE', `/kv/${key}`, undefined, agent);
          this.answered(res.status);
          if (res.status === 200) {
            this.acked++;
            this.expected.set(key, null);
            live.splice(live.indexOf(key), 1);
            deleted.push(key);
          } else {
            if (res.status === 404) this.wrongAnswer(`DELETE ${key}: 404, but ${JSON.stringify(this.expected.get(key))} was acknowledged`);
            else this.fail(`delete_${res.status}`);
            retire(key);
          }
        } else {
          const res = await request(this.port, 'GET', `/kv/${key}`, undefined, agent);
          this.answered(res.status);
          this.check(key, res.status, res.body);
        }
      } catch (err) {
        this.fail((err as NodeJS.ErrnoException).code ?? 'error');
        if (op !== 'get' && op !== 'getDeleted') retire(key);
        await sleep(20); // nobody to talk to for a moment: do not spin
      }
      this.requests++;
      if (this.thinkMs > 0) await sleep(this.thinkMs);
    }
    agent.destroy();
  }

  private answered(status: number): void {
    if (status !== 200 && status !== 404) return;
    const now = Date.now();
    this.maxGap = Math.max(this.maxGap, now - this.lastAnswer);
    this.lastAnswer = now;
  }

  /** The longest stretch without an answer since the last call (an outage still going on counts). */
  takeGap(): number {
    const gap = Math.max(this.maxGap, Date.now() - this.lastAnswer);
    this.maxGap = 0;
    return gap;
  }

  /** A GET answer against what was acknowledged (uncertain keys are not checked). */
  private check(key: string, status: number, body: string): void {
    if (this.uncertain.has(key)) return;
    const want = this.expected.get(key);
    if (want === undefined) return;
    if (status !== 200 && status !== 404) return this.fail(`get_${status}`);
    if (want === null) {
      if (status === 200) this.wrongAnswer(`GET ${key}: 200, but its DELETE was acknowledged`);
    } else if (status === 404) {
      this.wrongAnswer(`GET ${key}: 404, but ${JSON.stringify(want)} was acknowledged`);
    } else {
      const got = (JSON.parse(body) as { value: string }).value;
      if (got !== want) this.wrongAnswer(`GET ${key}: ${JSON.stringify(got)}, but ${JSON.stringify(want)} was acknowledged last`);
    }
  }

  private wrongAnswer(what: string): void {
    this.wrong.push(what);
  }

  /** Reads back every key whose acknowledged state is known. */
  async verify(): Promise<{ checked: number; deleted: number; bad: string[] }> {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    const bad: string[] = [];
    const entries = [...this.expected].filter(([k]) => !this.uncertain.has(k));
    for (let i = 0; i < entries.length; i += 128) {
      await Promise.all(
        entries.slice(i, i + 128).map(async ([key, want]) => {
          const r = await request(this.port, 'GET', `/kv/${key}`, undefined, agent);
          if (want === null) {
            if (r.status !== 404) bad.push(`${key}: deleted, but GET answers ${r.status}`);
          } else if (r.status !== 200) bad.push(`${key}: acknowledged ${JSON.stringify(want)}, GET answers ${r.status}`);
          else {
            const got = (JSON.parse(r.body) as { value: string }).value;
            if (got !== want) bad.push(`${key}: acknowledged ${JSON.stringify(want)}, reads ${JSON.stringify(got)}`);
          }
        }),
      );
    }
    agent.destroy();
    return { checked: entries.length, deleted: entries.filter(([, v]) => v === null).length, bad };
  }
}

// ---------------------------------------------------------------------------- supervisor host

interface HostEvent {
  event: string;
  [k: string]: unknown;
}

interface HandoffResultLine {
  id: string;
  outcome: 'committed' | 'aborted';
  code?: string;
  reason?: string;
  promoted?: boolean;
  startedAt: number;
  endedAt: number;
  oldPid?: number;
  newPid?: number;
  restoredBy?: { outcome: string; pid?: number };
}

/** One supervisor-host process: its event lines, indexed, and a wait for one of them. */
class Host {
  readonly events: HostEvent[] = [];
  private waiters: (() => void)[] = [];
  private buffered = '';
  readonly exited: Promise<void>;
  dead = false;

  constructor(readonly child: ChildProcess) {
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      this.buffered += chunk;
      let nl: number;
      while ((nl = this.buffered.indexOf('\n')) >= 0) {
        const line = this.buffered.slice(0, nl);
        this.buffered = this.buffered.slice(nl + 1);
        try {
          this.events.push(JSON.parse(line) as HostEvent);
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

const isOutcome = (e: HostEvent): boolean => e.event === 'result' || e.event === 'error';

// ---------------------------------------------------------------------------- the world

interface Options {
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

const UNHEALTHY = { KV_SHARDS: '3' }; // the data dir has 4 shards: open refuses, Ready says unhealthy
const LIVENESS_MS = 5_000;
const SETTLE_MS = 30_000;
/** Longest acceptable stretch with no answer to the load (beyond a SIGSTOP's own length). */
const OUTAGE_BOUND_MS = 15_000;
const HANDOFF_BOUND_MS = 120_000;

class World {
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
    this.host = new Host(child);
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

  crashed(point: string): boolean {
    return existsSync(this.markers) && readdirSync(this.markers).some((f) => f.startsWith(`${point}.`));
  }

  clearMarkers(): void {
    rmSync(this.markers, { recursive: true, force: true });
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

function describeOutcome(ev: HostEvent | 'exit'): string {
  if (ev === 'exit') return 'supervisor died';
  if (ev.event === 'error') return `refused ${String(ev.code)}`;
  const r = ev.result as HandoffResultLine;
  if (r.outcome === 'committed') return r.promoted ? 'committed (promoted)' : 'committed';
  return `aborted ${r.code ?? ''}${r.restoredBy ? ` → cold start ${r.restoredBy.outcome}` : ''}`.trim();
}

// ---------------------------------------------------------------------------- steps

async function runStep(w: World, step: Step): Promise<string> {
  switch (step.kind) {
    case 'delay':
      await sleep(step.ms);
      return 'slept';
    case 'handoff':
      return describeOutcome(await w.handoff());
    case 'bad-start': {
      const spec =
        step.how === 'exit'
          ? { command: [process.execPath, '-e', 'process.exit(3)'] }
          : { successorEnv: step.how === 'bad-env' ? { KV_SHARDS: 'not-a-number' } : UNHEALTHY };
      const ev = await w.handoff(spec);
      if (ev !== 'exit' && ev.event === 'result' && (ev.result as HandoffResultLine).outcome === 'committed') {
        throw new Violation(`a successor that ${step.how === 'unhealthy' ? 'reports unhealthy' : 'fails at start'} was committed`);
      }
      return describeOutcome(ev);
    }
    case 'crash':
      return crashStep(w, step);
    case 'kill':
    case 'stop':
      return signalStep(w, step);
    case 'concurrent':
      return concurrentStep(w, step);
  }
}

async function crashStep(w: World, step: Extract<Step, { kind: 'crash' }>): Promise<string> {
  w.clearMarkers();
  const trigger = step.abort ? { successorEnv: UNHEALTHY } : {};
  let outcome: string;
  if (step.role === 'incumbent') {
    // The point is armed in the process when it starts: the next incumbent carries it.
    const armed = await w.handoff({ successorEnv: { [CRASH_ENV]: step.point, [CRASH_MARKER_ENV]: w.markers } });
    if (armed === 'exit' || armed.event !== 'result' || (armed.result as HandoffResultLine).outcome !== 'committed') {
      return `arming handoff ${describeOutcome(armed)}; not triggered`;
    }
    outcome = describeOutcome(await w.handoff(trigger));
  } else if (step.role === 'successor') {
    outcome = describeOutcome(await w.handoff({ ...trigger, successorCrashPoint: step.point, crashMarkerDir: w.markers }));
  } else {
    w.host.send({ op: 'arm', point: step.point, markerDir: w.markers });
    const ev = await w.handoff(trigger);
    if (ev === 'exit') outcome = await w.restartHost();
    else {
      w.host.send({ op: 'arm' }); // not reached: disarm
      outcome = describeOutcome(ev);
    }
  }
  // An incumbent point may fire a moment after the handoff returned (e.g. after Committed).
  const fired = w.crashed(step.point) || (await sleep(300).then(() => w.crashed(step.point)));
  return `${outcome}; ${fired ? 'crashed' : 'point not reached'}`;
}

async function signalStep(w: World, step: Extract<Step, { kind: 'kill' | 'stop' }>): Promise<string> {
  const incumbent = (await lockHolder(w.dataDir))?.owner.pid;
  const act = async (pid: number | undefined): Promise<string> => {
    if (pid === undefined) return `no ${step.role} to signal`;
    if (step.kind === 'kill') return signal(pid, 'SIGKILL') ? `SIGKILL ${step.role} ${pid}` : `${step.role} ${pid} already gone`;
    if (!signal(pid, 'SIGSTOP')) return `${step.role} ${pid} already gone`;
    await sleep(step.stopMs);
    signal(pid, 'SIGCONT');
    return `SIGSTOP ${step.role} ${pid} for ${step.stopMs} ms`;
  };
  const target = async (): Promise<number | undefined> =>
    step.role === 'supervisor' ? w.host.pid : step.role === 'incumbent' ? incumbent : w.successorPid(incumbent);

  if (step.phase === 'idle') {
    const did = await act(await target());
    if (step.role === 'supervisor' && step.kind === 'kill') return `${did}; ${await w.restartHost()}`;
    return did;
  }
  const from = w.host.send({ op: 'handoff', spec: {} });
  const reached = await w.host.wait(from, (e) => (e.event === 'phase' && e.phase === step.phase) || isOutcome(e), HANDOFF_BOUND_MS);
  if (reached === 'timeout') throw new Violation(`handoff neither reached ${step.phase} nor finished within ${HANDOFF_BOUND_MS} ms`);
  if (reached === 'exit') return `supervisor died before ${step.phase}; ${await w.restartHost()}`;
  if (isOutcome(reached.ev)) return `${describeOutcome(reached.ev)} before ${step.phase}`;
  await sleep(step.afterMs);
  // The handoff may have ended within afterMs: then the signal hits the idle supervisor or
  // the new incumbent (still chaos, but reported as what it was).
  const endedFirst = w.host.events.slice(from).some(isOutcome);
  const did = await act(await target());
  const ev = await w.outcome(from);
  if (ev === 'exit') return `${did}; ${await w.restartHost()}`;
  // A SIGKILLed supervisor is dead even when its outcome line came first.
  if (step.role === 'supervisor' && step.kind === 'kill') return `${describeOutcome(ev)}, then ${did}; ${await w.restartHost()}`;
  return endedFirst ? `${describeOutcome(ev)}, then ${did}` : `${did}; ${describeOutcome(ev)}`;
}

async function concurrentStep(w: World, step: Extract<Step, { kind: 'concurrent' }>): Promise<string> {
  const from = w.host.send({ op: 'handoff', spec: {} });
  if (step.phase !== 'at-once') {
    const reached = await w.host.wait(from, (e) => (e.event === 'phase' && e.phase === step.phase) || isOutcome(e), HANDOFF_BOUND_MS);
    if (typeof reached === 'string') throw new Violation(`handoff neither reached ${step.phase} nor finished (${reached})`);
  }
  w.host.send({ op: 'handoff', spec: {} });
  // Both outcomes, in the order the supervisor reported them.
  const outcomes: HostEvent[] = [];
  for (let i = from; outcomes.length < 2; ) {
    const r = await w.host.wait(i, isOutcome, HANDOFF_BOUND_MS);
    if (r === 'timeout') throw new Violation('two upgrade requests: not both answered in time');
    if (r === 'exit') throw new Violation('the supervisor died during two upgrade requests');
    outcomes.push(r.ev);
    i = r.index + 1;
  }
  const [a, b] = outcomes as [HostEvent, HostEvent];
  if (a.event === 'error') {
    if (a.code !== 'E_HANDOFF_IN_PROGRESS') throw new Violation(`second upgrade refused with ${String(a.code)}, expected E_HANDOFF_IN_PROGRESS`);
    return `second refused E_HANDOFF_IN_PROGRESS; first ${describeOutcome(b)}`;
  }
  // The first finished before the supervisor read the second request (its result line came
  // first): then the second is a handoff of its own, and must not overlap the first.
  if (b.event === 'error') throw new Violation(`second upgrade refused with ${String(b.code)} after the first had finished`);
  const r1 = a.result as HandoffResultLine;
  const r2 = b.result as HandoffResultLine;
  if (r2.startedAt < r1.endedAt) throw new Violation(`two handoffs overlapped: ${r1.id} until ${r1.endedAt}, ${r2.id} from ${r2.startedAt}`);
  return `first ${describeOutcome(a)} before the second arrived; second ${describeOutcome(b)}`;
}

// ---------------------------------------------------------------------------- main

function parseOptions(argv: string[]): Options & { printSchedule: boolean } {
  const { values } = parseArgs({
    args: argv,
    options: {
      iterations: { type: 'string', default: '30' },
      seed: { type: 'string' },
      conns: { type: 'string', default: '6' },
      'think-ms': { type: 'string', default: '10' },
      skip: { type: 'string', default: '' },
      only: { type: 'string', default: '' },
      keep: { type: 'boolean', default: false },
      summary: { type: 'string' },
      'print-schedule': { type: 'boolean', default: false },
      quiet: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log(`npm run chaos -- [--iterations N] [--seed S] [--conns C] [--think-ms MS] [--skip LABEL-PREFIX,...] [--keep] [--summary FILE] [--print-schedule]

Random schedules against fixtures/kv under load; invariants after every step.
  --iterations N     steps (default 30)
  --seed S           PRNG seed (default: random, printed); the same seed and N replay the same schedule
  --conns C          keep-alive load connections (default 6); --think-ms pause between a loop's requests (default 10)
  --skip P,...       draw again any step whose label starts with P (e.g. kill:supervisor:idle); pass it again to replay
  --only P,...       draw again any step whose label does not start with one of P (focus on one action)
  --keep             keep the temp dir (always kept after a violation)
  --summary FILE     write the summary as JSON
  --print-schedule   print the schedule and exit`);
    process.exit(0);
  }
  const int = (name: string, v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) {
      console.error(`chaos: --${name}: expected a non-negative integer (got ${JSON.stringify(v)})`);
      process.exit(2);
    }
    return n;
  };
  return {
    iterations: int('iterations', values.iterations),
    seed: values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : int('seed', values.seed),
    conns: int('conns', values.conns),
    thinkMs: int('think-ms', values['think-ms']),
    skip: values.skip.split(',').filter(Boolean),
    only: values.only.split(',').filter(Boolean),
    keep: values.keep,
    summaryFile: values.summary,
    printSchedule: values['print-schedule'],
    quiet: values.quiet,
  };
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const schedule = makeSchedule(opts.seed, opts.iterations, opts.skip, opts.only);
  const skipArg = `${opts.skip.length ? ` --skip ${opts.skip.join(',')}` : ''}${opts.only.length ? ` --only ${opts.only.join(',')}` : ''}`;
  if (opts.printSchedule) {
    schedule.forEach((s, i) => console.log(`${String(i + 1).padStart(4)} ${label(s)}`));
    return;
  }
  console.log(`chaos: seed ${opts.seed}, ${opts.iterations} iterations${skipArg}, ${opts.conns} load connections`);
  const t0 = Date.now();
  const w = new World();
  let load: ChaosLoad | undefined;
  let interrupted = false;
  process.once('SIGINT', () => {
    interrupted = true;
    console.log('\nchaos: interrupted; cleaning up');
    void tagged(w.tag).then((ps) => {
      for (const p of ps) signal(p.pid, 'SIGKILL');
      rmSync(w.dir, { recursive: true, force: true });
      process.exit(130);
    });
  });

  const histogram: Record<string, number> = {};
  const outcomes: Record<string, number> = {};
  const stepMs: number[] = [];
  let maxGap = { ms: 0, step: 0 };
  let violation: { step: number; label: string; message: string } | undefined;
  let verified: { checked: number; deleted: number; bad: string[] } | undefined;
  let leftovers: number[] = [];
  let current = 0;
  try {
    await w.startHost();
    await w.settled();
    load = new ChaosLoad(w.port, opts.conns, opts.thinkMs, opts.seed);
    for (current = 1; current <= schedule.length && !interrupted; current++) {
      const step = schedule[current - 1]!;
      const name = label(step);
      const kindKey = step.kind === 'crash' ? `crash:${step.role}` : step.kind === 'kill' || step.kind === 'stop' ? `${step.kind}:${step.role}` : step.kind;
      histogram[kindKey] = (histogram[kindKey] ?? 0) + 1;
      const s0 = Date.now();
      const outcome = await runStep(w, step);
      const actMs = Date.now() - s0;
      const holder = await w.settled();
      if (load.wrong.length > 0) throw new Violation(`wrong answers under load: ${load.wrong.slice(0, 5).join('; ')}`);
      // Availability: nobody answering for longer than a stop of a process, the liveness
      // timeout and a restart can explain is an outage (e.g. a handoff stuck with nobody serving).
      const gap = load.takeGap();
      const allowed = OUTAGE_BOUND_MS + (step.kind === 'stop' ? step.stopMs : 0);
      if (gap > allowed) throw new Violation(`the service answered no request for ${gap} ms (allowed ${allowed} ms for this step)`);
      if (gap > maxGap.ms) maxGap = { ms: gap, step: current };
      const ms = Date.now() - s0;
      stepMs.push(ms);
      const key = outcome.replace(/\b\d{3,}\b/g, 'N').replace(/ for N ms/, '');
      outcomes[key] = (outcomes[key] ?? 0) + 1;
      if (!opts.quiet) {
        console.log(`[${String(current).padStart(4)}/${schedule.length}] ${name.padEnd(46)} ${outcome} | ok pid ${holder}, longest gap ${gap} ms | ${actMs}+${ms - actMs} ms`);
      }
    }
    current = 0;
    // A last handoff must commit (as the crash matrix requires after every crash).
    let final = 'not committed';
    for (let attempt = 1; attempt <= 3 && final !== 'committed'; attempt++) final = describeOutcome(await w.handoff());
    if (final !== 'committed') throw new Violation(`the final handoff did not commit (${final})`);
    await w.settled();
    await load.stop();
    if (load.wrong.length > 0) throw new Violation(`wrong answers under load: ${load.wrong.slice(0, 5).join('; ')}`);
    verified = await load.verify();
    if (verified.bad.length > 0) throw new Violation(`${verified.bad.length} acknowledged writes do not read back: ${verified.bad.slice(0, 5).join('; ')}`);
  } catch (err) {
    if (!(err instanceof Violation)) throw err;
    violation = { step: current, label: current > 0 ? label(schedule[current - 1]!) : 'end of run', message: err.message };
  } finally {
    await load?.stop();
    leftovers = await w.teardown(opts.keep || violation !== undefined).catch(() => []);
  }
  if (!violation && leftovers.length > 0) violation = { step: 0, label: 'teardown', message: `processes left behind: ${leftovers.join(', ')}` };

  const durationMs = Date.now() - t0;
  const failuresByKind = load?.failures ?? {};
  const summary = {
    seed: opts.seed,
    iterations: opts.iterations,
    skip: opts.skip,
    only: opts.only,
    completed: violation ? Math.max(violation.step - 1, 0) : opts.iterations,
    durationMs,
    meanStepMs: Math.round(stepMs.reduce((a, b) => a + b, 0) / Math.max(stepMs.length, 1)),
    maxStepMs: Math.max(0, ...stepMs),
    /** Longest stretch in which the load got no answer, and the step it was in. */
    longestGapMs: maxGap.ms,
    longestGapStep: maxGap.step,
    actions: histogram,
    outcomes,
    supervisorStarts: w.hostStarts,
    load: { requests: load?.requests ?? 0, ackedWrites: load?.acked ?? 0, uncertainKeys: load?.uncertain.size ?? 0, failures: failuresByKind },
    verified: verified && { checked: verified.checked, deleted: verified.deleted, bad: verified.bad.length },
    violations: violation ? [violation] : [],
  };
  console.log('');
  console.log(`chaos summary: seed ${opts.seed}, ${summary.completed}/${opts.iterations} iterations in ${(durationMs / 1000).toFixed(1)} s (mean step ${summary.meanStepMs} ms, max ${summary.maxStepMs} ms), ${w.hostStarts} supervisor starts`);
  console.log(`  actions:  ${Object.entries(histogram).sort().map(([k, n]) => `${k}=${n}`).join(' ')}`);
  console.log(`  gaps:     the load got no answer for at most ${maxGap.ms} ms (step ${maxGap.step})`);
  console.log(`  load:     ${summary.load.requests} requests, ${summary.load.ackedWrites} acknowledged writes, ${summary.load.uncertainKeys} keys uncertain; failures ${JSON.stringify(failuresByKind)}`);
  if (verified) console.log(`  verified: ${verified.checked} keys read back (${verified.deleted} deleted → 404), ${verified.bad.length} wrong`);
  if (opts.summaryFile) writeFileSync(opts.summaryFile, `${JSON.stringify(summary, null, 2)}\n`);
  if (violation) {
    console.log(`  VIOLATION at step ${violation.step} (${violation.label}): ${violation.message}`);
    console.log(`  replay:   npm run chaos -- --seed ${opts.seed} --iterations ${violation.step || opts.iterations}${skipArg}`);
    console.log(`  kept:     ${w.dir} (supervisor.log has the supervisor's and the apps' warnings)`);
    process.exit(1);
  }
  console.log('  violations: 0');
}

const isMain = process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  main().catch((err: unknown) => {
    console.error(`chaos: ${(err as Error).stack ?? String(err)}`);
    process.exit(2);
  });
}
