/**
 * The `baton` commands: each command's flags, output and exit code, and `main`. The
 * entry point (with the runtime flags) is src/cli.ts; what the commands share is in
 * cli-args.ts, output formatting in cli-format.ts, `baton schedules` in cli-schedules.ts,
 * help texts in cli-help.ts.
 */
import { AdminClientError, adminRequest, type ClientReply } from './admin-client.js';
import { activationFlags, fail, finalJob, help, parse, RUN_OPTIONS, seconds, targetSocket, TARGET_OPTIONS, UsageError } from './cli-args.js';
import { resolveRunConfig } from './config.js';
import { Daemon, EXIT } from './daemon.js';
import { BatonError, ConfigError, errorMessage } from '../os/errors.js';
import type { JobRecord } from './jobs.js';
import { HELP, PACKAGE, VERSION } from './cli-help.js';
import { buildUnits, writeUnits } from './unit.js';
import { HANDOVER_ENV, type HandoverMessage } from './handover.js';
import { cmdSchedules } from './cli-schedules.js';
import { buildLine, buildState, duration, jobLine, maintenanceLine, phaseLine, probeLine, progressText, shutdownLine, type HealthBody, type Progress, type StatusBody } from './cli-format.js';

// ---------------------------------------------------------------- commands

async function cmdRun(args: string[]): Promise<number> {
  const dd = args.indexOf('--');
  const flagArgs = dd >= 0 ? args.slice(0, dd) : args;
  const command = dd >= 0 ? args.slice(dd + 1) : [];
  const v = parse('run', flagArgs, RUN_OPTIONS);
  if (v.help) return help('run');
  const cfg = resolveRunConfig({
    config: v.config,
    listen: v.listen,
    dataDir: v['data-dir'],
    stateDir: v['state-dir'],
    name: v.name,
    metrics: v.metrics,
    adminListen: v['admin-listen'],
    ...activationFlags(v),
    command,
  });
  const daemon = new Daemon(cfg);
  await daemon.start();
  const code = await daemon.done;
  // Handed over to a new supervisor: the app (our child) and its pipes keep this process
  // up, and they are the new supervisor's now. Exit at once.
  if (daemon.handedOver) process.exit(code);
  return code;
}

/** `baton unit`: prints (or writes) systemd units for a `baton run` command line (unit.ts). */
async function cmdUnit(args: string[]): Promise<number> {
  const dd = args.indexOf('--');
  const v = parse('unit', dd >= 0 ? args.slice(0, dd) : args, {
    ...RUN_OPTIONS,
    socket: { type: 'boolean' },
    user: { type: 'string' },
    group: { type: 'string' },
    'working-dir': { type: 'string' },
    baton: { type: 'string' },
    description: { type: 'string' },
    'out-dir': { type: 'string' },
    json: { type: 'boolean' },
  });
  if (v.help) return help('unit');
  const units = buildUnits(
    {
      name: v.name,
      socket: v.socket,
      user: v.user,
      group: v.group,
      workingDir: v['working-dir'],
      baton: v.baton,
      description: v.description,
      config: v.config,
      listen: v.listen,
      dataDir: v['data-dir'],
      stateDir: v['state-dir'],
      metrics: v.metrics,
      adminListen: v['admin-listen'],
      ...activationFlags(v),
      command: dd >= 0 ? args.slice(dd + 1) : [],
    },
    `${PACKAGE} ${VERSION}`,
  );
  if (v['out-dir'] !== undefined) {
    const written = writeUnits(v['out-dir'], units);
    if (v.json) console.log(JSON.stringify({ written }, null, 2));
    else for (const p of written) console.log(`wrote ${p}`);
  } else if (v.json) console.log(JSON.stringify({ units }, null, 2));
  else process.stdout.write(units.map((u) => u.content).join('\n'));
  return 0;
}

