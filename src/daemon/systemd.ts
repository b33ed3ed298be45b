import { spawn } from 'node:child_process';
import { errorMessage } from '../os/errors.js';
import type { Logger } from '../os/log.js';

/**
 * sd_notify for `Type=notify` units.
 *
 * The protocol is one datagram per message on the AF_UNIX SOCK_DGRAM socket named by
 * NOTIFY_SOCKET. Node cannot send that: `dgram` is UDP only, `net` is SOCK_STREAM only
 * (unix datagrams were removed from core in 0.5; nodejs/node#29339, #61933), so every
 * pure-JS sd_notify package is a native addon in disguise. We spawn systemd's own
 * `systemd-notify` (present wherever systemd is) for each message instead:
 *   + no native build step, works under `npm ci` on any machine, and systemd's tool
 *     gets the details right (abstract sockets, BARRIER=1 so systemd has read the
 *     message before the sender exits);
 *   - the sender is a short-lived child, not the main pid, so the unit needs
 *     `NotifyAccess=all` (fixtures/systemd/baton-example.service); each message costs
 *     a process start (~2 ms; messages are rare: start, upgrades, stop, watchdog).
 * `BATON_SYSTEMD_NOTIFY` overrides the tool's path; `BATON_SYSTEMD_EXTEND_MS` the
 * EXTEND_TIMEOUT_USEC period (tests).
 *
 * Messages are sent in order (a queue); a failure is logged, never fatal.
 */
export class SystemdNotifier {
  private chain: Promise<void> = Promise.resolve();
  private watchdog: NodeJS.Timeout | undefined;
  private readonly tool: string;

  private constructor(
    private readonly env: NodeJS.ProcessEnv,
    private readonly log: Logger,
  ) {
    this.tool = env.BATON_SYSTEMD_NOTIFY ?? 'systemd-notify';
  }

  /** A notifier when NOTIFY_SOCKET is set, else undefined (not under systemd). */
  static fromEnv(env: NodeJS.ProcessEnv, log: Logger): SystemdNotifier | undefined {
    if (!env.NOTIFY_SOCKET) return undefined;
    return new SystemdNotifier(env, log);
  }

  /** Sends KEY=VALUE lines as one message (in order with the others). */
  send(fields: Record<string, string | number>): Promise<void> {
    const assignments = Object.entries(fields).map(([k, v]) => `${k}=${String(v).replace(/\n/g, ' ')}`);
    this.chain = this.chain.then(() => this.run(assignments));
    return this.chain;
  }

  ready(status: string, mainPid?: number): Promise<void> {
    return this.send({ READY: 1, ...(mainPid !== undefined && { MAINPID: mainPid }), STATUS: status });
  }

  reloading(status: string): Promise<void> {
    return this.send({ RELOADING: 1, MONOTONIC_USEC: monotonicUsec(), STATUS: status });
  }

  stopping(status: string): Promise<void> {
    return this.send({ STOPPING: 1, STATUS: status });
  }

  status(status: string): Promise<void> {
    return this.send({ STATUS: status });
  }

  extendTimeout(usec: number): Promise<void> {
    return this.send({ EXTEND_TIMEOUT_USEC: Math.round(usec) });
  }

  /**
   * EXTEND_TIMEOUT_USEC while a long operation (a handoff) runs, so systemd's reload
   * timeout does not kill a long drain or seal: every BATON_SYSTEMD_EXTEND_MS (default
   * 10 s) it asks for three such intervals more, so one late message is harmless.
   * Returns the function that stops it (nothing is sent after that).
   */
  startExtending(): () => void {
    const raw = Number(this.env.BATON_SYSTEMD_EXTEND_MS);
    const everyMs = Number.isFinite(raw) && raw > 0 ? Math.max(raw, 50) : 10_000;
    const t = setInterval(() => void this.extendTimeout(everyMs * 3 * 1000), everyMs);
    t.unref();
    return () => clearInterval(t);
  }

  /**
   * WATCHDOG=1 every WATCHDOG_USEC/2 when systemd asked for it (WATCHDOG_PID, when set,
   * must be us). Sent from the supervisor's event loop, so a wedged supervisor stops it.
   */
  startWatchdog(): void {
    const usec = Number(this.env.WATCHDOG_USEC);
    if (!Number.isFinite(usec) || usec <= 0) return;
    if (this.env.WATCHDOG_PID && Number(this.env.WATCHDOG_PID) !== process.pid) return;
    const everyMs = Math.max(Math.floor(usec / 2000), 50);
    this.watchdog = setInterval(() => void this.send({ WATCHDOG: 1 }), everyMs);
    this.watchdog.unref();
  }

  /** Stops the watchdog and waits for queued messages. */
  async close(): Promise<void> {
    if (this.watchdog) clearInterval(this.watchdog);
    await this.chain;
  }

  private run(assignments: string[]): Promise<void> {
    return new Promise((resolve) => {
      const child = spawn(this.tool, assignments, { stdio: ['ignore', 'ignore', 'pipe'], env: { PATH: this.env.PATH ?? '/usr/bin:/bin', NOTIFY_SOCKET: this.env.NOTIFY_SOCKET! } });
      let stderr = '';
      child.stderr?.setEncoding('utf8').on('data', (c: string) => (stderr += c));
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      child.once('error', (err) => {
        clearTimeout(timer);
        this.log.warn({ event: 'systemd.notify_failed', err: errorMessage(err), tool: this.tool }, `sd_notify failed: cannot run ${this.tool}`);
        resolve();
      });
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        if (code !== 0) this.log.warn({ event: 'systemd.notify_failed', code, signal, stderr: stderr.trim(), message: assignments }, 'sd_notify failed');
        else this.log.debug({ event: 'systemd.notify', message: assignments }, 'sd_notify');
        resolve();
      });
    });
  }
}

/** CLOCK_MONOTONIC in microseconds (what RELOADING=1 wants): Node's hrtime is that clock on Linux. */
export function monotonicUsec(): string {
  return (process.hrtime.bigint() / 1000n).toString();
}
