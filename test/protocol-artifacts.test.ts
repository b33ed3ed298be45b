import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildArtifacts, repoRoot } from '../protocol/generate.js';

// The committed protocol artifacts must equal what `npm run gen:protocol` writes.
describe('protocol artifacts are generated from src/wire/schema.ts', () => {
  const root = repoRoot();
  for (const [path, text] of buildArtifacts(root)) {
    it(`${path} is up to date (run npm run gen:protocol)`, () => {
      const committed = readFileSync(join(root, path), 'utf8');
      // Compare lengths first: a failing diff of 4 MiB of hex is useless.
      expect(committed.length).toBe(text.length);
      expect(committed === text).toBe(true);
    });
  }
});