async function cmdUpgrade(args: string[]): Promise<number> {
  const v = parse('upgrade', args, { ...TARGET_OPTIONS, self: { type: 'boolean' }, json: { type: 'boolean' }, deadline: { type: 'string' }, 'drain-grace': { type: 'string' }, 'ready-timeout': { type: 'string' }, 'lease-wait': { type: 'string' } });
  if (v.help) return help('upgrade');
  if (v.self) {
    const handoffFlags = ['deadline', 'drain-grace', 'ready-timeout', 'lease-wait'].filter((k) => v[k as keyof typeof v] !== undefined);
    if (handoffFlags.length) throw new UsageError(`baton upgrade --self: --${handoffFlags[0]} is about a handoff of the app; --self replaces the supervisor and takes none of them`);
    return selfUpgradeCommand(v);
  }
  const deadlineS = seconds('upgrade', 'deadline', v.deadline);
  const drainGraceS = seconds('upgrade', 'drain-grace', v['drain-grace']);
  const readyTimeoutS = seconds('upgrade', 'ready-timeout', v['ready-timeout']);
  const leaseWait = v['lease-wait'];
  if (leaseWait !== undefined && !/^\d+(\.\d+)?$/.test(leaseWait)) throw new UsageError(`baton upgrade: --lease-wait: expected a number of seconds ≥ 0 (got ${JSON.stringify(leaseWait)})`);
  const leaseWaitS = leaseWait === undefined ? undefined : Number(leaseWait);
  const body = { ...(deadlineS !== undefined && { deadlineS }), ...(drainGraceS !== undefined && { drainGraceS }), ...(readyTimeoutS !== undefined && { readyTimeoutS }), ...(leaseWaitS !== undefined && { leaseWaitS }) };
  return handoffCommand('upgrade', '/v1/upgrade', body, v);
}

async function cmdRollback(args: string[]): Promise<number> {
  const v = parse('rollback', args, { ...TARGET_OPTIONS, json: { type: 'boolean' }, reason: { type: 'string' } });
  if (v.help) return help('rollback');
  if (v.reason !== undefined && v.reason.length > 500) throw new UsageError('baton rollback: --reason: at most 500 characters');
  return handoffCommand('rollback', '/v1/rollback', v.reason !== undefined ? { reason: v.reason } : {}, v);
}

/**
 * `baton upgrade` and `baton rollback`: one handoff job with live progress, then the
 * outcome. Exit 0 committed, 2 aborted with the old process serving, 3 refused (another
 * handoff, the lease), 4 aborted and nothing serves (the restart policy is retrying),
 * 5 rollback refused: no earlier known-good build.
 */
