import { errorMessage } from '../os/errors.js';
import type { Logger } from '../os/log.js';

/**
 * What `baton run` does with an error nobody caught (an unhandled rejection, an uncaught
 * exception): it logs it (`daemon.fault`, with the stack) and keeps supervising. Exiting
 * would orphan the app — it serves on without a supervisor, nobody restarts it, and the
 * next `baton run` has to take its listeners back with a gap — which is worse than
 * going on with one failed request or timer callback behind. Requests cannot get here
 * (admin.ts answers every failure), so a fault is a bug, not an attack. A storm (more
 * than `maxPerMinute` faults in 60 s) means the supervisor may be broken for good:
 * `onStorm` runs once (the daemon stops the app gracefully and exits 1).
 */
export function installFaultPolicy(log: Logger, opts: { onStorm: () => void; maxPerMinute?: number }): () => void {
  const max = opts.maxPerMinute ?? 20;
  const times: number[] = [];
  let stormed = false;
  const fault = (kind: 'unhandledRejection' | 'uncaughtException', err: unknown): void => {
    const now = Date.now();
    times.push(now);
    while (times.length > 0 && times[0]! < now - 60_000) times.shift();
    try {
      log.error({ event: 'daemon.fault', kind, err: errorMessage(err), stack: err instanceof Error ? err.stack : undefined, inLastMinute: times.length }, `${kind}: ${errorMessage(err)}; the supervisor keeps running`);
    } catch {
      // logging must not turn one fault into another
    }
    if (times.length > max && !stormed) {
      stormed = true;
      log.fatal({ event: 'daemon.fault_storm', inLastMinute: times.length, max }, `${times.length} uncaught errors in a minute: stopping`);
      opts.onStorm();
    }
  };
  const onRejection = (reason: unknown): void => fault('unhandledRejection', reason);
  const onException = (err: Error): void => fault('uncaughtException', err);
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onException);
  return () => {
    process.off('unhandledRejection', onRejection);
    process.off('uncaughtException', onException);
  };
}
