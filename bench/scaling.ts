/**
 * Scaling: how the write blackout and the handoff time grow with the shard count
 * (1 / 8 / 64 shards, 64 load connections) and with the number of open keep-alive
 * connections (10 / 1,000 / 10,000: 10 of them carry the GET/PUT/DELETE load, the
 * rest are idle keep-alive connections held by bench/lib/idle-conns; 10,000 only when
 * `ulimit -n` leaves room for them on both sides).
 */
import { spawnSync } from 'node:child_process';
import { kvHandoffs, pick, type HandoffRun } from './anatomy.js';
import { IdleConnsProcess } from './lib/idle-conns.js';
import { Scope, sleep } from './lib/scope.js';
import { int, ms, percent, table } from './lib/stats.js';
import type { BenchContext, Section } from './run.js';

const ACTIVE = 10;

interface Row {
  label: string;
  run?: HandoffRun;
  note?: string;
  idleReconnects?: number;
}

export function fdLimit(): number {
  const r = spawnSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' });
  const v = r.stdout.trim();
  return v === 'unlimited' ? Infinity : Number(v);
}

export async function scalingBench(ctx: BenchContext): Promise<Section> {
  const handoffs = ctx.quick ? 3 : 15;
  const shardRows: Row[] = [];
  for (const shards of [1, 8, 64]) {
    const scope = new Scope(`scaling/shards-${shards}`);
    try {
      const run = await kvHandoffs(scope, { shards, conns: 64, handoffs });
      shardRows.push({ label: `${shards} shard${shards > 1 ? 's' : ''}`, run });
      ctx.log(`  ${shards} shards: blackout p50 ${ms(pick(run.anatomies, (a) => a.blackout).p50)} ms, trigger → commit p50 ${ms(pick(run.anatomies, (a) => a.total).p50)} ms`);
    } catch (err) {
      shardRows.push({ label: `${shards} shards`, note: `did not complete: ${(err as Error).message}` });
    } finally {
      await scope.close();
    }
  }

  const limit = fdLimit();
  const connRows: Row[] = [];
  const counts = ctx.quick ? [10, 1_000] : [10, 1_000, 10_000];
  for (const total of counts) {
    const label = `${int(total)} connections`;
    if (total + 1_000 > limit) {
      connRows.push({ label, note: `skipped: ulimit -n is ${limit}` });
      continue;
    }
    const scope = new Scope(`scaling/conns-${total}`);
    let idle: IdleConnsProcess | undefined;
    try {
      const idleCount = total - ACTIVE;
      const run = await kvHandoffs(scope, {
        shards: 4,
        conns: ACTIVE,
        handoffs: total >= 10_000 ? Math.min(handoffs, 5) : Math.min(handoffs, 10),
        onStarted: async (port) => {
          if (idleCount <= 0) return;
          idle = new IdleConnsProcess(scope, port, idleCount);
          await idle.allOpen(60_000);
        },
        between: async () => {
          await sleep(300);
          await idle?.allOpen(60_000);
        },
      });
      if (idle) await idle.status();
      connRows.push({ label, run, ...(idle && { idleReconnects: idle.reconnects }) });
      ctx.log(`  ${label}: blackout p50 ${ms(pick(run.anatomies, (a) => a.blackout).p50)} ms, drain p50 ${ms(pick(run.anatomies, (a) => a.drain).p50)} ms, trigger → commit p50 ${ms(pick(run.anatomies, (a) => a.total).p50)} ms`);
    } catch (err) {
      connRows.push({ label, note: `did not complete: ${(err as Error).message}` });
    } finally {
      await idle?.stop();
      await scope.close();
    }
  }

  const head = ['', 'handoffs', 'blackout p50', 'blackout p99', 'blackout max', 'longest conn stall p50', 'trigger → commit p50', 'p99', 'start-up p50', 'drain p50', 'seal p50', 'lock pass p50', 'Ready p50', 'failed requests', 'client lag p99'];
  const rows = (rs: Row[]) =>
    rs.map((r) => {
      if (!r.run) return [r.label, r.note ?? 'n/a', ...head.slice(2).map(() => '')];
      const a = r.run.anatomies;
      const b = pick(a, (x) => x.blackout);
      const t = pick(a, (x) => x.total);
      const failed = Object.values(r.run.failures).reduce((x, y) => x + y, 0);
      return [
        r.label,
        a.length + (r.run.aborted.length ? ` (+${r.run.aborted.length} aborted)` : ''),
        ms(b.p50),
        ms(b.p99),
        ms(b.max),
        ms(pick(a, (x) => x.stall).p50),
        ms(t.p50),
        ms(t.p99),
        ms(pick(a, (x) => x.startup).p50),
        ms(pick(a, (x) => x.drain).p50),
        ms(pick(a, (x) => x.seal).p50),
        ms(pick(a, (x) => x.lockPass).p50),
        ms(pick(a, (x) => x.ready).p50),
        `${failed} (${percent(failed, r.run.requests)})${failed ? ` ${Object.entries(r.run.failures).map(([k, v]) => `${k} ${v}`).join(', ')}` : ''}`,
        ms(r.run.clientLag.p99),
      ];
    });
  const markdown = [
    `fixtures/kv under \`baton run\`, upgrades through the admin API, all times in ms (p50/p99 over the handoffs of a row; "longest conn stall" = per handoff the longest any writer connection waited between its last ack from the old process and its first from the new one, see the anatomy; "client lag" = the load client's own event-loop delay, which is inside every client-side figure). ${handoffs} handoffs per shard row${ctx.quick ? ' (--quick)' : ''}; connection rows: up to 10 (5 at 10,000).`,
    '',
    '**Shards** (64 keep-alive connections of load, as in the anatomy):',
    '',
    table(head, rows(shardRows)),
    '',
    `**Open keep-alive connections** (4 shards; ${ACTIVE} connections carry the load — 4 of them the writers that time per-connection stalls — the rest are idle keep-alive connections held by a separate process, each re-opened 0.5–2.5 s after the server ends it; every handoff starts with all of them open; \`ulimit -n\` = ${limit}):`,
    '',
    table(head, rows(connRows)),
    ...(connRows.some((r) => r.idleReconnects) ? ['', `Idle connections re-opened over the rows: ${connRows.map((r) => `${r.label} ${int(r.idleReconnects ?? 0)}`).join(', ')}.`] : []),
  ].join('\n');
  const bl = (rs: Row[]) => rs.map((r) => `${r.label} ${r.run ? ms(pick(r.run.anatomies, (x) => x.blackout).p50) : 'n/a'}`).join(', ');
  const tc = (rs: Row[]) => rs.map((r) => `${r.label} ${r.run ? ms(pick(r.run.anatomies, (x) => x.total).p50) : 'n/a'}`).join(', ');
  const headline = `**Scaling** (p50, ms): write blackout ${bl(shardRows)}; ${bl(connRows)}. Trigger → commit ${tc(shardRows)}; ${tc(connRows)}.`;
  return { id: 'scaling', title: 'Scaling: shards and open connections', markdown, headline, data: { shardRows, connRows } };
}
