/**
 * A deploy layout for tests through the real binary: releases side by side
 * (`releases/<name>/app.sh`, each starting fixtures/kv with its own env) and a
 * `current` symlink the supervisor's command goes through (`current/app.sh`), as
 * docs/deploys.md lays releases out.
 */
import { mkdirSync, renameSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { writeScript } from './cli.js';
import { KV } from './kv-load.js';

export interface Release {
  name: string;
  /** Env of this build (its knobs: KV_FAIL_AFTER_BEGIN, ...). */
  env?: Record<string, string>;
  /** Shell lines run before the app starts. */
  pre?: string;
}

export class Releases {
  constructor(readonly dir: string) {
    mkdirSync(path.join(dir, 'releases'), { recursive: true });
  }

  get command(): string[] {
    return [path.join(this.dir, 'current', 'app.sh')];
  }

  get releasesDir(): string {
    return path.join(this.dir, 'releases');
  }

  get currentLink(): string {
    return path.join(this.dir, 'current');
  }

  script(name: string): string {
    return path.join(this.dir, 'releases', name, 'app.sh');
  }

  /** Writes a release without pointing `current` at it (a deploy tool flips the link later). */
  write(r: Release): void {
    mkdirSync(path.join(this.dir, 'releases', r.name), { recursive: true });
    const env = { KV_BUILD_ID: r.name, ...r.env };
    const exports = Object.entries(env).map(([k, v]) => `export ${k}='${v}'`).join('\n');
    writeScript(this.script(r.name), `${exports}\n${r.pre ?? ''}\nexec ${process.execPath} ${KV[1]}`);
  }

  /** Writes a release and points `current` at it (atomically, like a deploy tool). */
  deploy(r: Release): void {
    this.write(r);
    const tmp = path.join(this.dir, 'current.tmp');
    symlinkSync(path.join('releases', r.name), tmp);
    renameSync(tmp, path.join(this.dir, 'current'));
  }
}
