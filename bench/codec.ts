/**
 * Codec throughput: encodeFrame + FrameDecoder.push per frame, for a Heartbeat and
 * for a 64-shard SealComplete, with msgpackr (pack + unpack of the same message,
 * no framing, no validation) measured in the same rounds as a reference.
 *
 *   npm run bench:codec        (BENCH_ROUND_MS / BENCH_ROUNDS override 1000 ms x 5 rounds)
 *
 * Every round runs every case once (interleaved, so all see the same machine
 * load); the figure is the median round. Each round is measured twice: by wall
 * clock, and by the process's CPU time (user + system), which other processes
 * on a shared machine inflate much less.
 */
import { Packr, Unpackr } from 'msgpackr';
import os from 'node:os';
import { encodeFrame, FrameDecoder } from '../src/wire/codec.js';
import type { Message } from '../src/wire/schema.js';

const ROUND_MS = Number(process.env['BENCH_ROUND_MS'] ?? 1000);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 5);
const GOAL = 200_000;

/** As an app builds it: a map filled in a loop, which V8 keeps in dictionary mode. */
function sealComplete(shards: number): Message {
  const lastRevisionPerShard: Record<string, bigint> = {};
  for (let i = 0; i < shards; i++) lastRevisionPerShard[`shard-${String(i).padStart(2, '0')}`] = 1_000_000_000_000n + BigInt(i);
  return {
    type: 'SealComplete',
    handoffId: 'h-0123456789abcdef',
    lastRevisionPerShard,
    dataDirFingerprint: new Uint8Array(32).fill(7),
  };
}

const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false, int64AsType: 'bigint' });

/** One unit of work per call. */
type Work = () => void;

function codecWork(msg: Message, part: 'both' | 'encode' | 'decode'): Work {
  const decoder = new FrameDecoder();
  const frame = encodeFrame(msg);
  if (part === 'encode') return () => void encodeFrame(msg);
  if (part === 'decode') return () => void decoder.push(frame);
  return () => {
    if (decoder.push(encodeFrame(msg)).length !== 1) throw new Error('decoder lost a frame');
  };
}

function msgpackrWork(msg: Message): Work {
  return () => void unpackr.unpack(packr.pack(msg));
}

const cpuMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/** [wall, cpu] units per second over one round of about ROUND_MS. */
function round(work: Work): [number, number] {
  let n = 0;
  const wall0 = performance.now();
  const cpu0 = cpuMs();
  let wall = wall0;
  while (wall - wall0 < ROUND_MS) {
    for (let i = 0; i < 500; i++) work();
    n += 500;
    wall = performance.now();
  }
  const cpu = cpuMs() - cpu0;
  return [n / ((wall - wall0) / 1000), n / (Math.max(cpu, 1e-3) / 1000)];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

const heartbeat: Message = { type: 'Heartbeat', tsMs: BigInt(Date.now()), phase: 'draining' };
const seal = sealComplete(64);

const cases: { name: string; bytes: number; work: Work; goal: boolean }[] = [
  { name: 'Heartbeat: encode + decode', bytes: encodeFrame(heartbeat).length, work: codecWork(heartbeat, 'both'), goal: true },
  { name: '  msgpackr pack + unpack', bytes: packr.pack(heartbeat).length, work: msgpackrWork(heartbeat), goal: false },
  { name: 'SealComplete 64: encode + decode', bytes: encodeFrame(seal).length, work: codecWork(seal, 'both'), goal: true },
  { name: '  encode only', bytes: encodeFrame(seal).length, work: codecWork(seal, 'encode'), goal: false },
  { name: '  decode only', bytes: encodeFrame(seal).length, work: codecWork(seal, 'decode'), goal: false },
  { name: '  msgpackr pack + unpack', bytes: packr.pack(seal).length, work: msgpackrWork(seal), goal: false },
];

const load = () => os.loadavg().map((x) => x.toFixed(2)).join(' ');
console.log(
  `node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), ${ROUNDS} rounds x ${ROUND_MS} ms per case, load average ${load()}`,
);
const wall = cases.map(() => [] as number[]);
const cpu = cases.map(() => [] as number[]);
for (const c of cases) for (let i = 0; i < 20_000; i++) c.work(); // warm-up (JIT)
for (let r = 0; r < ROUNDS; r++) {
  cases.forEach((c, i) => {
    const [w, p] = round(c.work);
    wall[i]!.push(w);
    cpu[i]!.push(p);
  });
}
const fmt = (x: number) => Math.round(x).toLocaleString('en-US').padStart(9);
console.log(`${'case'.padEnd(34)} ${'bytes'.padStart(5)}  ${'per s (wall)'.padStart(12)}  ${'per CPU-s'.padStart(10)}  ${'µs (CPU)'.padStart(8)}  goal ≥ ${GOAL.toLocaleString('en-US')}`);
cases.forEach((c, i) => {
  const w = median(wall[i]!);
  const p = median(cpu[i]!);
  const verdict = c.goal ? (w >= GOAL ? 'PASS' : p >= GOAL ? 'pass by CPU time only' : 'FAIL') : '';
  console.log(`${c.name.padEnd(34)} ${String(c.bytes).padStart(5)}  ${fmt(w)}     ${fmt(p)}   ${(1e6 / p).toFixed(2).padStart(7)}  ${verdict}`);
});
console.log(`load average at the end ${load()}`);
