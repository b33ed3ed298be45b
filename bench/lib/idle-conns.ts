/**
 * Holds `target` idle HTTP keep-alive connections to 127.0.0.1:port: each sends one
 * `GET /kv/__idle` (a 404 from fixtures/kv), reads the answer, then stays open and
 * silent. A connection the server ends (a drain, a keep-alive timeout) is opened again
 * after a random delay in [reconnectMinMs, reconnectMaxMs] — to whoever accepts by
 * then — so the count recovers after a handoff without a reconnect storm inside it.
 * Bounded: at most `concurrency` connects in flight; stop() destroys everything.
 */
import net from 'node:net';

export class IdleConns {
  private running = true;
  private readonly sockets = new Set<net.Socket>();
  /** Connections that got their answer and are idle now. */
  open = 0;
  reconnects = 0;
  readonly errors: Record<string, number> = {};
  private connecting = 0;
  private queue = 0;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(
    private readonly port: number,
    readonly target: number,
    private readonly opts: { concurrency?: number; reconnectMinMs?: number; reconnectMaxMs?: number } = {},
  ) {
    this.queue = target;
    this.pump();
  }

  private get concurrency(): number {
    return this.opts.concurrency ?? 256;
  }

  private pump(): void {
    while (this.running && this.queue > 0 && this.connecting < this.concurrency) {
      this.queue--;
      this.connecting++;
      this.connect();
    }
  }

  private connect(): void {
    const s = net.connect({ host: '127.0.0.1', port: this.port });
    this.sockets.add(s);
    let answered = false;
    let settled = false;
    let got = '';
    const settle = () => {
      if (settled) return;
      settled = true;
      this.connecting--;
      this.pump();
    };
    s.once('connect', () => s.write('GET /kv/__idle HTTP/1.1\r\nHost: bench\r\n\r\n'));
    s.on('data', (c: Buffer) => {
      if (answered) return;
      got += c.toString('latin1');
      const head = got.indexOf('\r\n\r\n');
      if (head < 0) return;
      const len = Number(/content-length:\s*(\d+)/i.exec(got.slice(0, head))?.[1] ?? 0);
      if (got.length - head - 4 < len) return;
      answered = true;
      this.open++;
      settle();
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      this.errors[e.code ?? e.message] = (this.errors[e.code ?? e.message] ?? 0) + 1;
    });
    s.once('close', () => {
      this.sockets.delete(s);
      if (answered) this.open--;
      settle();
      if (!this.running) return;
      const min = this.opts.reconnectMinMs ?? 500;
      const max = this.opts.reconnectMaxMs ?? 2_500;
      const t = setTimeout(() => {
        this.timers.delete(t);
        this.reconnects++;
        this.queue++;
        this.pump();
      }, min + Math.random() * (max - min));
      this.timers.add(t);
    });
  }

  /** Resolves once all `target` connections are open and idle (throws after timeoutMs). */
  async allOpen(timeoutMs = 30_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (this.open < this.target) {
      if (Date.now() > until) throw new Error(`only ${this.open} of ${this.target} idle connections open after ${timeoutMs} ms (errors: ${JSON.stringify(this.errors)})`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  stop(): void {
    this.running = false;
    for (const t of this.timers) clearTimeout(t);
    for (const s of this.sockets) s.destroy();
  }
}