async function handoffCommand(name: 'upgrade' | 'rollback', route: string, body: Record<string, unknown>, v: { json?: boolean | undefined; [k: string]: unknown }): Promise<number> {
  const sock = targetSocket(v as Parameters<typeof targetSocket>[0]);
  const tty = !v.json && process.stdout.isTTY === true;
  const started = Date.now();
  let phase = 'starting';
  let extra = '';
  const verb = name === 'upgrade' ? 'upgrading' : 'rolling back';
  const render = (): void => {
    if (tty) process.stdout.write(`\r\x1b[2K${verb}: ${phase.padEnd(11)} ${((Date.now() - started) / 1000).toFixed(1)}s${extra}`);
  };
  const ticker = tty ? setInterval(render, 200) : undefined;
  let reply: ClientReply;
  try {
    reply = await adminRequest(sock, 'POST', route, body, {
      onLine: (line) => {
        if (v.json) return;
        if (line.type === 'phase') phase = String(line.phase);
        if (line.type === 'drained') extra = `  drained (${String(line.openConnsRemaining)} connections left open)`;
        if (line.type === 'seal') extra = `  sealed ${String(line.done)}/${String(line.total)}`;
        if (tty) render();
        else if (line.type === 'phase') console.log(`phase ${String(line.phase)} +${String(line.elapsedMs)}ms`);
        else if (line.type === 'drained') console.log(`drained: ${String(line.openConnsRemaining)} connections left open`);
        else if (line.type === 'seal') console.log(`seal progress ${String(line.done)}/${String(line.total)}`);
        else if (line.type === 'accepted') console.log(`${name} ${String(line.jobId)} started`);
        else if (line.type === 'lease-wait') console.log(`waiting up to ${Number(line.waitMs) / 1000} s for maintenance job ${String(line.jobId)} (the lease)`);
      },
    });
  } finally {
    if (ticker) clearInterval(ticker);
    if (tty) process.stdout.write('\r\x1b[2K');
  }
  const job = finalJob(reply, v.json);
  const h = job.handoff;
  if (job.state === 'SUCCEEDED') {
    if (!v.json) {
      const rb = h?.rollback;
      if (rb) console.log(`rolled back to ${buildLine(rb.to)} (from ${rb.from ? buildLine(rb.from) : 'an unrecorded build'}): ${rb.reason}`);
      console.log(`committed: generation ${h?.generation} (pid ${h?.oldPid ?? 'none'} -> ${h?.newPid}) in ${job.durationMs} ms  [${phaseLine(job)}]`);
    }
    return 0;
  }
  if (job.state === 'SKIPPED') {
    if (!v.json) console.error(`baton ${name}: refused: ${job.reason} (${job.code})`);
    if (job.code === 'E_NO_ROLLBACK_TARGET') return 5;
    return job.code === 'E_HANDOFF_IN_PROGRESS' || job.code === 'E_LEASE_HELD' ? 3 : 1;
  }
  const restored = h?.restoredBy;
  const nothingServes = h !== undefined && !h.newPid && restored?.outcome !== 'committed';
  if (!v.json) {
    console.error(`aborted: ${job.reason ?? 'unknown reason'} (${job.code ?? '-'})`);
    if (h?.successorStderr) console.error(`the new process's stderr ended with:\n${h.successorStderr.split('\n').map((l) => `  | ${l}`).join('\n')}`);
    if (restored) {
      console.error(`the old process could not serve again (${restored.lostIncumbent}); cold start ${restored.outcome}: pid ${restored.pid ?? '-'}  [${phaseLine(job)}]`);
    } else if (h?.newPid) {
      console.error(`the old process serves on: generation ${h.generation} (pid ${h.newPid})  [${phaseLine(job)}]`);
    }
    if (nothingServes) console.error(`NOTHING SERVES: no app process is running; the restart policy keeps trying (baton status shows it)`);
  }
  return nothingServes ? 4 : 2;
}

/**
 * `baton upgrade --self`: the supervisor replaced by the baton now on disk, the app
 * untouched (self-upgrade.ts). Exit 0 the new supervisor serves, 2 aborted (the old one
 * serves on), 3 refused (a handoff or a job runs).
 */
async function selfUpgradeCommand(v: { json?: boolean | undefined; [k: string]: unknown }): Promise<number> {
  const reply = await adminRequest(targetSocket(v as Parameters<typeof targetSocket>[0]), 'POST', '/v1/supervisor/upgrade', {}, {
    timeoutMs: 120_000,
    onLine: (line) => {
      if (!v.json && line.type === 'phase') console.log(`phase ${String(line.phase)} +${String(line.elapsedMs)}ms`);
    },
  });
  const job = finalJob(reply, v.json);
  const s = job.supervisor;
  if (job.state === 'SUCCEEDED') {
    if (!v.json) console.log(`supervisor upgraded: pid ${s?.oldPid} -> ${s?.newPid} (baton ${s?.version}) in ${job.durationMs ?? '?'} ms; ${s?.appPid ? `the app (pid ${s.appPid}, generation ${s.generation}) serves on, untouched` : 'no app was serving'}`);
    return 0;
  }
  if (job.state === 'SKIPPED') {
    if (!v.json) console.error(`baton upgrade --self: ${job.reason} (${job.code})`);
    return 3;
  }
  if (!v.json) console.error(`aborted: ${job.reason ?? 'unknown reason'} (${job.code ?? '-'})`);
  return 2;
}

