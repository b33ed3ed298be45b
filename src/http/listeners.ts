import http from 'node:http';
import net from 'node:net';
import type { AcceptCopy, DrainResult, ListenTarget } from '../app/app.js';
import { errorMessage, HttpAdapterError } from '../os/errors.js';

/** A request listener, as `http.createServer` takes it. */
export type HttpHandler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/**
 * Where HttpListeners gets its sockets: a `BatonApp` (its listeners by name, and
 * `listenTarget`); or, for a private server (a warm-up, a port of the app's own), any
 * object with the same two members whose `listenTarget` gives `net.Server#listen` options.
 */
export interface ListenerSource {
  readonly listeners: ReadonlyMap<string, unknown>;
  listenTarget(name: string): ListenTarget | net.ListenOptions;
  /** Extra copies of every listener for the accept fan-out (`BatonApp.acceptCopies`); optional. */
  acceptCopies?(count: number): Promise<ReadonlyMap<string, readonly AcceptCopy[]>>;
}

/**
 * After each listen, accept on extra copies of every listener for a while. Node (libuv
 * ≥ 1.45) accepts one connection per listening handle per event-loop turn; a process
 * that starts listening with many connections waiting in the backlog (a successor: the
 * clients the drain closed reconnected while nobody accepted) takes them one turn at a
 * time, and every turn also serves the connections already taken, so the last one waited
 * hundreds of milliseconds (BENCHMARKS.md, tail latency). With `copies` extra handles it
 * takes `copies + 1` per turn.
 */
export interface AcceptFanOutOptions {
  /** Extra copies of each listener (default 15: 16 accepts per turn; at most 64). */
  copies?: number;
  /** How long they accept after each listen at most (default 1000 ms); then they are closed. */
  ms?: number;
  /**
   * Close them at the first event-loop turn that takes fewer connections than there are
   * handles, i.e. once what waited in the backlog is taken (default true). `false` keeps
   * them for all of `ms`, also through a storm of new connections (tests).
   */
  endWhenBacklogEmpty?: boolean;
}

export interface HttpListenersOptions {
  /**
   * Listener names to serve. Default: every listener the supervisor passed (`baton run
   * --listen NAME=…`); standalone, where nothing is passed, `['http']`.
   */
  names?: readonly string[];
  /** During a drain, end a keep-alive connection once it has been idle this long (default 500 ms). */
  idleGraceMs?: number;
  /** The servers' keep-alive timeout outside drains (default 5000 ms, Node's). */
  keepAliveTimeoutMs?: number;
  /** Further `http.createServer` options for the servers it makes. */
  serverOptions?: http.ServerOptions;
  /**
   * Accept on extra copies of the listeners for a moment after each listen (see
   * AcceptFanOutOptions); on by default where the source has them (`BatonApp` with its
   * IPC channel to the supervisor); `false` turns it off.
   */
  acceptFanOut?: AcceptFanOutOptions | false;
}

export const DEFAULT_ACCEPT_FAN_OUT = { copies: 15, ms: 1_000 } as const;

export const DEFAULT_IDLE_GRACE_MS = 500;
export const DEFAULT_KEEP_ALIVE_TIMEOUT_MS = 5_000;
/** How long a connection the drain ended may stay half-closed before it is destroyed. */
const END_LINGER_MS = 2_000;
/** Shortest pause between two scans of the connections during a drain. */
const SCAN_MIN_MS = 20;

interface Conn {
  /** Requests on this connection whose response has not finished. */
  busy: number;
  idleSince: number;
  /** When the drain ended it (one whose client never closes its side is destroyed later). */
  endedAt?: number;
}

/**
 * One `http.Server` per listener baton passes, and the HTTP half of a `Drainable`:
 *
 *   const web = new HttpListeners((req, res) => res.end('hi'));
 *   const baton = await startBaton({ drainable: httpDrainable(web, { seal, readiness }) });
 *   await baton.begin();
 *   await web.serve(baton);   // every listener, on baton.listenTarget(name)
 *   await baton.ready();
 *
 * `drain(deadline)` stops accepting without `http.Server#close` (which resets idle
 * keep-alive connections: a client reusing one at that moment sees a failed request),
 * answers the next request on each keep-alive connection with `Connection: close`, ends
 * a connection that stays idle past the grace, and reports what is left at the
 * deadline. `resume()` listens again on every listener (`listenTarget` gives a fresh
 * copy of each socket after an aborted handoff). A framework that makes its own server
 * takes `serverFactory` instead of a handler (fastify: `new HttpListeners()`, then
 * `Fastify({ serverFactory: web.serverFactory })`).
 */
