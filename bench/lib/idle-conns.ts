/**
 * Holds `target` idle HTTP keep-alive connections to 127.0.0.1:port: each sends one
 * `GET /kv/__idle` (a 404 from fixtures/kv), reads the answer, then stays open and
 * silent. A connection the server ends (a drain, a keep-alive timeout) is opened again
 * after a random delay in [reconnectMinMs, reconnectMaxMs] — to whoever accepts by
 * then — so the count recovers after a handoff without a reconnect storm inside it.
 * Bounded: at most `concurrency` connects in flight; stop() destroys everything.
 * IdleConnsProcess runs it in a child process of its own.
 */
import { fork, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { exited, type Scope } from './scope.js';

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

interface HolderStatus {
  open: number;
  reconnects: number;
  errors: Record<string, number>;
}

/**
 * The same holder in a child process of its own, so thousands of sockets opening and
 * closing do not delay the event loop of the load client whose timings we report.
 * It speaks IPC: `{cmd:'status'}` → HolderStatus, `{cmd:'stop'}` → exits.
 */
export class IdleConnsProcess {
  private readonly child: ChildProcess;
  private last: HolderStatus = { open: 0, reconnects: 0, errors: {} };
  private waiting: ((s: HolderStatus) => void)[] = [];

  constructor(
    scope: Scope,
    port: number,
    readonly target: number,
  ) {
    this.child = fork(fileURLToPath(import.meta.url), [String(port), String(target)], {
      env: scope.env(),
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    scope.onClose(() => this.stop());
    this.child.on('message', (m: HolderStatus) => {
      this.last = m;
      for (const w of this.waiting.splice(0)) w(m);
    });
  }

  status(): Promise<HolderStatus> {
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      this.child.send({ cmd: 'status' });
    });
  }

  get reconnects(): number {
    return this.last.reconnects;
  }

  async allOpen(timeoutMs = 30_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`idle-connection holder exited (${this.child.exitCode ?? this.child.signalCode})`);
      const s = await this.status();
      if (s.open >= this.target) return;
      if (Date.now() > until) throw new Error(`only ${s.open} of ${this.target} idle connections open after ${timeoutMs} ms (errors: ${JSON.stringify(s.errors)})`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.send({ cmd: 'stop' });
    const t = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await exited(this.child);
    clearTimeout(t);
  }
}

// Child-process mode: node idle-conns.js PORT COUNT
if (process.argv[1] === fileURLToPath(import.meta.url) && process.send) {
  const holder = new IdleConns(Number(process.argv[2]), Number(process.argv[3]));
  process.on('message', (m: { cmd: string }) => {
    if (m.cmd === 'status') process.send!({ open: holder.open, reconnects: holder.reconnects, errors: holder.errors });
    if (m.cmd === 'stop') {
      holder.stop();
      process.exit(0);
    }
  });
  process.on('disconnect', () => {
    holder.stop();
    process.exit(0);
  });
}