async function cmdStatus(args: string[]): Promise<number> {
  const v = parse('status', args, { ...TARGET_OPTIONS, json: { type: 'boolean' } });
  if (v.help) return help('status');
  const reply = await adminRequest(targetSocket(v), 'GET', '/v1/status', undefined, { timeoutMs: 10_000 });
  if (reply.status !== 200) fail(reply);
  const s = reply.body as unknown as StatusBody;
  if (v.json) {
    console.log(JSON.stringify(s, null, 2));
    return 0;
  }
  const rows: [string, string][] = [
    ['service', s.name],
    ['supervisor', `pid ${s.supervisor.pid}, up ${duration(s.supervisor.uptimeS * 1000)}${s.stopping ? ', stopping' : ''}`],
    ['app', s.serving === false ? `DOWN: no app process is serving${s.app ? ` (generation ${s.app.generation}, pid ${s.app.pid}, exited)` : ''}; ${s.restartScheduled ? 'a restart is scheduled' : s.phase !== 'idle' ? 'a handoff is running' : 'nothing is retrying'}` : s.app ? `pid ${s.app.pid}, generation ${s.app.generation}` : 'not running'],
    ...(s.mode === 'socket-activation' ? [['mode', 'socket activation (no drain, seal or lock pass)'] as [string, string]] : []),
    ['build', s.builds?.current ? buildState(s.builds.current) : 'none recorded'],
    ['last good', s.builds?.lastGood ? buildLine(s.builds.lastGood) : 'none yet'],
    ['health', `${s.health.status} (${s.health.detail}${s.health.ms !== undefined ? `, ${s.health.ms} ms` : ''})`],
    ['handoff', s.phase === 'idle' ? 'none running' : `${s.phase} (${duration(s.phaseElapsedMs ?? 0)})`],
    ['listeners', s.listeners.map((l) => `${l.name}=${l.address}`).join(', ') || 'none'],
    ['lock', s.lock ? `held by pid ${s.lock.pid}${s.lock.alive ? '' : ' (DEAD)'} since ${s.lock.since}` : 'free'],
    ['last handoff', s.lastHandoff ? jobLine(s.lastHandoff) : 'none'],
    ['maintenance', s.runningJob?.kind === 'maintenance' ? `running: ${maintenanceLine(s.runningJob)}` : s.lastMaintenance ? `last: ${maintenanceLine(s.lastMaintenance)}` : 'none'],
    ['state dir', s.supervisor.stateDir],
  ];
  if (s.admin?.tcp) rows.push(['admin tcp', `${s.admin.tcp} (token required)`]);
  if (s.previousShutdown !== undefined) rows.push(['last stop', shutdownLine(s.previousShutdown)]);
  if (s.report) {
    rows.push(['probes', s.report.status]);
    for (const p of s.report.probes) rows.push(['', probeLine(p)]);
  }
  for (const [k, val] of rows) console.log(`${k.padEnd(13)}${val}`);
  return 0;
}

