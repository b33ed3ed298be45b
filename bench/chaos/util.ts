/** Small helpers of the chaos runner: the Violation error, polling, tagged processes, signals. */
import { readdir, readFile } from 'node:fs/promises';
import { isAlive } from '../../src/os/proc.js';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class Violation extends Error {}

/** Polls `check` until it returns a value; on timeout throws a Violation with the last observation. */
export async function within<T>(ms: number, what: string, check: () => Promise<T | string>, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + ms;
  let last = '';
  for (;;) {
    const r = await check().catch((err: unknown) => `error: ${(err as Error).message}`);
    if (typeof r !== 'string') return r;
    last = r;
    if (Date.now() > deadline) throw new Violation(`${what} not reached within ${ms} ms (last seen: ${last})`);
    await sleep(intervalMs);
  }
}

/** Live (non-zombie) processes whose env carries BATON_TEST_TAG=tag, with their generation. */
export async function tagged(tag: string): Promise<{ pid: number; generation: number | undefined; app: boolean }[]> {
  const out: { pid: number; generation: number | undefined; app: boolean }[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const env = (await readFile(`/proc/${entry}/environ`, 'latin1')).split('\0');
      if (!env.includes(`BATON_TEST_TAG=${tag}`)) continue;
      if (!isAlive(Number(entry))) continue;
      const gen = env.find((e) => e.startsWith('BATON_GENERATION='));
      out.push({ pid: Number(entry), generation: gen ? Number(gen.split('=')[1]) : undefined, app: env.some((e) => e.startsWith('BATON_ROLE=')) });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

export function signal(pid: number | undefined, sig: NodeJS.Signals): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}
