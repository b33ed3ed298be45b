import { BatonError, errorMessage } from '../os/errors.js';
import { bindListener, parseListenAddress, type HeldListener, type ListenerSpec } from '../os/listeners.js';
import type { Logger } from '../os/log.js';

/**
 * An app run without baton (standalone: no BATON_ROLE) binds the listeners it asks for
 * itself, from `BATON_LISTEN`: the same addresses as `baton run --listen`, comma-separated,
 * e.g. `BATON_LISTEN=http=tcp://127.0.0.1:8080` or `BATON_LISTEN=tcp://127.0.0.1:8080`
 * (a single unnamed address serves whatever name the app asks for first). A listener is
 * bound on the first `listenFd(name)`, so an app that never asks binds nothing.
 * Nobody hands a standalone process off, so there are no spare copies: asking again for
 * a name gives the same fd.
 */
export const STANDALONE_LISTEN_ENV = 'BATON_LISTEN';

interface Entry {
  spec: ListenerSpec;
  named: boolean;
  held?: HeldListener;
}

export class StandaloneListeners {
  private readonly entries: Entry[];

  /** Parses BATON_LISTEN now, so a malformed one fails at startBaton, not at the first listen. */
  constructor(
    env: NodeJS.ProcessEnv,
    private readonly log: Logger,
  ) {
    const texts = (env[STANDALONE_LISTEN_ENV] ?? '').split(',').map((t) => t.trim()).filter((t) => t !== '');
    this.entries = texts.map((text, i) => {
      let spec: ListenerSpec;
      try {
        spec = parseListenAddress(text, i);
      } catch (err) {
        throw new BatonError('E_BAD_ENV', `${STANDALONE_LISTEN_ENV}: ${errorMessage(err)}`);
      }
      return { spec, named: /^[^=:/]+=/.test(text) };
    });
    if (this.entries.length > 1 && this.entries.some((e) => !e.named)) {
      throw new BatonError('E_BAD_ENV', `${STANDALONE_LISTEN_ENV}=${env[STANDALONE_LISTEN_ENV]}: with several addresses each needs its listener's name (name=tcp://HOST:PORT)`);
    }
  }

  /** The fd of listener `name`, bound now if it is not yet; `bound` is told its address. */
  listenFd(name: string, bound: (name: string, fd: number, address: string) => void): number {
    const entry = this.entries.find((e) => e.named && e.spec.name === name) ?? this.entries.find((e) => !e.named && (!e.held || e.spec.name === name));
    if (!entry) {
      const have = this.entries.map((e) => (e.named ? e.spec.name : `(unnamed, used for ${e.spec.name})`)).join(', ');
      throw new BatonError(
        'E_NO_LISTENER',
        `standalone (not started by baton): no listener named ${name}; ` +
          (have ? `${STANDALONE_LISTEN_ENV} has: ${have}` : `set ${STANDALONE_LISTEN_ENV}=${name}=tcp://127.0.0.1:8080 to have one`),
      );
    }
    if (!entry.held) {
      entry.spec = { ...entry.spec, name };
      entry.held = bindListener(entry.spec);
      bound(name, entry.held.fd, entry.held.address);
      this.log.info({ event: 'app.standalone_listening', name, address: entry.held.address }, `standalone: listening on ${entry.held.address} (${name})`);
    }
    return entry.held.fd;
  }
}
