/**
 * Codec throughput: encodeFrame + FrameDecoder.push per frame, for a Heartbeat and
 * for a 64-shard SealComplete. Each round runs ~ROUND_MS; we report the median.
 *
 *   npm run bench:codec        (BENCH_ROUND_MS / BENCH_ROUNDS override the defaults)
 */
import os from 'node:os';
import { encodeFrame, FrameDecoder } from '../src/codec.js';
import type { Message } from '../src/schema.js';

const ROUND_MS = Number(process.env['BENCH_ROUND_MS'] ?? 2000);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 5);

function sealComplete(shards: number): Message {
  const lastRevisionPerShard: Record<string, bigint> = {};
  for (let i = 0; i < shards; i++) lastRevisionPerShard[`shard-${String(i).padStart(2, '0')}`] = 1_000_000n + BigInt(i);
  return {
    type: 'SealComplete',
    handoffId: 'h-0123456789abcdef',
    lastRevisionPerShard,
    dataDirFingerprint: new Uint8Array(32).fill(7),
  };
}

/** Frames per second over one round of about ROUND_MS. */
function round(msg: Message): number {
  const decoder = new FrameDecoder();
  let frames = 0;
  const start = process.hrtime.bigint();
  const limit = start + BigInt(ROUND_MS) * 1_000_000n;
  let now = start;
  while (now < limit) {
    for (let i = 0; i < 1000; i++) {
      const out = decoder.push(encodeFrame(msg));
      if (out.length !== 1) throw new Error('decoder lost a frame');
    }
    frames += 1000;
    now = process.hrtime.bigint();
  }
  return frames / (Number(now - start) / 1e9);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

const cases: [string, Message][] = [
  ['Heartbeat', { type: 'Heartbeat', tsMs: BigInt(Date.now()), phase: 'draining' }],
  ['SealComplete (64 shards)', sealComplete(64)],
];

console.log(`node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), ${ROUNDS} rounds x ${ROUND_MS} ms`);
for (const [name, msg] of cases) {
  round(msg); // warm-up (JIT)
  const rates: number[] = [];
  for (let r = 0; r < ROUNDS; r++) rates.push(round(msg));
  const bytes = encodeFrame(msg).length;
  console.log(
    `${name.padEnd(26)} ${bytes.toString().padStart(5)} B/frame  median ${Math.round(median(rates)).toLocaleString('en-US')} frames/s` +
      `  (rounds: ${rates.map((x) => Math.round(x / 1000) + 'k').join(' ')})`,
  );
}
