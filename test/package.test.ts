/**
 * The package as a user gets it: `npm pack` of this checkout (dist/ built by `npm
 * test`'s pretest), installed into a fresh project (`npm install --prefer-offline`:
 * its dependencies come from the npm cache that `npm ci` filled, else the registry),
 * then a TypeScript app that imports it by name is type-checked (strict, library
 * checks on) with this checkout's tsc, compiled and run: standalone, and under the
 * installed `baton` bin through one upgrade. Also what the tarball holds and how big
 * it is, that every type a public signature uses can be named from the entry points,
 * and that the runtime dependencies are exactly what dist/src imports.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killTagged, newTag, request, ROOT, taggedPids } from './support/engine.js';
import { exitOf, Harness, pollUntil } from './support/harness.js';
import { collect } from './support/cli.js';
import { freePort } from '../bench/lib/scope.js';

const PKG = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string; dependencies: Record<string, string> };
/** The packed tarball must stay under this (it was 4.3 MB with the test vectors and source maps; ≈ 0.3 MB without). */
const MAX_TARBALL_BYTES = 500_000;

const h = new Harness();
const tag = newTag();
let work: string;
let tarball: string;
let files: string[];
let packedBytes: number;
/** The consumer project and the package inside it. */
let proj: string;
let installed: string;

const run = (cmd: string, args: string[], cwd: string): string => execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 90_000 });

beforeAll(() => {
  work = mkdtempSync(path.join(tmpdir(), 'baton-pkg-'));
  // --ignore-scripts: dist/ is built already (prepack would rebuild it under the other suites' feet).
  const packed = JSON.parse(run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], ROOT)) as { filename: string; size: number; files: { path: string }[] }[];
  tarball = path.join(work, packed[0]!.filename);
  files = packed[0]!.files.map((f) => f.path);
  packedBytes = packed[0]!.size;
  proj = path.join(work, 'app');
  mkdirSync(proj);
  writeFileSync(path.join(proj, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', tarball], proj);
  installed = path.join(proj, 'node_modules', ...PKG.name.split('/'));
}, 120_000);

