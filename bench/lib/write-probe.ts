/**
 * Per-connection write stall: `loops` keep-alive connections that only PUT to
 * fixtures/kv, each remembering, per serving pid, the first and last write it had
 * acknowledged. For a handoff old → new, a connection's stall is its last ack from
 * the old process → its first ack from the new one: what that client waited.
 * (The write blackout — last ack by the old process on ANY connection → first by the
 * new one — is shorter whenever one connection is still answered late in the drain
 * while the others already wait in the listen backlog.)
 */
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { request } from './http.js';

export class WriteProbe {
  private running = true;
  private readonly loops: Promise<void>[];
  private readonly acks: Map<number, { first: number; last: number }>[] = [];
  failures = 0;

  constructor(
    private readonly port: number,
    loops = 4,
  ) {
    this.loops = Array.from({ length: loops }, (_, i) => this.loop(i));
  }

  private async loop(i: number): Promise<void> {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const acks = new Map<number, { first: number; last: number }>();
    this.acks.push(acks);
    let n = 0;
    while (this.running) {
      try {
        const r = await request(this.port, 'PUT', `/kv/wp${i}-${n++}`, 'x'.repeat(32), agent);
        if (r.status !== 200) {
          this.failures++;
          continue;
        }
        const pid = (JSON.parse(r.body) as { pid: number }).pid;
        const now = performance.timeOrigin + performance.now();
        const w = acks.get(pid);
        if (w) w.last = now;
        else acks.set(pid, { first: now, last: now });
      } catch {
        this.failures++;
      }
    }
    agent.destroy();
  }

  /** Each connection's stall over the handoff old → new, ms (connections that saw both). */
  stalls(oldPid: number, newPid: number): number[] {
    const out: number[] = [];
    for (const acks of this.acks) {
      const a = acks.get(oldPid);
      const b = acks.get(newPid);
      if (a && b) out.push(b.first - a.last);
    }
    return out;
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }
}
