/**
 * Target: the admin socket of `baton run` (HTTP over a unix socket), every route but
 * the actions; an HTTP answer or a close within a bound, templates their known status,
 * no 5xx.
 */
import { Rng } from '../lib/prng.js';
import { type AdminInput, adminInput } from './admin-inputs.js';
import type { Vector } from './control-inputs.js';
import { Daemon } from './daemon.js';
import { reachesAction } from './oracle.js';
import { ANSWER_BOUND_MS, connectUnix, count, cutPoints, type Outcomes, sleep, Violation } from './util.js';

/** One admin connection: the input, then an answer or a close within bounds. */
export async function adminOnce(sock: string, rng: Rng, input: AdminInput): Promise<{ statuses: number[]; closed: boolean }> {
  const socket = await connectUnix(sock, 'admin socket');
  let data = '';
  let closed = false;
  let lastActivity = Date.now();
  socket.setEncoding('latin1');
  socket.on('data', (c: string) => {
    data += c;
    lastActivity = Date.now();
  });
  socket.on('error', () => undefined);
  socket.on('close', () => (closed = true));
  const bytes = input.bytes;
  const cuts = cutPoints(rng, bytes.length);
  let at = 0;
  for (const cut of [...cuts, bytes.length]) {
    if (cut <= at || closed) continue;
    socket.write(bytes.subarray(at, cut));
    at = cut;
    if (rng.chance(0.3)) await sleep(1);
  }
  lastActivity = Date.now();
  const statuses = (): number[] => [...data.matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => Number(m[1]));
  // Wait for the answer while it keeps coming; a template must be answered before we end our side.
  const quietMs = input.expect !== undefined ? 3_000 : 150;
  const hardDeadline = Date.now() + 15_000;
  while (!closed && Date.now() - lastActivity < quietMs && Date.now() < hardDeadline) {
    if (input.expect !== undefined && statuses().length > 0 && /\r\n\r\n/.test(data)) break;
    await sleep(10);
  }
  if (!closed) {
    socket.end(); // our end of stream: an incomplete request must not keep the connection
    const until = Date.now() + ANSWER_BOUND_MS;
    while (!closed && Date.now() < until) await sleep(10);
  }
  socket.destroy();
  if (!closed && Date.now() >= hardDeadline) throw new Violation('admin socket: no answer and no close within 15 s', bytes);
  return { statuses: statuses(), closed };
}

export async function fuzzAdmin(
  d: Daemon,
  rng: Rng,
  vectors: { valid: Vector[]; invalid: Vector[] },
  budget: number,
  out: Outcomes,
  parallel: number,
): Promise<void> {
  const streams = Array.from({ length: parallel }, () => rng.fork());
  await Promise.all(
    streams.map(async (r) => {
      while (out.inputs < budget) {
        let input = adminInput(r, vectors);
        while (reachesAction(input.bytes)) {
          out.redrawn++;
          input = adminInput(r, vectors);
        }
        out.inputs++;
        out.connections++;
        count(out.byKind, input.kind);
        const { statuses, closed } = await adminOnce(d.adminSock, r, input);
        if (!closed && statuses.length === 0) throw new Violation('admin socket: neither an answer nor a close', input.bytes);
        const serverError = statuses.find((s) => s >= 500);
        if (serverError) throw new Violation(`admin socket answered ${serverError}`, input.bytes);
        if (input.expect !== undefined && statuses[0] !== input.expect && !(input.orClose && statuses.length === 0 && closed)) {
          throw new Violation(`admin socket: template answered ${statuses[0] ?? 'nothing'}, expected ${input.expect}`, input.bytes);
        }
        count(out.byAnswer, statuses.length ? `HTTP ${statuses[0]}${statuses.length > 1 ? ` (+${statuses.length - 1})` : ''}` : 'closed without an answer');
      }
    }),
  );
}
