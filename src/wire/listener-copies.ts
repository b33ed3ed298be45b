/**
 * Optional feature "listener copies" (PROTOCOL.md §2, "Listener copies"): fresh copies of the listening
 * sockets, sent by the supervisor over Node's child-process IPC channel (an fd named by
 * NODE_CHANNEL_FD; SCM_RIGHTS under the hood) when the app asks. It exists because Node
 * cannot stop accepting on a listening fd without closing it, nor dup(2) one: an app that
 * closed its listener to drain gets a new copy for every resume after an abort, with no
 * limit (the spare copies at fds 3+n.. are a fixed number, for apps without the channel).
 *
 * The messages are plain JSON objects, Node's IPC serialization; both sides ignore any
 * message that is not one of these.
 */

/** Most copies of every listener one request may ask for (`count`). */
export const MAX_LISTENER_COPIES_PER_REQUEST = 64;

/** App → supervisor: send me `count` (default 1) copies of every listener. */
export interface ListenerCopiesRequest {
  baton: 'listener-copies?';
  seq: number;
  /** 1..MAX_LISTENER_COPIES_PER_REQUEST; absent means 1. */
  count?: number;
}
/** Supervisor → app, with the socket as the message's handle: one per listener. */
export interface ListenerCopy {
  baton: 'listener-copy';
  seq: number;
  name: string;
}
/** Supervisor → app, after the copies: what was sent (or why nothing was). */
export interface ListenerCopiesDone {
  baton: 'listener-copies';
  seq: number;
  names: string[];
  error?: string;
}

/** Bounds what the supervisor accepts: a small integer sequence number and count, nothing else read. */
export function isListenerCopiesRequest(m: unknown): m is ListenerCopiesRequest {
  if (typeof m !== 'object' || m === null) return false;
  const r = m as Record<string, unknown>;
  if (r.baton !== 'listener-copies?' || !Number.isSafeInteger(r.seq) || (r.seq as number) < 0) return false;
  return r.count === undefined || (Number.isSafeInteger(r.count) && (r.count as number) >= 1 && (r.count as number) <= MAX_LISTENER_COPIES_PER_REQUEST);
}

export function isListenerCopy(m: unknown, seq: number): m is ListenerCopy {
  if (typeof m !== 'object' || m === null) return false;
  const r = m as Record<string, unknown>;
  return r.baton === 'listener-copy' && r.seq === seq && typeof r.name === 'string';
}

export function isListenerCopiesDone(m: unknown, seq: number): m is ListenerCopiesDone {
  if (typeof m !== 'object' || m === null) return false;
  const r = m as Record<string, unknown>;
  return r.baton === 'listener-copies' && r.seq === seq;
}