async function cmdMaintenance(args: string[]): Promise<number> {
  const [sub, target, ...rest] = args;
  if (sub === undefined || sub === '-h' || sub === '--help') return help('maintenance');
  if (sub === 'cancel') {
    const v = parse('maintenance cancel', rest, { ...TARGET_OPTIONS, reason: { type: 'string' } });
    if (v.help || !target) return help('maintenance');
    const reply = await adminRequest(targetSocket(v), 'POST', `/v1/jobs/${encodeURIComponent(target)}/cancel`, v.reason ? { reason: v.reason } : {}, { timeoutMs: 10_000 });
    if (reply.status !== 202) fail(reply);
    console.log(`cancelling job ${(reply.body.job as JobRecord).id}`);
    return 0;
  }
  if (sub !== 'run') throw new UsageError(`baton maintenance: unknown subcommand ${JSON.stringify(sub)}; expected run or cancel\nRun 'baton maintenance --help' for usage.`);
  if (target === '-h' || target === '--help') return help('maintenance');
  if (!target || target.startsWith('-')) throw new UsageError(`baton maintenance run: expected a task TYPE (e.g. baton maintenance run compaction)\nRun 'baton maintenance --help' for usage.`);
  const v = parse('maintenance run', rest, { ...TARGET_OPTIONS, json: { type: 'boolean' }, urgency: { type: 'string' }, reason: { type: 'string' }, params: { type: 'string' } });
  if (v.help) return help('maintenance');
  const urgency = v.urgency ?? 'normal';
  if (!['low', 'normal', 'high', 'critical'].includes(urgency)) throw new UsageError(`baton maintenance run: --urgency: expected low, normal, high or critical (got ${JSON.stringify(urgency)})`);
  let params: unknown;
  if (v.params !== undefined) {
    try {
      params = JSON.parse(v.params);
    } catch (err) {
      throw new UsageError(`baton maintenance run: --params: not valid JSON: ${errorMessage(err)}`);
    }
    if (typeof params !== 'object' || params === null || Array.isArray(params)) throw new UsageError('baton maintenance run: --params: expected a JSON object');
  }
  const tty = !v.json && process.stdout.isTTY === true;
  const started = Date.now();
  let line = 'starting';
  const render = (): void => {
    if (tty) process.stdout.write(`\r\x1b[2K${target}: ${line}  ${((Date.now() - started) / 1000).toFixed(1)}s`);
  };
  const ticker = tty ? setInterval(render, 200) : undefined;
  let reply: ClientReply;
  try {
    reply = await adminRequest(targetSocket(v), 'POST', '/v1/jobs', { task: target, urgency, ...(v.reason !== undefined && { reason: v.reason }), ...(params !== undefined && { params }) }, {
      onLine: (l) => {
        if (v.json) return;
        if (l.type === 'progress') line = progressText(l as unknown as Progress);
        if (l.type === 'started') line = `running in pid ${String(l.pid)}`;
        if (tty) return render();
        if (l.type === 'started') console.log(`maintenance ${String(l.jobId)} (${target}) started in pid ${String(l.pid)} (generation ${String(l.generation)})`);
        else if (l.type === 'progress') console.log(`progress ${progressText(l as unknown as Progress)}`);
      },
    });
  } finally {
    if (ticker) clearInterval(ticker);
    if (tty) process.stdout.write('\r\x1b[2K');
  }
  const job = finalJob(reply, v.json);
  const m = job.maintenance;
  switch (job.state) {
    case 'SUCCEEDED':
      if (!v.json) console.log(`succeeded: ${target} in ${job.durationMs} ms${m?.result !== undefined && m.result !== null ? `: ${JSON.stringify(m.result)}` : ''}`);
      return 0;
    case 'SKIPPED':
      if (!v.json) console.error(`baton maintenance run: skipped: ${job.reason} (${job.code})`);
      return 3;
    case 'CANCELLED':
      if (!v.json) console.error(`cancelled: ${job.reason ?? 'no reason given'}`);
      return 5;
    default:
      if (!v.json) console.error(`failed: ${job.reason ?? 'unknown reason'} (${job.code ?? '-'})`);
      return 2;
  }
}

