/**
 * Target: a successor's control channel (fixtures/primitive started as a successor by
 * this process acting as supervisor, src/supervisor/generation.ts spawnApp: listeners + a
 * socketpair control fd); every successor must exit with code 0 once it lost its
 * supervisor.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type AppProcess, spawnApp } from '../../src/supervisor/generation.js';
import { bindListener, type HeldListener, parseListenAddress } from '../../src/os/listeners.js';
import { createLogger } from '../../src/os/log.js';
import { Rng } from '../lib/prng.js';
import { controlSession, Peer } from './control.js';
import type { Vector } from './control-inputs.js';
import { count, killTagged, type Outcomes, PRIMITIVE, sleep, Violation } from './util.js';

/** Successors started by us (a fake supervisor) with a socketpair control fd, like Supervisor.stepSpawn. */
export class SuccessorFactory {
  readonly dir = mkdtempSync(path.join(tmpdir(), 'baton-fuzz-successor-'));
  readonly tag = `fuzz-successor-${randomUUID()}`;
  readonly listener: HeldListener = bindListener(parseListenAddress('tcp://127.0.0.1:0'));
  private readonly log = createLogger('fuzz-supervisor');
  generation = 1;
  exits: Record<string, number> = {};

  constructor() {
    this.log.level = 'silent';
  }

  spawn(): AppProcess {
    return spawnApp({
      command: PRIMITIVE,
      role: 'successor',
      generation: ++this.generation,
      listeners: [this.listener],
      spares: 1,
      listenerCopies: false,
      controlPath: path.join(this.dir, 'control', 'incumbent.sock'),
      dataDir: path.join(this.dir, 'data'),
      // FUZZ_SUCCESSOR_LOG_LEVEL=warn shows what each successor saw (on our stderr).
      baseEnv: { ...process.env, BATON_TEST_TAG: this.tag, BATON_LOG_LEVEL: process.env.FUZZ_SUCCESSOR_LOG_LEVEL ?? 'fatal' },
      stdout: 'ignore',
      log: this.log,
    });
  }

  async close(keep: boolean): Promise<number[]> {
    const left = await killTagged(this.tag);
    this.listener.close();
    if (!keep) rmSync(this.dir, { recursive: true, force: true });
    return left;
  }
}

async function fuzzOneSuccessor(f: SuccessorFactory, rng: Rng, vectors: { valid: Vector[]; invalid: Vector[] }, out: Outcomes, budget: number): Promise<void> {
  const app = f.spawn();
  const peer = new Peer(app.control!);
  try {
    if (!(await peer.until(() => peer.frames.length > 0 || peer.ended, 15_000))) throw new Violation(`successor ${app.pid} did not say Hello within 15 s`);
    const hello = peer.frames[0];
    if (hello?.type !== 'Hello' || hello.role !== 'successor' || hello.pid !== app.pid) throw new Violation(`successor ${app.pid} opened with ${JSON.stringify(hello ?? 'the close')}`);
    out.connections++;
    try {
      await controlSession('successor', peer, rng, vectors, out, budget);
    } catch (err) {
      // Say how the process ended (a crash and a clean abort look alike on the socket).
      const status = await Promise.race([app.exited, sleep(3_000).then(() => undefined)]);
      if (err instanceof Violation) {
        throw new Violation(`${err.message}\n  successor ${app.pid}: ${status ? `exit ${status.code ?? '-'} signal ${status.signal ?? '-'}` : 'still running 3 s later'}`, err.input);
      }
      throw err;
    }
    // It lost its supervisor: it must exit, cleanly (exit 0 is its "aborted" exit).
    const status = await Promise.race([app.exited, sleep(10_000).then(() => undefined)]);
    if (!status) throw new Violation(`successor ${app.pid} still running 10 s after its supervisor closed the channel`);
    const how = status.signal ? `signal ${status.signal}` : `exit ${status.code}`;
    count(f.exits, how);
    if (status.code !== 0) throw new Violation(`successor ${app.pid} ended with ${how} after a bad input (a crash, not an abort)`);
  } finally {
    peer.socket.destroy();
    app.signal('SIGKILL');
  }
}

export async function fuzzSuccessors(f: SuccessorFactory, rng: Rng, vectors: { valid: Vector[]; invalid: Vector[] }, budget: number, out: Outcomes, parallel: number): Promise<void> {
  const lanes = Array.from({ length: parallel }, (_, i) => i);
  const streams = lanes.map(() => rng.fork());
  await Promise.all(
    lanes.map(async (i) => {
      while (out.inputs < budget) await fuzzOneSuccessor(f, streams[i]!, vectors, out, Math.min(streams[i]!.int(1, 50), Math.max(budget - out.inputs, 1)));
    }),
  );
}
