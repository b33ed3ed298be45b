/**
 * PM2 (the devDependency) with a private PM2_HOME in the scope's temp dir, so it
 * never touches a user's PM2. Its daemon and workers carry the scope's tag;
 * `pm2 kill` runs at scope close (and the tag scan reaps anything it leaves).
 * PM2 checks its version online on a first run: the `touch` file, PM2_DISCRETE_MODE
 * and PM2_DISABLE_VERSION_CHECK keep it from sending anything off this machine.
 */
import { writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { exited, ROOT, type Scope } from './scope.js';

export const PM2_BIN = path.join(ROOT, 'node_modules/pm2/bin/pm2');

export interface Pm2App {
  name: string;
  script: string;
  env: Record<string, string>;
  /** More of PM2's app options (e.g. wait_ready). */
  options?: Record<string, unknown>;
}

export class Pm2 {
  readonly home: string;
  private started = false;

  constructor(private readonly scope: Scope) {
    this.home = scope.tempDir('baton-bench-pm2-');
    writeFileSync(path.join(this.home, 'touch'), String(Date.now()));
  }

  private env(): NodeJS.ProcessEnv {
    return this.scope.env({ PM2_HOME: this.home, PM2_DISCRETE_MODE: 'true', PM2_DISABLE_VERSION_CHECK: 'true' });
  }

  /** Runs `pm2 ARGS` to completion; throws on a non-zero exit. */
  async run(args: string[], timeoutMs = 60_000): Promise<string> {
    const child = this.scope.spawn(process.execPath, [PM2_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: this.env() });
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (out += c));
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const { code, signal } = await exited(child);
    clearTimeout(t);
    if (code !== 0) throw new Error(`pm2 ${args.join(' ')} exited ${code ?? signal}: ${out.slice(-2000)}`);
    return out;
  }

  /** Starts `app` in cluster mode with 1 instance and PM2's defaults otherwise (listen_timeout 3 s, kill_timeout 1.6 s). */
  async startCluster(app: Pm2App): Promise<void> {
    const file = path.join(this.home, `${app.name}.config.json`);
    writeFileSync(
      file,
      JSON.stringify({
        apps: [
          {
            name: app.name,
            script: app.script,
            exec_mode: 'cluster',
            instances: 1,
            interpreter: process.execPath,
            env: app.env,
            out_file: '/dev/null',
            error_file: path.join(this.home, `${app.name}.err.log`),
            autorestart: true,
            ...app.options,
          },
        ],
      }),
    );
    if (!this.started) this.scope.onClose(() => this.kill());
    this.started = true;
    await this.run(['start', file]);
  }

  async reload(name: string): Promise<void> {
    await this.run(['reload', name]);
  }

  async delete(name: string): Promise<void> {
    await this.run(['delete', name]);
  }

  async kill(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    await this.run(['kill']).catch(() => undefined);
  }

  /** The PM2 daemon ("God") process. */
  async daemonPid(): Promise<number> {
    return Number((await readFile(path.join(this.home, 'pm2.pid'), 'utf8')).trim());
  }
}
