/**
 * The oracle: a model of the receiver (the reference FrameDecoder plus the
 * incumbent/successor transition rules) that predicts each control input's answer
 * (`judge`), and the admin-socket filters: inputs that would act are never sent
 * (`reachesAction`); what B3's inputs were (`hitsKnownAdminBug`).
 */
import { FrameDecoder } from '../../src/wire/codec.js';
import { INCUMBENT_TRANSITIONS } from '../../src/app/incumbent.js';
import type { Message } from '../../src/wire/schema.js';
import { SUCCESSOR_TRANSITIONS } from '../../src/app/successor.js';

export type Side = 'incumbent' | 'successor';

/** What the peer must do with one input. */
export type Verdict =
  /** Nothing (keeps the connection): Heartbeats, accepted frames; `replies` frames may come back. */
  | { kind: 'accept'; replies: number; attached?: string }
  /** An Error frame with one of `codes` first, then the close. */
  | { kind: 'error'; codes: string[] }
  /** The close, without an Error (an Abort to a successor); `or` an Error with those codes, if a framing error followed in the same read. */
  | { kind: 'close'; or: string[] }
  /** The input ends inside a frame: the peer waits; after our end of stream it closes (E_TRUNCATED, local). */
  | { kind: 'incomplete' }
  /** Would really act (drain, shut down, begin, an unknown accepted message): not sent. */
  | { kind: 'acts'; why: string };

/** Messages whose effect in an attached state the model knows; anything else the state accepts "acts". */
function judgeMessage(side: Side, attached: string | undefined, msg: Message): { verdict?: Verdict; attach?: string; reply?: boolean } {
  if (msg.type === 'Heartbeat') return {};
  if (attached === undefined) {
    // Before the handshake the app waits for HelloAck only (agent.ts sayHello).
    if (msg.type === 'Error') return { verdict: { kind: 'error', codes: ['E_PEER_ERROR'] } };
    if (msg.type !== 'HelloAck') return { verdict: { kind: 'error', codes: ['E_UNEXPECTED_MESSAGE'] } };
    if (msg.protoVersion !== 1) return { verdict: { kind: 'error', codes: ['E_VERSION_MISMATCH'] } };
    return { attach: msg.handoffId };
  }
  const table = (side === 'incumbent' ? INCUMBENT_TRANSITIONS.ATTACHED : SUCCESSOR_TRANSITIONS.WAIT_BEGIN) as Record<string, unknown> | undefined;
  if (msg.type === 'Error') return { verdict: { kind: 'error', codes: ['E_PEER_ERROR'] } };
  if (!table?.[msg.type]) return { verdict: { kind: 'error', codes: ['E_UNEXPECTED_MESSAGE'] } };
  if ('handoffId' in msg && msg.handoffId !== attached) return { verdict: { kind: 'error', codes: ['E_WRONG_HANDOFF'] } };
  if (side === 'incumbent') {
    if (msg.type === 'ResumeAfterAbort' || msg.type === 'Abort') return { reply: true }; // nothing to undo: Resumed
    if (msg.type === 'Commit') return { verdict: { kind: 'error', codes: ['E_UNEXPECTED_MESSAGE', 'E_ABORTED'] } };
  } else if (msg.type === 'Abort') {
    return { verdict: { kind: 'close', or: [] } }; // the successor aborts and exits
  }
  return { verdict: { kind: 'acts', why: `${msg.type} in ${side === 'incumbent' ? 'ATTACHED' : 'WAIT_BEGIN'}` } };
}

/**
 * The verdict for `bytes` sent at a frame boundary to a peer in the given state
 * (attached: the session's handoff id, or undefined before HelloAck).
 */
export function judge(side: Side, attached: string | undefined, bytes: Buffer): Verdict {
  const dec = new FrameDecoder();
  let frames: { message: Message }[] = [];
  let framingCode: string | undefined;
  try {
    frames = dec.push(bytes);
  } catch (err) {
    framingCode = (err as { code: string }).code;
    frames = ((err as { details?: { decoded?: { message: Message }[] } }).details?.decoded ?? []) as { message: Message }[];
  }
  let session = attached;
  let replies = 0;
  // Frames before a framing error are still processed by the peer (channel.ts delivers them),
  // but its Error for the framing error may go out first when they arrive in the same read.
  for (const { message } of frames) {
    const j = judgeMessage(side, session, message);
    if (j.verdict?.kind === 'acts') return j.verdict;
    if (j.verdict?.kind === 'error') return { kind: 'error', codes: framingCode ? [...j.verdict.codes, framingCode] : j.verdict.codes };
    if (j.verdict?.kind === 'close') return { kind: 'close', or: framingCode ? [framingCode] : [] };
    if (j.attach !== undefined) session = j.attach;
    if (j.reply) replies++;
  }
  if (framingCode) return { kind: 'error', codes: [framingCode] };
  if (dec.buffered > 0) return { kind: 'incomplete' };
  return { kind: 'accept', replies, ...(session !== attached && { attached: session }) };
}

/**
 * True if any request line in the input could reach an action: POST /v1/upgrade,
 * /v1/stop, /v1/jobs (a maintenance run) or /v1/jobs/:id/cancel, after URL
 * normalisation (dot segments, backslashes, absolute form, %-escapes). Such an input is
 * never sent: it is not bad input, it is an upgrade, a stop or a maintenance run.
 */
export function reachesAction(bytes: Buffer): boolean {
  const text = bytes.toString('latin1');
  for (const m of text.matchAll(/POST[\s\x00-\x20]+(\S+)/gi)) {
    let p: string;
    try {
      p = new URL(m[1]!.replace(/[\x00-\x20\x7f]/g, ''), 'http://baton').pathname;
    } catch {
      continue;
    }
    let decoded = p;
    try {
      decoded = decodeURIComponent(p);
    } catch {
      // not decodable: the raw path is all there is
    }
    if (/upgrade|stop|jobs/i.test(p) || /upgrade|stop|jobs/i.test(decoded)) return true;
  }
  return false;
}

/**
 * The inputs of bug B3 (RELIABILITY.md), fixed in 648c08d: src/daemon/admin.ts parsed the request
 * target with `new URL(req.url, 'http://baton')` outside its try block, so a target that is
 * not a valid relative URL (`//`, `/\\`, `//bad host`, `https:`) rejected the handler
 * promise and the unhandled rejection killed `baton run`. Such targets now get a 400, and
 * the fuzzer sends them like any other input (--hold-back-known holds nothing back); this
 * predicate stays as the record of what B3's inputs were (test/fuzz.test.ts pins it). It
 * checks every whitespace-separated token, a superset of the request targets.
 */
export function hitsKnownAdminBug(bytes: Buffer): boolean {
  for (const token of bytes.toString('latin1').split(/[\s\x00]+/)) {
    if (!token) continue;
    try {
      new URL(token, 'http://baton');
    } catch {
      return true;
    }
  }
  return false;
}
