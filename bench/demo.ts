/**
 * `npm run demo`: baton upgrading a live stateful service under load, end to end, with
 * nothing to install or configure.
 *
 *   1. a temp dir and a free 127.0.0.1 port;
 *   2. `baton run --listen tcp://127.0.0.1:PORT --data-dir … --state-dir … -- node dist/fixtures/kv/main.js`
 *      (the real CLI, as a user runs it), until the kv service answers /healthz;
 *   3. 64 keep-alive connections doing GET/PUT/DELETE (bench/lib/kv-load.ts, the same
 *      client as the zero-loss test) while `baton upgrade --json` runs 5 times, spaced
 *      over ~30 s;
 *   4. every acknowledged write read back (deleted keys must be 404), and the shard
 *      revisions must account for exactly the acknowledged writes;
 *   5. `baton stop`, then anything left is killed and the temp dir removed (also on
 *      Ctrl-C / SIGTERM; a second Ctrl-C skips the graceful stop);
 *   6. a summary: requests, failures by kind, writes acknowledged and verified, and per
 *      upgrade the write blackout and a timeline of its phases.
 *
 * Exit 0 only with 0 failed requests, 0 lost writes and every upgrade committed; 1
 * otherwise (saying what failed); 130/143 when interrupted.
 *
 *   node dist/bench/demo.js [--quick] [--upgrades N] [--seconds S] [--connections N]
 *
 * `--quick` (or BATON_DEMO_QUICK=1): 2 upgrades over ~6 s. Everything the demo starts
 * gets the demo's environment (so BATON_TEST_TAG passes through) plus a
 * BATON_DEMO_TAG of its own, by which leftovers are found and killed at the end.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, performance, type IntervalHistogram } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { JobRecord } from '../src/daemon/jobs.js';
import { request } from './lib/http.js';
import { FAILURE_CLASSES, KvLoad, kvHealth } from './lib/kv-load.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI_REL = 'dist/src/cli.js';
const KV_REL = 'dist/fixtures/kv/main.js';

// ---------------------------------------------------------------- options

interface Plan {
  quick: boolean;
  upgrades: number;
  seconds: number;
  conns: number;
}

const USAGE = `Usage: node dist/bench/demo.js [options]     (npm run demo [-- options])

Starts fixtures/kv under \`baton run\` in a temp dir, drives GET/PUT/DELETE load from
keep-alive connections, upgrades it with \`baton upgrade\` several times, verifies every
acknowledged write, prints a summary, and cleans up (also on Ctrl-C).

Options:
  --quick            a short run: 2 upgrades over ~6 s (also BATON_DEMO_QUICK=1)
  --upgrades N       how many upgrades (default 5; quick 2)
  --seconds S        how long the load runs (default 30; quick 6)
  --connections N    keep-alive connections (default 64)
  -h, --help

Exit: 0 = 0 failed requests, 0 lost writes, every upgrade committed; 1 = something
failed (the summary says what); 130/143 = interrupted (everything cleaned up).`;

function parsePlan(argv: string[]): Plan | undefined {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      quick: { type: 'boolean' },
      upgrades: { type: 'string' },
      seconds: { type: 'string' },
      connections: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return undefined;
  const quick = values.quick === true || /^(1|true|yes)$/i.test(process.env.BATON_DEMO_QUICK ?? '');
  const int = (name: string, v: string | undefined, dflt: number, min: number, max: number): number => {
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < min || n > max) throw new Error(`--${name}: expected an integer in ${min}..${max} (got ${JSON.stringify(v)})`);
    return n;
  };
  return {
    quick,
    upgrades: int('upgrades', values.upgrades, quick ? 2 : 5, 1, 100),
    seconds: int('seconds', values.seconds, quick ? 6 : 30, 2, 3600),
    conns: int('connections', values.connections, 64, 1, 1024),
  };
}

// ---------------------------------------------------------------- output

const TTY = process.stdout.isTTY === true;
const COLOR = TTY && !process.env.NO_COLOR;
const paint = (code: string, s: string): string => (COLOR ? `\x1b[${code}m${s}\x1b[0m` : s);
const bold = (s: string): string => paint('1', s);
const green = (s: string): string => paint('32', s);
const red = (s: string): string => paint('31', s);
const dim = (s: string): string => paint('2', s);

const fmt = (n: number): string => n.toLocaleString('en-US');
const ms1 = (n: number): string => `${n.toFixed(1)} ms`;

/** A live status line: one updating line on a terminal, a plain line every few seconds otherwise. */
class Progress {
  private timer: NodeJS.Timeout | undefined;
  private shown = false;

