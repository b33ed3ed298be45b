/**
 * A misbehaving supervisor for tests: connects to an incumbent's control socket
 * (Supervisor.controlPath) and speaks the protocol by hand with src/wire/codec.ts, so a
 * test can send anything — garbage, a bad length or version, a message out of
 * order — and see exactly what the incumbent answers.
 */
import type net from 'node:net';
import { encodeFrame, FrameDecoder } from '../../src/wire/codec.js';
import { connectUnix } from '../../src/os/unix-connect.js';
import { PROTO_MIN, type Message, type MessageOf, type MessageType } from '../../src/wire/schema.js';

/** What arrives on the connection: a message, or the end of it. */
export type Incoming = Message | { type: 'EOF' };

export class RogueSupervisor {
  private readonly decoder = new FrameDecoder();
  private readonly inbox: Incoming[] = [];
  private waiter: (() => void) | undefined;
  private ended = false;
  version = PROTO_MIN;
  handoffId = '';

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      try {
        for (const { message } of this.decoder.push(chunk)) this.push(message);
      } catch (err) {
        // The incumbent must never send us a bad frame: surface it to the test.
        this.push({ type: 'Error', code: 'TEST_UNDECODABLE_FROM_INCUMBENT', message: (err as Error).message });
        this.push({ type: 'EOF' });
      }
    });
    socket.on('error', () => undefined); // EPIPE/ECONNRESET after the incumbent closed: seen as EOF
    socket.on('close', () => this.push({ type: 'EOF' }));
  }

  /** Connects (retrying while the path is missing or refuses: a new incumbent may still be binding it). */
  static async connect(socketPath: string, timeoutMs = 5_000): Promise<RogueSupervisor> {
    return new RogueSupervisor(await connectUnix(socketPath, timeoutMs));
  }

  private push(m: Incoming): void {
    if (this.ended) return;
    if (m.type === 'EOF') this.ended = true;
    this.inbox.push(m);
    this.waiter?.();
  }

  /** Next frame other than a Heartbeat (or EOF). */
  async next(timeoutMs = 5_000): Promise<Incoming> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = this.inbox.shift();
      if (m && m.type !== 'Heartbeat') return m;
      if (m) continue;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`nothing from the incumbent within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          this.waiter = undefined;
          resolve();
        };
      });
    }
  }

  async expect<T extends MessageType>(type: T, timeoutMs?: number): Promise<MessageOf<T>> {
    const m = await this.next(timeoutMs);
    if (m.type !== type) throw new Error(`expected ${type} from the incumbent, got ${JSON.stringify(describe(m))}`);
    return m as MessageOf<T>;
  }

  /** Reads up to the Error frame the incumbent must send, then the close that must follow it. */
  async expectErrorAndClose(timeoutMs = 5_000): Promise<MessageOf<'Error'>> {
    const err = await this.expect('Error', timeoutMs);
    const after = await this.next(timeoutMs);
    if (after.type !== 'EOF') throw new Error(`expected the incumbent to close after Error, got ${after.type}`);
    return err;
  }

  /** Waits for the incumbent's Hello and answers HelloAck: the session is attached. */
  async handshake(handoffId: string): Promise<MessageOf<'Hello'>> {
    const hello = await this.expect('Hello');
    this.handoffId = handoffId;
    this.send({ type: 'HelloAck', handoffId, protoVersion: PROTO_MIN }, PROTO_MIN);
    this.decoder.setVersionRange(PROTO_MIN, PROTO_MIN);
    return hello;
  }

  send(msg: Message, version = this.version): void {
    this.socket.write(encodeFrame(msg, version));
  }

  raw(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  /** Ends our side and waits for the incumbent to close its side (what it sends meanwhile is dropped). */
  async hangUp(timeoutMs = 5_000): Promise<void> {
    this.socket.end();
    while ((await this.next(timeoutMs)).type !== 'EOF');
  }

  close(): void {
    this.socket.destroy();
  }
}

function describe(m: Incoming): Record<string, unknown> {
  return m.type === 'Error' ? { type: m.type, code: m.code, message: m.message } : { type: m.type };
}
