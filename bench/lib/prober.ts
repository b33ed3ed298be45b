/**
 * "Is anybody serving?" — every `everyMs` a NEW connection sends one
 * `GET /probe` with `Connection: close` and waits for the status line (any status
 * counts as an answer). From the
 * outcomes:
 *   - refused window: a run of probes that failed to connect or were reset (nothing
 *     listening, or a listener that died), from the first failed probe to the next
 *     probe that was answered;
 *   - no-answer gap: the longest time in which no probe got an answer at all (nothing
 *     listening, or a listener nobody accepts on: connections wait in the backlog).
 * Bounded: at most `maxInFlight` probes open at once (further ticks are counted as
 * skipped), each gives up after `timeoutMs`.
 */
import { fork, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { exited, type Scope } from './scope.js';

interface Probe {
  start: number;
  end: number;
  ok: boolean;
  err?: string;
}

export interface ProbeReport {
  probes: number;
  answered: number;
  failed: Record<string, number>;
  skipped: number;
  /** Longest run of refused/reset probes, ms (0 if none). */
  longestRefusedMs: number;
  /** Longest time without any answer, ms. */
  longestNoAnswerMs: number;
}

export class Prober {
  private readonly probes: Probe[] = [];
  private timer: NodeJS.Timeout;
  private inFlight = 0;
  private skipped = 0;
  private readonly pending = new Set<Promise<void>>();
  /** Called once, when the first probe is answered. */
  onFirstAnswer: (() => void) | undefined;

  constructor(
    private readonly port: number,
    everyMs = 5,
    private readonly timeoutMs = 10_000,
    private readonly maxInFlight = 2_000,
  ) {
    this.timer = setInterval(() => this.tick(), everyMs);
  }

  private tick(): void {
    if (this.inFlight >= this.maxInFlight) {
      this.skipped++;
      return;
    }
    this.inFlight++;
    const p = this.probe().then((r) => {
      this.inFlight--;
      this.probes.push(r);
      if (r.ok && this.onFirstAnswer) {
        this.onFirstAnswer();
        this.onFirstAnswer = undefined;
      }
    });
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
  }

  private probe(): Promise<Probe> {
    const start = performance.now();
    return new Promise((resolve) => {
      let done = false;
      let got = '';
      const s = net.connect({ host: '127.0.0.1', port: this.port });
      const finish = (ok: boolean, err?: string) => {
        if (done) return;
        done = true;
        clearTimeout(t);
        s.destroy();
        resolve({ start, end: performance.now(), ok, ...(err !== undefined && { err }) });
      };
      const t = setTimeout(() => finish(false, 'timeout'), this.timeoutMs);
      s.setNoDelay(true);
      s.once('connect', () => s.write('GET /probe HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n'));
      s.on('data', (c: Buffer) => {
        got += c.toString('latin1');
        // Any HTTP answer means somebody accepted and served the connection (fixtures/kv says 404 here).
        if (got.includes('\r\n')) finish(got.startsWith('HTTP/1.1 '), got.startsWith('HTTP/1.1 ') ? undefined : 'not_http');
      });
      s.once('error', (e: NodeJS.ErrnoException) => finish(false, e.code ?? e.message));
      s.once('close', () => finish(false, 'closed_without_answer'));
    });
  }

  async stop(): Promise<ProbeReport> {
    clearInterval(this.timer);
    await Promise.all([...this.pending]);
    const probes = [...this.probes].sort((a, b) => a.start - b.start);
    const failed: Record<string, number> = {};
    let longestRefusedMs = 0;
    let runStart: number | undefined;
    for (const p of probes) {
      if (!p.ok) {
        failed[p.err ?? 'error'] = (failed[p.err ?? 'error'] ?? 0) + 1;
        if (p.err !== 'timeout') runStart ??= p.start;
      } else if (runStart !== undefined) {
        longestRefusedMs = Math.max(longestRefusedMs, p.start - runStart);
        runStart = undefined;
      }
    }
    if (runStart !== undefined) longestRefusedMs = Math.max(longestRefusedMs, probes[probes.length - 1]!.start - runStart);
    const answers = probes.filter((p) => p.ok).map((p) => p.end).sort((a, b) => a - b);
    let longestNoAnswerMs = 0;
    for (let i = 1; i < answers.length; i++) longestNoAnswerMs = Math.max(longestNoAnswerMs, answers[i]! - answers[i - 1]!);
    return { probes: probes.length, answered: answers.length, failed, skipped: this.skipped, longestRefusedMs, longestNoAnswerMs };
  }
}

/**
 * The prober in a child process of its own, so the load loops sharing the bench's
 * event loop do not delay when an answer is noticed (IPC: `{cmd:'stop'}` → ProbeReport).
 */
export class ProberProcess {
  private readonly child: ChildProcess;
  private report: Promise<ProbeReport>;
  private readonly firstAnswer: Promise<void>;

  constructor(scope: Scope, port: number, everyMs = 5) {
    this.child = fork(fileURLToPath(import.meta.url), [String(port), String(everyMs)], {
      env: scope.env(),
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    scope.onClose(() => {
      if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    });
    const exit = new Promise<never>((_, reject) => this.child.once('exit', (code, signal) => reject(new Error(`prober exited (${code ?? signal}) before reporting`))));
    exit.catch(() => undefined);
    this.firstAnswer = Promise.race([new Promise<void>((resolve) => this.child.on('message', (m: { answered?: true }) => m.answered && resolve())), exit]);
    this.firstAnswer.catch(() => undefined);
    this.report = Promise.race([new Promise<ProbeReport>((resolve) => this.child.on('message', (m: ProbeReport | { answered: true }) => 'probes' in m && resolve(m))), exit]);
    this.report.catch(() => undefined);
  }

  /**
   * Resolves once a probe was answered: the prober runs (starting a process can take
   * seconds on a busy machine; what happens before this is not measured).
   */
  answered(): Promise<void> {
    return this.firstAnswer;
  }

  async stop(): Promise<ProbeReport> {
    this.child.send({ cmd: 'stop' });
    const r = await this.report;
    await exited(this.child);
    return r;
  }
}

// Child-process mode: node prober.js PORT EVERY_MS
if (process.argv[1] === fileURLToPath(import.meta.url) && process.send) {
  const prober = new Prober(Number(process.argv[2]), Number(process.argv[3]));
  prober.onFirstAnswer = () => process.send!({ answered: true });
  process.on('message', (m: { cmd: string }) => {
    if (m.cmd !== 'stop') return;
    void prober.stop().then((r) => process.send!(r, () => process.exit(0)));
  });
  process.on('disconnect', () => process.exit(0));
}
