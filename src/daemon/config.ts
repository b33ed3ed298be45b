import { accessSync, closeSync, constants, fstatSync, openSync, readSync, statSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, errorMessage } from '../os/errors.js';
import { parseListenAddress, type ListenerSpec } from '../os/listeners.js';
import { ScheduleError } from './schedule-error.js';
import type { ActivationOptions } from '../supervisor/options.js';
import { validateScheduleSpec, type ScheduleSpec } from './schedules.js';

/**
 * `baton run` configuration: the same options as a JSON file (`--config`) and as
 * flags (flags win). Validated completely, with a message that names the field and
 * what was expected, before anything is bound or started.
 *
 * File keys (all optional except where the flags do not supply them):
 *   command        ["node", "app.js"]          (after `--` on the command line)
 *   listen         ["http=tcp://127.0.0.1:8080", "unix:/run/app.sock"]
 *   dataDir        "/var/lib/app"               (required)
 *   stateDir       "/run/baton/app"             (default below)
 *   name           "app"                        (default "baton")
 *   metrics        "127.0.0.1:9464"
 *   adminListen    "127.0.0.1:7070"             (admin API on TCP too; tokens required)
 *   handoff        { "deadlineS": 300, "drainGraceS": 60, "helloTimeoutS": 5, "readyTimeoutS": 10, "listenerSpares": 4, "bakeS": 30 }
 *                  (helloTimeoutS: how long a started app has to connect and say Hello;
 *                   raise it for apps with a slow start-up, or their upgrades abort.
 *                   readyTimeoutS: Begin → Ready budget: how long clients may wait for a
 *                   successor that took over the data (the old process has sealed);
 *                   listenerSpares: extra copies of each listener an app gets, one per
 *                   re-listen after an aborted handoff; an incumbent with none left
 *                   cannot resume, exits, and is replaced by a cold start)
 *   stopTimeoutS   30
 *   history        { "maxRecords": 500, "maxAgeS": 86400 }
 *   restart        { "maxRestarts": 5, "windowS": 60 }
 *   schedules      [{ "name", "cron", "window"?, "tasks", ... }]  (initial schedules: used only
 *                  while <stateDir>/schedules.json does not exist; that file is the truth)
 *   healthIntervalS 10                          (periodic health check; 0 = off)
 *   socketActivation true | { "readyAfterS": 1, "readyCmd": "curl -fs ...", "readyHttp": "/healthz",
 *                  "stopSignal": "SIGTERM", "stopGraceS": 30 }
 *                  (an unmodified server gets the listeners the systemd way and speaks no
 *                   protocol: docs/socket-activation.md; dataDir is then optional)
 */
export interface RunConfig {
  command: string[];
  listen: ListenerSpec[];
  /** The address texts as given (for messages). */
  listenText: string[];
  dataDir: string;
  stateDir: string;
  name: string;
  metrics: { host: string; port: number } | undefined;
  /** The admin API on TCP as well as the Unix socket (every request needs a token). */
  adminListen: { host: string; port: number } | undefined;
  handoff: { deadlineS: number | undefined; drainGraceS: number | undefined; helloTimeoutS: number | undefined; readyTimeoutS: number | undefined; listenerSpares: number | undefined; listenerCopies: boolean | undefined; bakeS: number | undefined };
  stopTimeoutS: number;
  history: { maxRecords: number; maxAgeS: number };
  restart: { maxRestarts: number | undefined; windowS: number | undefined };
  /** Initial schedules (schedules.ts), validated; seeded only into a state dir without schedules.json. */
  schedules: ScheduleSpec[] | undefined;
  /** Seconds between periodic health checks (health.changed log events); 0 = off. */
  healthIntervalS: number;
  /** Socket-activation mode (docs/socket-activation.md); undefined: protocol mode. */
  activation: ActivationConfig | undefined;
}

/** `socketActivation` / `--socket-activation` and its flags, validated (absent fields: the defaults of supervisor/options.ts). */
export interface ActivationConfig {
  readyAfterS: number | undefined;
  readyCmd: string | undefined;
  readyHttp: string | undefined;
  stopSignal: NodeJS.Signals | undefined;
  stopGraceS: number | undefined;
}

