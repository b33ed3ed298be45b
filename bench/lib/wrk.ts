/**
 * wrk 4.1 (the Debian package) as the bench's independent load generator, driven by
 * bench/lib/latency.lua: its own summary and errors (from the script's done() hook) and
 * one record per request (start, latency, status, answering pid), read back here.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { exited, ROOT, type Scope } from './scope.js';

export const WRK_SCRIPT = path.join(ROOT, 'bench/lib/latency.lua');

export interface WrkSummary {
  durationUs: number;
  requests: number;
  bytes: number;
  errors: { connect: number; read: number; write: number; status: number; timeout: number };
  /** wrk's own latency figures (µs), corrected for coordinated omission as wrk 4 does (see correctedPercentiles). */
  latencyUs: { min: number; max: number; mean: number; stdev: number; percentiles: Record<string, number> };
  records: number;
  unanswered: number;
}

/** Requests of one wrk run, column-wise: epoch ms (µs resolution), latency ms (-1: no answer). */
export interface Records {
  conn: Int32Array;
  start: Float64Array;
  latency: Float64Array;
  status: Int32Array;
  pid: Int32Array;
  /** 1: a PUT, 0: a GET /healthz. */
  put: Uint8Array;
  length: number;
}

export function wrkVersion(): string | undefined {
  try {
    return /wrk (\S+)/.exec(execFileSync('wrk', ['-v'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }))?.[1];
  } catch (err) {
    // `wrk -v` prints its version and usage, and exits 1.
    const out = String((err as { stdout?: string }).stdout ?? '');
    return /wrk (\S+)/.exec(out)?.[1];
  }
}

/**
 * Runs wrk for `seconds` against http://127.0.0.1:port/ with `conns` connections on
 * `threads` threads; resolves with its summary and every request's record.
 */
export async function runWrk(scope: Scope, port: number, opts: { threads: number; conns: number; seconds: number; recordsFile: string }): Promise<{ summary: WrkSummary; records: Records }> {
  const child = scope.spawn('wrk', ['-t', String(opts.threads), '-c', String(opts.conns), '-d', `${opts.seconds}s`, '--timeout', '10s', '--latency', '-s', WRK_SCRIPT, `http://127.0.0.1:${port}/`], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: scope.env({ WRK_RECORDS: opts.recordsFile }),
  });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  const { code, signal } = await exited(child);
  const line = out.split('\n').find((l) => l.startsWith('WRK_JSON '));
  if (code !== 0 || !line) throw new Error(`wrk exited ${code ?? signal}: ${(err || out).slice(-1500)}`);
  return { summary: JSON.parse(line.slice('WRK_JSON '.length)) as WrkSummary, records: readRecords(opts.recordsFile) };
}

function readRecords(file: string): Records {
  const lines = readFileSync(file, 'latin1').split('\n');
  const n = lines.length;
  const r: Records = { conn: new Int32Array(n), start: new Float64Array(n), latency: new Float64Array(n), status: new Int32Array(n), pid: new Int32Array(n), put: new Uint8Array(n), length: 0 };
  for (const l of lines) {
    if (!l) continue;
    const [c, s, lat, st, pid, put] = l.split(' ');
    const i = r.length++;
    r.conn[i] = Number(c);
    r.start[i] = Number(s) / 1000;
    r.latency[i] = Number(lat) < 0 ? -1 : Number(lat) / 1000;
    r.status[i] = Number(st);
    r.pid[i] = Number(pid);
    r.put[i] = Number(put);
  }
  return r;
}

/**
 * Percentiles (ms) of answered latencies after wrk 4's correction for coordinated
 * omission (stats_correct in wrk's stats.c), so figures over several wrk processes can
 * be read like `wrk --latency`: with `expected` = run time / (requests per
 * connection), every sample of n ≥ 2·expected µs adds one synthetic sample at each of
 * n − expected, n − 2·expected, … while above expected (the requests a connection
 * would have sent meanwhile had it not waited).
 */
export function correctedPercentiles(latenciesUs: number[], runUs: number, conns: number, ps: number[]): number[] {
  const expected = Math.floor(runUs / Math.max(1, Math.floor(latenciesUs.length / conns)));
  const all: number[] = [];
  for (const v of latenciesUs) {
    all.push(v);
    if (expected > 0 && v >= 2 * expected) for (let m = v - expected; m > expected; m -= expected) all.push(m);
  }
  const s = Float64Array.from(all).sort();
  // wrk's rank: round(p/100 · count + 0.5), 1-based.
  return ps.map((p) => (s.length ? s[Math.min(s.length - 1, Math.max(0, Math.round((p / 100) * s.length + 0.5) - 1))]! / 1000 : NaN));
}