  constructor(
    private readonly render: () => string,
    private readonly plainEveryMs: number,
  ) {}

  start(): void {
    this.stop();
    if (TTY) {
      this.timer = setInterval(() => this.draw(), 200);
      this.draw();
    } else {
      this.timer = setInterval(() => console.log(this.render()), this.plainEveryMs);
    }
  }

  /** Prints a line above the status line. */
  print(text: string): void {
    this.clear();
    console.log(text);
    if (this.timer && TTY) this.draw();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.clear();
  }

  private draw(): void {
    const cols = process.stdout.columns || 120;
    let line = this.render();
    if (line.length > cols - 1) line = line.slice(0, cols - 2) + '…';
    process.stdout.write(`\r\x1b[2K${line}`);
    this.shown = true;
  }

  private clear(): void {
    if (TTY && this.shown) process.stdout.write('\r\x1b[2K');
    this.shown = false;
  }
}

// ---------------------------------------------------------------- processes

interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Everything cleanup needs, reachable from the signal handlers. */
const ctx = {
  tag: randomUUID(),
  dir: '',
  stateDir: '',
  daemon: undefined as ChildProcess | undefined,
  /** The last lines baton run (and the apps it started) wrote. */
  daemonOutput: [] as string[],
  children: new Set<ChildProcess>(),
  load: undefined as KvLoad | undefined,
  progress: undefined as Progress | undefined,
  /** Set once cleanup began (the main flow stops doing anything new). */
  stopping: false,
  forced: false,
};

/**
 * The demo's environment for everything it starts: its own env (BATON_TEST_TAG passes
 * through), its tag, quiet logs, and no systemd variables (baton run must bind its own
 * listener and not talk to a service manager the demo happens to run under).
 */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, BATON_DEMO_TAG: ctx.tag, BATON_LOG_LEVEL: process.env.BATON_LOG_LEVEL ?? 'warn' };
  for (const k of ['LISTEN_FDS', 'LISTEN_PID', 'LISTEN_FDNAMES', 'NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID', 'BATON_STATE_DIR']) delete env[k];
  return env;
}

/**
 * Starts `node dist/src/cli.js ARGS` from the checkout root in its own process group, so
 * a Ctrl-C in the terminal reaches only the demo, which then stops baton the graceful way.
 */
function spawnCli(args: string[], opts: SpawnOptions = {}): ChildProcess {
  const child = spawn(process.execPath, [CLI_REL, ...args], { cwd: ROOT, env: childEnv(), detached: true, stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  ctx.children.add(child);
  child.once('exit', () => ctx.children.delete(child));
  child.once('error', () => ctx.children.delete(child));
  return child;
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

function waitExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (exited(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), timeoutMs);
    child.once('exit', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

/** Runs `baton ARGS` to completion (SIGKILLed after `timeoutMs`). */
function runCli(args: string[], timeoutMs: number): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawnCli(args);
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr?.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (err) => {
      clearTimeout(t);
      resolve({ code: null, signal: null, stdout, stderr: stderr + String(err) });
    });
    child.once('close', (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, ms)));

/** Pids of live processes carrying this demo's tag (Linux /proc; elsewhere none are found). */
function taggedPids(): number[] {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return [];
  }
  const needle = `BATON_DEMO_TAG=${ctx.tag}`;
  const pids: number[] = [];
  for (const e of entries) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      if (!readFileSync(`/proc/${e}/environ`, 'latin1').split('\0').includes(needle)) continue;
      const stat = readFileSync(`/proc/${e}/stat`, 'latin1');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) continue;
      pids.push(Number(e));
    } catch {
      // gone meanwhile, or not ours
    }
  }
  return pids;
}

// ---------------------------------------------------------------- baton run

interface Served {
  port: number;
  command: string;
  appPid: number;
  generation: number;
  readyMs: number;
}