/** The Supervisor's options for socket-activation mode (seconds to ms; absent fields keep the defaults). */
export function activationOptions(a: ActivationConfig): Partial<ActivationOptions> {
  return {
    ...(a.readyAfterS !== undefined && { readyAfterMs: a.readyAfterS * 1000 }),
    ...(a.readyCmd !== undefined && { readyCmd: a.readyCmd }),
    ...(a.readyHttp !== undefined && { readyHttp: a.readyHttp }),
    ...(a.stopSignal !== undefined && { stopSignal: a.stopSignal }),
    ...(a.stopGraceS !== undefined && { stopGraceMs: a.stopGraceS * 1000 }),
  };
}

/** Signals that cannot ask a server to stop (they stop, continue or report a child). */
const NOT_STOP_SIGNALS = new Set(['SIGSTOP', 'SIGCONT', 'SIGTSTP', 'SIGTTIN', 'SIGTTOU', 'SIGCHLD']);
const ACTIVATION_KEYS = ['readyAfterS', 'readyCmd', 'readyHttp', 'stopSignal', 'stopGraceS'] as const;

/** What `baton run` flags can set; undefined = not given. */
export interface RunFlags {
  config?: string | undefined;
  listen?: string[] | undefined;
  dataDir?: string | undefined;
  stateDir?: string | undefined;
  name?: string | undefined;
  metrics?: string | undefined;
  adminListen?: string | undefined;
  command?: string[] | undefined;
  /** --socket-activation and its flags (strings as given). */
  socketActivation?: boolean | undefined;
  readyAfter?: string | undefined;
  readyCmd?: string | undefined;
  readyHttp?: string | undefined;
  stopSignal?: string | undefined;
  stopGrace?: string | undefined;
}

/** Job history retention: 500 records and 24 h (issue 8), whichever prunes first. */
export const DEFAULT_HISTORY = { maxRecords: 500, maxAgeS: 24 * 3600 };
export const DEFAULT_STOP_TIMEOUT_S = 30;
export const DEFAULT_HEALTH_INTERVAL_S = 10;
/**
 * Each periodic check is one control session with the app (Hello, ProbeRequest, close):
 * at most 10 a second. 0.001 gave 55 sessions a second (issue 21); tests use 0.1 as a
 * fast clock.
 */
export const MIN_HEALTH_INTERVAL_S = 0.1;
/** A config file is a few KiB; a larger one (or a device, a FIFO) is not read. */
export const MAX_CONFIG_BYTES = 1024 * 1024;
const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;
/** sun_path limit (108 bytes with the NUL) minus the longest name we put in the state dir. */
const MAX_STATE_DIR_BYTES = 107 - '/control/incumbent.sock'.length;

const TOP_KEYS = ['command', 'listen', 'dataDir', 'stateDir', 'name', 'metrics', 'adminListen', 'handoff', 'stopTimeoutS', 'history', 'restart', 'healthIntervalS', 'schedules', 'socketActivation'] as const;

/**
 * The state dir (admin socket, journal, history, audit log): explicit, else systemd's
 * RuntimeDirectory, else $XDG_RUNTIME_DIR/baton/NAME, else <tmpdir>/baton-UID/NAME.
 */
export function defaultStateDir(name: string, env: NodeJS.ProcessEnv = process.env): string {
  if (env.RUNTIME_DIRECTORY) return path.resolve(env.RUNTIME_DIRECTORY.split(':')[0]!);
  if (env.XDG_RUNTIME_DIR) return path.join(env.XDG_RUNTIME_DIR, 'baton', name);
  return path.join(os.tmpdir(), `baton-${process.getuid?.() ?? 'user'}`, name);
}

/** Reads and parses a config file; errors name the file. */
export function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readBoundedFileSync(file, MAX_CONFIG_BYTES);
  } catch (err) {
    throw new ConfigError('E_CONFIG', `--config ${file}: cannot read the file (${errorMessage(err)})`, { field: 'config' });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ConfigError('E_CONFIG', `--config ${file}: not valid JSON (${errorMessage(err)})`, { field: 'config' });
  }
  if (!isObject(value)) throw new ConfigError('E_CONFIG', `--config ${file}: expected a JSON object at the top level`, { field: 'config' });
  return value;
}

