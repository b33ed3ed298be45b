/**
 * `baton unit`: a ready systemd service unit (and, with `--socket`, socket units) for a
 * `baton run` command line. The settings are the ones baton relies on (README
 * "systemd", fixtures/systemd): Type=notify with NotifyAccess=all (sd_notify comes from
 * a systemd-notify child), KillMode=process (SIGTERM to baton only: it stops the app
 * gracefully; and a baton that dies leaves the app serving, for the restarted baton to
 * re-adopt), ExecReload=baton upgrade, WatchdogSec, StateDirectory for the state dir.
 * Everything here is pure text from the options; the CLI prints or writes it.
 */
import { accessSync, constants, existsSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, errorMessage } from '../os/errors.js';
import { parseListenAddresses, type ListenerSpec } from '../os/listeners.js';
import { shebangNodeArgs } from '../os/shebang.js';
import { activationConfig, readConfigFile, type RunFlags } from './config.js';

/** A unit that cannot be generated as asked; the message names the flag. */
export class UnitError extends ConfigError {}

/** What `baton unit` was given: the `baton run` flags it passes on, and its own. */
export interface UnitFlags extends Omit<RunFlags, 'command'> {
  socket?: boolean | undefined;
  user?: string | undefined;
  group?: string | undefined;
  workingDir?: string | undefined;
  /** How ExecStart/ExecReload run baton: a path (e.g. /usr/local/bin/baton). Default: this node and this install's cli.js. */
  baton?: string | undefined;
  description?: string | undefined;
  /** The app command (after `--`). */
  command: string[];
}

export interface UnitFile {
  /** `NAME.service`, `NAME.socket`, or `NAME-LISTENER.socket` when there are several listeners. */
  file: string;
  content: string;
}

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const USER_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$/;
/** Arguments written without quotes in a unit's command line. */
const PLAIN_ARG = /^[A-Za-z0-9_@+=:,./-]+$/;

/** `node [the bin's V8 flags] <this install>/dist/src/cli.js`: pinned to the node and the baton that generate the unit. */
export function defaultBatonCommand(): string[] {
  const cli = fileURLToPath(new URL('../cli.js', import.meta.url));
  return [process.execPath, ...shebangNodeArgs(cli), cli];
}