async function cmdJobs(args: string[]): Promise<number> {
  const v = parse('jobs', args, { ...TARGET_OPTIONS, json: { type: 'boolean' }, limit: { type: 'string' }, kind: { type: 'string' } });
  if (v.help) return help('jobs');
  const limit = v.limit ?? '20';
  if (!/^\d+$/.test(limit) || Number(limit) < 1 || Number(limit) > 10_000) throw new UsageError(`baton jobs: --limit: expected an integer in 1..10000 (got ${JSON.stringify(limit)})`);
  if (v.kind !== undefined && v.kind !== 'maintenance' && v.kind !== 'handoff' && v.kind !== 'supervisor') throw new UsageError(`baton jobs: --kind: expected maintenance, handoff or supervisor (got ${JSON.stringify(v.kind)})`);
  const reply = await adminRequest(targetSocket(v), 'GET', `/v1/jobs?limit=${limit}${v.kind ? `&kind=${v.kind}` : ''}`, undefined, { timeoutMs: 10_000 });
  if (reply.status !== 200) fail(reply);
  if (v.json) {
    console.log(JSON.stringify(reply.body, null, 2));
    return 0;
  }
  const widths = [8, 11, 12, 9, 9, 19, 9, 12, 0];
  console.log(['JOB', 'KIND', 'TASK', 'URGENCY', 'STATE', 'STARTED', 'DURATION', 'PROGRESS', 'REASON / RESULT'].map((c, i) => c.padEnd(widths[i]!)).join(' ').trimEnd());
  for (const j of reply.body.jobs as JobRecord[]) {
    const m = j.maintenance;
    const cells = [
      j.id.slice(0, 8),
      j.kind,
      m?.task ?? '-',
      m?.urgency ?? '-',
      j.state,
      (j.startedAt ?? j.createdAt).replace('T', ' ').slice(0, 19),
      j.durationMs !== undefined ? `${j.durationMs}ms` : '-',
      m?.progress ? `${m.progress.done}/${m.progress.total || '?'}` : '-',
      j.reason ?? (m?.result !== undefined && m.result !== null ? JSON.stringify(m.result).slice(0, 80) : ''),
    ];
    console.log(cells.map((c, i) => c.padEnd(widths[i]!)).join(' ').trimEnd());
  }
  return 0;
}

async function cmdHealth(args: string[]): Promise<number> {
  const v = parse('health', args, { ...TARGET_OPTIONS, json: { type: 'boolean' } });
  if (v.help) return help('health');
  const reply = await adminRequest(targetSocket(v), 'GET', '/v1/health', undefined, { timeoutMs: 10_000 });
  if (reply.status !== 200) fail(reply);
  const r = reply.body as unknown as HealthBody;
  if (v.json) console.log(JSON.stringify(r, null, 2));
  else {
    console.log(`health       ${r.status}`);
    for (const p of r.probes) console.log(`  ${probeLine(p)}`);
    const sv = r.supervisor;
    console.log(`generation   ${sv.generation}${sv.appPid ? ` (pid ${sv.appPid})` : ' (no app)'}`);
    console.log(`lease        ${sv.lease ?? 'free'}`);
    console.log(`lock         ${sv.lock ? `held by pid ${sv.lock.pid}${sv.lock.alive ? '' : ' (DEAD)'} since ${sv.lock.since}` : 'free'}`);
    console.log(`last handoff ${sv.lastHandoff ? jobLine(sv.lastHandoff) : 'none'}`);
  }
  return r.status === 'OK' ? 0 : 2;
}

async function cmdHistory(args: string[]): Promise<number> {
  const v = parse('history', args, { ...TARGET_OPTIONS, json: { type: 'boolean' }, limit: { type: 'string' } });
  if (v.help) return help('history');
  const limit = v.limit ?? '20';
  if (!/^\d+$/.test(limit) || Number(limit) < 1 || Number(limit) > 10_000) throw new UsageError(`baton history: --limit: expected an integer in 1..10000 (got ${JSON.stringify(limit)})`);
  const reply = await adminRequest(targetSocket(v), 'GET', `/v1/history?limit=${limit}`, undefined, { timeoutMs: 10_000 });
  if (reply.status !== 200) fail(reply);
  const jobs = reply.body.jobs as JobRecord[];
  if (v.json) {
    console.log(JSON.stringify(reply.body, null, 2));
    return 0;
  }
  console.log(['JOB', 'KIND', 'STATE', 'TRIGGER', 'STARTED', 'DURATION', 'PIDS', 'GEN', 'REASON'].map((h, i) => h.padEnd(WIDTHS[i]!)).join(' ').trimEnd());
  for (const j of jobs) {
    const cells = [
      j.id.slice(0, 8),
      j.kind,
      j.state,
      j.trigger,
      (j.startedAt ?? j.createdAt).replace('T', ' ').slice(0, 19),
      j.durationMs !== undefined ? `${j.durationMs}ms` : '-',
      j.handoff ? `${j.handoff.oldPid ?? 'none'}->${j.handoff.newPid ?? 'none'}` : j.maintenance ? `${j.maintenance.task}${j.maintenance.pid ? `@${j.maintenance.pid}` : ''}` : j.supervisor ? `${j.supervisor.oldPid}->${j.supervisor.newPid}` : '-',
      j.handoff ? String(j.handoff.generation) : j.supervisor?.generation !== undefined ? String(j.supervisor.generation) : '-',
      j.reason ?? '',
    ];
    console.log(cells.map((c, i) => c.padEnd(WIDTHS[i]!)).join(' ').trimEnd());
  }
  return 0;
}
const WIDTHS = [8, 10, 9, 10, 19, 8, 13, 3, 0];