/**
 * Builds the run configuration from flags and an optional file. Relative paths in a
 * file are resolved against the file's directory; on the command line, against the
 * current directory. Checks paths are usable (no binding, no creating).
 */
export function resolveRunConfig(flags: RunFlags, env: NodeJS.ProcessEnv = process.env): RunConfig {
  const file = flags.config !== undefined ? readConfigFile(flags.config) : {};
  const src = flags.config !== undefined ? `config ${flags.config}` : 'config';
  const fileDir = flags.config !== undefined ? path.dirname(path.resolve(flags.config)) : process.cwd();
  const fail = (field: string, expected: string, got?: unknown): never => {
    const shown = got === undefined ? '' : ` (got ${JSON.stringify(got)})`;
    throw new ConfigError('E_CONFIG', `${src}: "${field}": expected ${expected}${shown}`, { field });
  };

  const unknown = (field: string, known: readonly string[]): never => {
    throw new ConfigError('E_CONFIG', `${src}: "${field}": unknown option; expected one of: ${known.join(', ')}`, { field });
  };
  for (const key of Object.keys(file)) {
    if (!(TOP_KEYS as readonly string[]).includes(key)) unknown(key, TOP_KEYS);
  }

  const str = (field: string, v: unknown): string | undefined => {
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || v === '') return fail(field, 'a non-empty string', v);
    return v;
  };
  const strList = (field: string, v: unknown): string[] | undefined => {
    if (v === undefined) return undefined;
    if (!Array.isArray(v)) return fail(field, 'an array of strings', v);
    v.forEach((x, i) => {
      if (typeof x !== 'string' || x === '') fail(`${field}[${i}]`, 'a non-empty string', x);
    });
    return v as string[];
  };
  const num = (field: string, v: unknown, opts: { int?: boolean; min: number; max: number }): number | undefined => {
    if (v === undefined) return undefined;
    const ok = typeof v === 'number' && Number.isFinite(v) && (!opts.int || Number.isInteger(v)) && v >= opts.min && v <= opts.max;
    if (!ok) return fail(field, `${opts.int ? 'an integer' : 'a number'} in ${opts.min}..${opts.max}`, v);
    return v as number;
  };
  const bool = (field: string, v: unknown): boolean | undefined => {
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') return fail(field, 'true or false', v);
    return v;
  };
  const obj = (field: string, v: unknown, keys: string[]): Record<string, unknown> => {
    if (v === undefined) return {};
    if (!isObject(v)) return fail(field, `an object with keys ${keys.join(', ')}`, v);
    for (const k of Object.keys(v)) if (!keys.includes(k)) unknown(`${field}.${k}`, keys);
    return v;
  };
  const fromFile = (p: string | undefined): string | undefined => (p === undefined ? undefined : path.resolve(fileDir, p));

  // command
  const command = flags.command?.length ? flags.command : strList('command', file.command);
  if (!command || command.length === 0) fail('command', 'the app command after `--` (baton run [options] -- COMMAND [ARGS]) or "command" in the config file');

  // name
  const name = flags.name ?? str('name', file.name) ?? 'baton';
  if (!NAME_RE.test(name)) fail('name', 'letters, digits, "_", ".", "-" (1..64 characters)', name);

  // listen
  const listenText = flags.listen?.length ? flags.listen : (strList('listen', file.listen) ?? []);
  const fromFlags = Boolean(flags.listen?.length);
  const listen = listenText.map((text, i) => {
    // A relative unix path in the file is relative to the file, like the other paths there.
    const m = /^((?:[^=:/]+=)?unix:)([^/].*)$/.exec(text);
    const absText = !fromFlags && m ? `${m[1]}${path.resolve(fileDir, m[2]!)}` : text;
    try {
      return parseListenAddress(absText, i);
    } catch (err) {
      return fail(`listen[${i}]`, errorMessage(err).replace(/^bad listen address "[^"]*": /, 'a listen address; '), text);
    }
  });
  const names = new Set<string>();
  const addresses = new Map<string, number>();
  listen.forEach((s, i) => {
    if (names.has(s.name)) fail(`listen[${i}]`, `a unique listener name; "${s.name}" is used twice`);
    names.add(s.name);
    // The same address twice would fail at bind with EADDRINUSE; port 0 is a new port each time.
    const key = s.kind === 'unix' ? `unix:${s.path}` : s.port === 0 ? undefined : `tcp:${s.host}:${s.port}`;
    if (key !== undefined) {
      const first = addresses.get(key);
      if (first !== undefined) fail(`listen[${i}]`, `an address not given before; it is the same as listen[${first}]`, listenText[i]);
      addresses.set(key, i);
    }
    if (s.kind === 'unix' && s.path) {
      const parent = path.dirname(s.path);
      let st;
      try {
        st = statSync(parent);
      } catch (err) {
        return fail(`listen[${i}]`, `a socket path in an existing directory; ${parent}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such directory' : errorMessage(err)}`, listenText[i]);
      }
      if (!st.isDirectory()) fail(`listen[${i}]`, `a socket path in a directory; ${parent} is not a directory`, listenText[i]);
    }
  });

  const activation = activationConfig(flags, file.socketActivation, fail, unknown);

  // dirs
  const dataDirRaw = flags.dataDir !== undefined ? path.resolve(flags.dataDir) : fromFile(str('dataDir', file.dataDir));
  // Socket activation has no data-dir lock: the data dir is optional there.
  if (dataDirRaw === undefined && !activation) return fail('dataDir', 'a directory for the app data (--data-dir DIR or "dataDir")');
  if (dataDirRaw !== undefined) checkDirUsable('dataDir', dataDirRaw, fail);
  const stateDir = flags.stateDir !== undefined ? path.resolve(flags.stateDir) : (fromFile(str('stateDir', file.stateDir)) ?? defaultStateDir(name, env));
  checkDirUsable('stateDir', stateDir, fail);
  if (Buffer.byteLength(stateDir) > MAX_STATE_DIR_BYTES) {
    fail('stateDir', `a path of at most ${MAX_STATE_DIR_BYTES} bytes (Unix socket paths inside it are limited to 107 bytes)`, stateDir);
  }
  const dataDir = dataDirRaw ?? stateDir;

  // metrics
  const metricsText = flags.metrics ?? str('metrics', file.metrics);
  const metrics = metricsText === undefined ? undefined : parseHostPort('metrics', metricsText, fail);
  const adminText = flags.adminListen ?? str('adminListen', file.adminListen);
  const adminListen = adminText === undefined ? undefined : parseHostPort('adminListen', adminText, fail);

  if (activation?.readyAfterS !== undefined) {
    const readyTimeoutS = num('handoff.readyTimeoutS', isObject(file.handoff) ? file.handoff.readyTimeoutS : undefined, { min: 0.1, max: 3600 }) ?? 10;
    if (activation.readyAfterS >= readyTimeoutS) fail('socketActivation.readyAfterS', `less than handoff.readyTimeoutS (${readyTimeoutS} s), the time a new process has to be ready`, activation.readyAfterS);
  }

  const handoffObj = obj('handoff', file.handoff, ['deadlineS', 'drainGraceS', 'helloTimeoutS', 'readyTimeoutS', 'listenerSpares', 'listenerCopies', 'bakeS']);
  const historyObj = obj('history', file.history, ['maxRecords', 'maxAgeS']);
  const restartObj = obj('restart', file.restart, ['maxRestarts', 'windowS']);

  return {
    command: command!,
    listen,
    listenText,
    dataDir,
    stateDir,
    name,
    metrics,
    adminListen,
    handoff: {
      deadlineS: num('handoff.deadlineS', handoffObj.deadlineS, { min: 1, max: 86_400 }),
      drainGraceS: num('handoff.drainGraceS', handoffObj.drainGraceS, { min: 0, max: 86_400 }),
      helloTimeoutS: num('handoff.helloTimeoutS', handoffObj.helloTimeoutS, { min: 0.1, max: 3600 }),
      readyTimeoutS: num('handoff.readyTimeoutS', handoffObj.readyTimeoutS, { min: 0.1, max: 3600 }),
      listenerSpares: num('handoff.listenerSpares', handoffObj.listenerSpares, { int: true, min: 0, max: 64 }),
      listenerCopies: bool('handoff.listenerCopies', handoffObj.listenerCopies),
      bakeS: num('handoff.bakeS', handoffObj.bakeS, { min: 0, max: 86_400 }),
    },
    stopTimeoutS: num('stopTimeoutS', file.stopTimeoutS, { min: 1, max: 3600 }) ?? DEFAULT_STOP_TIMEOUT_S,
    history: {
      maxRecords: num('history.maxRecords', historyObj.maxRecords, { int: true, min: 1, max: 100_000 }) ?? DEFAULT_HISTORY.maxRecords,
      maxAgeS: num('history.maxAgeS', historyObj.maxAgeS, { min: 1, max: 10 * 365 * 86_400 }) ?? DEFAULT_HISTORY.maxAgeS,
    },
    restart: {
      maxRestarts: num('restart.maxRestarts', restartObj.maxRestarts, { int: true, min: 0, max: 1000 }),
      windowS: num('restart.windowS', restartObj.windowS, { min: 1, max: 86_400 }),
    },
    schedules: initialSchedules(file.schedules, src),
    healthIntervalS: healthInterval(num('healthIntervalS', file.healthIntervalS, { min: 0, max: 86_400 }), fail),
    activation,
  };
}

