import { isListenerCopiesDone, isListenerCopy, type ListenerCopiesRequest } from '../wire/listener-copies.js';

/** A listening socket's handle as Node passes it over IPC (a TCP or Pipe wrap). */
export interface ListenerHandle {
  readonly fd: number;
  close(): void;
}

let lastSeq = 0;

/** True when this process has a child-process IPC channel to the supervisor. */
export function hasIpcChannel(): boolean {
  return typeof process.send === 'function' && process.connected;
}

/**
 * Asks the supervisor for a fresh copy of every listener (wire/listener-copies.ts).
 * Resolves with what arrived within `timeoutMs` (an empty map without a channel); never
 * rejects. The 'message' listener exists only while asking, so the channel does not
 * keep the process alive.
 */
export function fetchListenerCopies(timeoutMs: number): Promise<Map<string, ListenerHandle>> {
  const copies = new Map<string, ListenerHandle>();
  if (!hasIpcChannel()) return Promise.resolve(copies);
  const seq = ++lastSeq;
  return new Promise((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    const finish = (): void => {
      clearTimeout(timer);
      process.off('message', onMessage);
      resolve(copies);
    };
    const onMessage = (msg: unknown, handle: unknown): void => {
      if (isListenerCopy(msg, seq) && isListenerHandle(handle)) {
        copies.get(msg.name)?.close();
        copies.set(msg.name, handle);
      } else if (isListenerCopiesDone(msg, seq)) {
        finish();
      }
    };
    process.on('message', onMessage);
    timer = setTimeout(finish, timeoutMs);
    const request: ListenerCopiesRequest = { baton: 'listener-copies?', seq };
    process.send!(request, undefined, undefined, (err: Error | null) => {
      if (err) finish();
    });
  });
}

function isListenerHandle(h: unknown): h is ListenerHandle {
  return typeof h === 'object' && h !== null && typeof (h as ListenerHandle).fd === 'number' && typeof (h as ListenerHandle).close === 'function';
}
