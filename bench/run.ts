/**
 * `npm run bench` (= npm run build && node dist/bench/run.js): handoffs under load,
 * measured side by side in one run on this machine, printed and written into
 * BENCHMARKS.md.
 *
 *   node dist/bench/run.js [--quick] [--only NAME[,NAME]] [--write | --no-write]
 *
 * NAMEs: restart (baton vs naive vs PM2), anatomy (phases and write blackout),
 * scaling (shards, open connections), rss (supervisor memory and fds), continuity
 * (SIGKILL / replacement of `baton run` itself, before and after issue 22), latency (tail
 * latency during upgrades under wrk: baton vs PM2 reload vs naive restart).
 * `--json` prints every section's figures as one JSON document on stdout (the
 * progress and the tables go to stderr).
 * A full run writes BENCHMARKS.md (only the sections it ran, between their markers);
 * `--quick` (fewer restarts and handoffs, ~2 min) writes only with `--write`.
 * Everything runs on 127.0.0.1; every process started is reaped and every temp dir
 * removed, also on Ctrl-C.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { anatomyBench } from './anatomy.js';
import { continuityBench } from './continuity.js';
import { latencyBench } from './latency.js';
import { closeAllScopes, ROOT } from './lib/scope.js';
import { restartCompare } from './restart-compare.js';
import { rssBench } from './rss.js';
import { fdLimit, scalingBench } from './scaling.js';

export interface BenchContext {
  quick: boolean;
  log(line: string): void;
}

export interface Section {
  id: string;
  title: string;
  markdown: string;
  /** One line for the summary at the top (markdown, no leading dash). */
  headline: string;
  data: unknown;
}

const BENCHES: Record<string, (ctx: BenchContext) => Promise<Section>> = {
  restart: restartCompare,
  anatomy: anatomyBench,
  scaling: scalingBench,
  rss: rssBench,
  continuity: continuityBench,
  latency: latencyBench,
};

const USAGE = `Usage: node dist/bench/run.js [--quick] [--only NAME[,NAME...]] [--write | --no-write] [--json]

  --quick      fewer restarts and handoffs (~2 min instead of ~10)
  --only       run only these: ${Object.keys(BENCHES).join(', ')}
  --write      write BENCHMARKS.md (default for a full run; not for --quick)
  --no-write   print only
  --json       the figures of every section as JSON on stdout (the rest on stderr)`;

export const BENCHMARKS_MD = path.join(ROOT, 'BENCHMARKS.md');

function machine(): string[] {
  const git = (args: string[]) => {
    try {
      return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      return '';
    }
  };
  // What the benchmarks run: the engine, the kv service, the bench app.
  const dirty = git(['status', '--porcelain', '--untracked-files=no', '--', 'src', 'fixtures/kv', 'bench/apps']) !== '' ? ' (with uncommitted changes in src/, fixtures/kv or bench/apps)' : '';
  return [
    `- machine: ${os.availableParallelism()} CPUs (\`nproc\`), ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Linux ${os.release()}, \`ulimit -n\` ${fdLimit()}`,
    `- Node ${process.version}; PM2 ${pm2Version()}; baton at ${git(['rev-parse', '--short', 'HEAD']) || 'unknown commit'}${dirty}`,
    `- load average when the run started: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`,
  ];
}