afterAll(async () => {
  if ((await taggedPids(tag)).length > 0) await killTagged(tag);
  await h.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('the npm package', () => {
  it('holds the built code, LICENSE and the docs; no test vectors, no source maps; small', () => {
    expect(files).toEqual(expect.arrayContaining(['package.json', 'README.md', 'LICENSE', 'dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/testing.js', 'dist/src/http.js', 'dist/src/http.d.ts', 'dist/src/cli.js', 'protocol/PROTOCOL.md', 'protocol/schema.json']));
    expect(files.filter((f) => f.startsWith('protocol/vectors/'))).toEqual([]);
    expect(files.filter((f) => f.endsWith('.map'))).toEqual([]);
    expect(files.filter((f) => !/^(dist\/src\/|docs\/|protocol\/)/.test(f) && f.includes('/'))).toEqual([]);
    expect(packedBytes).toBeLessThan(MAX_TARBALL_BYTES);
    expect(readFileSync(path.join(installed, 'LICENSE'), 'utf8')).toMatch(/^MIT License\n\nCopyright \(c\) 2026 baton contributors\n/);
  });

  it('every relative link in README.md and docs/ leads to a file in the package', () => {
    const broken: string[] = [];
    for (const doc of files.filter((f) => f === 'README.md' || /^docs\/.*\.md$/.test(f))) {
      const text = readFileSync(path.join(installed, doc), 'utf8').replace(/^```[\s\S]*?^```$/gm, '');
      for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1]!.split('#')[0]!;
        if (target === '' || /^[a-z]+:/.test(target)) continue; // an anchor, or an absolute URL
        const resolved = path.posix.normalize(path.posix.join(path.posix.dirname(doc), target)).replace(/\/$/, '');
        if (!files.some((f) => f === resolved || f.startsWith(`${resolved}/`))) broken.push(`${doc}: ${m[1]}`);
      }
    }
    expect(broken).toEqual([]);
  });

  it('depends on exactly the packages dist/src imports at run time', () => {
    const imported = new Set<string>();
    const walk = (dir: string): void => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.name.endsWith('.js')) {
          for (const m of readFileSync(p, 'utf8').matchAll(/(?:^import .*? from |^export .*? from |\bimport\()'([^'.][^']*)'/gm)) {
            const spec = m[1]!;
            if (spec.startsWith('node:')) continue;
            imported.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!);
          }
        }
      }
    };
    walk(path.join(installed, 'dist/src'));
    expect([...imported].sort()).toEqual(Object.keys(PKG.dependencies).sort());
  });

  it('names every type its public signatures use from an entry point', () => {
    expect(unreachableTypes(installed, ['dist/src/index.d.ts', 'dist/src/testing.d.ts', 'dist/src/http.d.ts'])).toEqual([]);
  });

  it('type-checks a TypeScript app against the installed package and runs it standalone and under the installed baton', { timeout: 90_000 }, async () => {
    writeFileSync(path.join(proj, 'app.mts'), APP);
    writeFileSync(path.join(proj, 'types.mts'), TYPES);
    writeFileSync(
      path.join(proj, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noUncheckedIndexedAccess: true, skipLibCheck: false,
          types: ['node'], typeRoots: [path.join(ROOT, 'node_modules/@types')], outDir: '.',
        },
        files: ['app.mts', 'types.mts'],
      }),
    );
    const tsc = spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], { cwd: proj, encoding: 'utf8' });
    expect(tsc.stdout + tsc.stderr).toBe('');
    expect(tsc.status).toBe(0);

    const bin = path.join(proj, 'node_modules/.bin/baton');
    const env = { ...process.env, BATON_TEST_TAG: tag, BATON_LOG_LEVEL: 'warn' };
    const baton = async (args: string[]) => collect(h.spawn(bin, args, { cwd: proj, env }));
    const help = await baton(['--help']);
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toContain(`baton ${PKG.version} (npm package ${PKG.name})`);

    // Standalone: no baton; the data dir is created, the listener comes from BATON_LISTEN.
    const port = await freePort();
    const alone = h.spawn(process.execPath, ['app.mjs'], { cwd: proj, env: { ...env, BATON_DATA_DIR: path.join(work, 'standalone/data'), BATON_LISTEN: `http=tcp://127.0.0.1:${port}` } });
    expect(await pollUntil(() => request(port, 'GET', '/', '').then((r) => r.body, () => undefined), 'the standalone app', 20_000, 50)).toBe(`pid ${alone.pid}`);
    alone.kill('SIGTERM');
    await exitOf(alone);

    // Under the installed bin: cold start, one upgrade, stop.
    const state = ['--state-dir', path.join(work, 'state')];
    const daemon = h.spawn(bin, ['run', '--listen', 'http=tcp://127.0.0.1:0', '--data-dir', path.join(work, 'data'), ...state, '--', process.execPath, 'app.mjs'], { cwd: proj, env });
    const status = await pollUntil(async () => {
      const r = await baton(['status', '--json', ...state]);
      const s = r.code === 0 ? (JSON.parse(r.stdout) as { app: { pid: number } | null; listeners: { address: string }[] }) : undefined;
      return s?.app ? s : undefined;
    }, 'baton run to serve', 30_000, 100);
    const served = Number(status.listeners[0]!.address.split(':').pop());
    expect((await request(served, 'GET', '/', '')).body).toBe(`pid ${status.app!.pid}`);
    const up = await baton(['upgrade', '--json', ...state]);
    expect(up.code, up.stderr).toBe(0);
    const job = JSON.parse(up.stdout) as { state: string; handoff: { newPid: number } };
    expect(job.state).toBe('SUCCEEDED');
    expect((await request(served, 'GET', '/', '')).body).toBe(`pid ${job.handoff.newPid}`);
    expect((await baton(['stop', ...state])).code).toBe(0);
    expect(await exitOf(daemon)).toEqual({ code: 0, signal: null });
    expect(existsSync(path.join(work, 'data/.baton.lock'))).toBe(false);
  });
});

/** The smallest Drainable: answers every request with its pid. Imports the package by name. */
const APP = `import http from 'node:http';
import { startBaton, type Drainable } from '${PKG.name}';

let server: http.Server | undefined;
const serve = (fd: number): void => {
  server = http.createServer((_req, res) => res.end(\`pid \${process.pid}\`));
  server.keepAliveTimeout = 100;
  server.listen({ fd });
};
const app: Drainable = {
  drain: async () => {
    await new Promise<void>((resolve) => {
      server?.close(() => resolve());
      server?.closeAllConnections();
    });
    return { openConnsRemaining: 0, acceptClosed: true };
  },
  seal: () => ({ lastRevisionPerShard: {}, dataDirFingerprint: new Uint8Array(32) }),
  resumeAfterAbort: () => serve(baton.listenFd('http')),
  snapshotState: () => ({ shardCount: 0, openConns: 0, lastRevisionPerShard: {} }),
  readiness: () => ({ listeningOn: ['http'], healthzOk: true, advertisedRevisionPerShard: {} }),
};
const baton = await startBaton({ drainable: app });
await baton.begin();
serve(baton.listenFd('http'));
await baton.ready();
`;