function captureDaemonOutput(child: ChildProcess): void {
  const logFile = path.join(ctx.dir, 'baton.log');
  for (const stream of [child.stdout, child.stderr]) {
    let buf = '';
    stream?.setEncoding('utf8').on('data', (c: string) => {
      try {
        appendFileSync(logFile, c);
      } catch {
        // the temp dir is gone (cleanup): keep only the tail in memory
      }
      buf += c;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        ctx.daemonOutput.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        if (ctx.daemonOutput.length > 200) ctx.daemonOutput.shift();
      }
    });
  }
}

/** `baton run …` on a free port; resolves once the kv service answers /healthz with 200. */
async function startBaton(dataDir: string): Promise<Served> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const args = ['run', '--listen', `tcp://127.0.0.1:${port}`, '--data-dir', dataDir, '--state-dir', ctx.stateDir, '--', 'node', KV_REL];
    const command = `node ${CLI_REL} ${args.join(' ')}`;
    // `node` for the app is this very node binary (what PATH finds under npm run anyway).
    const child = spawnCli(args.map((a) => (a === 'node' ? process.execPath : a)));
    ctx.daemon = child;
    captureDaemonOutput(child);
    const t0 = Date.now();
    for (;;) {
      if (ctx.stopping) return never();
      if (exited(child)) {
        const out = ctx.daemonOutput.join('\n');
        if (/EADDRINUSE/.test(out) && attempt < 3) break; // someone took the port meanwhile: another one
        throw new Error(`baton run exited (${child.exitCode ?? child.signalCode}) before serving:\n${tail(10)}`);
      }
      if (Date.now() - t0 > 30_000) throw new Error(`baton run did not serve within 30 s:\n${tail(10)}`);
      const r = await request(port, 'GET', '/healthz', undefined, undefined, 1_000).catch(() => undefined);
      if (r?.status === 200) {
        const st = await runCli(['status', '--json', '--state-dir', ctx.stateDir], 10_000);
        if (st.code === 0) {
          const s = JSON.parse(st.stdout) as { app: { pid: number; generation: number } | null };
          if (s.app) return { port, command, appPid: s.app.pid, generation: s.app.generation, readyMs: Date.now() - t0 };
        }
      }
      await sleep(100);
    }
  }
}

function tail(n: number): string {
  return ctx.daemonOutput
    .slice(-n)
    .map((l) => `    ${l}`)
    .join('\n');
}

/** A promise that never settles: the main flow parks on it once cleanup has begun. */
function never<T>(): Promise<T> {
  return new Promise<T>(() => undefined);
}

// ---------------------------------------------------------------- upgrades

interface UpgradeRun {
  n: number;
  /** Exit code of `baton upgrade --json`. */
  code: number | null;
  job: JobRecord | undefined;
  error: string | undefined;
  /** When the command was started and when it returned (epoch ms). */
  startedAt: number;
  endedAt: number;
  /** Client-side write blackout; ≤ 0 when this client could not resolve it (see blackoutText). */
  blackoutMs: number | undefined;
  /** Epoch ms of the last write acknowledged by the old pid and the first by the new one. */
  lastOldAck: number | undefined;
  firstNewAck: number | undefined;
}

const epoch = (perfMs: number): number => performance.timeOrigin + perfMs;

async function upgrade(n: number, load: KvLoad): Promise<UpgradeRun> {
  const startedAt = Date.now();
  const r = await runCli(['upgrade', '--json', '--state-dir', ctx.stateDir], 180_000);
  const endedAt = Date.now();
  let job: JobRecord | undefined;
  try {
    const body = JSON.parse(r.stdout) as JobRecord | { error?: { message?: string } };
    if ('id' in body) job = body;
  } catch {
    // not JSON: the error is on stderr
  }
  const run: UpgradeRun = { n, code: r.code, job, error: undefined, startedAt, endedAt, blackoutMs: undefined, lastOldAck: undefined, firstNewAck: undefined };
  if (!job) {
    run.error = `baton upgrade exited ${r.code ?? r.signal}: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ') || 'no output'}`;
    return run;
  }
  if (job.state !== 'SUCCEEDED') {
    run.error = `${job.state}: ${job.reason ?? 'no reason given'} (${job.code ?? '-'})`;
    return run;
  }
  const { oldPid, newPid } = job.handoff ?? {};
  if (oldPid !== undefined && newPid !== undefined) {
    // The new process may not have acknowledged a write yet the instant the command returns.
    for (let i = 0; i < 100 && !load.acksByPid.has(newPid); i++) await sleep(50);
    const a = load.acksByPid.get(oldPid);
    const b = load.acksByPid.get(newPid);
    run.blackoutMs = load.writeBlackout(oldPid, newPid);
    run.lastOldAck = a && epoch(a.last);
    run.firstNewAck = b && epoch(b.first);
  }
  return run;
}