export class HttpListeners {
  private handler: HttpHandler | undefined;
  /** One per listener name, in `names` order; made once and listened on again after an abort. */
  private readonly made: http.Server[] = [];
  private names: readonly string[] | undefined;
  private baton: ListenerSource | undefined;
  private readonly conns = new Map<net.Socket, Conn>();
  /** Responses not finished yet: a drain marks those not yet sent as their connection's last. */
  private readonly inFlight = new Set<http.ServerResponse>();
  private waiters: (() => void)[] = [];
  private isDraining = false;
  private readonly idleGraceMs: number;
  /**
   * Drains so far, connections a drain ended because they stayed idle, connections taken
   * on an accept fan-out's extra copies, and copies that could not be listened on.
   */
  readonly stats = { drains: 0, closedIdleInDrain: 0, acceptedOnCopies: 0, copyListenErrors: 0 };
  /** The accept fan-out's bursts under way: how to stop each, and its servers on the copies. */
  private readonly bursts = new Map<() => void, Set<net.Server>>();
  /** Copies asked for ahead of the next listen (`prepare`), or for the listen under way. */
  private pendingCopies: Promise<ReadonlyMap<string, readonly AcceptCopy[]>> | undefined;
  /** Counts listens and drains: copies that arrive after the next one are closed unused. */
  private epoch = 0;
  private readonly opts: HttpListenersOptions;

  /** With a request handler; or without one (options only) for a framework that takes `serverFactory`. */
  constructor(handler?: HttpHandler, opts?: HttpListenersOptions);
  constructor(opts?: HttpListenersOptions);
  constructor(handlerOrOpts?: HttpHandler | HttpListenersOptions, opts: HttpListenersOptions = {}) {
    this.handler = typeof handlerOrOpts === 'function' ? handlerOrOpts : undefined;
    this.opts = typeof handlerOrOpts === 'object' ? handlerOrOpts : opts;
    this.idleGraceMs = this.opts.idleGraceMs ?? DEFAULT_IDLE_GRACE_MS;
    if (this.opts.names) this.names = checkNames(this.opts.names);
  }

  /**
   * For a framework that makes the server from its request handler (fastify's
   * `serverFactory`): takes the framework's handler and gives the first listener's
   * server; the servers of further listeners run the same handler.
   */
  readonly serverFactory = (handler: HttpHandler): http.Server => {
    if (this.handler) throw new HttpAdapterError('E_HTTP_HANDLER_TWICE', 'HttpListeners: it has a request handler already (passed to the constructor, or serverFactory called before)');
    this.handler = handler;
    return this.server(0);
  };

  /** True from `drain` until `resume`: every response carries `Connection: close`. */
  get draining(): boolean {
    return this.isDraining;
  }

  /** Open client connections over every server. */
  get openConns(): number {
    return this.conns.size;
  }

  /** Extra listener copies the accept fan-out listens on now (0 once the backlog is taken). */
  get acceptCopiesListening(): number {
    let n = 0;
    for (const extras of this.bursts.values()) n += extras.size;
    return n;
  }

  /** Names of the listeners being served now (`Readiness.listeningOn`). */
  get listeningOn(): string[] {
    return (this.names ?? []).filter((_, i) => this.made[i]?.listening);
  }

  /** The servers made so far, by listener name. */
  get servers(): ReadonlyMap<string, http.Server> {
    return new Map((this.names ?? []).flatMap((name, i) => (this.made[i] ? [[name, this.made[i]] as const] : [])));
  }

  /** Whether `server` is one of the servers this made (fastifyOptions checks the app's). */
  owns(server: unknown): boolean {
    return this.made.some((s) => s === server);
  }

  /**
   * Makes the servers now, one per listener, so that `serve` only listens: a successor
   * calls it before `begin()`, which keeps the servers' making out of the handoff's write
   * blackout. Optional (`serve` makes what is missing).
   */
  prepare(baton: ListenerSource): void {
    this.names ??= namesOf(baton);
    this.names.forEach((_, i) => this.server(i));
    // The accept fan-out's copies come over the supervisor's IPC channel: ask now, while
    // the successor boots, so they are there when it listens.
    this.pendingCopies ??= this.askCopies(baton);
  }

  /** Serves on every listener (`baton.listenTarget(name)`); resolves once all of them listen. */
  async serve(baton: ListenerSource): Promise<void> {
    if (this.baton) throw new HttpAdapterError('E_HTTP_SERVING', 'HttpListeners.serve: it serves already (after an aborted handoff, resume() listens again)');
    this.baton = baton;
    this.names ??= namesOf(baton);
    await this.listenAll();
  }

