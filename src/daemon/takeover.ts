import path from 'node:path';
import { activationOptions, type RunConfig } from './config.js';
import { BatonError, ConfigError, errorMessage } from '../os/errors.js';
import { bindListeners, type HeldListener } from '../os/listeners.js';
import type { Logger } from '../os/log.js';
import { setAside } from '../os/secure-fs.js';
import { Journal } from '../supervisor/journal.js';
import { Supervisor } from '../supervisor/supervisor.js';

/**
 * Binds the listeners. A supervisor that bound them itself and was killed leaves its
 * incumbent serving on them, and JS has no way to take the sockets back from it
 * (ARCHITECTURE.md, open problems). When a port is taken and the journal names a live
 * app of that supervisor, that app is stopped gracefully (Shutdown: drain, seal, exit)
 * and the listeners bound again: the service comes back supervised after a short gap
 * (refused connections for a cold start), instead of a start that fails forever while
 * an orphan serves unsupervised. systemd socket activation avoids the gap.
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
