/**
 * A control connection as the client side (`Peer`), and one connection's worth of
 * inputs, each answer checked against the model (`controlSession`): used for the
 * incumbent's control socket and for a successor's channel.
 */
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { encodeFrame, FrameDecoder } from '../../src/wire/codec.js';
import type { Message } from '../../src/wire/schema.js';
import { Rng } from '../lib/prng.js';
import { controlInput, type ControlKind, type Vector } from './control-inputs.js';
import { judge, type Side, type Verdict } from './oracle.js';
import { ANSWER_BOUND_MS, count, cutPoints, type Outcomes, sleep, Violation } from './util.js';

/** Frames and the end of one control connection, decoded with the reference decoder. */
export class Peer {
  readonly frames: Message[] = [];
  ended = false;
  undecodable: string | undefined;
  /**
   * Our socket failed (EPIPE/ECONNRESET): the peer closed while we were still writing.
   * Node then destroys the socket and drops what it had not read yet, so an Error the
   * peer sent just before closing may never reach us.
   */
  socketError: string | undefined;
  private readonly decoder = new FrameDecoder();
  private waiters: (() => void)[] = [];

  constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      try {
        for (const f of this.decoder.push(chunk)) this.frames.push(f.message);
      } catch (err) {
        this.undecodable = (err as Error).message;
      }
      this.wake();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => (this.socketError = err.code ?? err.message)); // then 'close': seen as the end
    socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Waits until `pred()` holds or the bound passes; returns whether it held. */
  async until(pred: () => boolean, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!pred()) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return true;
  }

  /** Non-heartbeat frames received from index `from`. */
  since(from: number): Message[] {
    return this.frames.slice(from).filter((m) => m.type !== 'Heartbeat');
  }

  /** Writes `bytes` in 1..4 pieces split at random points, sometimes with a pause between them. */
  async write(rng: Rng, bytes: Buffer): Promise<void> {
    const cuts = cutPoints(rng, bytes.length);
    let at = 0;
    const answered = this.frames.filter((m) => m.type === 'Error').length;
    for (const cut of [...cuts, bytes.length]) {
      if (cut <= at) continue;
      // Once the peer refused (or closed), the rest of the input would only hit a closed socket.
      if (this.socket.destroyed || this.ended || this.frames.filter((m) => m.type === 'Error').length > answered) return;
      this.socket.write(bytes.subarray(at, cut));
      at = cut;
      if (cut < bytes.length && rng.chance(0.5)) await sleep(rng.chance(0.8) ? 0 : 2);
    }
  }
}

/**
 * One connection's worth of inputs. With our HelloAck first (usually) or without it (the
 * peer then wants a HelloAck: the first input takes its place). Then a planned number of
 * inputs the model says the peer accepts (drawn from the same generators, so they are
 * just as varied: Heartbeats in every encoding, unknown fields, frames split anywhere,
 * ResumeAfterAbort to an attached incumbent), then one it must refuse — or, sometimes,
 * our end of stream. Checks the answer to each against the model.
 */
