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
 * rejects.
 */
export async function fetchListenerCopies(timeoutMs: number): Promise<Map<string, ListenerHandle>> {
  const sets = await fetchListenerCopySets(timeoutMs, 1);
  return new Map([...sets].map(([name, handles]) => [name, handles[0]!]));
}

/**
 * Asks the supervisor for `count` copies of every listener in one request. Resolves with
 * what arrived within `timeoutMs`, by listener name (an empty map without a channel);
 * never rejects. The 'message' listener exists only while asking, so the channel does
 * not keep the process alive.
 */
export function fetchListenerCopySets(timeoutMs: number, count: number): Promise<Map<string, ListenerHandle[]>> {
  const copies = new Map<string, ListenerHandle[]>();
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
        const set = copies.get(msg.name) ?? [];
        // More than asked for (a confused peer): keep what was asked, close the rest.
        if (set.length >= count) handle.close();
        else set.push(handle);
        copies.set(msg.name, set);
      } else if (isListenerCopiesDone(msg, seq)) {
        finish();
      }
    };
    process.on('message', onMessage);
    timer = setTimeout(finish, timeoutMs);
    const request: ListenerCopiesRequest = count === 1 ? { baton: 'listener-copies?', seq } : { baton: 'listener-copies?', seq, count };
    process.send!(request, undefined, undefined, (err: Error | null) => {
      if (err) finish();
    });
  });
}

function isListenerHandle(h: unknown): h is ListenerHandle {
  return typeof h === 'object' && h !== null && typeof (h as ListenerHandle).fd === 'number' && typeof (h as ListenerHandle).close === 'function';
}
