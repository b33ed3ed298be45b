/**
 * The kv load client (the one used by `npm run demo` and by test/kv-zero-loss.test.ts):
 * keep-alive client loops against fixtures/kv doing PUTs (new keys and overwrites),
 * GETs (checked against what this loop knows was acknowledged), and DELETEs (then GETs
 * expecting 404). Each loop owns its keys, so the expected state of every key is exact.
 * Every failure is counted by kind, once: a refused connection, a reset on a keep-alive
 * connection, a timeout, a non-2xx answer, a wrong answer (stale read, acknowledged key
 * missing, deleted key readable). A key whose write failed has an unknown state (the
 * write may have landed): later answers are not held against it until a write to it
 * succeeds, and the read-back skips it. Write acknowledgements are timed per server
 * pid, which gives the write blackout of each handoff (last write acked by the old
 * process → first acked by the new one).
 */
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { request } from './http.js';
import { LoadLoops } from './load-loops.js';

/** The failure classes a person cares about; `KvLoad.failures` has the exact kinds. */
export const FAILURE_CLASSES = ['refused', 'reset', 'timeout', 'non-2xx', 'wrong answer', 'other'] as const;
export type FailureClass = (typeof FAILURE_CLASSES)[number];

/**
 * Class of a failure kind as KvLoad counts it: an error code (ECONNREFUSED,
 * ECONNRESET, ...), `put_503`-style non-2xx answers, or a wrong answer.
 */
export function failureClass(kind: string): FailureClass {
  if (kind === 'ECONNREFUSED') return 'refused';
  if (kind === 'ECONNRESET' || kind === 'EPIPE' || kind === 'ECONNABORTED') return 'reset';
  if (kind === 'ETIMEDOUT') return 'timeout';
  if (/^(put|delete|get)_\d+$/.test(kind)) return 'non-2xx';
  if (kind === 'stale_read' || kind === 'acked_key_missing' || kind === 'deleted_key_readable') return 'wrong answer';
  return 'other';
}

export interface KvLoadOptions {
  conns: number;
  /** Share of operations that are DELETEs of a live key (default 0.1). */
  deleteShare?: number;
  /** Share of operations that are GETs (default 0.45); the rest are PUTs. */
  readShare?: number;
  /**
   * Pause between one connection's requests, in ms (default 0: back to back). A paced
   * load for tests where the load is a witness, not the subject: it keeps each
   * keep-alive connection busy through a handoff without taking the machine's CPU.
   */
  pauseMs?: number;
}

interface AckWindow {
  first: number;
  last: number;
  count: number;
}

export class KvLoad extends LoadLoops {
  /** Every key's acknowledged state: its value, or null once a DELETE of it was acknowledged. */
  readonly expected = new Map<string, string | null>();
  /** Keys whose last write failed (outcome unknown): not checked at the end. */
  readonly uncertain = new Set<string>();
  readonly ops = { puts: 0, overwrites: 0, gets: 0, getsMissing: 0, deletes: 0 };
  /** Acknowledged PUTs and DELETEs (each advances one shard revision by exactly 1). */
  ackedWrites = 0;
  readonly acksByPid = new Map<number, AckWindow>();
  private readonly latencies: number[] = [];
  private readonly deleteShare: number;
  private readonly readShare: number;
  private readonly pauseMs: number;

  constructor(
    private readonly port: number,
    opts: KvLoadOptions,
  ) {
    super();
    this.deleteShare = opts.deleteShare ?? 0.1;
    this.readShare = opts.readShare ?? 0.45;
    this.pauseMs = opts.pauseMs ?? 0;
    for (let i = 0; i < opts.conns; i++) this.loops.push(this.loop(i));
  }