export async function controlSession(
  side: Side,
  peer: Peer,
  rng: Rng,
  vectors: { valid: Vector[]; invalid: Vector[] },
  out: Outcomes,
  budget: number,
): Promise<number> {
  let session: string | undefined;
  const sentInputs: Buffer[] = [];
  const helloAck = rng.chance(0.85) ? `fuzz-${randomUUID()}` : undefined;
  if (helloAck !== undefined) {
    session = helloAck;
    peer.socket.write(encodeFrame({ type: 'HelloAck', handoffId: session, protoVersion: 1 }));
  }
  const t0 = Date.now();
  let lastSentAt = t0;
  const fail = (what: string): never => {
    const replay = sentInputs.map((b, i) => `#${i + 1} ${b.toString('hex')}`).join('\n  ');
    what += ` (${Date.now() - t0} ms into the connection, ${Date.now() - lastSentAt} ms after the last input)`;
    throw new Violation(
      `${side} (${helloAck ? `our HelloAck named ${helloAck}` : 'no HelloAck from us'}; ${session ? `attached as ${session}` : 'not attached'}): ${what}\n  inputs of this connection, in order:\n  ${replay}`,
    );
  };
  // Accepted inputs first (budget - 1 of them), then the one that ends the connection.
  const accepted = rng.int(0, Math.max(budget - 1, 0));
  for (let sent = 0; ; ) {
    const wantAccept = sent < accepted;
    let input: { kind: ControlKind; bytes: Buffer };
    let verdict: Verdict;
    for (let tries = 0; ; tries++) {
      input = controlInput(rng, vectors, session);
      verdict = judge(side, session, input.bytes);
      if (verdict.kind === 'acts') {
        out.redrawn++;
        continue;
      }
      // (After many tries, take what comes: the plan is a bias, not a rule.)
      if (tries > 200 || (verdict.kind === 'accept') === wantAccept) break;
    }
    const from = peer.frames.length;
    sentInputs.push(input.bytes);
    lastSentAt = Date.now();
    await peer.write(rng, input.bytes);
    sent++;
    out.inputs++;
    count(out.byKind, input.kind);
    if (peer.undecodable) fail(`sent bytes our decoder rejects: ${peer.undecodable}`);
    if (verdict.kind === 'accept') {
      if (verdict.attached !== undefined) session = verdict.attached;
      if (verdict.replies > 0) {
        // Resumed, one per ResumeAfterAbort/Abort.
        const got = await peer.until(() => peer.since(from).length >= verdict.replies || peer.ended, ANSWER_BOUND_MS);
        const replies = peer.since(from);
        if (!got || replies.length < verdict.replies || replies.some((m) => m.type !== 'Resumed')) {
          fail(`expected ${verdict.replies} Resumed, got ${JSON.stringify(replies.map((m) => m.type))}${peer.ended ? ' and the close' : ''}`);
        }
        count(out.byAnswer, 'Resumed');
      } else {
        count(out.byAnswer, 'accepted (no answer)');
      }
      if (peer.ended) fail('closed the connection after an input it must accept');
      if (sent < budget) continue;
      // Budget spent on accepted inputs: we hang up; the peer must close too, without an Error.
      const answeredBefore = peer.frames.length;
      peer.socket.end();
      if (!(await peer.until(() => peer.ended, ANSWER_BOUND_MS))) fail(`no close within ${ANSWER_BOUND_MS} ms after our end of stream`);
      const late = peer.since(answeredBefore);
      if (late.length) fail(`answered ${JSON.stringify(late.map((m) => m.type))} to our end of stream`);
      return sent;
    }
    if (verdict.kind === 'incomplete') peer.socket.end();
    const closed = await peer.until(() => peer.ended, ANSWER_BOUND_MS);
    const answers = peer.since(from).filter((m) => m.type !== 'Resumed');
    const firstError = answers.find((m) => m.type === 'Error') as Extract<Message, { type: 'Error' }> | undefined;
    if (!closed) fail(`no close within ${ANSWER_BOUND_MS} ms (answers: ${JSON.stringify(answers.map((m) => m.type))})`);
    if (answers.some((m) => m.type !== 'Error')) fail(`answered ${JSON.stringify(answers.map((m) => m.type))}`);
    if (verdict.kind === 'error') {
      if (!firstError && peer.socketError) {
        // It closed while our input was still going out (a successor exits right after its
        // Error); the Error was sent but our side dropped it with the failed write.
        count(out.byAnswer, `closed during our write (${peer.socketError}); expected ${verdict.codes[0]}`);
        return sent;
      }
      if (!firstError) fail(`closed without an Error; expected ${verdict.codes.join(' or ')}`);
      if (!verdict.codes.includes(firstError!.code)) fail(`answered Error ${firstError!.code} (${firstError!.message}); expected ${verdict.codes.join(' or ')}`);
      count(out.byAnswer, `Error ${firstError!.code}`);
    } else if (verdict.kind === 'close') {
      if (firstError && !verdict.or.includes(firstError.code)) fail(`answered Error ${firstError.code}; expected only the close (Abort)`);
      count(out.byAnswer, 'closed (Abort)');
    } else {
      if (firstError) fail(`answered Error ${firstError.code} (${firstError.message}) to a stream that ended inside a frame (E_TRUNCATED is local)`);
      count(out.byAnswer, 'closed (stream cut inside a frame)');
    }
    return sent;
  }
}
