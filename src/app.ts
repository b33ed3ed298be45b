import { Worker } from 'node:worker_threads';
import { crashConfigFromEnv } from './crashpoints.js';
import { BatonError, errorMessage } from './errors.js';
import { inheritedListeners } from './listeners.js';
import { createLogger, type Logger } from './log.js';
import { detectRole, ENV, type Role, type RoleInfo } from './roles.js';
import type { RevisionMap } from './schema.js';
import { Rpc } from './worker-rpc.js';
import { LIVENESS_TIMEOUT_MS } from './channel.js';

// ---- The typed app-facing API --------------------------------------------------

export interface DrainResult {
  openConnsRemaining: number;
  acceptClosed: boolean;
}
export interface SealResult {
  lastRevisionPerShard: RevisionMap;
  /** SHA-256 over the sealed shard heads: exactly 32 bytes. */
  dataDirFingerprint: Uint8Array;
}
export interface Readiness {
  listeningOn: string[];
  healthzOk: boolean;
  advertisedRevisionPerShard: RevisionMap;
}
export interface StateSnapshot {
  shardCount: number;
  openConns: number;
  lastRevisionPerShard: RevisionMap;
}
export type SealProgress = (done: number, total: number) => void;

/**
 * What an app implements so baton can hand it off. Every method may be async or may
 * block the main thread for a long time: baton's worker thread keeps heartbeating
 * and keeps the data-dir lock fresh meanwhile.
 */
export interface Drainable {
  /** Stop accepting; let in-flight requests finish; close keep-alive connections cleanly by `deadline`. */
  drain(deadline: Date): DrainResult | Promise<DrainResult>;
  /** Make all data durable and stop writing. baton releases the data-dir lock after this returns. */
  seal(progress: SealProgress): SealResult | Promise<SealResult>;
  /** Undo drain/seal: re-open for writes (re-reading anything a successor wrote) and accept again. */
  resumeAfterAbort(): void | Promise<void>;
  snapshotState(): StateSnapshot | Promise<StateSnapshot>;
  readiness(): Readiness | Promise<Readiness>;
}

/** What `begin()` resolves with: the data-dir lock is held by this process now. */
export interface BeginInfo {
  role: 'cold' | 'successor' | 'standalone';
  handoffId: string;
  /** Revisions the previous incumbent sealed ({} on cold start or after it died). */
  sealedRevisionPerShard: RevisionMap;
  /** Its dataDirFingerprint (empty when there was no seal). */
  sealedFingerprint: Uint8Array;
  /** 0 on cold start. */
  incumbentPid: number;
}

export interface BatonAppOptions {
  drainable: Drainable;
  /** Opaque build identifier sent in Hello/Ready (defaults to BATON_BUILD_ID or ''). */
  buildId?: string;
  /** Data dir to lock; defaults to BATON_DATA_DIR. */
  dataDir?: string;
  /** Called before the process exits (after Commit as the old incumbent, on Abort, after Shutdown). */
  onExit?: (reason: string) => void | Promise<void>;
  /** Called when the data-dir lock is lost to another process: stop writing. Default: exit(70). */
  onLockLost?: (err: Error) => void;
  log?: Logger;
  env?: NodeJS.ProcessEnv;
}

export interface InheritedListener {
  fd: number;
  address: string;
}

/**
 * An app's handle on baton. Typical use:
 *
 *   const baton = await startBaton({ drainable: app });
 *   const begin = await baton.begin();      // data-dir lock held
 *   await app.open(baton.dataDir, begin);   // verify begin.sealedRevisionPerShard
 *   app.listen(baton.listeners);            // server.listen({ fd })
 *   await baton.ready();                    // Ready sent; resolves once committed
 */
export class BatonApp {
  readonly role: Role;
  readonly listeners: Map<string, InheritedListener>;
  readonly dataDir: string;
  private readonly worker: Worker;
  private readonly rpc: Rpc;
  private beginWaiter = deferred<BeginInfo>();
  private readinessReply = deferred<Readiness>();
  private committed = deferred<void>();
  private readonly log: Logger;
  private readonly spares: number;
  private readonly copiesUsed = new Map<string, number>();

