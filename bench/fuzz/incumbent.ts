/**
 * Target: the incumbent's control socket (we connect to the supervisor's control path
 * as a client, like test/support/rogue-supervisor.ts, before or after the handshake).
 */
import { Rng } from '../lib/prng.js';
import { controlSession, Peer } from './control.js';
import type { Vector } from './control-inputs.js';
import { Daemon } from './daemon.js';
import { ANSWER_BOUND_MS, connectUnix, type Outcomes, sleep, Violation } from './util.js';

/** Connects to the incumbent's control socket and waits for its Hello (retrying E_BUSY: the previous session may still be closing). */
async function connectIncumbent(controlPath: string, out: Outcomes): Promise<Peer> {
  for (let attempt = 0; ; attempt++) {
    const socket = await connectUnix(controlPath, "the incumbent's control socket");
    const peer = new Peer(socket);
    if (!(await peer.until(() => peer.frames.length > 0 || peer.ended, ANSWER_BOUND_MS))) throw new Violation(`the incumbent did not say Hello within ${ANSWER_BOUND_MS} ms`);
    const first = peer.frames[0];
    if (first?.type === 'Hello') {
      if (first.role !== 'incumbent') throw new Violation(`the incumbent said Hello with role ${first.role}`);
      return peer;
    }
    socket.destroy();
    if (first?.type === 'Error' && first.code === 'E_BUSY' && attempt < 200) {
      out.busyRetries++;
      await sleep(5);
      continue;
    }
    throw new Violation(`the incumbent answered a new connection with ${JSON.stringify(first ?? 'the close')}`);
  }
}

export async function fuzzIncumbent(d: Daemon, rng: Rng, vectors: { valid: Vector[]; invalid: Vector[] }, budget: number, out: Outcomes, tick: () => Promise<void>): Promise<void> {
  while (out.inputs < budget) {
    const peer = await connectIncumbent(d.controlPath, out);
    out.connections++;
    await controlSession('incumbent', peer, rng, vectors, out, Math.min(rng.int(1, 8), budget - out.inputs));
    peer.socket.destroy();
    await tick();
  }
}