/** The unit files for `flags`, service first. */
export function buildUnits(flags: UnitFlags, version: string, env: NodeJS.ProcessEnv = process.env, cwd: string = process.cwd()): UnitFile[] {
  const file = flags.config === undefined ? {} : readConfigFile(flags.config);
  const configPath = flags.config === undefined ? undefined : path.resolve(cwd, flags.config);
  const name = flags.name ?? (typeof file.name === 'string' ? file.name : undefined);
  if (name === undefined) throw new UnitError('E_UNIT', 'baton unit: --name NAME is required (the unit is NAME.service; it is also baton run --name)', { field: 'name' });
  if (!NAME_RE.test(name)) throw new UnitError('E_UNIT', `baton unit: --name: expected 1-64 letters, digits, "_", ".", "-" (got ${JSON.stringify(name)})`, { field: 'name' });
  for (const [flag, v] of [['user', flags.user], ['group', flags.group]] as const) {
    if (v !== undefined && !USER_RE.test(v)) throw new UnitError('E_UNIT', `baton unit: --${flag}: expected a user or group name (got ${JSON.stringify(v)})`, { field: flag });
  }

  // The socket-activation options as `baton run` will read them: a bad one fails here, not at the unit's start.
  activationConfig(
    flags,
    file.socketActivation,
    (field, expected, got) => {
      throw new UnitError('E_UNIT', `baton unit: ${field}: expected ${expected}${got === undefined ? '' : ` (got ${JSON.stringify(got)})`}`, { field });
    },
    (field, known) => {
      throw new UnitError('E_UNIT', `baton unit: ${field}: unknown option; expected one of: ${known.join(', ')}`, { field });
    },
  );

  // The listeners: flags, else the config file's (only needed here for --socket).
  const listenText = flags.listen?.length ? flags.listen : Array.isArray(file.listen) ? (file.listen as unknown[]).filter((x): x is string => typeof x === 'string') : [];
  let listeners: ListenerSpec[];
  try {
    listeners = parseListenAddresses(listenText.map((t) => (flags.listen?.length || configPath === undefined ? t : relativeUnixTo(t, path.dirname(configPath)))));
  } catch (err) {
    throw new UnitError('E_UNIT', `baton unit: --listen: ${errorMessage(err)}`, { field: 'listen' });
  }
  if (flags.socket) {
    if (listeners.length === 0) throw new UnitError('E_UNIT', 'baton unit: --socket needs at least one --listen address (systemd binds it and passes it to baton run)', { field: 'socket' });
    const zero = listeners.find((l) => l.kind === 'tcp' && l.port === 0);
    if (zero) throw new UnitError('E_UNIT', `baton unit: --socket: listener ${zero.name} has port 0; systemd needs a fixed port`, { field: 'listen' });
  }

  const command = flags.command.length ? resolveCommand(flags.command, env, cwd) : Array.isArray(file.command) ? (file.command as string[]) : [];
  if (command.length === 0) throw new UnitError('E_UNIT', 'baton unit: expected the app command after `--` (baton unit --name NAME [options] -- COMMAND [ARGS]) or "command" in --config', { field: 'command' });

  const baton = flags.baton === undefined ? defaultBatonCommand() : [path.resolve(cwd, flags.baton)];
  const stateDir = flags.stateDir !== undefined ? path.resolve(cwd, flags.stateDir) : typeof file.stateDir === 'string' ? undefined : `/var/lib/${name}/supervisor`;
  const dataDir = flags.dataDir !== undefined ? path.resolve(cwd, flags.dataDir) : typeof file.dataDir === 'string' ? undefined : `/var/lib/${name}/data`;
  const workingDir = path.resolve(cwd, flags.workingDir ?? '.');

  const run = [
    ...baton,
    'run',
    '--name',
    name,
    ...(configPath ? ['--config', configPath] : []),
    ...(stateDir ? ['--state-dir', stateDir] : []),
    ...(dataDir ? ['--data-dir', dataDir] : []),
    // With socket activation baton takes the listeners systemd passes (and would ignore --listen).
    ...(flags.socket ? [] : (flags.listen ?? []).flatMap((l) => ['--listen', l])),
    ...(flags.metrics ? ['--metrics', flags.metrics] : []),
    ...(flags.adminListen ? ['--admin-listen', flags.adminListen] : []),
    ...(flags.socketActivation ? ['--socket-activation'] : []),
    ...(
      [
        ['--ready-after', flags.readyAfter],
        ['--ready-cmd', flags.readyCmd],
        ['--ready-http', flags.readyHttp],
        ['--stop-signal', flags.stopSignal],
        ['--stop-grace', flags.stopGrace],
      ] as const
    ).flatMap(([flag, v]) => (v === undefined ? [] : [flag, v])),
    '--',
    ...command,
  ];
  // The client commands find the supervisor the way `baton run` was told.
  const target = stateDir ? ['--state-dir', stateDir] : ['--config', configPath!];
  const reload = [...baton, 'upgrade', ...target];

  const sockets = flags.socket ? listeners.map((l) => ({ listener: l, file: listeners.length === 1 ? `${name}.socket` : `${name}-${l.name}.socket` })) : [];
  const socketNames = sockets.map((s) => s.file).join(' ');
  const header = (f: string): string[] => [`# ${f}, generated by \`baton unit\` (${version})`];
  const targetText = target.map(quoteArg).join(' ');

  const service = [
    ...header(`${name}.service`),
    `# Install: copy to /etc/systemd/system/, then: systemctl daemon-reload && systemctl enable --now ${sockets.length ? `${socketNames} ` : ''}${name}.service`,
    `# Deploy a new build: make the command start it, then: systemctl reload ${name} (baton upgrade: a handoff, no dropped connection).`,
    `# Status and history: baton status ${targetText}; baton history ${targetText}`,
    '[Unit]',
    `Description=${unitText(flags.description ?? `${name} under the baton handoff supervisor`)}`,
    ...(sockets.length ? [`Requires=${socketNames}`, `After=${socketNames} network.target`] : ['After=network.target']),
    '',
    '[Service]',
    '# READY/RELOADING/STOPPING come through systemd-notify, a child process of baton.',
    'Type=notify',
    'NotifyAccess=all',
    ...(flags.user ? [`User=${flags.user}`] : ['# Runs as root: give --user USER (and --group) to run as a service user.']),
    ...(flags.group ? [`Group=${flags.group}`] : []),
    `# /var/lib/${name}, 0700: the supervisor's state (admin socket, journal, history) and by default the data.`,
    `StateDirectory=${name}`,
    'StateDirectoryMode=0700',
    `WorkingDirectory=${unitText(workingDir)}`,
    ...(sockets.length > 1 ? [`Sockets=${socketNames}`] : []),
    `ExecStart=${run.map(quoteArg).join(' ')}`,
    '# systemctl reload waits for the handoff; it fails (and the old process serves on) if it aborts.',
    `ExecReload=${reload.map(quoteArg).join(' ')}`,
    '# Signals to baton only: on stop it drains and seals the app, then exits; if baton itself dies,',
    '# the app serves on and the restarted baton re-adopts it (nothing refused, the app not restarted).',
    '# baton upgrade --self (or SIGUSR2) replaces baton and tells systemd the new MAINPID.',
    'KillMode=process',
    'TimeoutStopSec=60',
    'Restart=on-failure',
    'RestartSec=2',
    '# baton sends WATCHDOG=1 every WatchdogSec/2.',
    'WatchdogSec=30',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');

  return [
    { file: `${name}.service`, content: service },
    ...sockets.map(({ listener, file: f }) => ({
      file: f,
      content: [
        ...header(f),
        '# systemd holds the listener across restarts of baton itself; baton adopts it (LISTEN_FDS).',
        '[Unit]',
        `Description=Listener ${listener.name} of ${name} (held by baton)`,
        '',
        '[Socket]',
        `ListenStream=${unitText(listener.kind === 'tcp' ? (net.isIPv6(listener.host!) ? `[${listener.host}]:${listener.port}` : `${listener.host}:${listener.port}`) : listener.path!)}`,
        ...(listener.kind === 'unix' ? [`SocketMode=0${(listener.mode ?? 0o660).toString(8)}`] : []),
        `FileDescriptorName=${listener.name}`,
        `Service=${name}.service`,
        '',
        '[Install]',
        'WantedBy=sockets.target',
        '',
      ].join('\n'),
    })),
  ];
}

/** Writes the units into `dir`; refuses to replace an existing file. Returns the paths written. */
export function writeUnits(dir: string, units: readonly UnitFile[]): string[] {
  const target = path.resolve(dir);
  if (!existsSync(target) || !statSync(target).isDirectory()) throw new UnitError('E_UNIT', `baton unit: --out-dir ${dir}: not a directory`, { field: 'out-dir' });
  const paths = units.map((u) => path.join(target, u.file));
  const taken = paths.find((p) => existsSync(p));
  if (taken) throw new UnitError('E_UNIT_EXISTS', `baton unit: ${taken} exists; remove it first (baton unit never replaces a unit)`, { field: 'out-dir', path: taken });
  units.forEach((u, i) => writeFileSync(paths[i]!, u.content, { mode: 0o644, flag: 'wx' }));
  return paths;
}

/** COMMAND as the unit runs it: a bare name is looked up on $PATH now (systemd's PATH is not the shell's), a relative path made absolute. */
function resolveCommand(command: string[], env: NodeJS.ProcessEnv, cwd: string): string[] {
  const [exe, ...args] = command as [string, ...string[]];
  if (exe.includes('/')) return [path.resolve(cwd, exe), ...args];
  for (const dir of (env.PATH ?? '').split(':').filter(Boolean)) {
    const candidate = path.resolve(cwd, dir, exe);
    try {
      accessSync(candidate, constants.X_OK);
      if (statSync(candidate).isFile()) return [candidate, ...args];
    } catch {
      /* not here */
    }
  }
  throw new UnitError('E_UNIT', `baton unit: the app command ${JSON.stringify(exe)} is not on $PATH; give its absolute path`, { field: 'command' });
}

/** A config file's relative unix listener path is relative to the file (as baton run reads it). */
function relativeUnixTo(text: string, dir: string): string {
  const m = /^((?:[^=:/]+=)?unix:)([^/].*)$/.exec(text);
  return m ? `${m[1]}${path.resolve(dir, m[2]!)}` : text;
}

/** A value in a unit file: `%` starts a specifier, so it is doubled; no control characters. */
function unitText(v: string): string {
  if (/[\0-\x1f\x7f]/.test(v)) throw new UnitError('E_UNIT', `baton unit: ${JSON.stringify(v)}: control characters cannot go into a unit file`, { value: v });
  return v.replaceAll('%', '%%');
}

/** One word of ExecStart=: specifiers (%) and variables ($) escaped, quoted when it has anything else. */
export function quoteArg(arg: string): string {
  const v = unitText(arg).replaceAll('$', '$$$$');
  if (v !== '' && PLAIN_ARG.test(v.replaceAll('%', '').replaceAll('$', ''))) return v;
  return `"${v.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
}
