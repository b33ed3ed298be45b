import type { Socket } from 'node:net';
import { encodeFrame, FrameDecoder, type DecodedFrame } from './codec.js';
import { BatonError, ProtocolError, errorMessage } from '../os/errors.js';
import type { Logger } from '../os/log.js';
import { PROTO_MIN, type Message, type MessageOf, type MessageType } from './schema.js';

/** Defaults fixed by the protocol (PROTOCOL.md, "Timeouts"). */
export const HEARTBEAT_INTERVAL_MS = 2_000;
export const LIVENESS_TIMEOUT_MS = 10_000;
export const HELLO_TIMEOUT_MS = 5_000;

export interface ChannelOptions {
  /** Who is on the other end, for logs: 'supervisor' | 'incumbent' | 'successor'. */
  peer: string;
  log: Logger;
  /** Close the channel when nothing (not even a heartbeat) arrives for this long. */
  livenessMs?: number;
  /** Called with every heartbeat gap (ms between frames received), for metrics and tests. */
  onHeartbeatGap?: (gapMs: number) => void;
}

interface Waiter {
  resolve: (m: Message) => void;
  reject: (e: BatonError) => void;
  timer: NodeJS.Timeout | undefined;
}

/**
 * One framed control connection (PROTOCOL.md "Framing").
 *
 * - Receives are pulled (`receive`) in order; Heartbeats are consumed here and only
 *   reset the liveness timer, so state machines never see them.
 * - Liveness: any frame resets a timer; when it fires the channel fails with
 *   E_LIVENESS_TIMEOUT. A closed socket fails it with E_PEER_CLOSED, bad bytes with
 *   the codec's error (after telling the peer with an Error frame).
 * - Messages that arrived before a failure are still delivered; after them
 *   `receive` rejects with the failure.
 */
export class ControlChannel {
  readonly peer: string;
  private readonly decoder = new FrameDecoder();
  private readonly queue: Message[] = [];
  private readonly waiters: Waiter[] = [];
  private readonly livenessMs: number;
  private livenessTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private failure: BatonError | undefined;
  private failureListeners: ((e: BatonError) => void)[] = [];
  private arrivalListeners: (() => void)[] = [];
  private lastFrameAt = Date.now();
  private version = PROTO_MIN;
  private readonly log: Logger;

