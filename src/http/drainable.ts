import type { Drainable, Readiness, SealProgress, SealResult, StateSnapshot } from '../app/app.js';
import type { HttpListeners } from './listeners.js';

/** What an HTTP app adds to its listeners to make a `Drainable`: the data's side. */
export interface HttpAppParts {
  /** Make the data durable and stop writing (`Drainable.seal`); runs after the drain. */
  seal(progress: SealProgress): SealResult | Promise<SealResult>;
  /** Health and revisions for the Ready check; `listeningOn` comes from the listeners. */
  readiness(): Omit<Readiness, 'listeningOn'> | Promise<Omit<Readiness, 'listeningOn'>>;
  /**
   * After an aborted handoff, before the listeners serve again: re-read what a successor
   * may have written and open for writes. May return a promise (awaited); its value is not used.
   */
  reopen?(): unknown;
  /** Shards and revisions for `snapshotState` (`openConns` comes from the listeners); default none. */
  snapshot?(): Omit<StateSnapshot, 'openConns'> | Promise<Omit<StateSnapshot, 'openConns'>>;
}

/**
 * A `Drainable` for an HTTP app: the listeners drain, resume and say where they listen;
 * `parts` seals, reopens and reports the data.
 */
export function httpDrainable(http: HttpListeners, parts: HttpAppParts): Drainable {
  return {
    drain: (deadline) => http.drain(deadline),
    seal: (progress) => parts.seal(progress),
    async resumeAfterAbort() {
      await parts.reopen?.();
      await http.resume();
    },
    async snapshotState() {
      const data = (await parts.snapshot?.()) ?? { shardCount: 0, lastRevisionPerShard: {} };
      return { ...data, openConns: http.openConns };
    },
    async readiness() {
      return { ...(await parts.readiness()), listeningOn: http.listeningOn };
    },
  };
}
