/**
 * The target process: `baton run` with fixtures/kv, whose incumbent's control socket,
 * admin socket, TCP admin API and metrics endpoint the fuzzer hits; the service checks
 * (same incumbent, lock held, /healthz, a write read back).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { adminRequest } from '../../src/daemon/admin.js';
import { lockHolder } from '../../src/os/lock.js';
import { isAlive } from '../../src/os/proc.js';
import { request } from '../lib/http.js';
import { freePort } from '../lib/scope.js';
import { CLI, killTagged, KV, sleep, Violation } from './util.js';

/** `baton run` with fixtures/kv: the incumbent (control socket) and the admin socket. */
export class Daemon {
  readonly dir = mkdtempSync(path.join(tmpdir(), 'baton-fuzz-'));
  readonly tag = `fuzz-${randomUUID()}`;
  readonly stateDir = path.join(this.dir, 'state');
  readonly dataDir = path.join(this.dir, 'data');
  readonly adminSock = path.join(this.stateDir, 'admin.sock');
  readonly controlPath = path.join(this.stateDir, 'control', 'incumbent.sock');
  readonly logFile = path.join(this.dir, 'baton.log');
  child!: ChildProcess;
  port = 0;
  /** The admin API on TCP (token required) and the metrics endpoint: listeners the slow-client phase covers. */
  adminTcpPort = 0;
  metricsPort = 0;
  readToken = '';
  incumbentPid = 0;
  private acked = new Map<string, string>();
  private probes = 0;

  async start(): Promise<void> {
    const fd = openSync(this.logFile, 'a');
    this.metricsPort = await freePort();
    this.child = spawn(process.execPath, [CLI, 'run', '--listen', 'http=tcp://127.0.0.1:0', '--data-dir', this.dataDir, '--state-dir', this.stateDir, '--admin-listen', '127.0.0.1:0', '--metrics', `127.0.0.1:${this.metricsPort}`, '--', ...KV], {
      stdio: ['ignore', 'ignore', fd],
      env: { ...process.env, BATON_TEST_TAG: this.tag, BATON_LOG_LEVEL: 'error', KV_LOG_LEVEL: 'error' },
    });
    closeSync(fd);
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (this.child.exitCode !== null) throw new Error(`baton run exited (${this.child.exitCode}); see ${this.logFile}`);
      const r = await adminRequest(this.adminSock, 'GET', '/v1/status', undefined, { timeoutMs: 2_000 }).catch(() => undefined);
      const body = r?.body as { app?: { pid: number } | null; listeners?: { address: string }[]; admin?: { tcp: string | null } } | undefined;
      if (body?.app?.pid && body.listeners?.[0]) {
        this.incumbentPid = body.app.pid;
        this.port = Number(body.listeners[0].address.split(':').pop());
        this.adminTcpPort = Number(body.admin?.tcp?.split(':').pop());
        this.readToken = readFileSync(path.join(this.stateDir, 'tokens', 'read.token'), 'utf8').trim();
        return;
      }
      if (Date.now() > deadline) throw new Error(`baton run did not come up; see ${this.logFile}`);
      await sleep(100);
    }
  }

  /** The incumbent still is the same process, holds the lock, answers HTTP and takes a write. */
  async checkServing(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Violation(`baton run exited (${this.child.exitCode ?? this.child.signalCode}); see ${this.logFile}`);
    if (!isAlive(this.incumbentPid)) throw new Violation(`the incumbent (pid ${this.incumbentPid}) is gone; see ${this.logFile}`);
    const holder = await lockHolder(this.dataDir);
    if (holder?.owner.pid !== this.incumbentPid || !holder.alive) throw new Violation(`the data-dir lock is held by ${holder?.owner.pid ?? 'nobody'}, not the incumbent ${this.incumbentPid}`);
    const h = await request(this.port, 'GET', '/healthz', undefined, undefined, 5_000).catch((err: Error) => ({ status: 0, body: err.message }));
    if (h.status !== 200 || (JSON.parse(h.body) as { pid: number }).pid !== this.incumbentPid) throw new Violation(`/healthz: ${h.status} ${h.body.slice(0, 200)}`);
    const key = `probe-${this.probes++}`;
    const value = randomUUID();
    const put = await request(this.port, 'PUT', `/kv/${key}`, value, undefined, 5_000);
    if (put.status !== 200) throw new Violation(`PUT /kv/${key}: ${put.status} ${put.body.slice(0, 200)}`);
    this.acked.set(key, value);
  }

  /** Every probe write reads back. */
  async verify(): Promise<number> {
    for (const [key, value] of this.acked) {
      const r = await request(this.port, 'GET', `/kv/${key}`);
      if (r.status !== 200 || (JSON.parse(r.body) as { value: string }).value !== value) throw new Violation(`acknowledged write ${key} reads back ${r.status} ${r.body.slice(0, 100)}`);
    }
    return this.acked.size;
  }

  async stop(keep: boolean): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      await adminRequest(this.adminSock, 'POST', '/v1/stop', { timeoutS: 10 }, { timeoutMs: 20_000 }).catch(() => undefined);
      const exited = await Promise.race([new Promise((r) => this.child.once('exit', r)), sleep(20_000).then(() => 'timeout')]);
      if (exited === 'timeout') this.child.kill('SIGKILL');
    }
    await killTagged(this.tag);
    if (!keep) rmSync(this.dir, { recursive: true, force: true });
  }
}
