import type { ParseArgsConfig } from 'node:util';
import { adminRequest } from './admin-client.js';
import { fail, help, parse, targetSocket, TARGET_OPTIONS, UsageError } from './cli-args.js';
import { pad2, printTable, runLine, scheduleSummary, type ScheduleBody, type ScheduleRun } from './cli-format.js';
import { readBoundedFileSync } from './config.js';
import { errorMessage } from '../os/errors.js';

/** `baton schedules`: list, get, create, replace, patch, delete, enable, disable and run maintenance schedules. */

const SCHEDULE_FLAGS = {
  file: { type: 'string' },
  name: { type: 'string' },
  cron: { type: 'string' },
  window: { type: 'string' },
  'no-window': { type: 'boolean' },
  task: { type: 'string', multiple: true },
  urgency: { type: 'string' },
  'halt-on-failure': { type: 'boolean' },
  'no-halt-on-failure': { type: 'boolean' },
  enabled: { type: 'boolean' },
  disabled: { type: 'boolean' },
} as const satisfies ParseArgsConfig['options'];

export async function cmdSchedules(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === '-h' || sub === '--help') return help('schedules');
  const usage = (msg: string): never => {
    throw new UsageError(`baton schedules ${sub}: ${msg}\nRun 'baton schedules --help' for usage.`);
  };
  // `--name` is a schedule field here, so the target is --state-dir / --config / env only.
  const { name: _serviceName, ...target } = TARGET_OPTIONS;
  const withName = ['get', 'replace', 'patch', 'delete', 'enable', 'disable', 'run'].includes(sub);
  if (!withName && sub !== 'list' && sub !== 'create') usage(`unknown subcommand; expected list, get, create, replace, patch, delete, enable, disable or run`);
  let name: string | undefined;
  let flagArgs = rest;
  if (withName) {
    if (rest[0] === '-h' || rest[0] === '--help') return help('schedules');
    if (!rest[0] || rest[0].startsWith('-')) usage('expected a schedule NAME');
    name = rest[0];
    flagArgs = rest.slice(1);
  }
  const editing = sub === 'create' || sub === 'replace' || sub === 'patch';
  const v = parse(`schedules ${sub}`, flagArgs, { ...target, json: { type: 'boolean' }, ...(editing ? SCHEDULE_FLAGS : {}) }) as Record<string, string | boolean | string[] | undefined>;
  if (v.help) return help('schedules');
  const sock = targetSocket(v as { 'state-dir'?: string; config?: string });
  const json = v.json === true;
  const path1 = name === undefined ? '/v1/schedules' : `/v1/schedules/${encodeURIComponent(name)}`;
  const call = async (method: string, url: string, body?: unknown, ok = 200): Promise<Record<string, unknown>> => {
    const reply = await adminRequest(sock, method, url, body, { timeoutMs: method === 'POST' && url.endsWith('/run') ? 0 : 10_000 });
    if (reply.status !== ok) fail(reply);
    return reply.body;
  };
  const show = (s: ScheduleBody, what: string): number => {
    if (json) console.log(JSON.stringify(s, null, 2));
    else console.log(`schedule ${s.name} ${what}: ${scheduleSummary(s)}`);
    return 0;
  };
  switch (sub) {
    case 'list': {
      const body = await call('GET', path1);
      if (json) {
        console.log(JSON.stringify(body, null, 2));
        return 0;
      }
      const rows = (body.schedules as ScheduleBody[]).map((s) => [
        s.name,
        s.enabled ? 'yes' : 'no',
        s.cron,
        s.window ? `${pad2(s.window.startHourUtc)}-${pad2(s.window.endHourUtc)}` : '-',
        s.tasks.map((t) => t.task).join(',') + (s.haltOnFailure ? '' : ' (no halt)'),
        s.nextFireAt ? s.nextFireAt.replace('T', ' ').slice(0, 16) : '-',
        s.running ? 'RUNNING' : s.lastRun ? `${s.lastRun.outcome} ${s.lastRun.startedAt.replace('T', ' ').slice(0, 16)}` : '-',
      ]);
      printTable(['NAME', 'ENABLED', 'CRON', 'WINDOW', 'TASKS', 'NEXT FIRE (UTC)', 'LAST RUN'], rows);
      return 0;
    }
    case 'get': {
      const s = (await call('GET', path1)).schedule as ScheduleBody;
      if (json) {
        console.log(JSON.stringify(s, null, 2));
        return 0;
      }
      const rows: [string, string][] = [
        ['name', s.name],
        ['enabled', String(s.enabled)],
        ['cron', `${s.cron} (UTC)`],
        ['window', s.window ? `${pad2(s.window.startHourUtc)}:00-${pad2(s.window.endHourUtc)}:00 UTC` : 'any hour'],
        ['tasks', s.tasks.map((t) => `${t.task}${t.urgency ? ` (${t.urgency})` : ''}${t.params ? ` ${JSON.stringify(t.params)}` : ''}`).join(' -> ')],
        ['on failure', s.haltOnFailure ? 'halt (skip the remaining tasks)' : 'go on with the next task'],
        ['next fire', s.nextFireAt ?? (s.enabled ? '-' : 'disabled')],
        ['last run', s.running ? 'RUNNING' : s.lastRun ? runLine(s.lastRun) : 'none'],
      ];
      for (const [k, val] of rows) console.log(`${k.padEnd(11)}${val}`);
      if (!s.running && s.lastRun) for (const j of s.lastRun.jobs) console.log(`${''.padEnd(11)}${j.id.slice(0, 8)} ${j.task} ${j.state}`);
      return 0;
    }
    case 'create':
    case 'replace':
    case 'patch': {
      const body = scheduleBodyFromFlags(v, sub, usage);
      if (sub === 'replace' && body.name === undefined) body.name = name;
      const created = sub === 'create';
      const s = (await call(created ? 'POST' : sub === 'replace' ? 'PUT' : 'PATCH', path1, body, created ? 201 : 200)).schedule as ScheduleBody;
      return show(s, created ? 'created' : sub === 'replace' ? 'replaced' : 'patched');
    }
    case 'delete': {
      const body = await call('DELETE', path1);
      if (json) console.log(JSON.stringify(body));
      else console.log(`schedule ${name} deleted`);
      return 0;
    }
    case 'enable':
    case 'disable':
      return show((await call('POST', `${path1}/${sub}`)).schedule as ScheduleBody, `${sub}d`);
    default: {
      // run
      const run = (await call('POST', `${path1}/run`)).run as ScheduleRun;
      if (json) console.log(JSON.stringify(run, null, 2));
      else {
        for (const j of run.jobs) console.log(`${j.id.slice(0, 8)} ${j.task.padEnd(16)} ${j.state}`);
        if (run.outcome === 'SUCCEEDED') console.log(`schedule ${name}: SUCCEEDED`);
        else console.error(`baton schedules run: schedule ${name}: ${run.outcome}${run.reason ? ` (${run.reason})` : ''}`);
      }
      return run.outcome === 'SUCCEEDED' ? 0 : run.outcome === 'SKIPPED' ? 3 : 2;
    }
  }
}