  constructor(
    private readonly socket: Socket,
    private readonly opts: ChannelOptions,
  ) {
    this.peer = opts.peer;
    this.log = opts.log;
    this.livenessMs = opts.livenessMs ?? LIVENESS_TIMEOUT_MS;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.fail(new BatonError('E_SOCKET', `control socket to ${this.peer}: ${err.message}`)));
    socket.on('close', () => this.fail(this.closeReason()));
    this.armLiveness();
  }

  /** Version negotiated in Hello/HelloAck; frames after the handshake carry it. */
  setVersion(version: number): void {
    this.version = version;
    this.decoder.setVersionRange(version, version);
  }

  get failed(): BatonError | undefined {
    return this.failure;
  }

  /** Sends one frame (one Buffer). Returns false when the channel is already closed. */
  send(msg: Message): boolean {
    if (this.failure || this.socket.destroyed) return false;
    // Hello/HelloAck go out with the lowest version so any peer can read them.
    const version = msg.type === 'Hello' || msg.type === 'HelloAck' ? PROTO_MIN : this.version;
    this.socket.write(encodeFrame(msg, version));
    return true;
  }

  /** Next non-heartbeat message, or rejects on failure or after `timeoutMs`. */
  receive(timeoutMs?: number): Promise<Message> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, timer: undefined };
      if (timeoutMs !== undefined) {
        waiter.timer = setTimeout(() => {
          this.waiters.splice(this.waiters.indexOf(waiter), 1);
          reject(new BatonError('E_TIMEOUT', `no message from ${this.peer} within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this.waiters.push(waiter);
    });
  }

  /**
   * Receives the next message and checks it is one of `types` (an `Error` frame from
   * the peer, or anything else, becomes a ProtocolError; the latter is reported to the peer).
   */
  async expect<T extends MessageType>(types: readonly T[], timeoutMs?: number): Promise<MessageOf<T>> {
    const msg = await this.receive(timeoutMs);
    if ((types as readonly string[]).includes(msg.type)) return msg as unknown as MessageOf<T>;
    if (msg.type === 'Error') {
      throw new ProtocolError('E_PEER_ERROR', `${this.peer} reported ${msg.code}: ${msg.message}`, { peerCode: msg.code });
    }
    const err = new ProtocolError(
      'E_UNEXPECTED_MESSAGE',
      `${this.peer} sent ${msg.type} where ${types.join(' or ')} was expected`,
    );
    this.sendError(err);
    throw err;
  }

  /** Tells the peer why we are closing (best effort). */
  sendError(err: BatonError): void {
    this.send({ type: 'Error', code: err.code, message: err.message.slice(0, 1024) });
  }

  /** Sends Heartbeat{phase()} every interval until the channel closes. */
  startHeartbeats(phase: () => string, intervalMs = HEARTBEAT_INTERVAL_MS): void {
    this.stopHeartbeats();
    const beat = (): void => {
      this.send({ type: 'Heartbeat', tsMs: BigInt(Date.now()), phase: phase() });
    };
    this.heartbeatTimer = setInterval(beat, intervalMs);
    beat();
  }

  stopHeartbeats(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
  }

  /** Messages received and not yet taken by `receive`. */
  get queued(): number {
    return this.queue.length;
  }

  /**
   * Resolves (without taking it) when a message is waiting, or rejects when the channel
   * fails: lets a caller notice a peer that speaks out of turn while it waits elsewhere.
   */
  arrival(): Promise<Message> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const first = this.queue[0];
        if (first) resolve(first);
        else if (this.failure) reject(this.failure);
        else this.arrivalListeners.push(check);
      };
      check();
    });
  }

  onFailure(listener: (e: BatonError) => void): void {
    if (this.failure) listener(this.failure);
    else this.failureListeners.push(listener);
  }

  /** Flushes what was written, then closes. */
  close(reason = 'closed locally'): void {
    this.fail(new BatonError('E_CLOSED', `control connection to ${this.peer} ${reason}`));
    this.socket.end();
    // A peer that never reads must not keep us open.
    setTimeout(() => this.socket.destroy(), 1_000).unref();
  }

  private onData(chunk: Buffer): void {
    if (this.failure) return;
    const now = Date.now();
    this.opts.onHeartbeatGap?.(now - this.lastFrameAt);
    this.lastFrameAt = now;
    this.armLiveness();
    let frames: DecodedFrame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      const e = err instanceof BatonError ? err : new ProtocolError('E_BAD_FRAME', errorMessage(err));
      // Good frames that came before the bad one in this chunk still count.
      for (const { message } of (e.details?.decoded as DecodedFrame[] | undefined) ?? []) this.deliver(message);
      this.log.warn({ event: 'channel.protocol_error', peer: this.peer, code: e.code, err: e.message }, 'bad frame');
      this.sendError(e);
      this.fail(e);
      this.socket.end();
      return;
    }
    for (const { message } of frames) this.deliver(message);
  }

  /** A close inside a frame is E_TRUNCATED (the peer died or cut us off mid-write); otherwise E_PEER_CLOSED. */
  private closeReason(): BatonError {
    try {
      this.decoder.end();
    } catch (err) {
      if (err instanceof BatonError) return err;
    }
    return new BatonError('E_PEER_CLOSED', `${this.peer} closed the control connection`);
  }

  private deliver(message: Message): void {
    if (message.type === 'Heartbeat') return;
    const waiter = this.waiters.shift();
    if (waiter) {
      if (waiter.timer) clearTimeout(waiter.timer);
      waiter.resolve(message);
    } else {
      this.queue.push(message);
      for (const listener of this.arrivalListeners.splice(0)) listener();
    }
  }

  private armLiveness(): void {
    if (this.livenessTimer) clearTimeout(this.livenessTimer);
    this.livenessTimer = setTimeout(() => {
      this.fail(
        new BatonError('E_LIVENESS_TIMEOUT', `${this.peer} silent for ${this.livenessMs} ms (no frame, not even a heartbeat)`),
      );
      this.socket.destroy();
    }, this.livenessMs);
    this.livenessTimer.unref();
  }

  private fail(err: BatonError): void {
    if (this.failure) return;
    this.failure = err;
    if (this.livenessTimer) clearTimeout(this.livenessTimer);
    this.stopHeartbeats();
    for (const waiter of this.waiters.splice(0)) {
      if (waiter.timer) clearTimeout(waiter.timer);
      waiter.reject(err);
    }
    for (const listener of this.failureListeners.splice(0)) listener(err);
    for (const listener of this.arrivalListeners.splice(0)) listener();
  }
}
