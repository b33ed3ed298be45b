/**
 * Supervisor memory and fds: `baton run` (its own process) with fixtures/kv, no load.
 * VmRSS and the fd count of the supervisor from /proc at rest (after the cold start),
 * after 5 warm-up handoffs, every 10 handoffs, and after 100 handoffs (each sample
 * taken once the old process is gone and closed channels are destroyed).
 */
import { BatonDaemon } from './lib/daemon.js';
import { KV_APP, Scope, sleep } from './lib/scope.js';
import { table } from './lib/stats.js';
import type { BenchContext, Section } from './run.js';

export const RSS_GOALS = { maxMiB: 60, growthPct: 10 };

interface Sample {
  after: number;
  rssKb: number;
  hwmKb: number;
  fds: number;
}

export async function rssBench(ctx: BenchContext): Promise<Section> {
  const total = ctx.quick ? 20 : 100;
  const scope = new Scope('rss');
  try {
    const d = new BatonDaemon(scope, [process.execPath, KV_APP], { KV_SHARDS: '4' });
    await d.start();
    const samples: Sample[] = [];
    const sample = async (after: number) => {
      await sleep(1_500); // the old process exits and closed channels are destroyed within ~1 s
      const status = await import('node:fs/promises').then((fs) => fs.readFile(`/proc/${d.pid}/status`, 'utf8'));
      const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN);
      samples.push({ after, rssKb: kb('VmRSS'), hwmKb: kb('VmHWM'), fds: await d.fdCount() });
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
      if ((done - warm) % 10 === 0 || done === warm + total) await sample(done);
    }
    const elapsed = Date.now() - t0;
    const rest = samples[0]!;
    const warmS = samples[1]!;
    const last = samples[samples.length - 1]!;
    const mib = (kb: number) => (kb / 1024).toFixed(1);
    const growth = (a: Sample) => ((100 * (last.rssKb - a.rssKb)) / a.rssKb).toFixed(1);
    const okMax = last.rssKb / 1024 <= RSS_GOALS.maxMiB && last.hwmKb / 1024 <= RSS_GOALS.maxMiB;
    const okGrowth = ((last.rssKb - rest.rssKb) / rest.rssKb) * 100 <= RSS_GOALS.growthPct;
    ctx.log(`  supervisor RSS ${mib(rest.rssKb)} MiB at rest → ${mib(last.rssKb)} MiB after ${done} handoffs (peak ${mib(last.hwmKb)}); fds ${rest.fds} → ${last.fds}`);
    const markdown = [
      `\`baton run\` supervising fixtures/kv (4 shards), no load; ${total} handoffs after ${warm} warm-up ones through the admin API (${(elapsed / 1000).toFixed(1)} s)${ctx.quick ? ' (--quick: fewer than the 100 the goal is about)' : ''}. Read from \`/proc/<supervisor pid>/status\` (VmRSS, VmHWM = peak) and \`/proc/<pid>/fd\`, each sample 1.5 s after the last handoff.`,
      '',
      table(
        ['after handoffs', 'RSS MiB', 'peak RSS MiB', 'open fds'],
        samples.map((s) => [s.after === 0 ? '0 (at rest, after the cold start)' : s.after === warm ? `${warm} (warm-up)` : String(s.after), mib(s.rssKb), mib(s.hwmKb), s.fds]),
      ),
      '',
      table(
        ['goal', 'measured', 'verdict'],
        [
          [`RSS ≤ ${RSS_GOALS.maxMiB} MiB`, `${mib(last.rssKb)} MiB after ${done} handoffs (peak ${mib(last.hwmKb)})`, okMax ? '**pass**' : '**FAIL**'],
          [`growth ≤ ${RSS_GOALS.growthPct} % (at rest → after ${done})`, `${growth(rest)} % (from the warm-up sample: ${growth(warmS)} %)`, okGrowth ? '**pass**' : '**FAIL**'],
          ['fd drift', `${rest.fds} → ${last.fds} (${last.fds - rest.fds >= 0 ? '+' : ''}${last.fds - rest.fds}; from the warm-up sample ${last.fds - warmS.fds >= 0 ? '+' : ''}${last.fds - warmS.fds})`, ''],
        ],
      ),
      ...(aborted.length ? ['', `Not committed: ${aborted.length} (${aborted.slice(0, 3).join('; ')}).`] : []),
    ].join('\n');
    const headline = `**Supervisor RSS** ${mib(rest.rssKb)} MiB at rest → ${mib(last.rssKb)} MiB after ${done} handoffs (goal ≤ ${RSS_GOALS.maxMiB}: ${okMax ? 'pass' : 'FAIL'}; growth ${growth(rest)} %, goal ≤ ${RSS_GOALS.growthPct} %: ${okGrowth ? 'pass' : 'FAIL'}); fds ${rest.fds} → ${last.fds}.`;
    return { id: 'rss', title: 'Supervisor RSS and fds over 100 handoffs', markdown, headline, data: { samples, aborted } };
  } finally {
    await scope.close();
  }
}