  private async loop(id: number): Promise<void> {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const live: string[] = [];
    const deleted: string[] = [];
    let n = 0;
    while (this.running) {
      const r = Math.random();
      let op: 'put' | 'overwrite' | 'get' | 'getMissing' | 'delete';
      if (live.length === 0 || r >= this.readShare + this.deleteShare + 0.1) op = 'put';
      else if (r < this.deleteShare) op = 'delete';
      else if (r < this.deleteShare + 0.1) op = 'overwrite';
      else if (deleted.length > 0 && r < this.deleteShare + 0.1 + this.readShare * 0.2) op = 'getMissing';
      else op = 'get';
      const key =
        op === 'put' ? `c${id}-${n++}` : op === 'getMissing' ? deleted[Math.floor(Math.random() * deleted.length)]! : live[Math.floor(Math.random() * live.length)]!;
      const t0 = performance.now();
      try {
        if (op === 'put' || op === 'overwrite') {
          const value = `v-${key}-${n}-${Math.random().toString(36).slice(2, 10)}`;
          this.ops[op === 'put' ? 'puts' : 'overwrites']++;
          const res = await request(this.port, 'PUT', `/kv/${key}`, value, agent);
          if (res.status === 200) {
            this.acked(res.body);
            this.expected.set(key, value);
            this.uncertain.delete(key);
            if (op === 'put') live.push(key);
          } else {
            this.fail(`put_${res.status}`);
            this.uncertain.add(key);
          }
        } else if (op === 'delete') {
          this.ops.deletes++;
          const res = await request(this.port, 'DELETE', `/kv/${key}`, undefined, agent);
          if (res.status === 200 || (res.status === 404 && this.uncertain.has(key))) {
            // (A 404 is right for a key whose earlier DELETE failed on the way back but landed.)
            if (res.status === 200) this.acked(res.body);
            this.expected.set(key, null);
            this.uncertain.delete(key);
            live.splice(live.indexOf(key), 1);
            deleted.push(key);
          } else {
            this.fail(`delete_${res.status}`);
            this.uncertain.add(key);
          }
        } else {
          this.ops[op === 'get' ? 'gets' : 'getsMissing']++;
          const res = await request(this.port, 'GET', `/kv/${key}`, undefined, agent);
          const want = this.expected.get(key);
          if (this.uncertain.has(key)) {
            // Its last write failed, so either state is right; only an error answer is wrong.
            if (res.status !== 200 && res.status !== 404) this.fail(`get_${res.status}`);
          } else if (want === null) {
            if (res.status !== 404) this.fail(res.status === 200 ? 'deleted_key_readable' : `get_${res.status}`);
          } else if (res.status !== 200) {
            this.fail(res.status === 404 ? 'acked_key_missing' : `get_${res.status}`);
          } else if ((JSON.parse(res.body) as { value: string }).value !== want) {
            this.fail('stale_read');
          }
        }
      } catch (err) {
        this.fail((err as NodeJS.ErrnoException).code ?? 'error');
        if (op !== 'get' && op !== 'getMissing') this.uncertain.add(key);
      }
      this.requests++;
      this.latencies.push(performance.now() - t0);
      if (this.pauseMs > 0 && this.running) await new Promise((resolve) => setTimeout(resolve, this.pauseMs));
    }
    agent.destroy();
  }

  private acked(body: string): void {
    this.ackedWrites++;
    const pid = (JSON.parse(body) as { pid: number }).pid;
    const now = performance.now();
    const w = this.acksByPid.get(pid);
    if (w) {
      w.last = now;
      w.count++;
    } else {
      this.acksByPid.set(pid, { first: now, last: now, count: 1 });
    }
  }

  /** Failures per class (every class present, 0 when none). */
  failuresByClass(): Record<FailureClass, number> {
    const out = Object.fromEntries(FAILURE_CLASSES.map((c) => [c, 0])) as Record<FailureClass, number>;
    for (const [kind, n] of Object.entries(this.failures)) out[failureClass(kind)] += n;
    return out;
  }

  /** Keys whose last write failed, so their state is unknown and they are not verified. */
  get uncertainCount(): number {
    return this.uncertain.size;
  }

  /** Last write acknowledged by `oldPid` → first acknowledged by `newPid`, in ms (undefined if either acked none). */
  writeBlackout(oldPid: number, newPid: number): number | undefined {
    const a = this.acksByPid.get(oldPid);
    const b = this.acksByPid.get(newPid);
    return a && b ? b.first - a.last : undefined;
  }

  latencyPercentile(p: number): number {
    const s = [...this.latencies].sort((a, b) => a - b);
    return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! : 0;
  }

  /**
   * Reads back every key whose acknowledged state is known: a value must read back
   * exactly, a deleted key must be 404. Returns the keys that do not.
   */
  async verify(
    opts: { connections?: number; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<{ checked: number; values: number; deleted: number; lost: string[]; resurrected: string[] }> {
    const agent = new http.Agent({ keepAlive: true, maxSockets: opts.connections ?? 8 });
    const lost: string[] = [];
    const resurrected: string[] = [];
    const entries = [...this.expected].filter(([k]) => !this.uncertain.has(k));
    const batch = Math.max(64, (opts.connections ?? 8) * 8);
    for (let i = 0; i < entries.length; i += batch) {
      await Promise.all(
        entries.slice(i, i + batch).map(async ([key, want]) => {
          const r = await request(this.port, 'GET', `/kv/${key}`, undefined, agent);
          if (want === null) {
            if (r.status !== 404) resurrected.push(key);
          } else if (r.status !== 200 || (JSON.parse(r.body) as { value: string }).value !== want) {
            lost.push(key);
          }
        }),
      );
      opts.onProgress?.(Math.min(i + batch, entries.length), entries.length);
    }
    agent.destroy();
    const deleted = entries.filter(([, want]) => want === null).length;
    return { checked: entries.length, values: entries.length - deleted, deleted, lost, resurrected };
  }
}

export interface KvHealth {
  ok: boolean;
  pid: number;
  generation: number;
  role: string;
  revisions: Record<string, string>;
  keys: number;
  problems: string[];
}

/** /healthz of fixtures/kv (503 when unhealthy still has a body). */
export async function kvHealth(port: number): Promise<KvHealth> {
  const r = await request(port, 'GET', '/healthz');
  return JSON.parse(r.body) as KvHealth;
}
