import type { ControlChannel } from './channel.js';
import { BatonError, ProtocolError } from '../os/errors.js';
import type { Message, MessageOf, MessageType } from './schema.js';

/**
 * A role's transition table: for each state, the messages it accepts and what each
 * does. A message not in the table for the current state is a protocol violation
 * (E_UNEXPECTED_MESSAGE); a state with no entry takes no messages.
 */
export type Transitions<S extends string, C> = {
  [K in S]?: { [T in MessageType]?: (ctx: C, msg: MessageOf<T>) => Promise<void> };
};

export interface Machine<S extends string> {
  state: S;
  /** Handoff id fixed by HelloAck; frames naming another id are rejected. */
  handoffId: string | undefined;
}

/**
 * Feeds messages from `ch` through `table` one at a time (a handler finishes before
 * the next message is looked at, so e.g. an Abort during a drain waits for the drain).
 * Returns the error that ended the conversation: the channel's failure, or the
 * violation it detected (which it reports to the peer and then closes).
 */
export async function drive<S extends string, C extends Machine<S>>(
  ch: ControlChannel,
  ctx: C,
  table: Transitions<S, C>,
): Promise<BatonError> {
  for (;;) {
    let msg: Message;
    try {
      msg = await ch.receive();
    } catch (err) {
      return err as BatonError;
    }
    const violation = checkMessage(ctx, table, msg);
    if (violation) {
      ch.sendError(violation);
      ch.close('after a protocol violation');
      return violation;
    }
    const handler = table[ctx.state]?.[msg.type] as ((c: C, m: Message) => Promise<void>) | undefined;
    await handler!(ctx, msg);
    if (ch.failed) return ch.failed;
    if (!table[ctx.state]) return new BatonError('E_DONE', `conversation over in state ${ctx.state}`);
  }
}

function checkMessage<S extends string, C extends Machine<S>>(
  ctx: C,
  table: Transitions<S, C>,
  msg: Message,
): ProtocolError | undefined {
  if (msg.type === 'Error') {
    return new ProtocolError('E_PEER_ERROR', `peer reported ${msg.code}: ${msg.message}`, { peerCode: msg.code });
  }
  if (!table[ctx.state]?.[msg.type]) {
    return new ProtocolError('E_UNEXPECTED_MESSAGE', `${msg.type} is not accepted in state ${ctx.state}`);
  }
  if ('handoffId' in msg && ctx.handoffId !== undefined && msg.handoffId !== ctx.handoffId) {
    return new ProtocolError('E_WRONG_HANDOFF', `${msg.type} names handoff ${msg.handoffId}, this connection is ${ctx.handoffId}`);
  }
  return undefined;
}