// ---------------------------------------------------------------- summary

interface Outcome {
  plan: Plan;
  served: Served;
  loadMs: number;
  upgrades: UpgradeRun[];
  verify: { checked: number; values: number; deleted: number; lost: string[]; resurrected: string[] } | undefined;
  verifyError: string | undefined;
  revisionSum: bigint | undefined;
  healthProblems: string[];
  cleanup: CleanupReport;
  /** Event-loop delay of the demo process (where the load client runs) while the load ran, in ns. */
  loopDelay: IntervalHistogram;
}

const BAR_WIDTH = 48;
const UNRESOLVED = 'unresolved';

/**
 * The write blackout as this client saw it. ≤ 0 means the old process's last ack and
 * the new one's first were read in the same event-loop turn (or in reverse order) by a
 * client too busy to tell them apart: not a measurement, so not shown as one.
 */
function blackoutText(ms: number | undefined): string {
  if (ms === undefined) return 'n/a';
  return ms > 0 ? ms1(ms) : UNRESOLVED;
}

function summary(load: KvLoad, o: Outcome): { text: string; problems: string[] } {
  const lines: string[] = [];
  const problems: string[] = [];
  const byClass = load.failuresByClass();
  const committed = o.upgrades.filter((u) => u.job?.state === 'SUCCEEDED').length;
  const lost = o.verify ? o.verify.lost.length + o.verify.resurrected.length : undefined;
  const gets = load.ops.gets + load.ops.getsMissing;
  const puts = load.ops.puts + load.ops.overwrites;

  lines.push(bold('summary'));
  const row = (k: string, v: string): number => lines.push(`  ${k.padEnd(14)}${v}`);
  row('load', `${o.plan.conns} keep-alive connections for ${(o.loadMs / 1000).toFixed(1)} s, ${o.plan.upgrades} upgrades`);
  row('requests', `${fmt(load.requests)} (${fmt(Math.round(load.requests / (o.loadMs / 1000)))}/s): ${fmt(gets)} GET, ${fmt(puts)} PUT (${fmt(load.ops.overwrites)} overwrites), ${fmt(load.ops.deletes)} DELETE`);
  row('latency', `p50 ${ms1(load.latencyPercentile(50))}, p99 ${ms1(load.latencyPercentile(99))}, max ${ms1(load.latencyPercentile(100))}`);
  const classes = FAILURE_CLASSES.map((c) => `${c} ${byClass[c]}`).join(', ');
  row('failures', `${load.failureCount === 0 ? green('0') : red(fmt(load.failureCount))} failed requests (${classes})`);
  if (load.failureCount > 0) {
    row('', `by kind: ${Object.entries(load.failures).map(([k, n]) => `${k} ${n}`).join(', ')}`);
    problems.push(`${fmt(load.failureCount)} failed requests (${FAILURE_CLASSES.filter((c) => byClass[c] > 0).map((c) => `${c} ${byClass[c]}`).join(', ')})`);
  }
  row('client', `event-loop delay of this load client p50 ${ms1(o.loopDelay.percentile(50) / 1e6)}, p99 ${ms1(o.loopDelay.percentile(99) / 1e6)}, max ${ms1(o.loopDelay.max / 1e6)} (client-side times include it)`);
  row('writes', `${fmt(load.ackedWrites)} acknowledged of ${fmt(puts + load.ops.deletes)} attempted (${fmt(puts)} PUT, ${fmt(load.ops.deletes)} DELETE)`);
  if (o.verify) {
    row('verified', `${fmt(o.verify.checked)} keys read back: ${fmt(o.verify.values)} values exact, ${fmt(o.verify.deleted)} deleted keys 404${load.uncertainCount ? `; ${load.uncertainCount} keys with a failed write not checked` : ''}`);
    row('lost writes', `${lost === 0 ? green('0') : red(fmt(lost!))}${o.verify.lost.length ? ` (${o.verify.lost.length} values missing or wrong, e.g. ${o.verify.lost.slice(0, 3).join(', ')})` : ''}${o.verify.resurrected.length ? ` (${o.verify.resurrected.length} deleted keys readable, e.g. ${o.verify.resurrected.slice(0, 3).join(', ')})` : ''}`);
    if (lost! > 0) problems.push(`${fmt(lost!)} lost writes`);
  } else {
    row('lost writes', red(`not verified: ${o.verifyError ?? 'unknown error'}`));
    problems.push(`the read-back did not run: ${o.verifyError ?? 'unknown error'}`);
  }
  if (o.revisionSum !== undefined) {
    const ok = o.revisionSum === BigInt(load.ackedWrites);
    row('revisions', `shard revisions sum to ${fmt(Number(o.revisionSum))} ${ok ? '=' : '≠'} ${fmt(load.ackedWrites)} acknowledged writes${ok ? '' : load.uncertainCount ? ' (writes with an unknown outcome may have landed)' : ''}`);
    if (!ok && load.uncertainCount === 0) problems.push(`shard revisions (${o.revisionSum}) do not match the acknowledged writes (${load.ackedWrites})`);
  }
  if (o.healthProblems.length) {
    row('health', red(o.healthProblems.join('; ')));
    problems.push(`the service reports problems: ${o.healthProblems.join('; ')}`);
  }
  row('upgrades', `${committed === o.plan.upgrades ? green(String(committed)) : red(String(committed))}/${o.plan.upgrades} committed`);
  for (const u of o.upgrades) if (u.error) problems.push(`upgrade ${u.n}: ${u.error}`);
  if (o.upgrades.length < o.plan.upgrades) problems.push(`only ${o.upgrades.length} of ${o.plan.upgrades} upgrades ran`);

  // Per upgrade: pids, duration, blackout.
  lines.push('');
  lines.push(`  ${'upgrade'.padEnd(9)}${'generation'.padEnd(12)}${'pid old → new'.padEnd(18)}${'handoff'.padStart(9)}${'write blackout'.padStart(17)}`);
  for (const u of o.upgrades) {
    const h = u.job?.handoff;
    const pids = h ? `${h.oldPid ?? '-'} → ${h.newPid ?? '-'}` : '-';
    const dur = u.job?.durationMs !== undefined ? `${u.job.durationMs} ms` : '-';
    const bo = u.job?.state === 'SUCCEEDED' ? blackoutText(u.blackoutMs) : '-';
    lines.push(`  ${`${u.n}`.padEnd(9)}${String(h?.generation ?? '-').padEnd(12)}${pids.padEnd(18)}${dur.padStart(9)}${bo.padStart(17)}${u.error ? `  ${red(u.error)}` : ''}`);
  }
  const blackouts = o.upgrades.map((u) => u.blackoutMs).filter((b): b is number => b !== undefined && b > 0);
  const unresolved = o.upgrades.filter((u) => u.blackoutMs !== undefined && u.blackoutMs <= 0).length;
  const durs = o.upgrades.map((u) => u.job?.durationMs).filter((d): d is number => d !== undefined);
  if (blackouts.length) {
    lines.push(
      `  write blackout (last write acknowledged by the old pid → first by the new${unresolved ? `; ${blackouts.length} resolved` : ''}): min ${ms1(Math.min(...blackouts))}, max ${ms1(Math.max(...blackouts))}, mean ${ms1(blackouts.reduce((a, b) => a + b, 0) / blackouts.length)}`,
    );
  }
  if (unresolved) {
    lines.push(`  ${UNRESOLVED}: the old process's last acknowledgement and the new one's first reached this client in one event-loop turn (it was busy: see the client line)`);
  }

  // Timeline: one bar per phase, scaled to the longest handoff.
  const withPhases = o.upgrades.filter((u) => u.job?.handoff?.phases.length);
  if (withPhases.length) {
    const longest = Math.max(...durs, ...withPhases.map((u) => u.job!.handoff!.phases.reduce((a, p) => a + p.ms, 0)), 1);
    const perChar = longest / BAR_WIDTH;
    lines.push('');
    lines.push(bold('timeline') + dim(`  (0 = upgrade accepted; ${BAR_WIDTH} columns = ${longest} ms, the longest handoff; █ phase, ░ no write acknowledged)`));
    const nameW = Math.max(11, ...withPhases.flatMap((u) => u.job!.handoff!.phases.map((p) => p.phase.length)));
    for (const u of withPhases) {
      const h = u.job!.handoff!;
      lines.push(`  upgrade ${u.n}: generation ${h.generation}, pid ${h.oldPid ?? '-'} → ${h.newPid ?? '-'}, ${u.job!.durationMs ?? '-'} ms${u.blackoutMs !== undefined ? `, write blackout ${blackoutText(u.blackoutMs)}` : ''}`);
      const bar = (from: number, len: number, ch: string): string => {
        const start = Math.min(BAR_WIDTH - 1, Math.max(0, Math.floor(from / perChar)));
        const width = Math.max(1, Math.min(BAR_WIDTH - start, Math.round(len / perChar)));
        return (' '.repeat(start) + ch.repeat(width)).padEnd(BAR_WIDTH);
      };
      let at = 0;
      for (const p of h.phases) {
        lines.push(`    ${p.phase.padEnd(nameW)} │${bar(at, p.ms, '█')}│ ${`${p.ms} ms`.padStart(8)}`);
        at += p.ms;
      }
      const jobStart = Date.parse(u.job!.startedAt ?? u.job!.createdAt);
      if (u.lastOldAck !== undefined && u.blackoutMs !== undefined && u.blackoutMs > 0 && Number.isFinite(jobStart)) {
        lines.push(`    ${'no writes'.padEnd(nameW)} │${bar(u.lastOldAck - jobStart, u.blackoutMs, '░')}│ ${ms1(u.blackoutMs).padStart(8)}`);
      }
    }
  }

  lines.push('');
  row('cleanup', cleanupLine(o.cleanup));
  if (o.cleanup.leftover > 0) problems.push(`${o.cleanup.leftover} processes were still running at the end and had to be killed`);
  if (!o.cleanup.graceful) problems.push(`baton did not stop gracefully: ${o.cleanup.note}`);
  return { text: lines.join('\n'), problems };
}

