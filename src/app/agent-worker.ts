/**
 * baton's worker thread inside an app process. It owns the control connections
 * (successor socketpair, then the incumbent control socket) and the data-dir lock,
 * so heartbeats, lock refreshes and protocol replies go on while the app's main
 * thread is blocked in drain or seal.
 */
import { mkdirSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import type { AgentContext, JobProgressNote } from './agent.js';
import type { CrashConfig } from '../os/crashpoints.js';
import { errorMessage } from '../os/errors.js';
import { DataDirLock, prepareLock } from '../os/lock.js';
import { createLogger } from '../os/log.js';
import type { Role } from '../wire/roles.js';
import { Successor } from './successor.js';
import { Rpc } from './worker-rpc.js';
import type { BeginInfo } from './app.js';

interface AgentWorkerData {
  role: Role;
  controlFd?: number;
  controlPath?: string;
  dataDir: string;
  buildId: string;
  crash: CrashConfig;
  livenessMs: number;
}

const data = workerData as AgentWorkerData;
const log = createLogger('baton-agent', { role: data.role });
// Notes from the app's main thread: progress of the running maintenance task, and of a seal.
const rpc = new Rpc(parentPort!, {
  jobProgress: (p: JobProgressNote) => ctx.onJobProgress?.(p),
  sealProgress: (p: { done: number; total: number }) => ctx.onSealProgress?.(p.done, p.total),
});
const lock = new DataDirLock(data.dataDir, {
  log,
  onCompromised: (err: Error) => rpc.notify('lockLost', { message: err.message }),
});
const ctx: AgentContext = {
  rpc,
  lock,
  crash: data.crash,
  log,
  controlPath: data.controlPath ?? '',
  buildId: Buffer.from(data.buildId, 'utf8'),
  livenessMs: data.livenessMs,
};

async function main(): Promise<void> {
  // Load the lock implementation now, while we boot, not at Begin inside the write blackout.
  if (data.role !== 'standalone') {
    void prepareLock(data.dataDir).catch((err: unknown) => log.warn({ event: 'lock.prepare_failed', err: errorMessage(err) }, 'lock preload failed'));
  }
  // The app's start-up work (BatonAppOptions.warmUp) ran while we booted; Hello waits for it.
  await rpc.call('warmedUp');
  if (data.role === 'standalone') {
    // Not under baton: take the lock and let the app run; nobody will hand it off. The data
    // dir is created if missing (mkdir -p), as `baton run` does.
    mkdirSync(data.dataDir, { recursive: true });
    await lock.acquire({ handoffId: 'standalone' });
    const info: BeginInfo = {
      role: 'standalone',
      handoffId: 'standalone',
      sealedRevisionPerShard: {},
      sealedFingerprint: new Uint8Array(),
      incumbentPid: 0,
    };
    await rpc.call('begin', info);
    await rpc.call('committed');
    return;
  }
  const successor = new Successor(ctx, data.controlFd!, data.role);
  await successor.run();
  log.info({ event: 'agent.incumbent' }, 'this process is the incumbent');
}

main().catch((err) => {
  log.fatal({ event: 'agent.failed', err: errorMessage(err) }, 'baton agent failed');
  void rpc.call('exit', { code: 70, reason: `baton agent failed: ${errorMessage(err)}` });
});