/**
 * Socket-activation mode from `--socket-activation` and its flags (which win) and the
 * file's `socketActivation` (true, or an object of ACTIVATION_KEYS). A flag of this mode
 * without the mode is an error rather than silently ignored.
 */
/** The socket-activation flags and "socketActivation" of the config file, checked as `baton run` does (also by `baton unit`, before it writes a unit that could not start). */
export function activationConfig(
  flags: Omit<RunFlags, 'command'>,
  raw: unknown,
  fail: (field: string, expected: string, got?: unknown) => never,
  unknown: (field: string, known: readonly string[]) => never,
): ActivationConfig | undefined {
  if (raw !== undefined && typeof raw !== 'boolean' && !isObject(raw)) fail('socketActivation', `true, false or an object with keys ${ACTIVATION_KEYS.join(', ')}`, raw);
  const fileObj = isObject(raw) ? raw : {};
  for (const k of Object.keys(fileObj)) if (!(ACTIVATION_KEYS as readonly string[]).includes(k)) unknown(`socketActivation.${k}`, ACTIVATION_KEYS);
  const on = flags.socketActivation === true || raw === true || isObject(raw);
  const given = ([['ready-after', flags.readyAfter], ['ready-cmd', flags.readyCmd], ['ready-http', flags.readyHttp], ['stop-signal', flags.stopSignal], ['stop-grace', flags.stopGrace]] as const).find(([, v]) => v !== undefined);
  if (!on) {
    if (given) fail(given[0], `only with --socket-activation (or "socketActivation" in the config file)`, given[1]);
    return undefined;
  }
  const secs = (field: string, flag: string | undefined, v: unknown, min: number, max: number): number | undefined => {
    const n = flag !== undefined ? (/^\d+(\.\d+)?$/.test(flag) ? Number(flag) : NaN) : v;
    if (n === undefined) return undefined;
    if (typeof n !== 'number' || !Number.isFinite(n) || n < min || n > max) return fail(field, `a number of seconds in ${min}..${max}`, flag ?? v);
    return n;
  };
  const text = (field: string, v: unknown): string | undefined => {
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || v.trim() === '' || v.length > 4096) return fail(field, 'a non-empty string of at most 4096 characters', v);
    return v;
  };
  const readyHttp = text('socketActivation.readyHttp', flags.readyHttp ?? fileObj.readyHttp);
  if (readyHttp !== undefined && !/^\/[!-~]*$/.test(readyHttp)) fail('socketActivation.readyHttp', 'a URL path starting with "/" (no spaces), e.g. /healthz', readyHttp);
  const sigText = text('socketActivation.stopSignal', flags.stopSignal ?? fileObj.stopSignal);
  const stopSignal = sigText === undefined ? undefined : (sigText.toUpperCase().startsWith('SIG') ? sigText.toUpperCase() : `SIG${sigText.toUpperCase()}`);
  if (stopSignal !== undefined && (!(stopSignal in os.constants.signals) || NOT_STOP_SIGNALS.has(stopSignal))) {
    fail('socketActivation.stopSignal', 'a signal name that stops a server, e.g. SIGTERM, SIGQUIT (nginx), SIGINT, SIGWINCH (Apache)', sigText);
  }
  return {
    readyAfterS: secs('socketActivation.readyAfterS', flags.readyAfter, fileObj.readyAfterS, 0, 3600),
    readyCmd: text('socketActivation.readyCmd', flags.readyCmd ?? fileObj.readyCmd),
    readyHttp,
    stopSignal: stopSignal as NodeJS.Signals | undefined,
    stopGraceS: secs('socketActivation.stopGraceS', flags.stopGrace, fileObj.stopGraceS, 0.1, 86_400),
  };
}