// ---------------------------------------------------------------- cleanup

interface CleanupReport {
  graceful: boolean;
  note: string;
  killed: number;
  leftover: number;
  dirRemoved: boolean;
}

function cleanupLine(c: CleanupReport): string {
  return `${c.note}; ${c.killed + c.leftover === 0 ? 'no process left' : `${c.killed + c.leftover} processes killed`}; temp dir ${c.dirRemoved ? 'removed' : 'NOT removed'}`;
}

let cleaning: Promise<CleanupReport> | undefined;

/**
 * Stops the load, `baton stop` (graceful: the app drains, seals, exits), kills what is
 * left (baton run, clients, apps, found by the demo's tag), removes the temp dir.
 * After a second Ctrl-C (`ctx.forced`) the graceful part is skipped.
 */
function cleanup(): Promise<CleanupReport> {
  ctx.stopping = true;
  cleaning ??= (async () => {
    ctx.progress?.stop();
    const report: CleanupReport = { graceful: true, note: 'nothing to stop', killed: 0, leftover: 0, dirRemoved: false };
    // No new requests from here; those in flight finish while baton drains (not waited for first).
    const loadStopped = ctx.load?.stop();
    const daemon = ctx.daemon;
    if (daemon && !exited(daemon) && !ctx.forced) {
      const t0 = Date.now();
      const stop = await runCli(['stop', '--timeout', '10', '--state-dir', ctx.stateDir], 20_000);
      const gone = await waitExit(daemon, 5_000);
      if (stop.code === 0 && gone) report.note = `baton stop: stopped in ${Date.now() - t0} ms`;
      else {
        report.graceful = false;
        report.note = `baton stop exited ${stop.code ?? stop.signal}${stop.stderr.trim() ? ` (${stop.stderr.trim().split('\n').pop()})` : ''}${gone ? '' : ', baton run still running'}`;
      }
    }
    if (daemon && !exited(daemon)) {
      daemon.kill(ctx.forced ? 'SIGKILL' : 'SIGTERM');
      if (!(await waitExit(daemon, ctx.forced ? 1_000 : 3_000))) daemon.kill('SIGKILL');
      await waitExit(daemon, 2_000);
      report.killed++;
    }
    if (ctx.forced) {
      report.graceful = false;
      report.note = 'second signal: baton and its app were killed, not stopped';
    }
    if (loadStopped) await Promise.race([loadStopped, sleep(2_000)]);
    // Clients still running (an upgrade the stop waited for is over by now).
    for (const child of [...ctx.children]) {
      if (!(await waitExit(child, ctx.forced ? 0 : 3_000))) {
        child.kill('SIGKILL');
        await waitExit(child, 2_000);
        report.killed++;
      }
    }
    // Anything else that carries our tag (an app orphaned by a killed baton run).
    for (let i = 0; i < 20; i++) {
      const pids = taggedPids();
      if (pids.length === 0) break;
      if (i === 0) report.leftover = pids.length;
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
      await sleep(50);
    }
    if (ctx.dir) {
      try {
        rmSync(ctx.dir, { recursive: true, force: true });
        report.dirRemoved = true;
      } catch {
        report.dirRemoved = false;
      }
    } else report.dirRemoved = true;
    return report;
  })();
  return cleaning;
}

