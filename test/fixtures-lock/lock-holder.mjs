// A process that takes the data-dir lock, for test/lock.test.ts.
//   node lock-holder.mjs '{"dataDir":"...","staleMs":2000,"waitMs":0,"worker":false}'
// Prints JSON lines on stdout (written with writeSync so they appear even while the main
// thread is blocked): acquired | refused | compromised | released | status | busy-done.
// Reads commands on stdin: status | release | busy <ms> | exit.
import { writeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { DataDirLock } from '../../dist/src/os/lock.js';

const say = (obj) => writeSync(1, JSON.stringify({ pid: process.pid, t: Date.now(), ...obj }) + '\n');

/** Owns the lock; runs on the main thread or in a worker. `command` returns the reply. */
async function lockOwner(cfg) {
  const lock = new DataDirLock(cfg.dataDir, {
    staleMs: cfg.staleMs,
    updateMs: cfg.updateMs,
    onCompromised: (err) => say({ event: 'compromised', code: err.code, message: err.message }),
  });
  say({ event: 'trying' });
  const t0 = Date.now();
  try {
    await lock.acquire({ handoffId: cfg.handoffId ?? 'test', waitMs: cfg.waitMs ?? 0 });
    say({ event: 'acquired', ms: Date.now() - t0 });
  } catch (err) {
    say({ event: 'refused', code: err.code, holderPid: err.details?.pid, message: err.message });
    return undefined;
  }
  return async (cmd) => {
    if (cmd === 'status') return { event: 'status', held: lock.held };
    if (cmd === 'release') {
      await lock.release();
      return { event: 'released', held: lock.held };
    }
    return { event: 'unknown', cmd };
  };
}

function busy(ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    /* block the main thread */
  }
}

if (!isMainThread) {
  const command = await lockOwner(workerData);
  parentPort.postMessage({ ready: command !== undefined });
  parentPort.on('message', async (cmd) => say(await command(cmd)));
} else {
  const cfg = JSON.parse(process.argv[2]);
  let send;
  if (cfg.worker) {
    const worker = new Worker(new URL(import.meta.url), { workerData: cfg });
    const ready = await new Promise((resolve) => worker.once('message', (m) => resolve(m.ready)));
    if (!ready) process.exit(3);
    send = (cmd) => worker.postMessage(cmd);
  } else {
    const command = await lockOwner(cfg);
    if (command === undefined) process.exit(3);
    send = async (cmd) => say(await command(cmd));
  }
  createInterface({ input: process.stdin }).on('line', (line) => {
    const [cmd, arg] = line.trim().split(' ');
    if (cmd === 'exit') process.exit(0);
    if (cmd === 'busy') {
      busy(Number(arg));
      say({ event: 'busy-done' });
      return;
    }
    send(cmd);
  });
}
