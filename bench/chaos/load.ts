/** The chaos runner's keep-alive load against fixtures/kv. */
import http from 'node:http';
import { request, type HttpError } from '../lib/http.js';
import { LoadLoops } from '../lib/load-loops.js';
import { Rng } from '../lib/prng.js';
import { sleep } from './util.js';

/**
 * Keep-alive load like bench/lib/kv-load.ts, but exact under failures: a key one of whose
 * writes (PUT or DELETE) got no answer is retired — never written or checked again —
 * since that write may still be applied later (kv-load keeps such keys and checks a GET
 * of a key whose DELETE failed, which under chaos reports a 404 as a lost write). A
 * wrong answer about a key whose every write was acknowledged is a violation. Seeded,
 * so the load's own choices replay too. Every failure is recorded with the server pid
 * that held its connection (kv's `x-baton-pid`), for the runner to attribute.
 */
export const REQUEST_TIMEOUT_MS = 10_000;

export class ChaosLoad extends LoadLoops {
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
    this.recordFailures = true;
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
          const res = await request(this.port, 'PUT', `/kv/${key}`, value, agent, REQUEST_TIMEOUT_MS);
          this.answered(res.status);
          if (res.status === 200) {
            this.acked++;
            this.expected.set(key, value);
            if (op === 'put') live.push(key);
          } else {
            this.fail(`put_${res.status}`, { pid: res.pid, what: `PUT /kv/${key}` });
            retire(key);
          }
        } else if (op === 'delete') {
          const res = await request(this.port, 'DELETE', `/kv/${key}`, undefined, agent, REQUEST_TIMEOUT_MS);
          this.answered(res.status);
          if (res.status === 200) {
            this.acked++;
            this.expected.set(key, null);
            live.splice(live.indexOf(key), 1);
            deleted.push(key);
          } else {
            if (res.status === 404) this.wrongAnswer(`DELETE ${key}: 404, but ${JSON.stringify(this.expected.get(key))} was acknowledged`);
            else this.fail(`delete_${res.status}`, { pid: res.pid, what: `DELETE /kv/${key}` });
            retire(key);
          }
        } else {
          const res = await request(this.port, 'GET', `/kv/${key}`, undefined, agent, REQUEST_TIMEOUT_MS);
          this.answered(res.status);
          this.check(key, res.status, res.body, res.pid);
        }
      } catch (err) {
        const e = err as HttpError;
        const method = op === 'put' || op === 'overwrite' ? 'PUT' : op === 'delete' ? 'DELETE' : 'GET';
        this.fail(e.code ?? 'error', { pid: e.serverPid, reused: e.reusedSocket, what: `${method} /kv/${key}` });
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
  private check(key: string, status: number, body: string, pid: number | undefined): void {
    if (this.uncertain.has(key)) return;
    const want = this.expected.get(key);
    if (want === undefined) return;
    if (status !== 200 && status !== 404) return this.fail(`get_${status}`, { pid, what: `GET /kv/${key}` });
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
