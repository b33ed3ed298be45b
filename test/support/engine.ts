/**
 * Engine-test support: a keep-alive HTTP client that counts every failure honestly,
 * a read-back of acknowledged writes, and an orphan check by an env tag that every
 * process a test starts carries. (Temp dirs and polling: harness.ts.)
 */
import { randomUUID } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from '../../bench/lib/http.js';
import { LoadLoops } from '../../bench/lib/load-loops.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const PRIMITIVE = ['node', path.join(ROOT, 'dist/fixtures/primitive/app.js')];
export const SUPERVISOR_HOST = path.join(ROOT, 'dist/fixtures/supervisor-host.js');

/** The one request helper (bench/lib/http.ts), shared with the demo and the kv load. */
export { request, type HttpResult } from '../../bench/lib/http.js';

export async function healthz(port: number): Promise<{ pid: number; generation: number; revisions: Record<string, string> }> {
  const r = await request(port, 'GET', '/healthz');
  if (r.status !== 200) throw new Error(`healthz ${r.status}`);
  return JSON.parse(r.body);
}

/**
 * Keep-alive load: `conns` loops, each with its own single-socket agent, doing PUTs
 * (and GETs of what it wrote). Every error is counted by kind; a reset on a reused
 * connection is a failure like any other.
 */
export class Load extends LoadLoops {
  readonly acked = new Map<string, string>();

  constructor(
    private readonly port: number,
    conns: number,
  ) {
    super();
    for (let i = 0; i < conns; i++) this.loops.push(this.loop(i));
  }

  private async loop(id: number): Promise<void> {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    let n = 0;
    while (this.running) {
      const key = `c${id}-${n++}`;
      const value = `v-${key}-${randomUUID().slice(0, 8)}`;
      try {
        const put = await request(this.port, 'PUT', `/kv/${key}`, value, agent);
        this.requests++;
        if (put.status !== 200) this.fail(`status_${put.status}`);
        else this.acked.set(key, value);
        const get = await request(this.port, 'GET', `/kv/${key}`, undefined, agent);
        this.requests++;
        if (get.status !== 200 || (put.status === 200 && JSON.parse(get.body).value !== value)) this.fail(`get_${get.status}`);
      } catch (err) {
        this.requests++;
        this.fail((err as NodeJS.ErrnoException).code ?? 'error');
      }
    }
    agent.destroy();
  }
}

/** Reads back every acknowledged write; returns the keys that are missing or wrong. */
export async function lostWrites(port: number, acked: Map<string, string>): Promise<string[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  const lost: string[] = [];
  const entries = [...acked];
  for (let i = 0; i < entries.length; i += 64) {
    await Promise.all(
      entries.slice(i, i + 64).map(async ([key, value]) => {
        const r = await request(port, 'GET', `/kv/${key}`, undefined, agent);
        if (r.status !== 200 || JSON.parse(r.body).value !== value) lost.push(key);
      }),
    );
  }
  agent.destroy();
  return lost;
}

/** The orphan check by env tag: one implementation, shared with `baton/testing`. */
export { killTagged, newTag, taggedPids } from '../../src/testing/procs.js';

export function fdCount(pid: number | 'self' = 'self'): Promise<number> {
  return readdir(`/proc/${pid}/fd`).then((l) => l.length);
}

/** "spawning=28 hello=560 …": mean milliseconds per phase over a run of handoffs. */
export function phaseMeans(results: readonly { phases: readonly { phase: string; ms: number }[] }[]): string {
  const totals: Record<string, number> = {};
  for (const r of results) for (const p of r.phases) totals[p.phase] = (totals[p.phase] ?? 0) + p.ms;
  return Object.entries(totals)
    .map(([phase, ms]) => `${phase}=${Math.round(ms / Math.max(results.length, 1))}`)
    .join(' ');
}