/** The request body of create / replace / patch: --file, then the flags over it. */
function scheduleBodyFromFlags(v: Record<string, string | boolean | string[] | undefined>, sub: string, usage: (msg: string) => never): Record<string, unknown> {
  let body: Record<string, unknown> = {};
  if (typeof v.file === 'string') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readBoundedFileSync(v.file, 1024 * 1024));
    } catch (err) {
      usage(`--file ${v.file}: ${errorMessage(err)}`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) usage(`--file ${v.file}: expected a JSON object`);
    body = parsed as Record<string, unknown>;
  }
  if (typeof v.name === 'string') body.name = v.name;
  if (typeof v.cron === 'string') body.cron = v.cron;
  if (typeof v.window === 'string') {
    const m = /^(\d{1,2})-(\d{1,2})$/.exec(v.window) ?? usage(`--window: expected START-END hours in UTC, e.g. 22-4 (got ${JSON.stringify(v.window)})`);
    body.window = { startHourUtc: Number(m[1]), endHourUtc: Number(m[2]) };
  }
  if (v['no-window']) {
    if (sub !== 'patch') usage('--no-window is for patch (create and replace: leave out --window)');
    if (v.window !== undefined) usage('--window and --no-window together');
    body.window = null;
  }
  if (v.urgency !== undefined && !Array.isArray(v.task)) usage('--urgency applies to the --task tasks; give at least one --task');
  if (Array.isArray(v.task)) body.tasks = v.task.map((task) => ({ task, ...(typeof v.urgency === 'string' && { urgency: v.urgency }) }));
  if (v['halt-on-failure'] && v['no-halt-on-failure']) usage('--halt-on-failure and --no-halt-on-failure together');
  if (v['halt-on-failure']) body.haltOnFailure = true;
  if (v['no-halt-on-failure']) body.haltOnFailure = false;
  if (v.enabled && v.disabled) usage('--enabled and --disabled together');
  if (v.enabled) body.enabled = true;
  if (v.disabled) body.enabled = false;
  if (Object.keys(body).length === 0) usage(sub === 'patch' ? 'nothing to change; give --cron, --window, --no-window, --task, --[no-]halt-on-failure, --enabled/--disabled or --file' : 'give --file F, or --name, --cron and --task');
  return body;
}
