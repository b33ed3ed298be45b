/**
 * The README's front page says what it must, in order, and its examples (and those of
 * docs/) are real code: every ```ts block that starts with `// example: NAME` is
 * type-checked against the built declarations in dist/ (imported by the package's name,
 * which resolves to this checkout), then the app example (README), and its fastify
 * twin (docs/app.md), is compiled to `my-app.js` and the supervisor example (docs/app.md)
 * is run over it: it cold-starts the app, hands it off once and stops it. The app example
 * also runs standalone.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { resolveRunConfig } from '../src/daemon/config.js';
import { killTagged, newTag, request, ROOT, taggedPids } from './support/engine.js';
import { exitOf, Harness, pollUntil } from './support/harness.js';

const README = path.join(ROOT, 'README.md');
const DOCS = ['README.md', ...readdirSync(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

/** `// example: NAME` blocks of README.md and docs/*.md, by name. */
function docExamples(): Map<string, string> {
  const examples = new Map<string, string>();
  for (const file of DOCS) {
    for (const m of readFileSync(path.join(ROOT, file), 'utf8').matchAll(/^```ts\n(\/\/ example: ([\w-]+)\n[\s\S]*?)^```$/gm)) {
      if (examples.has(m[2]!)) throw new Error(`two examples named ${m[2]} (the second in ${file})`);
      examples.set(m[2]!, m[1]!);
    }
  }
  return examples;
}

// Under the checkout (whose package.json names the package and its exports), so that the
// examples' `import … from '@baton-sh/baton'` resolves to dist/ as it would when installed.
const WORK = path.join(ROOT, '.tmp');
mkdirSync(WORK, { recursive: true });
const dir = mkdtempSync(path.join(WORK, 'readme-'));

afterAll(() => rmSync(dir, { recursive: true, force: true }));
const h = new Harness();
afterEach(() => h.cleanup());

const examples = docExamples();
/** An example as ES2022 JavaScript (runnable from `dir`). */
const js = (name: string): string =>
  ts.transpileModule(examples.get(name)!, {
    compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext },
  }).outputText;

describe('README front page', () => {
  const md = readFileSync(README, 'utf8');

  it('says what baton is, then how to set it up and run it (npm ci && npm run demo), then how to test it (npm test), then how to install it', () => {
    const blocks = [...md.matchAll(/^```\n([\s\S]*?)^```$/gm)].map((m) => m[1]!.trim());
    expect(blocks.slice(0, 3)).toEqual(['npm ci && npm run demo', 'npm test', 'npm install @baton-sh/baton']);
    const beforeDemo = md.slice(0, md.indexOf('```'));
    expect(beforeDemo).toMatch(/^# baton\n\nbaton hands a live, stateful Node service over from a running process to a new one/);
    expect(md.indexOf('## Install')).toBeLessThan(md.indexOf('npm install @baton-sh/baton'));
  });

  it('runs the app example with the listener name the app asks for, and imports it by the package name', () => {
    const app = examples.get('app')!;
    expect(app).toContain("from '@baton-sh/baton';");
    // listenFd('http') / listenTarget('http'), or HttpListeners' names: ['http'].
    const asked = new Set([...app.matchAll(/listen(?:Fd|Target)\('([\w.-]+)'\)|names: \['([\w.-]+)'\]/g)].map((m) => m[1] ?? m[2]));
    expect(asked.size).toBeGreaterThan(0);
    const runLine = /^\$ baton run (.*) -- node my-app\.js/m.exec(md)?.[1];
    expect(runLine, 'a `$ baton run … -- node my-app.js` line').toBeDefined();
    const named = new Set([...runLine!.matchAll(/--listen (\w+)=/g)].map((m) => m[1]));
    expect(named).toEqual(asked);
    expect(md).toContain(`BATON_LISTEN=${[...asked][0]}=tcp://`);
  });

  it('links docs/ and every relative link of README.md and docs/ leads to a file of the checkout', () => {
    expect(md).toContain('](docs/README.md)');
    const broken: string[] = [];
    for (const file of DOCS) {
      const text = readFileSync(path.join(ROOT, file), 'utf8').replace(/^```[\s\S]*?^```$/gm, '');
      for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1]!.split('#')[0]!;
        if (target !== '' && !/^[a-z]+:/.test(target) && !existsSync(path.join(ROOT, path.dirname(file), target))) broken.push(`${file}: ${m[1]}`);
      }
    }
    expect(broken).toEqual([]);
  });
});

describe('README and docs examples', () => {

  it('the configuration file example of docs/cli.md is valid, every key read as shown', () => {
    const md = readFileSync(path.join(ROOT, 'docs/cli.md'), 'utf8');
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

  it('has the app, supervisor and fastify examples', () => {
    expect([...examples.keys()].sort()).toEqual(['app', 'fastify', 'supervisor']);
  });

  it('type-checks them (strict) against the built declarations', () => {
    const files = [...examples].map(([name, code]) => {
      const file = path.join(dir, `${name}.mts`);
      writeFileSync(file, code);
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

  it.each(['app', 'fastify'])('runs the supervisor example over the %s example: one committed handoff, state carried over', { timeout: 60_000 }, async (name) => {
    // Under ROOT, whose package.json says "type": "module": .js is ESM.
    const cwd = path.join(dir, `supervise-${name}`);
    mkdirSync(cwd);
    writeFileSync(path.join(cwd, 'my-app.js'), js(name));
    writeFileSync(path.join(cwd, 'supervise.js'), js('supervisor'));

    const tag = newTag();
    const child = spawn(process.execPath, ['supervise.js'], {
      cwd,
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

describe('the app example without baton (standalone)', () => {
  const app = path.join(dir, 'standalone-app.js');
  const start = (env: Record<string, string>) => {
    const tag = newTag();
    const child = h.node(app, [], { cwd: dir, env: { ...process.env, BATON_LOG_LEVEL: 'info', BATON_TEST_TAG: tag, ...env } });
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    return { child, stderr: () => stderr };
  };

  it('creates its data dir and listens where BATON_LISTEN says', { timeout: 30_000 }, async () => {
    writeFileSync(app, js('app'));
    const dataDir = path.join(dir, 'standalone', 'not', 'there', 'data');
    const p = start({ BATON_DATA_DIR: dataDir, BATON_LISTEN: 'http=tcp://127.0.0.1:0' });
    // Port 0: the address bound is in the app's log line.
    const port = await pollUntil(() => /"event":"app.standalone_listening".*"address":"tcp:\/\/127\.0\.0\.1:(\d+)"/.exec(p.stderr())?.[1], 'the standalone listener', 20_000, 50);
    expect((await request(Number(port), 'GET', '/', '')).body).toBe(`pid ${p.child.pid} hits 1`);
    expect((await request(Number(port), 'GET', '/', '')).body).toBe(`pid ${p.child.pid} hits 2`);
    expect(existsSync(path.join(dataDir, '.baton.lock')), 'the data-dir lock in the created dir').toBe(true);
    p.child.kill('SIGTERM');
    await exitOf(p.child);
  });

  it('without BATON_LISTEN, listenFd fails and says how to give it one', { timeout: 30_000 }, async () => {
    writeFileSync(app, js('app'));
    const p = start({ BATON_DATA_DIR: path.join(dir, 'standalone-2') });
    const exit = await exitOf(p.child);
    expect(exit.code).not.toBe(0);
    expect(p.stderr()).toContain('standalone (not started by baton): no listener named http; set BATON_LISTEN=http=tcp://127.0.0.1:8080 to have one');
  });
});
