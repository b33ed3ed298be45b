import type { MessagePort } from 'node:worker_threads';
import type { Worker } from 'node:worker_threads';

/**
 * Request/reply over a worker_threads port, in both directions. The baton worker
 * asks the app's main thread to drain/seal/resume; replies come back whenever the
 * main thread gets to them (it may be blocked for seconds; the worker keeps going).
 */
type Port = MessagePort | Worker;

interface Call { kind: 'call'; id: number; op: string; arg: unknown }
interface Reply { kind: 'reply'; id: number; ok: boolean; value?: unknown; error?: { message: string; code?: string } }

export type Handler = (arg: any) => unknown;

export class Rpc {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  constructor(
    private readonly port: Port,
    private readonly handlers: Record<string, Handler>,
  ) {
    port.on('message', (m: Call | Reply) => void this.onMessage(m));
  }

  call<T = unknown>(op: string, arg?: unknown): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.port.postMessage({ kind: 'call', id, op, arg } satisfies Call);
    });
  }

  /** One-way notification (no reply expected). */
  notify(op: string, arg?: unknown): void {
    this.port.postMessage({ kind: 'call', id: 0, op, arg } satisfies Call);
  }

  private async onMessage(m: Call | Reply): Promise<void> {
    if (m.kind === 'reply') {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.value);
      else p.reject(Object.assign(new Error(m.error?.message ?? 'failed'), { code: m.error?.code }));
      return;
    }
    const handler = this.handlers[m.op];
    let reply: Reply;
    try {
      if (!handler) throw new Error(`no handler for ${m.op}`);
      reply = { kind: 'reply', id: m.id, ok: true, value: await handler(m.arg) };
    } catch (err) {
      const e = err as { message?: string; code?: string };
      reply = { kind: 'reply', id: m.id, ok: false, error: { message: e?.message ?? String(err), code: e?.code } };
    }
    if (m.id !== 0) this.port.postMessage(reply);
  }
}
