/**
 * Supervisor memory and fds: `baton run` (its own process) with fixtures/kv, no load.
 * VmRSS and the fd count of the supervisor from /proc at rest (after the cold start),
 * after 5 warm-up handoffs, every 10 handoffs, and after 100 handoffs (each sample
 * taken once the old process is gone and closed channels are destroyed).
 */
import { readdirSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { BatonDaemon } from './lib/daemon.js';
import { KV_APP, Scope, sleep, waitFor } from './lib/scope.js';
import { table } from './lib/stats.js';
import type { BenchContext, Section } from './run.js';

/** "≤ 60 MB" read as the stricter of its two meanings: 60 × 10⁶ bytes (57.2 MiB), not 60 MiB. */
export const RSS_GOALS = { maxMB: 60, growthPct: 10 };
const MB = 1e6;

interface Sample {
  after: number;
  rssKb: number;
  hwmKb: number;
  fds: number;
  /** Memory only this process has (smaps_rollup Private_Clean + Private_Dirty): RSS without the shared node binary and libraries. */
  ussKb: number;
}

export async function rssBench(ctx: BenchContext): Promise<Section> {
  // BENCH_RSS_HANDOFFS=600 follows the supervisor for longer (e.g. past the job history's 500 records).
  const total = Number(process.env.BENCH_RSS_HANDOFFS ?? (ctx.quick ? 20 : 100));
  const scope = new Scope('rss');
  try {
    // SIGUSR2 → a supervisor writes a heap snapshot (after a full GC) into diagDir: its live
    // JS heap. Writing one costs tens of MiB of RSS for good, so the supervisor whose RSS is
    // followed is snapshotted only at the very end; the at-rest heap comes from a twin.
    const diagDir = scope.tempDir('baton-bench-heap-');
    const heapArgs = ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${diagDir}`];
    const twin = new BatonDaemon(scope, [process.execPath, KV_APP], { KV_SHARDS: '4' }, heapArgs);
    await twin.start();
    await sleep(1_500);
    const restHeapKb = (await heapSnapshot(twin.pid, diagDir)) / 1024;
    await twin.stop();
    const d = new BatonDaemon(scope, [process.execPath, KV_APP], { KV_SHARDS: '4' }, heapArgs);
    await d.start();
    const samples: Sample[] = [];
    const sample = async (after: number) => {
      await sleep(1_500); // the old process exits and closed channels are destroyed within ~1 s
      const status = await readFile(`/proc/${d.pid}/status`, 'utf8');
      const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN);
      const rollup = await readFile(`/proc/${d.pid}/smaps_rollup`, 'utf8');
      const rk = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(rollup)?.[1] ?? NaN);
      const s: Sample = { after, rssKb: kb('VmRSS'), hwmKb: kb('VmHWM'), fds: await d.fdCount(), ussKb: rk('Private_Clean') + rk('Private_Dirty') };
      samples.push(s);
    };
    await sample(0);
    const warm = 5;
    let done = 0;
    const aborted: string[] = [];
    const upgrade = async () => {
      const job = await d.upgrade();
      if (job.state !== 'SUCCEEDED') aborted.push(`${job.code}: ${job.reason}`);
      done++;
    };
    for (let i = 0; i < warm; i++) await upgrade();
    await sample(done);
    const t0 = Date.now();
    while (done < warm + total) {
      await upgrade();
      const every = total > 200 ? 50 : 10;
      if ((done - warm) % every === 0 || done === warm + total) await sample(done);
    }
    const elapsed = Date.now() - t0;
    const rest = samples[0]!;
    const warmS = samples[1]!;
    const last = samples[samples.length - 1]!;
    const mib = (kb: number) => (kb / 1024).toFixed(1);
    const growth = (a: Sample) => ((100 * (last.rssKb - a.rssKb)) / a.rssKb).toFixed(1);
    const endHeapKb = (await heapSnapshot(d.pid, diagDir)) / 1024;
    const rssGrowth = (100 * (last.rssKb - rest.rssKb)) / rest.rssKb;
    const heapGrowth = (100 * (endHeapKb - restHeapKb)) / restHeapKb;
    const okMax = last.rssKb * 1024 <= RSS_GOALS.maxMB * MB;
    const mb = (kb: number) => ((kb * 1024) / MB).toFixed(1);
    const okGrowth = rssGrowth <= RSS_GOALS.growthPct;
    ctx.log(`  supervisor RSS ${mib(rest.rssKb)} MiB at rest → ${mib(last.rssKb)} MiB after ${done} handoffs (peak ${mib(last.hwmKb)}); fds ${rest.fds} → ${last.fds}`);
    const markdown = [
      `\`baton run\` supervising fixtures/kv (4 shards), no load; ${total} handoffs after ${warm} warm-up ones through the admin API (${(elapsed / 1000).toFixed(1)} s)${ctx.quick ? ' (--quick: fewer than the 100 the goal is about)' : ''}. Read from \`/proc/<supervisor pid>/status\` (VmRSS, VmHWM = peak), \`/proc/<pid>/smaps_rollup\` (private = USS: RSS less the pages shared with other processes, mostly the node binary) and \`/proc/<pid>/fd\`, each sample 1.5 s after the last handoff. RSS moves by several MiB with garbage collection, so the live JS heap is measured too: a heap snapshot (\`--heapsnapshot-signal\`, which runs a full GC first) of this supervisor after the last sample, and of a twin supervisor at rest (writing a snapshot costs tens of MiB of RSS for good, so the followed supervisor gets only the last one).`,
      '',
      table(
        ['after handoffs', 'RSS MiB', 'peak RSS MiB', 'private (USS) MiB', 'open fds'],
        samples.map((s) => [s.after === 0 ? '0 (at rest, after the cold start)' : s.after === warm ? `${warm} (warm-up)` : String(s.after), mib(s.rssKb), mib(s.hwmKb), mib(s.ussKb), s.fds]),
      ),
      '',
      table(
        ['goal', 'measured', 'verdict'],
        [
          [`RSS ≤ ${RSS_GOALS.maxMB} MB (10⁶ bytes; ${mib((RSS_GOALS.maxMB * MB) / 1024)} MiB)`, `${mb(last.rssKb)} MB = ${mib(last.rssKb)} MiB after ${done} handoffs (peak ${mib(last.hwmKb)} MiB)`, okMax ? '**pass**' : '**FAIL**'],
          [
            `growth ≤ ${RSS_GOALS.growthPct} % (at rest → after ${done})`,
            `${rssGrowth.toFixed(1)} % (from the warm-up sample: ${growth(warmS)} %)`,
            okGrowth ? '**pass**' : '**FAIL**',
          ],
          ['live JS heap after a full GC (leak check)', `${mib(restHeapKb)} MiB at rest → ${mib(endHeapKb)} MiB after ${done} handoffs (${heapGrowth >= 0 ? '+' : ''}${heapGrowth.toFixed(1)} %)`, ''],
          ['fd drift', `${rest.fds} → ${last.fds} (${last.fds - rest.fds >= 0 ? '+' : ''}${last.fds - rest.fds}; from the warm-up sample ${last.fds - warmS.fds >= 0 ? '+' : ''}${last.fds - warmS.fds})`, ''],
        ],
      ),
      ...(aborted.length ? ['', `Not committed: ${aborted.length} (${aborted.slice(0, 3).join('; ')}).`] : []),
    ].join('\n');
    const headline = `**Supervisor RSS** ${mib(rest.rssKb)} MiB at rest → ${mib(last.rssKb)} MiB (${mb(last.rssKb)} MB) after ${done} handoffs (private: ${mib(rest.ussKb)} → ${mib(last.ussKb)} MiB) (goal ≤ ${RSS_GOALS.maxMB} MB: ${okMax ? 'pass' : 'FAIL'}; growth ${rssGrowth.toFixed(1)} %, goal ≤ ${RSS_GOALS.growthPct} %: ${okGrowth ? 'pass' : 'FAIL'}; live JS heap after a full GC ${mib(restHeapKb)} → ${mib(endHeapKb)} MiB); fds ${rest.fds} → ${last.fds}.`;
    return { id: 'rss', title: `Supervisor RSS and fds over ${total} handoffs`, markdown, headline, data: { samples, aborted, restHeapKb, endHeapKb } };
  } finally {
    await scope.close();
  }
}

/** Sends SIGUSR2 and waits for the heap snapshot; returns the live heap (sum of self sizes), bytes. */
async function heapSnapshot(pid: number, dir: string): Promise<number> {
  const before = new Set(readdirSync(dir));
  process.kill(pid, 'SIGUSR2');
  const file = await waitFor(
    async () => {
      const f = readdirSync(dir).find((n) => !before.has(n) && n.endsWith('.heapsnapshot'));
      if (!f) return undefined;
      const text = await readFile(path.join(dir, f), 'utf8');
      try {
        return JSON.parse(text) as { snapshot: { meta: { node_fields: string[] } }; nodes: number[] };
      } catch {
        return undefined; // still being written
      }
    },
    'the heap snapshot',
    60_000,
    200,
  );
  const fields = file.snapshot.meta.node_fields;
  const self = fields.indexOf('self_size');
  let total = 0;
  for (let i = self; i < file.nodes.length; i += fields.length) total += file.nodes[i]!;
  for (const f of readdirSync(dir)) rmSync(path.join(dir, f), { force: true });
  return total;
}
