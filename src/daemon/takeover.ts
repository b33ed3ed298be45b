import path from 'node:path';
import { activationOptions, type RunConfig } from './config.js';
import { BatonError, ConfigError, errorMessage } from '../os/errors.js';
import { bindListeners, type HeldListener } from '../os/listeners.js';
import { reclaimListeners } from '../os/listener-reclaim.js';
import { isAlive } from '../os/proc.js';
import type { JournalRecord } from '../supervisor/results.js';
import type { Logger } from '../os/log.js';
import { setAside } from '../os/secure-fs.js';
import { Journal } from '../supervisor/journal.js';
import { Supervisor } from '../supervisor/supervisor.js';

/**
 * Binds the listeners. A supervisor that bound them itself and was killed leaves its
 * app serving on them. When a port is taken and the journal names a live app of that
 * supervisor, the listeners are taken back from that app (listener-reclaim.ts:
 * `pidfd_getfd` through a python3 helper) and the app is left serving: the daemon
 * re-adopts it from the journal, and no connection is refused. When that is not
 * possible (no python3, no right to copy, an older kernel), the app is stopped
 * gracefully (Shutdown: drain, seal, exit) and the listeners bound again: the service
 * comes back supervised after a short gap (refused connections for a cold start),
 * instead of a start that fails forever while an orphan serves unsupervised.
 */
export async function bindOrTakeOver(cfg: RunConfig, log: Logger): Promise<HeldListener[]> {
  try {
    return bindListeners(cfg.listen);
  } catch (err) {
    if (!(err instanceof BatonError) || err.details?.errno !== 'EADDRINUSE') throw err;
    // A journal that cannot be read says nothing about who holds the port: say so (not
    // "another program holds it"), and set it aside so the next start is not misled too.
    const journalPath = path.join(cfg.stateDir, 'handoff.journal');
    const unreadable = await new Journal(journalPath).read().then(
      () => undefined,
      (e: unknown) => errorMessage(e),
    );
    if (unreadable !== undefined) {
      const aside = await setAside(journalPath, 'corrupt').catch(() => undefined);
      log.error({ event: 'daemon.journal_unreadable', path: journalPath, err: unreadable, setAsideAs: aside }, `journal unreadable: ${unreadable}`);
      throw new ConfigError(
        'E_BIND_FAILED',
        `${err.message}; the journal of an earlier supervisor on state dir ${cfg.stateDir} cannot be read (${unreadable})${aside ? `; it was set aside as ${aside}` : ''}, so an app that supervisor started may still hold the address: find the process listening on it and stop it, then start again`,
        err.details,
      );
    }
    const reclaimed = await reclaimFromSurvivors(cfg, journalPath, log);
    if (reclaimed) return reclaimed;
    // In socket-activation mode the orphan is stopped with its own stop signal (no protocol to ask it with).
    const activation = cfg.activation && { activation: activationOptions(cfg.activation) };
    const previous = new Supervisor({ command: cfg.command, listeners: [], dataDir: cfg.dataDir, stateDir: cfg.stateDir, log, restart: { enabled: false }, ...activation });
    const survivor = (await previous.recover())?.survivor;
    if (!survivor) {
      throw new ConfigError('E_BIND_FAILED', `${err.message}; no app of an earlier baton supervisor on state dir ${cfg.stateDir} is alive, so another program holds it`, err.details);
    }
    log.warn(
      { event: 'daemon.takeover', pid: survivor.pid, generation: survivor.generation, address: err.details?.address },
      `${String(err.details?.address)} is held by generation ${survivor.generation} (pid ${survivor.pid}) of a supervisor that died; stopping it gracefully to bind the listeners again`,
    );
    await previous.stop(cfg.stopTimeoutS * 1000);
    return bindListeners(cfg.listen);
  }
}

/**
 * The listeners, copied from a live process the journal names (the incumbent first, else
 * the successor of an interrupted handoff: both hold the same sockets); undefined when
 * none is alive or none could be copied from (the reason is logged).
 */
async function reclaimFromSurvivors(cfg: RunConfig, journalPath: string, log: Logger): Promise<HeldListener[] | undefined> {
  const record = await new Journal<JournalRecord>(journalPath).read().catch(() => undefined);
  const peers = [record?.incumbent, record?.successor].filter((p): p is NonNullable<typeof p> => p !== undefined && isAlive(p.pid, p.startTime));
  for (const peer of peers) {
    const t0 = Date.now();
    try {
      const listeners = await reclaimListeners(peer.pid, cfg.listen);
      log.warn(
        { event: 'daemon.listeners_reclaimed', appPid: peer.pid, durationMs: Date.now() - t0, listeners: listeners.map((l) => `${l.name}=${l.address}`) },
        `took the listeners back from pid ${peer.pid}, left behind by a supervisor that died; it serves on and is re-adopted`,
      );
      return listeners;
    } catch (err) {
      log.warn(
        { event: 'daemon.reclaim_failed', appPid: peer.pid, err: errorMessage(err), reason: err instanceof BatonError ? err.details?.reason : undefined },
        `${errorMessage(err)}; falling back to stopping it gracefully and binding anew (a short gap of refused connections)`,
      );
    }
  }
  return undefined;
}