function pm2Version(): string {
  try {
    return (JSON.parse(readFileSync(path.join(ROOT, 'node_modules/pm2/package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'not installed';
  }
}

/** Replaces `<!-- bench:ID -->…<!-- /bench:ID -->` in the text, or inserts it before `before`. */
export function putSection(text: string, id: string, body: string, before = '\n## Codec'): string {
  const open = `<!-- bench:${id} -->`;
  const close = `<!-- /bench:${id} -->`;
  const block = `${open}\n${body.trim()}\n${close}`;
  const a = text.indexOf(open);
  const b = text.indexOf(close);
  if (a >= 0 && b > a) return text.slice(0, a) + block + text.slice(b + close.length);
  const at = text.indexOf(before);
  return at >= 0 ? `${text.slice(0, at)}\n${block}\n${text.slice(at)}` : `${text.trimEnd()}\n\n${block}\n`;
}

async function main(): Promise<number> {
  let v;
  try {
    v = parseArgs({ options: { quick: { type: 'boolean' }, only: { type: 'string' }, write: { type: 'boolean' }, 'no-write': { type: 'boolean' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } }).values;
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (v.help) {
    console.log(USAGE);
    return 0;
  }
  const names = v.only ? v.only.split(',').map((s) => s.trim()) : Object.keys(BENCHES);
  const unknown = names.filter((n) => !BENCHES[n]);
  if (unknown.length) {
    console.error(`unknown benchmark ${unknown.join(', ')}\n${USAGE}`);
    return 2;
  }
  const quick = Boolean(v.quick);
  const write = v['no-write'] ? false : v.write ? true : !quick;
  const started = Date.now();
  // --json: stdout carries only the JSON document.
  const say = v.json ? (line: string) => console.error(line) : (line: string) => console.log(line);
  const ctx: BenchContext = { quick, log: say };
  const header = machine();
  say(`# npm run bench${quick ? ' --quick' : ''}${v.only ? ` --only ${names.join(',')}` : ''}\n${header.join('\n')}\n`);
  const sections: Section[] = [];
  let failed = false;
  for (const name of names) {
    const t0 = Date.now();
    const load0 = os.loadavg()[0]!;
    say(`## ${name}: running…`);
    try {
      const s = await BENCHES[name]!(ctx);
      s.markdown += `\n\nMachine load (1-min load average, 2 CPUs; other work on the machine is not stopped for the bench): ${load0.toFixed(1)} when this part started, ${os.loadavg()[0]!.toFixed(1)} when it ended.`;
      sections.push(s);
      say(`\n### ${s.title} (${((Date.now() - t0) / 1000).toFixed(0)} s)\n\n${s.markdown}\n`);
    } catch (err) {
      failed = true;
      console.error(`## ${name}: FAILED: ${(err as Error).stack ?? String(err)}`);
    }
  }
  const seconds = ((Date.now() - started) / 1000).toFixed(0);
  if (sections.length) say(`### Summary\n\n${sections.map((s) => `- ${s.headline}`).join('\n')}\n`);
  say(`done in ${seconds} s`);
  if (write && sections.length) {
    let text = readFileSync(BENCHMARKS_MD, 'utf8');
    const extra = [quick ? '--quick' : '', v.only ? `--only ${names.join(',')}` : ''].filter(Boolean).join(' ');
    const cmd = `npm run bench${extra ? ` -- ${extra}` : ''}`;
    const date = new Date().toISOString().slice(0, 10);
    for (const s of sections) {
      text = putSection(
        text,
        s.id,
        `### ${s.title}\n\n<!-- headline: ${s.headline.replace(/-->/g, '--&gt;')} (${date}) -->\n_Measured by \`${cmd}\` on ${date} (${seconds} s for the whole run)._\n${header.join('\n')}\n\n${s.markdown}`,
      );
    }
    // The summary: the headline of every section in the file (each says when it was measured).
    const headlines = Object.keys(BENCHES)
      .map((id) => new RegExp(`<!-- bench:${id} -->[\\s\\S]*?<!-- headline: ([\\s\\S]*?) -->`).exec(text)?.[1])
      .filter((h): h is string => h !== undefined);
    text = putSection(text, 'summary', `### Summary\n\n${headlines.map((h) => `- ${h}`).join('\n')}`);
    writeFileSync(BENCHMARKS_MD, text);
    say(`wrote ${sections.map((s) => s.id).join(', ')} into ${path.relative(process.cwd(), BENCHMARKS_MD) || BENCHMARKS_MD}`);
  }
  if (v.json) {
    const load = os.loadavg();
    console.log(JSON.stringify({ machine: header, loadAverageAtEnd: load, sections: sections.map((s) => ({ id: s.id, title: s.title, headline: s.headline, data: s.data })) }, null, 2));
  }
  return failed ? 1 : 0;
}

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    console.error(`\n${sig}: stopping every process this run started…`);
    void closeAllScopes().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  });
}

main().then(
  async (code) => {
    await closeAllScopes();
    process.exit(code);
  },
  async (err: unknown) => {
    console.error(err);
    await closeAllScopes();
    process.exit(1);
  },
);