function onSignal(sig: NodeJS.Signals): void {
  const code = sig === 'SIGINT' ? 130 : 143;
  if (ctx.stopping) {
    if (!ctx.forced) {
      ctx.forced = true;
      console.error(`\n${sig} again: killing everything now`);
      for (const c of ctx.children) c.kill('SIGKILL');
      for (const pid of taggedPids()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
    return;
  }
  ctx.progress?.stop();
  const l = ctx.load;
  console.error(`\n${sig}: stopping baton (baton stop) and cleaning up; ${sig === 'SIGINT' ? 'Ctrl-C again' : 'SIGINT'} to kill everything at once`);
  if (l) console.error(`interrupted: ${fmt(l.requests)} requests, ${fmt(l.failureCount)} failed, ${fmt(l.ackedWrites)} writes acknowledged (not verified)`);
  void cleanup().then((r) => {
    console.error(`cleaned up: ${cleanupLine(r)}`);
    process.exit(code);
  });
}

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  let plan: Plan | undefined;
  try {
    plan = parsePlan(process.argv.slice(2));
  } catch (err) {
    console.error(`demo: ${(err as Error).message}\n\n${USAGE}`);
    return 1;
  }
  if (!plan) {
    console.log(USAGE);
    return 0;
  }
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));

  ctx.dir = mkdtempSync(path.join(os.tmpdir(), 'baton-demo-'));
  ctx.stateDir = path.join(ctx.dir, 'state');
  const dataDir = path.join(ctx.dir, 'data');
  console.log(bold(`baton demo: the kv reference service under \`baton run\`, ${plan.conns} keep-alive connections, ${plan.upgrades} upgrades over ${plan.seconds} s`));
  console.log(`  temp dir   ${ctx.dir} (removed at the end)`);

  const served = await startBaton(dataDir);
  console.log(`  $ ${served.command}`);
  console.log(`  serving    http://127.0.0.1:${served.port}: generation ${served.generation}, pid ${served.appPid} (ready in ${served.readyMs} ms)`);

  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  const load = new KvLoad(served.port, { conns: plan.conns });
  ctx.load = load;
  const t0 = Date.now();
  const endAt = t0 + plan.seconds * 1000;
  const upgrades: UpgradeRun[] = [];
  let current = { generation: served.generation, pid: served.appPid };
  let upgrading: number | undefined;
  let lastReq = 0;
  let lastAt = t0;
  let rate = 0;
  const progress = new Progress(() => {
    const now = Date.now();
    if (now - lastAt >= 1000) {
      rate = ((load.requests - lastReq) * 1000) / (now - lastAt);
      lastReq = load.requests;
      lastAt = now;
    }
    const t = `${((now - t0) / 1000).toFixed(1)}/${plan.seconds}s`;
    const f = load.failureCount;
    const up = upgrading !== undefined ? `upgrade ${upgrading}/${plan.upgrades} running` : `${upgrades.length}/${plan.upgrades} upgrades done`;
    // Most important first: a narrow terminal cuts the end of the line.
    return `  ${t.padEnd(9)} ${fmt(load.requests)} requests (${fmt(Math.round(rate))}/s)  ${f === 0 ? '0' : red(fmt(f))} failed  ${fmt(load.ackedWrites)} writes acked  ${up}  generation ${current.generation} (pid ${current.pid})`;
  }, plan.quick ? 2_000 : 5_000);
  ctx.progress = progress;
  console.log(`  load       ${plan.conns} keep-alive connections running: 45% GET, 35% PUT of new keys, 10% overwrite, 10% DELETE`);
  progress.start();

  for (let i = 1; i <= plan.upgrades; i++) {
    await sleep(t0 + (i * plan.seconds * 1000) / (plan.upgrades + 1) - Date.now());
    if (ctx.stopping) return never();
    upgrading = i;
    const u = await upgrade(i, load);
    upgrading = undefined;
    if (ctx.stopping) return never();
    upgrades.push(u);
    const h = u.job?.handoff;
    if (u.job?.state === 'SUCCEEDED' && h?.newPid !== undefined) {
      current = { generation: h.generation, pid: h.newPid };
      progress.print(
        `  upgrade ${i}/${plan.upgrades}: committed, generation ${h.generation}, pid ${h.oldPid} → ${h.newPid} in ${u.job.durationMs} ms; write blackout ${blackoutText(u.blackoutMs)}`,
      );
    } else {
      progress.print(red(`  upgrade ${i}/${plan.upgrades}: ${u.error}`));
    }
  }
  await sleep(endAt - Date.now());
  if (ctx.stopping) return never();
  progress.stop();
  await load.stop();
  loopDelay.disable();
  const loadMs = Date.now() - t0;
  if (ctx.stopping) return never();

  // Read back every acknowledged write.
  let verify: Outcome['verify'];
  let verifyError: string | undefined;
  let revisionSum: bigint | undefined;
  const healthProblems: string[] = [];
  let verified = 0;
  const vp = new Progress(() => `  verifying  ${fmt(verified)}/${fmt(load.expected.size - load.uncertainCount)} keys`, 5_000);
  ctx.progress = vp;
  console.log(`  load stopped after ${(loadMs / 1000).toFixed(1)} s; reading back ${fmt(load.expected.size - load.uncertainCount)} keys`);
  vp.start();
  try {
    verify = await load.verify({ connections: 32, onProgress: (done) => (verified = done) });
    const health = await kvHealth(served.port);
    revisionSum = Object.values(health.revisions).reduce((a, r) => a + BigInt(r), 0n);
    if (!health.ok) healthProblems.push(...(health.problems.length ? health.problems : ['/healthz not ok']));
  } catch (err) {
    verifyError = `${(err as NodeJS.ErrnoException).code ?? ''} ${(err as Error).message}`.trim();
  }
  vp.stop();
  if (ctx.stopping) return never();

  const daemonLog = tail(20);
  const cleanupReport = await cleanup();
  const { text, problems } = summary(load, { plan, served, loadMs, upgrades, verify, verifyError, revisionSum, healthProblems, cleanup: cleanupReport, loopDelay });
  console.log('');
  console.log(text);
  console.log('');
  const committed = upgrades.filter((u) => u.job?.state === 'SUCCEEDED').length;
  if (problems.length === 0) {
    console.log(green(bold(`PASS: 0 failed requests, 0 lost writes, ${committed}/${plan.upgrades} upgrades committed`)));
    return 0;
  }
  console.log(red(bold(`FAIL: ${problems.join('; ')}`)));
  if (daemonLog.trim()) console.error(`last lines from baton run:\n${daemonLog}`);
  return 1;
}

main().then(
  (code) => process.exit(code),
  async (err: unknown) => {
    if (ctx.stopping) return; // interrupted: the signal handler exits
    ctx.progress?.stop();
    console.error(red(`demo failed: ${(err as Error).message ?? String(err)}`));
    const r = await cleanup();
    console.error(`cleaned up: ${cleanupLine(r)}`);
    process.exit(1);
  },
);
