/**
 * Small helpers of the fuzzer: where the built CLI and fixtures are, the answer bound,
 * the Violation error, the per-target tallies (Outcomes), where an input is split, a
 * unix-socket connect, tagged processes and RSS.
 */
import { existsSync, readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isAlive } from '../../src/os/proc.js';
import { Rng } from '../lib/prng.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The checkout: bench/fuzz/ under it when run from source (vitest), dist/bench/fuzz/ when built. */
export const ROOT = existsSync(path.join(HERE, '../../package.json')) ? path.resolve(HERE, '../..') : path.resolve(HERE, '../../..');
export const CLI = path.join(ROOT, 'dist/src/cli.js');
export const KV = [process.execPath, path.join(ROOT, 'dist/fixtures/kv/main.js')];
export const PRIMITIVE = [process.execPath, path.join(ROOT, 'dist/fixtures/primitive/app.js')];

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** How long a peer may take to answer (or close) after the input that calls for it. */
export const ANSWER_BOUND_MS = 5_000;

export class Violation extends Error {
  constructor(
    message: string,
    readonly input?: Buffer,
  ) {
    super(message);
  }
}

export interface Outcomes {
  /** Inputs by what they were answered with: accepted, Resumed, Error <code>, closed. */
  byAnswer: Record<string, number>;
  byKind: Record<string, number>;
  inputs: number;
  connections: number;
  /** Inputs the model said would act (drawn again, never sent). */
  redrawn: number;
  busyRetries: number;
}

export function newOutcomes(): Outcomes {
  return { byAnswer: {}, byKind: {}, inputs: 0, connections: 0, redrawn: 0, busyRetries: 0 };
}

export function count(rec: Record<string, number>, key: string): void {
  rec[key] = (rec[key] ?? 0) + 1;
}

/** Where to split an input of `length` bytes into 1..4 pieces (random points, sorted, no repeats). */
export function cutPoints(rng: Rng, length: number): number[] {
  return [...new Set(Array.from({ length: rng.int(0, 3) }, () => rng.int(1, Math.max(length - 1, 1))))].sort((a, b) => a - b);
}

/** Connects to a unix socket; failing to is a Violation (`what`: cannot connect: …). */
export function connectUnix(socketPath: string, what: string): Promise<net.Socket> {
  return new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect(socketPath);
    s.once('connect', () => resolve(s));
    s.once('error', (err) => reject(new Violation(`${what}: cannot connect: ${err.message}`)));
  });
}

async function taggedPids(tag: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if ((await readFile(`/proc/${entry}/environ`, 'latin1')).split('\0').includes(`BATON_TEST_TAG=${tag}`) && isAlive(Number(entry))) pids.push(Number(entry));
    } catch {
      // gone
    }
  }
  return pids;
}

export async function killTagged(tag: string): Promise<number[]> {
  const pids = await taggedPids(tag);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  return pids;
}

export function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}
