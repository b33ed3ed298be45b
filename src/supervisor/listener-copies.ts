import type { ChildProcess, SendHandle } from 'node:child_process';
import { errorMessage } from '../os/errors.js';
import type { HeldListener } from '../os/listeners.js';
import type { Logger } from '../os/log.js';
import { isListenerCopiesRequest, type ListenerCopiesDone, type ListenerCopy } from '../wire/listener-copies.js';

/** A request whose copies are not acknowledged by then no longer blocks the next one. */
const SEND_TIMEOUT_MS = 5_000;

/**
 * Serves "listener copies" (wire/listener-copies.ts) to one app process we spawned with
 * an IPC channel: on request, `count` (default 1) copies of each held listener. At most
 * one request is served at a time (later ones while busy are dropped: the app's own
 * timeout answers them). Whatever else the app sends is ignored, and any handle it sends us is closed at
 * once: the supervisor never keeps a socket an app gave it.
 */
export function serveListenerCopies(child: ChildProcess, listeners: readonly HeldListener[], log: Logger): void {
  let busy = false;
  child.on('message', (msg: unknown, handle: unknown) => {
    if (handle) closeForeign(handle);
    if (!isListenerCopiesRequest(msg) || busy || !child.connected) return;
    busy = true;
    const timer = setTimeout(() => (busy = false), SEND_TIMEOUT_MS);
    timer.unref();
    const count = msg.count ?? 1;
    void sendCopies(child, listeners, msg.seq, count)
      .then((names) => log.info({ event: 'listeners.copied', pid: child.pid, listeners: names, count }, `sent pid ${child.pid} ${count} fresh ${count === 1 ? 'copy' : 'copies'} of its listeners`))
      .catch((err: unknown) => {
        log.warn({ event: 'listeners.copy_failed', pid: child.pid, err: errorMessage(err) }, `could not send pid ${child.pid} copies of its listeners`);
        reply(child, { baton: 'listener-copies', seq: msg.seq, names: [], error: errorMessage(err) });
      })
      .finally(() => {
        clearTimeout(timer);
        busy = false;
      });
  });
  // EPIPE after the app exited: the 'exit' path reports that, not this.
  child.on('error', () => undefined);
}

async function sendCopies(child: ChildProcess, listeners: readonly HeldListener[], seq: number, count: number): Promise<string[]> {
  for (let k = 0; k < count; k++) {
    for (const l of listeners) {
      const msg: ListenerCopy = { baton: 'listener-copy', seq, name: l.name };
      // Node sends a TCP/Pipe wrap as 'net.Native' and, unlike a net.Socket, keeps ours open.
      await new Promise<void>((resolve, reject) => {
        child.send(msg, l.handle as SendHandle, (err) => (err ? reject(err) : resolve()));
      });
    }
  }
  const names = listeners.map((l) => l.name);
  reply(child, { baton: 'listener-copies', seq, names });
  return names;
}

function reply(child: ChildProcess, msg: ListenerCopiesDone): void {
  if (child.connected) child.send(msg, (err) => void err);
}

function closeForeign(handle: unknown): void {
  try {
    const h = handle as { destroy?: () => void; close?: () => void };
    if (typeof h.destroy === 'function') h.destroy();
    else if (typeof h.close === 'function') h.close();
  } catch {
    /* already closed */
  }
}
