/**
 * Fuzzer for baton's three input surfaces (issue 7):
 *
 *   incumbent  the control socket of a serving incumbent (a real `baton run` with
 *              fixtures/kv): we connect to the supervisor's control path as a client,
 *              like test/support/rogue-supervisor.ts, before or after the handshake;
 *   successor  fixtures/primitive started as a successor by a fake supervisor (this
 *              process, src/supervisor/generation.ts spawnApp: listeners + a socketpair control fd);
 *   admin      the admin socket of that same `baton run` (HTTP over a unix socket),
 *              every route but the actions (upgrade, stop, maintenance runs).
 *
 *   npm run fuzz -- --inputs 100000 --seed 1
 *
 * Inputs (seeded, so a seed replays the same inputs): golden vectors
 * (protocol/vectors/*.json) as they are and mutated (bit flips, interesting bytes,
 * inserts, deletes, duplicated ranges, length/version rewrites), schema-shaped messages
 * with wrong kinds / missing / extra / duplicate fields, random msgpack values (deep
 * nesting, ext types, bad UTF-8, non-str keys), random bytes, oversize and undersize
 * length fields, valid frames in invalid orders; for the admin socket, HTTP requests
 * (templates, mutated, pipelined, oversize headers and bodies, chunked bodies, non-HTTP
 * bytes, JSON bodies nested up to 6,000 deep, paths up to 15 KB, long header values).
 * Every input is written in pieces split at random points. After the fuzz, rounds of slow
 * clients (idle, or trickling a request that never ends) hold every listener the
 * supervisor serves — the admin socket, the TCP admin API, the metrics endpoint — 40 at a
 * time: each must be closed by the server within its bound while real requests on the
 * same listener are all answered (issue #21).
 *
 * Oracle. For the control sockets a model of the receiver (the reference FrameDecoder
 * plus the incumbent/successor transition rules) predicts each input's answer: nothing
 * (a Heartbeat, a frame the state accepts), a reply (Resumed), or an Error frame with a
 * named code followed by the close (or just the close, for a stream cut inside a frame
 * or an Abort). The peer must answer exactly that within a bound. Inputs the model says
 * would really act (PrepareHandoff naming the session, Shutdown, Begin, any message a
 * newer engine accepts that the model does not know) are drawn again: they are not bad
 * input, and would stop the service under test. For the admin socket: an HTTP answer or
 * a close within a bound; templates must get their known status; no 5xx; a POST to
 * /v1/upgrade, /v1/stop or /v1/jobs is never sent.
 *
 * Throughout: the incumbent keeps its pid, holds the data-dir lock and answers HTTP
 * (checked every 2 s, with a write read back), `baton run` stays up, every successor
 * exits with code 0 once it lost its supervisor, and the RSS of the incumbent and the
 * supervisor after the run stays within a bound of what it was after warm-up.
 * Exit 1 on any violation, printing the seed and the input (hex).
 *
 * Layout: this file is the entry (options, the run loop, the service and RSS checks, the
 * summary); bench/fuzz/ has the input generators (msgpack.ts, control-inputs.ts,
 * admin-inputs.ts), the oracle (oracle.ts), a control connection checked against it
 * (control.ts), the targets — `baton run` with its service checks (daemon.ts), the
 * incumbent's control socket (incumbent.ts), a successor's channel (successor.ts), the
 * admin socket (admin.ts), slow clients on the admin socket, the TCP admin API and the
 * metrics endpoint (slow-clients.ts) — and small helpers (util.ts).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { adminRequest } from '../src/daemon/admin.js';
import { isAlive } from '../src/os/proc.js';
import { adminOnce, fuzzAdmin } from './fuzz/admin.js';
import { adminTemplate } from './fuzz/admin-inputs.js';
import { loadVectors } from './fuzz/control-inputs.js';
import { Daemon } from './fuzz/daemon.js';
import { fuzzIncumbent } from './fuzz/incumbent.js';
import { slowClients, type SlowReport } from './fuzz/slow-clients.js';
import { fuzzSuccessors, SuccessorFactory } from './fuzz/successor.js';
import { newOutcomes, rssKb, sleep, Violation } from './fuzz/util.js';
import { Rng } from './lib/prng.js';

export { loadVectors, type ControlKind, type Vector } from './fuzz/control-inputs.js';
export { hitsKnownAdminBug, judge, reachesAction, type Side, type Verdict } from './fuzz/oracle.js';

interface FuzzOptions {
  inputs: number;
  seed: number;
  shares: { incumbent: number; successor: number; admin: number };
  /** As given (for the replay hint), or undefined for the default. */
  sharesArg: string | undefined;
  keep: boolean;
  /** --hold-back-known: accepted so older command lines still run; no known bug is open, nothing is held back. */
  holdBackKnown: boolean;
  /** Rounds of slow clients (40 per listener each) after the fuzz. */
  slowRounds: number;
  summaryFile?: string | undefined;
}