  /** After an aborted handoff: listens again on every listener (fresh copies of the sockets). */
  async resume(): Promise<void> {
    if (!this.baton) throw new HttpAdapterError('E_HTTP_NOT_SERVING', 'HttpListeners.resume: serve(baton) was never called');
    await this.listenAll();
  }

  private async listenAll(): Promise<void> {
    if (!this.handler) throw new HttpAdapterError('E_HTTP_NO_HANDLER', 'HttpListeners: no request handler (pass one to the constructor, or give serverFactory to the framework)');
    this.isDraining = false;
    const names = this.names!;
    const copies = this.pendingCopies ?? this.askCopies(this.baton!);
    this.pendingCopies = undefined;
    const epoch = ++this.epoch;
    try {
      await Promise.all(names.map((name, i) => listen(this.server(i), name, this.baton!.listenTarget(name))));
    } catch (err) {
      this.epoch++; // the copies are closed unused when they come
      throw err;
    } finally {
      if (copies) void copies.then((sets) => this.fanOut(sets, epoch));
    }
  }

  /** Asks the source for the accept fan-out's copies; undefined when it is off or the source has none. */
  private askCopies(source: ListenerSource): Promise<ReadonlyMap<string, readonly AcceptCopy[]>> | undefined {
    const opts = this.opts.acceptFanOut;
    if (opts === false || !source.acceptCopies) return undefined;
    const count = opts?.copies ?? DEFAULT_ACCEPT_FAN_OUT.copies;
    if (count < 1) return undefined;
    return source.acceptCopies(count).catch(() => new Map());
  }

  /**
   * Listens on each copy beside its listener's server, handing what it accepts to that
   * server, while the burst lasts: until a loop turn takes fewer connections than there
   * are handles (some handle found the backlog empty: what waited is taken), `ms` passed,
   * or a drain starts. A longer storm of new connections (thousands of idle clients
   * reconnecting after the drain ended theirs) is then accepted one per turn again, as
   * Node does, so the clients already taken keep being served between accepts (taking
   * that storm 16 at a time raised the write blackout at 10,000 connections 3.5×,
   * BENCHMARKS.md). Copies that come too late (a drain or another listen since) are
   * closed unused.
   */
  private fanOut(sets: ReadonlyMap<string, readonly AcceptCopy[]>, epoch: number): void {
    const names = this.names ?? [];
    const live = epoch === this.epoch && !this.isDraining;
    for (const [name, copies] of sets) {
      const server = this.made[names.indexOf(name)];
      if (!live || !server?.listening) {
        for (const copy of copies) copy.close();
        continue;
      }
      this.startBurst(server, copies);
    }
  }

  private startBurst(server: http.Server, copies: readonly AcceptCopy[]): void {
    const opts = this.opts.acceptFanOut || undefined;
    const ms = opts?.ms ?? DEFAULT_ACCEPT_FAN_OUT.ms;
    const endWhenBacklogEmpty = opts?.endWhenBacklogEmpty ?? true;
    const extras = new Set<net.Server>();
    let turnAccepts = 0;
    let checkQueued = false;
    const stop = (): void => {
      if (!this.bursts.delete(stop)) return;
      clearTimeout(timer);
      server.off('connection', counted);
      for (const extra of extras) if (extra.listening) extra.close();
      extras.clear();
    };
    // In the check phase of the turn after the one that queued it: a turn that took nothing.
    const idleTurnCheck = (): void => {
      if (!checkQueued && turnAccepts === 0) stop();
    };
    // After the poll phase of a turn that took connections (setImmediate: the same turn's check phase).
    const check = (): void => {
      checkQueued = false;
      const accepted = turnAccepts;
      turnAccepts = 0;
      if (!endWhenBacklogEmpty) return;
      if (accepted < 1 + extras.size) stop();
      else setImmediate(idleTurnCheck); // every handle took one: more may wait, or none
    };
    const counted = (): void => {
      turnAccepts++;
      if (!checkQueued) {
        checkQueued = true;
        setImmediate(check);
      }
    };
    for (const copy of copies) {
      const extra = net.createServer((socket) => {
        this.stats.acceptedOnCopies++;
        server.emit('connection', socket);
      });
      // A copy that cannot listen (or fails to accept later) only costs its share of speed.
      extra.on('error', () => {
        this.stats.copyListenErrors++;
        extras.delete(extra);
        extra.close();
        copy.close();
      });
      extra.listen(copy.target);
      extras.add(extra);
    }
    this.bursts.set(stop, extras);
    server.on('connection', counted);
    // The copies first poll in the next turn: nothing accepted in it means nothing waited.
    if (endWhenBacklogEmpty) setImmediate(() => setImmediate(idleTurnCheck));
    const timer = setTimeout(stop, ms);
    timer.unref();
  }

