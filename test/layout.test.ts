/**
 * The layout of src/ (ARCHITECTURE.md "Layout"): folders by side of the protocol, and
 * imports only from a side's own layer or below. A new file outside the folders, or an
 * import that reaches up (the supervisor into the app, the wire into the daemon), fails
 * here, so the tree keeps saying what the architecture is.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './support/engine.js';

const SRC = path.join(ROOT, 'src');

/** Layer of each folder: a file may import from its own layer or a lower one (same-layer sides excepted below). */
const LAYERS: Record<string, number> = { os: 0, wire: 1, app: 2, supervisor: 2, http: 3, daemon: 3, testing: 4 };
/** Entry points: thin re-exports (index, testing, http) and the bin (cli). */
const ENTRIES = ['index.ts', 'testing.ts', 'http.ts', 'cli.ts'];
/**
 * Folders that must not import each other: the sides of the protocol (they meet only on
 * the wire), and the HTTP adapter with all but app, wire and os (only its entry imports it).
 */
const SEPARATE: [string, string][] = [['app', 'supervisor'], ['http', 'supervisor'], ['http', 'daemon'], ['http', 'testing']];

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = path.join(dir, name);
    return statSync(p).isDirectory() ? sources(p) : name.endsWith('.ts') ? [p] : [];
  });
}

function folderOf(file: string): string {
  const rel = path.relative(SRC, file);
  return rel.includes(path.sep) ? rel.split(path.sep)[0]! : '';
}

function relativeImports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)].map((m) => path.resolve(path.dirname(file), m[1]!.replace(/\.js$/, '.ts')));
}

describe('src/ layout', () => {
  const files = sources(SRC);

  it('every file is in a side folder, except the entry points', () => {
    const loose = files.filter((f) => folderOf(f) === '').map((f) => path.basename(f));
    expect(loose.sort()).toEqual([...ENTRIES].sort());
    for (const f of files) if (folderOf(f) !== '') expect(Object.keys(LAYERS), path.relative(SRC, f)).toContain(folderOf(f));
  });

  it('no import reaches up a layer, and the app and supervisor sides never import each other', () => {
    const wrong: string[] = [];
    for (const f of files) {
      const from = folderOf(f);
      if (from === '') continue; // entry points may import anything
      for (const target of relativeImports(f)) {
        const to = folderOf(target);
        const edge = `${path.relative(SRC, f)} → ${path.relative(SRC, target)}`;
        if (to === '') wrong.push(`${edge} (an entry point)`);
        else if (LAYERS[to]! > LAYERS[from]!) wrong.push(`${edge} (${from} may not import ${to})`);
        else if (SEPARATE.some(([a, b]) => (from === a && to === b) || (from === b && to === a))) wrong.push(`${edge} (separate sides)`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it('the entry points hold no logic: re-exports, and the bin calling the CLI', () => {
    for (const entry of ['index.ts', 'testing.ts', 'http.ts']) {
      const code = readFileSync(path.join(SRC, entry), 'utf8').replace(/\/\*\*[\s\S]*?\*\//g, '');
      for (const line of code.split('\n').filter((l) => l.trim() !== '')) expect(line, entry).toMatch(/^export /);
    }
    const bin = readFileSync(path.join(SRC, 'cli.ts'), 'utf8').replace(/^#!.*\n/, '').replace(/\/\*\*[\s\S]*?\*\//g, '');
    expect(bin.split('\n').filter((l) => l.trim() !== '')).toEqual(["import { runCli } from './daemon/cli.js';", 'runCli(process.argv.slice(2));']);
  });
});