function parseOptions(argv: string[]): FuzzOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      inputs: { type: 'string', default: '10000' },
      seed: { type: 'string' },
      shares: { type: 'string' },
      keep: { type: 'boolean', default: false },
      'hold-back-known': { type: 'boolean', default: false },
      'slow-rounds': { type: 'string', default: '2' },
      summary: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log(`npm run fuzz -- [--inputs N] [--seed S] [--shares I,S,A] [--hold-back-known] [--keep] [--summary FILE]

Fuzzes the incumbent's control socket, a successor's control channel and the admin socket.
  --inputs N      inputs in all (default 10000)
  --seed S        PRNG seed (default: random, printed)
  --shares I,S,A  percentage of inputs for incumbent, successor, admin (default 55,15,30)
  --hold-back-known  holds nothing back: no known bug is open (B3, the admin request target
                  that killed baton run, which it used to hold back, is fixed; those inputs are sent)
  --slow-rounds N rounds of 40 slow clients per supervisor listener (admin socket, admin TCP,
                  metrics) after the fuzz (default 2)
  --keep          keep the temp dirs (always kept after a violation)
  --summary FILE  write the figures as JSON`);
    process.exit(0);
  }
  const shares = (values.shares ?? '55,15,30').split(',').map(Number);
  const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
  const inputs = Number(values.inputs);
  if (!Number.isInteger(inputs) || inputs < 3 || !Number.isInteger(seed) || shares.length !== 3 || shares.some((s) => !Number.isFinite(s) || s < 0)) {
    console.error('fuzz: bad arguments (see --help)');
    process.exit(2);
  }
  const total = shares.reduce((a, b) => a + b, 0);
  return {
    inputs,
    seed,
    shares: { incumbent: shares[0]! / total, successor: shares[1]! / total, admin: shares[2]! / total },
    sharesArg: values.shares,
    keep: values.keep,
    holdBackKnown: values['hold-back-known'],
    slowRounds: Number(values['slow-rounds']),
    summaryFile: values.summary,
  };
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const rng = new Rng(opts.seed);
  const vectors = loadVectors();
  const budget = {
    incumbent: Math.round(opts.inputs * opts.shares.incumbent),
    successor: Math.round(opts.inputs * opts.shares.successor),
    admin: 0,
  };
  budget.admin = opts.inputs - budget.incumbent - budget.successor;
  console.log(`fuzz: seed ${opts.seed}, ${opts.inputs} inputs (incumbent ${budget.incumbent}, successor ${budget.successor}, admin ${budget.admin})${opts.holdBackKnown ? ' (--hold-back-known: no known bug is open, nothing held back)' : ''}`);
  const t0 = Date.now();
  const daemon = new Daemon();
  const successors = new SuccessorFactory();
  const out = { incumbent: newOutcomes(), successor: newOutcomes(), admin: newOutcomes() };
  const slow: Record<string, SlowReport> = {};
  const rss: Record<string, { before: number; peak: number; after: number }> = {};
  let violation: { target: string; message: string; input?: string } | undefined;
  let checks = 0;
  let verifiedWrites = 0;
  const durations: Record<string, number> = {};
  try {
    await daemon.start();
    await daemon.checkServing();
    const pids = { incumbent: daemon.incumbentPid, supervisor: daemon.child.pid! };
    // Warm-up (a first handful of sessions), then the baseline RSS.
    const warm = newOutcomes();
    await fuzzIncumbent(daemon, rng.fork(), vectors, 200, warm, async () => undefined);
    for (let i = 0; i < 50; i++) await adminOnce(daemon.adminSock, rng, adminTemplate(rng));
    for (const [name, pid] of Object.entries(pids)) rss[name] = { before: rssKb(pid), peak: 0, after: 0 };
    const sample = (): void => {
      for (const [name, pid] of Object.entries(pids)) if (isAlive(pid)) rss[name]!.peak = Math.max(rss[name]!.peak, rssKb(pid));
    };
    let lastCheck = Date.now();
    let progressAt = Date.now();
    const tick = async (): Promise<void> => {
      if (Date.now() - lastCheck < 2_000) return;
      lastCheck = Date.now();
      sample();
      await daemon.checkServing();
      checks++;
      if (Date.now() - progressAt > 15_000) {
        progressAt = Date.now();
        const n = out.incumbent.inputs + out.successor.inputs + out.admin.inputs;
        console.log(`  ${((Date.now() - t0) / 1000).toFixed(0)} s: ${n} inputs (incumbent ${out.incumbent.inputs}, successor ${out.successor.inputs}, admin ${out.admin.inputs}); RSS incumbent ${rssKb(pids.incumbent)} kB, supervisor ${rssKb(pids.supervisor)} kB`);
      }
    };
    let running = true;
    const checker = (async () => {
      while (running) {
        await tick();
        await sleep(250);
      }
    })();
    const timed = async (name: string, p: Promise<void>): Promise<void> => {
      const s = Date.now();
      try {
        await p;
      } catch (err) {
        if (err instanceof Violation && !violation) violation = { target: name, message: err.message, ...(err.input && { input: err.input.toString('hex') }) };
        throw err;
      } finally {
        durations[name] = Date.now() - s;
      }
    };
    try {
      await Promise.all([
        timed('incumbent', fuzzIncumbent(daemon, rng.fork(), vectors, budget.incumbent, out.incumbent, tick)),
        timed('successor', fuzzSuccessors(successors, rng.fork(), vectors, budget.successor, out.successor, 2)),
        timed('admin', fuzzAdmin(daemon, rng.fork(), vectors, budget.admin, out.admin, 8)),
      ]);
    } finally {
      running = false;
      await checker;
    }
    // Slow clients on every listener the supervisor serves, after the fuzz (they would
    // compete with its admin connections for the same slots).
    for (let round = 0; round < opts.slowRounds; round++) await timed('slow', slowClients(daemon, rng.fork(), slow, 40));
    await daemon.checkServing();
    checks++;
    sample();
    await sleep(1_000); // let the last sessions finish
    for (const [name, pid] of Object.entries(pids)) rss[name]!.after = rssKb(pid);
    verifiedWrites = await daemon.verify();
    const status = await adminRequest(daemon.adminSock, 'GET', '/v1/history?limit=100', undefined, { timeoutMs: 5_000 });
    const jobs = (status.body.jobs as { trigger: string }[] | undefined) ?? [];
    if (jobs.some((j) => j.trigger !== 'cold-start')) throw new Violation(`the admin history shows jobs other than the cold start: ${JSON.stringify(jobs.map((j) => j.trigger))}`);
    for (const [name, r] of Object.entries(rss)) {
      // Bounded memory: within 64 MiB (and 50 %) of the post-warm-up baseline.
      if (r.after > r.before * 1.5 + 64 * 1024) throw new Violation(`${name} RSS grew from ${r.before} kB to ${r.after} kB`);
    }
  } catch (err) {
    if (!(err instanceof Violation)) throw err;
    violation ??= { target: 'service', message: err.message, ...(err.input && { input: err.input.toString('hex') }) };
  } finally {
    if (violation && daemon.child && (daemon.child.exitCode !== null || daemon.child.signalCode !== null)) {
      // The daemon died: that is the finding; its log says why.
      const tail = readFileSync(daemon.logFile, 'utf8').trim().split('\n').slice(-12).join('\n    ');
      violation.message += `\n  baton run exited (${daemon.child.exitCode ?? daemon.child.signalCode}); the end of ${daemon.logFile}:\n    ${tail}`;
    }
    await daemon.stop(opts.keep || violation !== undefined);
    const left = await successors.close(opts.keep || violation !== undefined);
    if (left.length && !violation) violation = { target: 'successor', message: `successor processes left behind: ${left.join(', ')}` };
  }
  const durationMs = Date.now() - t0;
  const total = out.incumbent.inputs + out.successor.inputs + out.admin.inputs;
  const summary = {
    seed: opts.seed,
    inputs: total,
    durationMs,
    targets: Object.fromEntries(
      Object.entries(out).map(([k, o]) => [k, { ...o, ms: durations[k] ?? 0, byAnswer: sortDesc(o.byAnswer), byKind: sortDesc(o.byKind) }]),
    ),
    successorExits: successors.exits,
    serviceChecks: checks,
    slowClients: slow,
    verifiedWrites,
    rssKb: rss,
    violations: violation ? [violation] : [],
  };
  if (opts.summaryFile) writeFileSync(opts.summaryFile, `${JSON.stringify(summary, null, 2)}\n`);
  console.log('');
  console.log(`fuzz summary: seed ${opts.seed}, ${total} inputs in ${(durationMs / 1000).toFixed(1)} s`);
  for (const [name, o] of Object.entries(out)) {
    console.log(
      `  ${name.padEnd(9)} ${o.inputs} inputs on ${o.connections} connections in ${((durations[name] ?? 0) / 1000).toFixed(1)} s (${o.redrawn} redrawn${o.busyRetries ? `, ${o.busyRetries} E_BUSY retries` : ''})`,
    );
    console.log(`            answers: ${Object.entries(sortDesc(o.byAnswer)).map(([k, n]) => `${k}=${n}`).join(', ')}`);
    console.log(`            inputs:  ${Object.entries(sortDesc(o.byKind)).map(([k, n]) => `${k}=${n}`).join(', ')}`);
  }
  console.log(`  successor exits: ${JSON.stringify(successors.exits)}`);
  for (const [name, r] of Object.entries(slow)) console.log(`  slow clients on ${name}: ${r.closedByServer}/${r.clients} closed by the server (longest ${r.maxOpenMs} ms), ${r.realRequests - r.realFailures}/${r.realRequests} real requests answered meanwhile`);
  console.log(`  service: ${checks} checks (same incumbent pid, lock held, /healthz, a write), ${verifiedWrites} writes read back`);
  for (const [name, r] of Object.entries(rss)) console.log(`  RSS ${name}: ${r.before} kB after warm-up, peak ${r.peak} kB, ${r.after} kB at the end`);
  if (violation) {
    console.log(`  VIOLATION (${violation.target}): ${violation.message}`);
    if (violation.input) console.log(`  input (hex): ${violation.input.slice(0, 4000)}${violation.input.length > 4000 ? '…' : ''}`);
    console.log(`  replay: npm run fuzz -- --seed ${opts.seed} --inputs ${opts.inputs}${opts.sharesArg ? ` --shares ${opts.sharesArg}` : ''}${opts.holdBackKnown ? ' --hold-back-known' : ''} (the inputs replay; which one fails first can vary: the three targets run concurrently)`);
    process.exit(1);
  }
  console.log('  violations: 0');
}

function sortDesc(rec: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(rec).sort((a, b) => b[1] - a[1]));
}

const isMain = process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  main().catch((err: unknown) => {
    console.error(`fuzz: ${(err as Error).stack ?? String(err)}`);
    process.exit(2);
  });
}
