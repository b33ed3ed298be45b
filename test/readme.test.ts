/**
 * The README's examples are real code: every ```ts block that starts with
 * `// readme-example: NAME` is type-checked against the built declarations in dist/,
 * then the app example is compiled to `my-app.js` and the supervisor example is run
 * (it cold-starts the app, hands it off once and stops it).
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { afterAll, describe, expect, it } from 'vitest';
import { resolveRunConfig } from '../src/daemon/config.js';
import { killTagged, newTag, ROOT, taggedPids } from './support/engine.js';

const README = path.join(ROOT, 'README.md');

/** `// readme-example: NAME` blocks of README.md, by name. */
function readmeExamples(markdown: string): Map<string, string> {
  const examples = new Map<string, string>();
  for (const m of markdown.matchAll(/^```ts\n(\/\/ readme-example: ([\w-]+)\n[\s\S]*?)^```$/gm)) {
    if (examples.has(m[2]!)) throw new Error(`README has two examples named ${m[2]}`);
    examples.set(m[2]!, m[1]!);
  }
  return examples;
}

// Examples import `./dist/...` relative to the checkout root; ours live two levels down.
const WORK = path.join(ROOT, '.tmp');
mkdirSync(WORK, { recursive: true });
const dir = mkdtempSync(path.join(WORK, 'readme-'));
const rewrite = (code: string): string => code.replace(/(from\s+['"])\.\/dist\//g, '$1../../dist/');

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('README examples', () => {
  const examples = readmeExamples(readFileSync(README, 'utf8'));

  it('its configuration file example is valid, every key read as shown', () => {
    const md = readFileSync(README, 'utf8');
    const block = /\*\*Configuration file\*\*[\s\S]*?```json\n([\s\S]*?)^```$/m.exec(md)?.[1];
    expect(block, 'the ```json block after **Configuration file**').toBeDefined();
    const file = path.join(dir, 'baton.json');
    // A unix listener's directory must exist when the config is read: /run/app stands for one the unit creates.
    expect(block).toContain('unix:/run/app/app.sock');
    writeFileSync(file, block!.replace('unix:/run/app/', `unix:${dir}/`));
    const cfg = resolveRunConfig({ config: file });
    const shown = JSON.parse(block!) as { handoff: { helloTimeoutS: number; drainGraceS: number }; history: { maxAgeS: number }; healthIntervalS: number };
    expect(cfg).toMatchObject({ handoff: shown.handoff, history: shown.history, healthIntervalS: shown.healthIntervalS, name: 'app' });
    expect(cfg.listenText).toEqual(['http=tcp://127.0.0.1:8080', `unix:${dir}/app.sock`]);
  });

  it('has the app and supervisor examples', () => {
    expect([...examples.keys()].sort()).toEqual(['app', 'supervisor']);
  });

  it('type-checks them (strict) against the built declarations', () => {
    const files = [...examples].map(([name, code]) => {
      const file = path.join(dir, `${name}.mts`);
      writeFileSync(file, rewrite(code));
      return file;
    });
    const program = ts.createProgram(files, {
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      lib: ['lib.es2022.d.ts'],
      types: ['node'],
      typeRoots: [path.join(ROOT, 'node_modules/@types')],
      strict: true,
      noUncheckedIndexedAccess: true,
      skipLibCheck: true,
      noEmit: true,
    });
    const problems = ts.getPreEmitDiagnostics(program).map((d) => ts.formatDiagnostic(d, {
      getCanonicalFileName: (f) => f,
      getCurrentDirectory: () => dir,
      getNewLine: () => '\n',
    }));
    expect(problems.join('')).toBe('');
  });

  it('runs the supervisor example over the app example: one committed handoff, state carried over', { timeout: 60_000 }, async () => {
    const js = (name: string): string =>
      ts.transpileModule(rewrite(examples.get(name)!), {
        compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext },
      }).outputText;
    // Under ROOT, whose package.json says "type": "module": .js is ESM.
    writeFileSync(path.join(dir, 'my-app.js'), js('app'));
    writeFileSync(path.join(dir, 'supervise.js'), js('supervisor'));

    const tag = newTag();
    const child = spawn(process.execPath, ['supervise.js'], {
      cwd: dir,
      env: { ...process.env, PORT: '0', BATON_LOG_LEVEL: 'warn', BATON_TEST_TAG: tag },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const exit = await new Promise<number | string | null>((resolve) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        resolve('timeout');
      }, 45_000);
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        resolve(code ?? signal);
      });
    });
    const leftovers = (await taggedPids(tag)).length > 0 ? await killTagged(tag) : [];
    const report = `exit ${exit}\nstdout:\n${stdout}\nstderr:\n${stderr}`;
    console.log(report);

    expect(exit, report).toBe(0);
    expect(leftovers, 'app processes left running').toEqual([]);
    const lines = stdout.trim().split('\n');
    expect(lines, report).toHaveLength(3);
    const before = /^pid (\d+) hits 1$/.exec(lines[0]!);
    const handoff = /^committed (\d+) -> (\d+) spawning:\d+ms hello:\d+ms draining:\d+ms sealing:\d+ms begin:\d+ms await_ready:\d+ms committing:\d+ms$/.exec(lines[1]!);
    const after = /^pid (\d+) hits 2$/.exec(lines[2]!);
    expect(before, report).not.toBeNull();
    expect(handoff, report).not.toBeNull();
    expect(after, report).not.toBeNull();
    expect(handoff![1]).toBe(before![1]);
    expect(handoff![2]).toBe(after![1]);
    expect(after![1]).not.toBe(before![1]);
  });
});
