import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { AdminTarget, ClientReply } from './admin-client.js';
import { HELP } from './cli-help.js';
import { defaultStateDir, parseHostPort, readBoundedFileSync, readConfigFile } from './config.js';
import { BatonError, errorMessage } from '../os/errors.js';
import type { JobRecord } from './jobs.js';
import { adminSocketPath } from './state-dir.js';

/**
 * What the `baton` commands share: usage errors, the flags that say which supervisor to
 * talk to (and with which token) and `baton run`'s flags, flag parsing, help, and failing
 * with the supervisor's error.
 */

export class UsageError extends Error {}

export const TARGET_OPTIONS = {
  'state-dir': { type: 'string' },
  name: { type: 'string' },
  config: { type: 'string' },
  admin: { type: 'string' },
  'token-file': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

/** The flags of `baton run`, which `baton unit` passes on. */
export const RUN_OPTIONS = {
  config: { type: 'string' },
  listen: { type: 'string', multiple: true },
  'data-dir': { type: 'string' },
  'state-dir': { type: 'string' },
  name: { type: 'string' },
  metrics: { type: 'string' },
  'admin-listen': { type: 'string' },
  'socket-activation': { type: 'boolean' },
  'ready-after': { type: 'string' },
  'ready-cmd': { type: 'string' },
  'ready-http': { type: 'string' },
  'stop-signal': { type: 'string' },
  'stop-grace': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

/** The socket-activation flags of `baton run` as RunFlags (config.ts validates them). */
export function activationFlags(v: { 'socket-activation'?: boolean | undefined; 'ready-after'?: string | undefined; 'ready-cmd'?: string | undefined; 'ready-http'?: string | undefined; 'stop-signal'?: string | undefined; 'stop-grace'?: string | undefined }) {
  return {
    socketActivation: v['socket-activation'],
    readyAfter: v['ready-after'],
    readyCmd: v['ready-cmd'],
    readyHttp: v['ready-http'],
    stopSignal: v['stop-signal'],
    stopGrace: v['stop-grace'],
  };
}

/** The values parseArgs gives for these options (named, so the declaration of parse can be emitted). */
type Flags<O extends NonNullable<ParseArgsConfig['options']>> = ReturnType<typeof parseArgs<{ args: string[]; options: O; strict: true; allowPositionals: false }>>['values'];

export function parse<O extends NonNullable<ParseArgsConfig['options']>>(cmd: string, args: string[], options: O): Flags<O> {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new UsageError(`baton ${cmd}: ${errorMessage(err)}\nRun 'baton ${cmd} --help' for the options.`);
  }
}

export function seconds(cmd: string, flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+(\.\d+)?$/.test(v) || !(n > 0)) throw new UsageError(`baton ${cmd}: --${flag}: expected a positive number of seconds (got ${JSON.stringify(v)})`);
  return n;
}

/**
 * Where a client command sends its requests: --admin tcp://HOST:PORT, else the admin
 * socket of the state dir (below); with the token of --token-file or $BATON_TOKEN.
 */
export function targetSocket(v: { 'state-dir'?: string | undefined; name?: string | undefined; config?: string | undefined; admin?: string | undefined; 'token-file'?: string | undefined }): AdminTarget {
  let token = process.env.BATON_TOKEN?.trim() || undefined;
  if (v['token-file'] !== undefined) {
    try {
      token = readBoundedFileSync(v['token-file'], 4096).trim();
    } catch (err) {
      throw new UsageError(`baton: --token-file ${v['token-file']}: cannot read it (${errorMessage(err)})`);
    }
    if (token === '') throw new UsageError(`baton: --token-file ${v['token-file']}: the file is empty; expected a token (e.g. <state-dir>/tokens/read.token)`);
  }
  if (v.admin !== undefined) {
    const bad = (): never => {
      throw new UsageError(`baton: --admin: expected tcp://HOST:PORT with an IP literal host (e.g. tcp://127.0.0.1:7070 or tcp://[::1]:7070) (got ${JSON.stringify(v.admin)})`);
    };
    const m = /^tcp:\/\/(.+)$/.exec(v.admin) ?? bad();
    return { tcp: parseHostPort('admin', m[1]!, bad), token };
  }
  return { socketPath: stateDirSocket(v), token };
}

/** The admin socket: --state-dir, --config's stateDir, $BATON_STATE_DIR, or the default state dir of --name. */
function stateDirSocket(v: { 'state-dir'?: string | undefined; name?: string | undefined; config?: string | undefined }): string {
  if (v['state-dir']) return adminSocketPath(path.resolve(v['state-dir']));
  let name = v.name;
  if (v.config) {
    const file = readConfigFile(v.config);
    if (typeof file.stateDir === 'string') return adminSocketPath(path.resolve(path.dirname(path.resolve(v.config)), file.stateDir));
    if (name === undefined && typeof file.name === 'string') name = file.name;
  }
  if (process.env.BATON_STATE_DIR) return adminSocketPath(path.resolve(process.env.BATON_STATE_DIR));
  return adminSocketPath(defaultStateDir(name ?? 'baton'));
}

export function fail(reply: ClientReply): never {
  const e = reply.body.error as { code?: string; message?: string } | undefined;
  throw new BatonError(e?.code ?? 'E_ADMIN', e?.message ?? `the supervisor answered HTTP ${reply.status}`);
}

/** The job a streamed upgrade/maintenance request ended with (printed with --json), or fail with the supervisor's error. */
export function finalJob(reply: ClientReply, json: boolean | undefined): JobRecord {
  const job = reply.body.job as JobRecord | undefined;
  if (!job) {
    if (json) console.log(JSON.stringify(reply.body));
    fail(reply);
  }
  if (json) console.log(JSON.stringify(job, null, 2));
  return job;
}

export function help(cmd: string): number {
  console.log(HELP[cmd]);
  return 0;
}