  /** Ends every burst under way: its copies are closed. */
  private closeFanOut(): void {
    for (const stop of [...this.bursts.keys()]) stop();
  }

  /** The server of listener `i`, made on first use. */
  private server(i: number): http.Server {
    const made = this.made[i];
    if (made) return made;
    const server = http.createServer({ keepAliveTimeout: this.opts.keepAliveTimeoutMs ?? DEFAULT_KEEP_ALIVE_TIMEOUT_MS, ...this.opts.serverOptions }, (req, res) => this.handle(req, res));
    server.on('connection', (socket: net.Socket) => {
      this.conns.set(socket, { busy: 0, idleSince: Date.now() });
      socket.once('close', () => {
        this.conns.delete(socket);
        this.changed();
      });
    });
    this.made[i] = server;
    return server;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const conn = this.conns.get(req.socket);
    if (conn) conn.busy++;
    this.inFlight.add(res);
    res.once('close', () => {
      this.inFlight.delete(res);
      if (conn) {
        conn.busy--;
        conn.idleSince = Date.now();
      }
      this.changed();
    });
    // Draining: this response is the connection's last; Node closes it after the response.
    if (this.isDraining) res.setHeader('Connection', 'close');
    this.handler!(req, res);
  }

  /**
   * Stops accepting (net.Server#close on this process's copy of each listener: the socket
   * stays open in the supervisor and the kernel backlog holds new connections for the
   * successor); lets in-flight requests finish; answers the next request on each
   * keep-alive connection with `Connection: close`; ends a connection idle past the
   * grace; reports what is left at the deadline.
   */
  async drain(deadline: Date): Promise<DrainResult> {
    this.isDraining = true;
    this.stats.drains++;
    this.epoch++;
    this.closeFanOut();
    // Not http.Server#close: that also resets idle keep-alive connections.
    for (const server of this.made) if (server.listening) net.Server.prototype.close.call(server);
    // A request in flight now: its answer is its connection's last too (no idle grace to wait out).
    for (const res of this.inFlight) if (!res.headersSent) res.setHeader('Connection', 'close');
    for (;;) {
      const now = Date.now();
      if (this.conns.size === 0 || now >= deadline.getTime()) break;
      let nextCheck = this.idleGraceMs;
      for (const [socket, c] of this.conns) {
        if (c.endedAt !== undefined) {
          if (now - c.endedAt >= END_LINGER_MS) socket.destroy();
          else nextCheck = Math.min(nextCheck, END_LINGER_MS - (now - c.endedAt));
          continue;
        }
        if (c.busy > 0) continue;
        const idle = now - c.idleSince;
        if (idle >= this.idleGraceMs) {
          c.endedAt = now;
          this.stats.closedIdleInDrain++;
          socket.end();
        } else {
          nextCheck = Math.min(nextCheck, this.idleGraceMs - idle);
        }
      }
      // A scan is O(connections): rescan on a timer (at most every SCAN_MIN_MS), not on
      // every close, or 10,000 closing connections cost 10,000² steps.
      await this.waitForChange(Math.max(1, Math.min(Math.max(nextCheck, SCAN_MIN_MS), deadline.getTime() - now)));
    }
    return { openConnsRemaining: this.conns.size, acceptClosed: true };
  }

  /** Wakes a drain waiting for the last connection to go (the only change it must see at once). */
  private changed(): void {
    if (this.conns.size > 0) return;
    for (const w of this.waiters.splice(0)) w();
  }

  private waitForChange(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.waiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}

/** Every listener the supervisor passed; standalone (none passed), `http`. */
function namesOf(baton: ListenerSource): readonly string[] {
  return baton.listeners.size > 0 ? [...baton.listeners.keys()] : ['http'];
}

function checkNames(names: readonly string[]): readonly string[] {
  if (names.length === 0 || new Set(names).size !== names.length) {
    throw new HttpAdapterError('E_HTTP_BAD_NAMES', `HttpListeners: names must be one or more distinct listener names (got ${JSON.stringify(names)})`);
  }
  return [...names];
}

/** `server.listen(target)`, resolved once it listens; a failure names the listener. */
function listen(server: http.Server, name: string, target: object): Promise<void> {
  return new Promise((resolve, reject) => {
    const failed = (err: Error): void => {
      server.off('listening', listening);
      reject(new HttpAdapterError('E_HTTP_LISTEN', `cannot listen on listener ${name}: ${errorMessage(err)}`, { name }, { cause: err }));
    };
    const listening = (): void => {
      server.off('error', failed);
      resolve();
    };
    server.once('error', failed);
    server.once('listening', listening);
    server.listen(target);
  });
}
