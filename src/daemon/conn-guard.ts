import net from 'node:net';
import type { Logger } from '../os/log.js';

/**
 * Connection limits for a TCP listener anyone on the network path can reach (the admin
 * API's `adminListen`, the metrics endpoint), issue #21 items 4 and 5.
 *
 * Node's `server.maxConnections` refuses new connections once the limit is reached, so
 * 32 idle sockets that reconnect when cut keep every real client out. Instead:
 *
 *  - a connection is *unproven* until it has shown it is a real client (the admin API:
 *    its request authenticated; metrics: a request arrived); an unproven one is closed
 *    after `unprovenTimeoutMs`;
 *  - when the listener is full (`maxConnections`, or `maxPerAddress` from one address), a
 *    new connection evicts the *oldest unproven* one (of that address, for the
 *    per-address cap) rather than being refused; only when every connection is proven is
 *    the new one refused. An attacker's idle sockets are therefore always the ones cut,
 *    and a client that sends its request at once gets in;
 *  - drops are counted and logged (`<name>.connection_dropped`), at most once per 10 s
 *    with the counts since the last line.
 */
export interface GuardOptions {
  name: string;
  log: Logger;
  maxConnections: number;
  maxPerAddress: number;
  unprovenTimeoutMs: number;
}

interface Entry {
  address: string;
  since: number;
  proven: boolean;
  timer: NodeJS.Timeout | undefined;
}

export type DropReason = 'timeout' | 'evicted' | 'refused';

export class ConnectionGuard {
  private readonly conns = new Map<net.Socket, Entry>();
  readonly dropped: Record<DropReason, number> = { timeout: 0, evicted: 0, refused: 0 };
  private pending: Record<DropReason, number> = { timeout: 0, evicted: 0, refused: 0 };
  private lastLog = 0;
  private logTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: GuardOptions) {}

  /** Guards every connection `server` accepts (call before it listens). */
  attach(server: net.Server): void {
    server.on('connection', (socket: net.Socket) => this.admit(socket));
  }

  get size(): number {
    return this.conns.size;
  }

  /** The connection is a real client: it is no longer timed out or evicted as unproven. */
  prove(socket: net.Socket): void {
    const e = this.conns.get(socket);
    if (!e || e.proven) return;
    e.proven = true;
    clearTimeout(e.timer);
    e.timer = undefined;
  }

  close(): void {
    clearTimeout(this.logTimer);
    this.flushLog();
    for (const e of this.conns.values()) clearTimeout(e.timer);
  }

  private admit(socket: net.Socket): void {
    const address = socket.remoteAddress ?? '?';
    let fromAddress = 0;
    for (const e of this.conns.values()) if (e.address === address) fromAddress++;
    if (fromAddress >= this.opts.maxPerAddress && !this.evictOldestUnproven(address)) return this.drop(socket, 'refused');
    if (this.conns.size >= this.opts.maxConnections && !this.evictOldestUnproven(undefined)) return this.drop(socket, 'refused');
    const entry: Entry = { address, since: Date.now(), proven: false, timer: undefined };
    entry.timer = setTimeout(() => {
      if (!entry.proven && this.conns.get(socket) === entry) this.drop(socket, 'timeout');
    }, this.opts.unprovenTimeoutMs);
    entry.timer.unref();
    this.conns.set(socket, entry);
    socket.once('close', () => {
      clearTimeout(entry.timer);
      if (this.conns.get(socket) === entry) this.conns.delete(socket);
    });
  }

  private evictOldestUnproven(address: string | undefined): boolean {
    let oldest: [net.Socket, Entry] | undefined;
    for (const [s, e] of this.conns) {
      if (e.proven || (address !== undefined && e.address !== address)) continue;
      if (!oldest || e.since < oldest[1].since) oldest = [s, e];
    }
    if (!oldest) return false;
    this.drop(oldest[0], 'evicted');
    return true;
  }

  private drop(socket: net.Socket, reason: DropReason): void {
    const e = this.conns.get(socket);
    if (e) {
      clearTimeout(e.timer);
      this.conns.delete(socket);
    }
    socket.destroy();
    this.dropped[reason]++;
    this.pending[reason]++;
    const now = Date.now();
    if (now - this.lastLog >= 10_000) this.flushLog();
    else this.logTimer ??= setTimeout(() => this.flushLog(), 10_000 - (now - this.lastLog)).unref();
  }

  private flushLog(): void {
    clearTimeout(this.logTimer);
    this.logTimer = undefined;
    const p = this.pending;
    if (p.timeout + p.evicted + p.refused === 0) return;
    this.lastLog = Date.now();
    this.opts.log.warn(
      { event: `${this.opts.name}.connection_dropped`, ...p, open: this.conns.size, totals: { ...this.dropped } },
      `${this.opts.name}: dropped connections that sent no ${this.opts.name === 'admin' ? 'authenticated ' : ''}request (timed out ${p.timeout}, evicted ${p.evicted}, refused ${p.refused})`,
    );
    this.pending = { timeout: 0, evicted: 0, refused: 0 };
  }
}

/** True for 127.0.0.0/8 and ::1 (also as ::ffff:127.x). */
export function isLoopback(host: string): boolean {
  const h = host.startsWith('::ffff:') ? host.slice(7) : host;
  return h === '::1' || (net.isIPv4(h) && h.startsWith('127.'));
}