async function cmdStop(args: string[]): Promise<number> {
  const v = parse('stop', args, { ...TARGET_OPTIONS, timeout: { type: 'string' } });
  if (v.help) return help('stop');
  const timeoutS = seconds('stop', 'timeout', v.timeout);
  const reply = await adminRequest(targetSocket(v), 'POST', '/v1/stop', timeoutS !== undefined ? { timeoutS } : {}, {
    onLine: (line) => {
      if (line.type !== 'stopping') return;
      if (line.stopSignal !== undefined) console.log(`stopping (the app gets ${String(line.stopSignal)} and has ${String(line.timeoutS)} s to exit)`);
      else console.log(`stopping (the app has ${String(line.timeoutS)} s to drain, seal and exit)`);
    },
  });
  if (reply.body.stopped !== true) fail(reply);
  console.log('stopped');
  return 0;
}

// ---------------------------------------------------------------- main

const COMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  run: cmdRun,
  upgrade: cmdUpgrade,
  rollback: cmdRollback,
  status: cmdStatus,
  history: cmdHistory,
  maintenance: cmdMaintenance,
  jobs: cmdJobs,
  schedules: cmdSchedules,
  health: cmdHealth,
  stop: cmdStop,
  unit: cmdUnit,
};

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '-h' || cmd === '--help' || cmd === 'help') {
    if (cmd === 'help' && rest[0] && HELP[rest[0]]) return help(rest[0]);
    return help('main');
  }
  if (cmd === '-V' || cmd === '--version') {
    console.log(VERSION);
    return 0;
  }
  const run = COMMANDS[cmd];
  if (!run) throw new UsageError(`baton: unknown command ${JSON.stringify(cmd)}; expected one of: ${Object.keys(COMMANDS).join(', ')}\nRun 'baton --help' for usage.`);
  return run(rest);
}

/** Runs one `baton` command line and sets the exit code (src/cli.ts, the bin, calls this). */
export function runCli(argv: string[]): void {
  void main(argv).then(
    (code) => {
      process.exitCode = code;
      // `run` leaves nothing behind once done; a stray handle must not keep the process up.
      if (argv[0] === 'run') setTimeout(() => process.exit(code), 2_000).unref();
    },
    (err: unknown) => {
      if (err instanceof UsageError) console.error(err.message);
      else if (err instanceof ConfigError) console.error(`baton: ${err.message}`);
      else if (err instanceof AdminClientError) console.error(`baton: ${err.message}`);
      else if (err instanceof BatonError) console.error(`baton: ${err.message} (${err.code})`);
      else console.error(`baton: ${errorMessage(err)}`);
      // A new supervisor started by `baton upgrade --self` that cannot start says why to the
      // old one (which serves on), so the operator reads it in the upgrade's answer.
      if (argv[0] === 'run' && process.env[HANDOVER_ENV] !== undefined && process.connected) {
        const failed: HandoverMessage = { baton: 'handover', type: 'failed', code: err instanceof BatonError ? err.code : err instanceof UsageError ? 'E_USAGE' : 'E_START_FAILED', message: errorMessage(err) };
        process.send?.(failed, undefined, undefined, () => process.disconnect());
      }
      process.exitCode = EXIT.error;
      if (argv[0] === 'run') setTimeout(() => process.exit(EXIT.error), 2_000).unref();
    },
  );
}
