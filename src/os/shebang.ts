/**
 * The node flags in a script's `#!/usr/bin/env -S node FLAGS` line. The `baton` bin carries
 * V8 flags there; benchmarks and tests spawn it as `node FLAGS cli.js` so that they
 * measure and test the supervisor as installed, and `baton unit` writes the same
 * command into a systemd unit.
 */
import { readFileSync } from 'node:fs';

export function shebangNodeArgs(file: string): string[] {
  const first = readFileSync(file, 'utf8').split('\n', 1)[0]!;
  return (/^#!\S*env -S node(.*)$/.exec(first)?.[1] ?? '').trim().split(/\s+/).filter(Boolean);
}