/** Types a user names: the ones a public signature uses, from the entry points. */
const TYPES = `import type { SealProgress, TaskHandler, ProbeFn, Urgency, BatonApp, HandoffResult, ShutdownRequestedEvent, Drainable } from '${PKG.name}';
import { createHarness, type HarnessOptions, type InvariantReport } from '${PKG.name}/testing';
import { HttpListeners, httpDrainable, HttpAdapterError, type HttpAppParts } from '${PKG.name}/http';

export const urgency: Urgency = 'high';
export const probe: ProbeFn = () => ({ status: 'OK', message: 'fine' });
export const task: TaskHandler = (progress, signal) => {
  progress(1, 1);
  return { aborted: signal.aborted };
};
export const sealProgress: SealProgress = (done, total) => void (done / total);
export function register(b: BatonApp): void {
  b.registerTask('compaction', task).registerProbe('disk', probe);
  b.on('shutdown-requested', (e: ShutdownRequestedEvent) => void e.reason);
}
export const web = new HttpListeners((_req, res) => res.end('hi'), { idleGraceMs: 100 });
const parts: HttpAppParts = {
  seal: () => ({ lastRevisionPerShard: {}, dataDirFingerprint: new Uint8Array(32) }),
  readiness: () => ({ healthzOk: true, advertisedRevisionPerShard: {} }),
};
export const drainable: Drainable = httpDrainable(web, parts);
export const listenFailed = (err: unknown): boolean => err instanceof HttpAdapterError && err.code === 'E_HTTP_LISTEN';
export async function harness(opts: HarnessOptions): Promise<[HandoffResult, InvariantReport]> {
  const h = await createHarness(opts);
  return [await h.handoff(), await h.checkInvariants()];
}
`;

/**
 * Types declared in the package that a public signature of an entry point uses (a
 * parameter, a property, a return, a base type: transitively) but that neither entry
 * point exports, so a user cannot name them. Not counted: a type reached only as the
 * object of an indexed access (`Lease['runningJob']`: the user names
 * `Supervisor['runningJob']`), one whose same-named, identical twin is exported
 * (`ShutdownReason` is both the app's and the supervisor's), and the type-level helpers
 * behind `Message` (its users name `Message`/`MessageOf`).
 */
function unreachableTypes(pkgDir: string, entries: string[]): string[] {
  const HELPERS = new Set(['MessageShape', 'RequiredKeys', 'OptionalKeys', 'Fields', 'KindToTs']);
  const program = ts.createProgram(
    entries.map((e) => path.join(pkgDir, e)),
    { module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2022, types: ['node'], typeRoots: [path.join(ROOT, 'node_modules/@types')], noEmit: true },
  );
  const checker = program.getTypeChecker();
  const ours = (d: ts.Node): boolean => d.getSourceFile().fileName.startsWith(`${pkgDir}/dist/`);
  const resolve = (s: ts.Symbol): ts.Symbol => (s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s);
  const exported = new Set<ts.Symbol>();
  for (const e of entries) {
    const sf = program.getSourceFile(path.join(pkgDir, e))!;
    for (const s of checker.getExportsOfModule(checker.getSymbolAtLocation(sf)!)) exported.add(resolve(s));
  }
  const text = (s: ts.Symbol): string => checker.typeToString(checker.getDeclaredTypeOfSymbol(s), undefined, ts.TypeFormatFlags.NoTruncation | ts.TypeFormatFlags.InTypeAlias);
  const twinExported = (s: ts.Symbol): boolean => [...exported].some((x) => x.name === s.name && text(x) === text(s));
  const missing = new Set<string>();
  const seen = new Set<ts.Symbol>();
  const queue = [...exported];
  const visit = (node: ts.Node): void => {
    if (ts.canHaveModifiers(node) && ts.getModifiers(node)?.some((m) => m.kind === ts.SyntaxKind.PrivateKeyword)) return;
    if (ts.isIndexedAccessTypeNode(node) && ts.isTypeReferenceNode(node.objectType)) return visit(node.indexType);
    const name = ts.isTypeReferenceNode(node) ? node.typeName : ts.isExpressionWithTypeArguments(node) ? node.expression : ts.isTypeQueryNode(node) ? node.exprName : undefined;
    const symbol = name && checker.getSymbolAtLocation(name);
    if (symbol) {
      const s = resolve(symbol);
      const decl = s.declarations?.[0];
      if (decl && ours(decl) && !(s.flags & ts.SymbolFlags.TypeParameter) && !HELPERS.has(s.name)) {
        if (!exported.has(s) && !twinExported(s)) missing.add(`${s.name} (${path.relative(pkgDir, decl.getSourceFile().fileName)})`);
        queue.push(s);
      }
    }
    ts.forEachChild(node, visit);
  };
  while (queue.length > 0) {
    const s = queue.shift()!;
    if (seen.has(s)) continue;
    seen.add(s);
    for (const d of s.declarations ?? []) if (ours(d)) visit(d);
  }
  return [...missing].sort();
}