/** 0 (off) or at least 1 s: a shorter interval would probe the app many times a second. */
function healthInterval(v: number | undefined, fail: (field: string, expected: string, got?: unknown) => never): number {
  if (v === undefined) return DEFAULT_HEALTH_INTERVAL_S;
  if (v !== 0 && v < MIN_HEALTH_INTERVAL_S) return fail('healthIntervalS', `0 (off) or a number of seconds in ${MIN_HEALTH_INTERVAL_S}..86400`, v);
  return v;
}

/** "schedules" in the file: each validated as the admin API would (errors name `schedules[i].field`); names unique. */
function initialSchedules(raw: unknown, src: string): ScheduleSpec[] | undefined {
  if (raw === undefined) return undefined;
  if (!Array.isArray(raw)) throw new ConfigError('E_CONFIG', `${src}: "schedules": expected an array of schedules (got ${JSON.stringify(raw)})`, { field: 'schedules' });
  const seen = new Set<string>();
  return raw.map((r: unknown, i) => {
    try {
      const s = validateScheduleSpec(r, `schedules[${i}]`);
      if (seen.has(s.name)) throw new ScheduleError('E_SCHEDULE_INVALID', `schedules[${i}].name: duplicate name ${JSON.stringify(s.name)}`, { field: `schedules[${i}].name` });
      seen.add(s.name);
      return s;
    } catch (err) {
      if (err instanceof ScheduleError) throw new ConfigError('E_CONFIG', `${src}: ${err.message}`, err.details);
      throw err;
    }
  });
}