  constructor(
    private readonly opts: BatonAppOptions,
    info: RoleInfo,
  ) {
    const env = opts.env ?? process.env;
    this.role = info.role;
    this.log = opts.log ?? createLogger('baton-app', { role: info.role });
    const dataDir = opts.dataDir ?? info.dataDir;
    if (!dataDir) throw new BatonError('E_BAD_ENV', 'no data dir: pass dataDir or set BATON_DATA_DIR');
    this.dataDir = dataDir;
    this.listeners = info.role === 'standalone' ? new Map() : inheritedListeners(env);
    this.spares = Number(env[ENV.listenSpares] ?? '0');
    this.worker = new Worker(new URL('./agent-worker.js', import.meta.url), {
      workerData: {
        role: info.role,
        controlFd: info.controlFd,
        controlPath: info.controlPath,
        dataDir,
        buildId: opts.buildId ?? env.BATON_BUILD_ID ?? '',
        crash: crashConfigFromEnv(env),
        livenessMs: Number(env.BATON_LIVENESS_MS ?? LIVENESS_TIMEOUT_MS),
      },
    });
    this.worker.on('error', (err) => {
      this.log.fatal({ event: 'app.worker_error', err: errorMessage(err) }, 'baton worker failed');
      process.exit(70);
    });
    const d = opts.drainable;
    this.rpc = new Rpc(this.worker, {
      drain: ({ deadlineMs }: { deadlineMs: number }) => d.drain(new Date(deadlineMs)),
      seal: () => d.seal((done, total) => this.rpc.notify('sealProgress', { done, total })),
      resume: () => d.resumeAfterAbort(),
      snapshot: () => d.snapshotState(),
      begin: (begin: BeginInfo) => {
        this.beginWaiter.resolve(begin);
        return this.readinessReply.promise;
      },
      committed: () => this.committed.resolve(),
      exit: async ({ code, reason }: { code: number; reason: string }) => {
        try {
          await opts.onExit?.(reason);
        } finally {
          process.exit(code);
        }
      },
      lockLost: ({ message }: { message: string }) => {
        const err = new BatonError('E_LOCK_LOST', message);
        this.log.fatal({ event: 'app.lock_lost', err: message }, 'data-dir lock lost: stop writing');
        if (opts.onLockLost) opts.onLockLost(err);
        else process.exit(70);
      },
    });
  }

  /**
   * The fd to `listen({ fd })` on for listener `name`. The first call gives the
   * listener itself; each later call (after you closed the previous one to drain and
   * are resuming after an abort) gives a spare copy of the same socket.
   */
  listenFd(name: string): number {
    const names = [...this.listeners.keys()];
    const index = names.indexOf(name);
    if (index < 0) throw new BatonError('E_NO_LISTENER', `no inherited listener named ${name} (have: ${names.join(', ') || 'none'})`);
    const copy = this.copiesUsed.get(name) ?? 0;
    if (copy > this.spares) {
      throw new BatonError('E_NO_SPARE_LISTENER', `listener ${name}: all ${this.spares} spare copies used; cannot listen again`);
    }
    this.copiesUsed.set(name, copy + 1);
    return this.listeners.get(name)!.fd + copy * names.length;
  }

  /** Resolves when this process holds the data-dir lock and may open the data. */
  begin(): Promise<BeginInfo> {
    return this.beginWaiter.promise;
  }

  /** Reports readiness (from the Drainable) and resolves once this process is the committed incumbent. */
  async ready(): Promise<void> {
    this.readinessReply.resolve(await this.opts.drainable.readiness());
    await this.committed.promise;
  }
}

/** Detects the role from the environment and starts baton's worker thread for this app. */
export async function startBaton(opts: BatonAppOptions): Promise<BatonApp> {
  const info = detectRole(opts.env ?? process.env);
  return new BatonApp(opts, info);
}

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}
