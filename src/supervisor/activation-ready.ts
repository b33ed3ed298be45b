/**
 * When a socket-activated app (activation.ts) is ready: it speaks no protocol, so
 * readiness is judged from outside. A new process is ready once all of these hold:
 * it has stayed alive `readyAfterMs` since it was started; `readyCmd` (if any), run
 * with `sh -c`, exited 0; `GET readyUrl` (if any) answered 2xx. The checks are retried
 * until they pass or the budget runs out. The process exiting first fails at once.
 */
import { spawn } from 'node:child_process';
import http from 'node:http';
import { BatonError, HandoffError, errorMessage } from '../os/errors.js';
import { killGroup } from '../os/proc.js';
import type { AppProcess, ExitStatus } from './generation.js';

/** Pause between two tries of a check that failed. */
const RETRY_MS = 200;
/** How much of a ready-cmd's output is kept for the reason. */
const OUTPUT_BYTES = 2048;

export interface ReadySpec {
  app: AppProcess;
  /** When it was started (epoch ms). */
  startedAt: number;
  readyAfterMs: number;
  readyCmd: string | undefined;
  /** `http://127.0.0.1:PORT/PATH` on the private listener only this process has. */
  readyUrl: string | undefined;
  /** The ready-cmd's env. */
  env: NodeJS.ProcessEnv;
  /** How long it has from its start; past it: E_READY_TIMEOUT. */
  budgetMs: number;
}

/** Resolves once `spec.app` is ready; rejects with E_PEER_DIED or E_READY_TIMEOUT, naming the check that did not pass. */
export async function awaitReady(spec: ReadySpec): Promise<void> {
  const { app } = spec;
  const stop = new AbortController();
  /** What each check said last (for the timeout's reason); deleted once it passed. */
  const pending = new Map<string, string>();
  const died = app.exited.then((s: ExitStatus) => {
    const afterS = ((Date.now() - spec.startedAt) / 1000).toFixed(1);
    throw new BatonError('E_PEER_DIED', `new process (pid ${app.pid}) exited (code ${s.code ?? '-'}, signal ${s.signal ?? '-'}) ${afterS} s after it started, before it was ready`);
  });
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const why = [...pending.values()].join('; ');
      reject(new HandoffError('E_READY_TIMEOUT', `new process (pid ${app.pid}) was not ready within ${spec.budgetMs} ms of its start${why ? `: ${why}` : ''}`));
    }, Math.max(0, spec.startedAt + spec.budgetMs - Date.now()));
  });
  const checks: Promise<void>[] = [aliveFor(spec, pending, stop.signal)];
  if (spec.readyCmd !== undefined) checks.push(retry('readyCmd', pending, stop.signal, () => runReadyCmd(spec.readyCmd!, spec.env, stop.signal)));
  if (spec.readyUrl !== undefined) checks.push(retry('readyHttp', pending, stop.signal, () => httpGet(spec.readyUrl!, stop.signal)));
  const all = Promise.all(checks);
  for (const p of [died, timeout, all]) p.catch(() => undefined);
  try {
    await Promise.race([all, died, timeout]);
  } finally {
    clearTimeout(timer);
    stop.abort(); // ends a check still running: its ready-cmd (process group) or its request
  }
}

async function aliveFor(spec: ReadySpec, pending: Map<string, string>, signal: AbortSignal): Promise<void> {
  const waitMs = spec.startedAt + spec.readyAfterMs - Date.now();
  if (waitMs <= 0) return;
  pending.set('readyAfter', `it had not been up ${spec.readyAfterMs} ms yet`);
  await sleep(waitMs, signal);
  pending.delete('readyAfter');
}

/** Tries `once` until it returns undefined (passed); each failure's text is kept in `pending` under `name`. */
async function retry(name: string, pending: Map<string, string>, signal: AbortSignal, once: () => Promise<string | undefined>): Promise<void> {
  pending.set(name, 'not tried yet');
  while (!signal.aborted) {
    const problem = await once();
    if (problem === undefined) {
      pending.delete(name);
      return;
    }
    pending.set(name, problem);
    await sleep(RETRY_MS, signal);
  }
}

/** Runs `sh -c cmd` in its own process group: undefined on exit 0, else why not. Aborting kills the group. */
function runReadyCmd(cmd: string, env: NodeJS.ProcessEnv, signal: AbortSignal): Promise<string | undefined> {
  return new Promise((resolve) => {
    const child = spawn('/bin/sh', ['-c', cmd], { stdio: ['ignore', 'pipe', 'pipe'], env, detached: true });
    let out = '';
    const keep = (c: Buffer): void => {
      out = (out + c.toString('utf8')).slice(-OUTPUT_BYTES);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const kill = (): void => {
      if (child.pid !== undefined) killGroup(child.pid);
    };
    signal.addEventListener('abort', kill, { once: true });
    child.once('error', (err) => resolve(`ready-cmd could not start: ${errorMessage(err)}`));
    child.once('close', (code, sig) => {
      signal.removeEventListener('abort', kill);
      if (child.pid !== undefined) killGroup(child.pid); // what it left in the background
      if (code === 0) return resolve(undefined);
      const last = out.split('\n').map((l) => l.trim()).filter(Boolean).pop();
      resolve(`ready-cmd \`${cmd}\` ${code !== null ? `exited ${code}` : `was killed (${sig})`}${last ? `: ${last.slice(0, 200)}` : ''}`);
    });
  });
}

/**
 * GET `url` (plain node:http: the supervisor runs in --lite-mode, where global fetch is
 * off-limits): undefined on 2xx, else why not. The private listener queues the
 * connection until the app accepts, so one request simply waits for a slow start.
 */
function httpGet(url: string, signal: AbortSignal): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, signal, headers: { 'user-agent': 'baton-ready-check', connection: 'close' } }, (res) => {
      res.resume();
      res.once('end', () => undefined);
      const code = res.statusCode ?? 0;
      resolve(code >= 200 && code < 300 ? undefined : `GET ${url} answered ${code}`);
    });
    req.once('error', (err) => resolve(`GET ${url}: ${errorMessage(err)}`));
  });
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