/** `HOST:PORT` with HOST an IP literal (IPv6 in brackets). */
export function parseHostPort(field: string, text: string, fail: (field: string, expected: string, got?: unknown) => never): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!m || !host || net.isIP(host) === 0 || (m[1] !== undefined && !net.isIPv6(host)) || port > 65535) {
    return fail(field, 'HOST:PORT with an IP literal host (e.g. 127.0.0.1:9464 or [::1]:9464)', text);
  }
  return { host, port };
}

/** A directory we can use: it exists (a writable dir) or its nearest existing ancestor is a writable dir. */
function checkDirUsable(field: string, dir: string, fail: (field: string, expected: string, got?: unknown) => never): void {
  let p = dir;
  for (;;) {
    let st;
    try {
      st = statSync(p);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' && path.dirname(p) !== p) {
        p = path.dirname(p);
        continue;
      }
      return fail(field, `a usable directory; ${p}: ${errorMessage(err)}`, dir);
    }
    if (!st.isDirectory()) return fail(field, `a directory; ${p} exists and is not a directory`, dir);
    try {
      accessSync(p, constants.R_OK | constants.W_OK | constants.X_OK);
    } catch {
      return fail(field, `a directory this user (uid ${process.getuid?.()}) can read and write; ${p} is not`, dir);
    }
    return;
  }
}

/**
 * Reads a small regular file given by the user (a config file, a token file): opened
 * O_NONBLOCK (a FIFO cannot hang us), refused when it is not a regular file (a device
 * like /dev/zero, a directory) or larger than `maxBytes`.
 */
export function readBoundedFileSync(file: string, maxBytes: number): string {
  const fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error(`not a regular file (${st.isDirectory() ? 'a directory' : st.isFIFO() ? 'a FIFO' : st.isCharacterDevice() || st.isBlockDevice() ? 'a device' : 'a special file'})`);
    if (st.size > maxBytes) throw new Error(`${st.size} bytes; at most ${maxBytes} are read`);
    const buf = Buffer.alloc(maxBytes + 1);
    let n = 0;
    for (;;) {
      const r = readSync(fd, buf, n, buf.length - n, null);
      if (r === 0) break;
      n += r;
      if (n > maxBytes) throw new Error(`more than ${maxBytes} bytes`);
    }
    return buf.subarray(0, n).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
