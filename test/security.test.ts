/**
 * Security hardening (issue #21), through the real binary where the finding was made
 * against it: one test (or more) per item of the issue, each named by its item. Every
 * process carries this suite's BATON_TEST_TAG; each test ends with none of them left.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lchownSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { adminRequest, AdminServer, AdminTokens, type AdminReply } from '../src/daemon/admin.js';
import { adminSocketPath } from '../src/daemon/daemon.js';
import { createLogger } from '../src/os/log.js';
import { PRIMITIVE, ROOT, taggedPids } from './support/engine.js';
import { exitOf, Harness, pollUntil } from './support/harness.js';
import { useCliWorlds, collect, type DaemonHandle } from './support/cli.js';

const h = new Harness();
const worlds = useCliWorlds(h);

const readToken = (d: DaemonHandle, role: 'read' | 'write' | 'admin'): string => readFileSync(path.join(d.stateDir, 'tokens', `${role}.token`), 'utf8').trim();

/** Raw bytes to a socket path or a TCP port; resolves with everything answered until the close (or `quietMs` of silence). */
function raw(target: string | number, bytes: string | Buffer, quietMs = 3_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = typeof target === 'number' ? net.connect(target, '127.0.0.1') : net.connect(target);
    let data = '';
    let timer: NodeJS.Timeout | undefined;
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        s.destroy();
        resolve(data);
      }, quietMs);
    };
    s.setEncoding('utf8');
    s.on('data', (c: string) => {
      data += c;
      arm();
    });
    s.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? resolve(data) : reject(err)));
    s.on('close', () => {
      clearTimeout(timer);
      resolve(data);
    });
    s.on('connect', () => {
      s.write(bytes);
      arm();
    });
  });
}

function httpText(method: string, target: string, body: string, headers: Record<string, string> = {}): string {
  const h = { host: 'baton', 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), connection: 'close', ...headers };
  return `${method} ${target} HTTP/1.1\r\n${Object.entries(h).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n${body}`;
}

const deep = (n: number, inner = ''): string => `${'['.repeat(n)}${inner}${']'.repeat(n)}`;

async function stop(d: DaemonHandle): Promise<void> {
  const r = await worlds.w.baton(['stop', '--state-dir', d.stateDir]);
  expect(r.code, r.stderr).toBe(0);
  expect(await exitOf(d.child)).toEqual({ code: 0, signal: null });
}

describe('item 1: one request must not end the supervisor', () => {
  it('a body nested 6,000 deep on GET /v1/status (socket and TCP with a read token) is a 400; params nested too deep are a 400; the daemon serves on', async () => {
    const d = await worlds.w.startDaemon({ extraArgs: ['--admin-listen', '127.0.0.1:0'] });
    const sock = adminSocketPath(d.stateDir);
    const body = `{"a":${deep(6000)}}`;
    expect(body.length).toBeGreaterThan(12_000);
    const onSocket = await raw(sock, httpText('GET', '/v1/status', body));
    expect(onSocket).toMatch(/^HTTP\/1.1 400 .*E_BAD_JSON.*nested deeper than 32 levels/s);

    const s = (await worlds.w.status(d)) as unknown as { admin: { tcp: string } };
    const port = Number(s.admin.tcp.split(':').pop());
    const onTcp = await raw(port, httpText('GET', '/v1/status', body, { authorization: `Bearer ${readToken(d, 'read')}` }));
    expect(onTcp).toMatch(/^HTTP\/1.1 400 .*E_BAD_JSON/s);

    // Within the body limit, but params deeper than a task may take: refused before it is stored.
    const params = await adminRequest(sock, 'POST', '/v1/jobs', { task: 'work', params: { p: JSON.parse(deep(20, '1')) as unknown } }, { timeoutMs: 10_000 });
    expect(params.status).toBe(400);
    expect(params.body.error).toMatchObject({ code: 'E_BAD_REQUEST', message: '"params": nested deeper than 16 levels' });
    const big = await adminRequest(sock, 'POST', '/v1/jobs', { task: 'work', params: { p: 'x'.repeat(20_000) } }, { timeoutMs: 10_000 });
    expect(big.status).toBe(400);

    expect(d.child.exitCode).toBeNull();
    expect((await worlds.w.status(d)).app?.generation).toBe(1);
    expect(d.out.stderr).not.toContain('Maximum call stack');
    await stop(d);
  });

  it('a job record nested 2,400 deep left in jobs.json (the persistent variant) is dropped at load: baton status answers', async () => {
    const dir = h.tempDir('baton-sec-');
    const stateDir = path.join(dir, 'state');
    mkdirSync(stateDir, { mode: 0o700 });
    const now = new Date().toISOString();
    const planted = `{"version":1,"jobs":[{"id":"deep-1","kind":"maintenance","state":"SUCCEEDED","trigger":"admin","createdAt":"${now}","endedAt":"${now}","maintenance":{"task":"work","urgency":"normal","params":{"p":${deep(2400, '1')}}}}]}\n`;
    writeFileSync(path.join(stateDir, 'jobs.json'), planted, { mode: 0o600 });
    const d = await worlds.w.startDaemon({ dir, env: { BATON_LOG_LEVEL: 'info' } });
    const st = await worlds.w.baton(['status', '--state-dir', d.stateDir]);
    expect(st.code, st.stderr).toBe(0);
    expect(d.out.stderr).toMatch(/"event":"jobs.records_dropped".*"count":1/);
    expect((await worlds.w.baton(['history', '--state-dir', d.stateDir])).code).toBe(0);
    await stop(d);
  });

  it('a reply or a progress line that cannot be serialised is an error reply, not a crash (in-process server)', async () => {
    const dir = h.tempDir('baton-sec-');
    const log = createLogger('test', {});
    const tokens = await AdminTokens.ensure(path.join(dir, 'tokens'), log);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    const server = new AdminServer({
      socketPath: path.join(dir, 'admin.sock'),
      auditPath: path.join(dir, 'audit.log'),
      log,
      tokens,
      routes: {
        'GET /v1/cyclic': async (): Promise<AdminReply> => ({ status: 200, body: cyclic }),
        'GET /v1/deep': async (): Promise<AdminReply> => ({ status: 200, body: JSON.parse(deep(20_000)) as unknown }),
        'POST /v1/stream': async (_req, ctx): Promise<AdminReply> => {
          ctx.stream(cyclic);
          return { status: 200, body: { type: 'result', ok: true } };
        },
        'GET /v1/ok': async (): Promise<AdminReply> => ({ status: 200, body: { ok: true } }),
      },
    });
    await server.listen();
    try {
      const sock = path.join(dir, 'admin.sock');
      for (const p of ['/v1/cyclic', '/v1/deep']) {
        const r = await adminRequest(sock, 'GET', p);
        expect(r.status, p).toBe(500);
        expect(r.body.error).toMatchObject({ code: 'E_REPLY_UNSERIALISABLE' });
      }
      const lines: unknown[] = [];
      const streamed = await adminRequest(sock, 'POST', '/v1/stream', {}, { onLine: (l) => lines.push(l) });
      expect(streamed.body).toMatchObject({ type: 'result', ok: true });
      expect(lines).toEqual([{ type: 'error', error: { code: 'E_REPLY_UNSERIALISABLE', message: 'a progress line could not be serialised' } }]);
      expect((await adminRequest(sock, 'GET', '/v1/ok')).status).toBe(200);
    } finally {
      await server.close();
    }
    // Every request was audited, the unserialisable ones too.
    const audit = readFileSync(path.join(dir, 'audit.log'), 'utf8').trim().split('\n');
    expect(audit).toHaveLength(4);
  });

  it('an uncaught error or unhandled rejection in baton run is logged and the supervisor keeps running; a storm stops it', async () => {
    const script = `
      import { installFaultPolicy } from ${JSON.stringify(path.join(ROOT, 'dist/src/daemon/daemon.js'))};
      import { createLogger } from ${JSON.stringify(path.join(ROOT, 'dist/src/os/log.js'))};
      installFaultPolicy(createLogger('t'), { maxPerMinute: 3, onStorm: () => console.log('storm') });
      Promise.reject(new Error('rejected once'));
      setTimeout(() => { throw new Error('thrown once'); }, 10);
      setTimeout(() => { console.log('alive'); Promise.reject(new Error('r3')); Promise.reject(new Error('r4')); }, 100);
      setTimeout(() => process.exit(0), 300);
    `;
    const child = h.spawn(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, BATON_TEST_TAG: worlds.tag } });
    const r = await collect(child, 20_000);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.split('\n')).toEqual(['alive', 'storm', '']);
    const faults = r.stderr.split('\n').filter((l) => l.includes('"event":"daemon.fault"'));
    expect(faults).toHaveLength(4);
    expect(faults[0]).toContain('"kind":"unhandledRejection"');
    expect(faults[1]).toMatch(/"kind":"uncaughtException".*thrown once/);
    expect(r.stderr).toContain('"event":"daemon.fault_storm"');
  });
});


describe('item 2: the default state dir cannot be steered through /tmp', () => {
  const runArgs = (dir: string, extra: string[] = []): string[] => ['run', '--name', 'svc', '--listen', 'tcp://127.0.0.1:0', '--data-dir', path.join(dir, 'data'), ...extra, '--', ...PRIMITIVE];
  const defaultEnv = (tmp: string): Record<string, string> => ({ TMPDIR: tmp, XDG_RUNTIME_DIR: '', RUNTIME_DIRECTORY: '' });

  it("another user's baton-UID dir with svc -> a root-owned dir: refused, the target is neither chmod-ed nor written", async () => {
    const tmp = h.tempDir('baton-sec-tmp-');
    chmodSync(tmp, 0o1777); // like /tmp
    const victim = path.join(tmp, 'victim');
    mkdirSync(victim, { mode: 0o755 });
    writeFileSync(path.join(victim, 'keep'), 'x');
    const planted = path.join(tmp, `baton-${process.getuid!()}`);
    mkdirSync(planted);
    chmodSync(planted, 0o777);
    chownSync(planted, 65534, 65534);
    symlinkSync(victim, path.join(planted, 'svc'));
    lchownSync(path.join(planted, 'svc'), 65534, 65534);
    const r = await worlds.w.baton(runArgs(tmp), defaultEnv(tmp));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`${planted} is owned by uid 65534 .*\\(E_UNSAFE_PATH\\)`));
    expect(statSync(victim).mode & 0o7777).toBe(0o755);
    expect(readdirSync(victim)).toEqual(['keep']);
    expect(await taggedPids(worlds.tag)).toEqual([]);
  });

  it('a state dir that is a link, one others may write, or under a dir of another user is refused; a fresh default one is made 0700 all the way', async () => {
    const tmp = h.tempDir('baton-sec-tmp-');
    chmodSync(tmp, 0o1777);
    const victim = path.join(tmp, 'victim');
    mkdirSync(victim, { mode: 0o755 });
    const mine = path.join(tmp, `baton-${process.getuid!()}`);
    mkdirSync(mine, { mode: 0o700 });
    symlinkSync(victim, path.join(mine, 'svc'));
    const link = await worlds.w.baton(runArgs(tmp), defaultEnv(tmp));
    expect(link.code).toBe(1);
    expect(link.stderr).toContain(`${path.join(mine, 'svc')} is a symbolic link`);
    expect(statSync(victim).mode & 0o7777).toBe(0o755);

    const loose = path.join(tmp, 'loose');
    mkdirSync(loose);
    chmodSync(loose, 0o777);
    const r1 = await worlds.w.baton(runArgs(tmp, ['--state-dir', loose]));
    expect(r1.code).toBe(1);
    expect(r1.stderr).toMatch(/loose is writable by group or others \(mode 0777\)/);
    expect(statSync(loose).mode & 0o7777).toBe(0o777); // refused, not chmod-ed

    const foreign = path.join(tmp, 'foreign');
    mkdirSync(foreign, { mode: 0o755 });
    chownSync(foreign, 65534, 65534);
    const r2 = await worlds.w.baton(runArgs(tmp, ['--state-dir', path.join(foreign, 'state')]));
    expect(r2.code).toBe(1);
    expect(r2.stderr).toMatch(/foreign is owned by uid 65534/);

    const fresh = h.tempDir('baton-sec-tmp-');
    chmodSync(fresh, 0o1777);
    const d = worlds.w.spawnBaton(runArgs(fresh), defaultEnv(fresh));
    const stateDir = path.join(fresh, `baton-${process.getuid!()}`, 'svc');
    await pollUntil(async () => (await worlds.w.baton(['status', '--state-dir', stateDir])).code === 0, 'the default state dir to serve', 30_000, 100);
    expect(statSync(path.dirname(stateDir)).mode & 0o7777).toBe(0o700);
    expect(statSync(stateDir).mode & 0o7777).toBe(0o700);
    expect((await worlds.w.baton(['stop', '--state-dir', stateDir])).code).toBe(0);
    expect(await exitOf(d)).toEqual({ code: 0, signal: null });
  });
});

describe('item 6: files planted in the state dir are not trusted', () => {
  it("another uid's admin token, a token that is a link or a FIFO, a linked audit.log, jobs.json -> /dev/zero and a lifecycle.json dir: set aside, new ones made, nothing followed", async () => {
    const dir = h.tempDir('baton-sec-');
    const stateDir = path.join(dir, 'state');
    const tokens = path.join(stateDir, 'tokens');
    mkdirSync(tokens, { recursive: true, mode: 0o700 });
    const plantedAdmin = 'a'.repeat(64);
    writeFileSync(path.join(tokens, 'admin.token'), `${plantedAdmin}\n`, { mode: 0o600 });
    chownSync(path.join(tokens, 'admin.token'), 65534, 65534);
    const outside = path.join(dir, 'outside.txt');
    writeFileSync(outside, `${'b'.repeat(64)}\n`, { mode: 0o644 });
    symlinkSync(outside, path.join(tokens, 'read.token'));
    expect(spawnSync('mkfifo', [path.join(tokens, 'write.token')]).status).toBe(0);
    const outsideAudit = path.join(dir, 'outside-audit.log');
    writeFileSync(outsideAudit, '', { mode: 0o644 });
    symlinkSync(outsideAudit, path.join(stateDir, 'audit.log'));
    symlinkSync('/dev/zero', path.join(stateDir, 'jobs.json'));
    mkdirSync(path.join(stateDir, 'lifecycle.json'));

    const d = await worlds.w.startDaemon({ dir });
    const sock = adminSocketPath(d.stateDir);
    for (const role of ['admin', 'read', 'write'] as const) {
      expect(readToken(d, role)).toMatch(/^[0-9a-f]{64}$/);
      expect(d.out.stderr).toMatch(new RegExp(`"event":"admin.token_untrusted","role":"${role}"`));
    }
    expect(d.out.stderr).toMatch(/admin\.token is owned by uid 65534/);
    expect(d.out.stderr).toMatch(/read\.token is a symbolic link/);
    expect(d.out.stderr).toMatch(/write\.token is not a regular file \(a FIFO\)/);
    expect((await adminRequest({ socketPath: sock, token: plantedAdmin }, 'GET', '/v1/status')).status).toBe(401);
    expect(statSync(outside).mode & 0o777).toBe(0o644);
    expect(readFileSync(outside, 'utf8')).toBe(`${'b'.repeat(64)}\n`);
    const entries = readdirSync(stateDir);
    for (const name of ['audit.log', 'jobs.json', 'lifecycle.json']) expect(entries.some((e) => e.startsWith(`${name}.untrusted-`)), name).toBe(true);
    expect(d.out.stderr).toMatch(/lifecycle\.json is not a regular file \(a directory\)/);
    expect((await worlds.w.baton(['upgrade', '--state-dir', d.stateDir])).code).toBe(0);
    await stop(d);
    expect(readFileSync(outsideAudit, 'utf8')).toBe('');
    expect(lstatSync(path.join(stateDir, 'audit.log')).isFile()).toBe(true);
    expect(readFileSync(path.join(stateDir, 'audit.log'), 'utf8')).toContain('"path":"/v1/upgrade"');
  });

  it('a token dir that is a link or belongs to another uid, or a control dir that is a link, is refused', async () => {
    const dir = h.tempDir('baton-sec-');
    const run = (stateDir: string) => worlds.w.baton(['run', '--listen', 'tcp://127.0.0.1:0', '--data-dir', path.join(dir, 'data'), '--state-dir', stateDir, '--', 'node', '-e', 'setInterval(() => {}, 1000)']);
    const other = path.join(dir, 'other');
    mkdirSync(other, { mode: 0o700 });
    const s1 = path.join(dir, 's1');
    mkdirSync(s1, { mode: 0o700 });
    symlinkSync(other, path.join(s1, 'tokens'));
    const r1 = await run(s1);
    expect(r1.code).toBe(1);
    expect(r1.stderr).toMatch(/token dir .*s1\/tokens is a symbolic link/);
    expect(readdirSync(other)).toEqual([]);
    const s2 = path.join(dir, 's2');
    mkdirSync(path.join(s2, 'tokens'), { recursive: true, mode: 0o700 });
    chownSync(path.join(s2, 'tokens'), 65534, 65534);
    const r2 = await run(s2);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toMatch(/token dir .*s2\/tokens is owned by uid 65534/);
    const s3 = path.join(dir, 's3');
    mkdirSync(s3, { mode: 0o700 });
    symlinkSync(other, path.join(s3, 'control'));
    const r3 = await run(s3);
    expect(r3.code).toBe(1);
    expect(r3.stderr).toMatch(/s3\/control is a symbolic link/);
    expect(await taggedPids(worlds.tag)).toEqual([]);
  });
});

describe('item 7: a failed start leaves no app running', () => {
  it('an admin socket that cannot be bound fails the start before the app starts (exit 1, nothing left); after a stop the control socket is gone too (item 10)', async () => {
    const dir = h.tempDir('baton-sec-');
    const stateDir = path.join(dir, 'state');
    mkdirSync(path.join(stateDir, 'admin.sock'), { recursive: true, mode: 0o700 });
    writeFileSync(path.join(stateDir, 'admin.sock', 'x'), '');
    const markers = path.join(dir, 'markers');
    const r = await worlds.w.baton(['run', '--listen', 'tcp://127.0.0.1:0', '--data-dir', path.join(dir, 'data'), '--state-dir', stateDir, '--', ...PRIMITIVE], { PRIM_MARKERS: markers });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cannot bind the admin socket .*admin\.sock/);
    expect(await taggedPids(worlds.tag)).toEqual([]);
    expect(existsSync(path.join(stateDir, 'control', 'incumbent.sock'))).toBe(false);

    rmSync(path.join(stateDir, 'admin.sock'), { recursive: true });
    const d = await worlds.w.startDaemon({ dir });
    expect(existsSync(path.join(stateDir, 'control', 'incumbent.sock'))).toBe(true);
    await stop(d);
    expect(existsSync(path.join(stateDir, 'control', 'incumbent.sock'))).toBe(false);
    expect(existsSync(path.join(stateDir, 'admin.sock'))).toBe(false);
  });

  it('while generation 1 starts the admin socket already answers, with 503 E_STARTING', async () => {
    const dir = h.tempDir('baton-sec-');
    const stateDir = path.join(dir, 'state');
    // A slow start-up: the app warms up 3 s before it says Hello.
    const child = worlds.w.spawnBaton(['run', '--listen', 'tcp://127.0.0.1:0', '--data-dir', path.join(dir, 'data'), '--state-dir', stateDir, '--', ...PRIMITIVE], { PRIM_WARMUP_MS: '3000' });
    const sock = adminSocketPath(stateDir);
    const starting = await pollUntil(async () => {
      const r = await adminRequest(sock, 'GET', '/v1/status').catch(() => undefined);
      return r && r.status === 503 ? r : undefined;
    }, 'the admin socket to answer 503', 20_000, 50);
    expect(starting.body.error).toMatchObject({ code: 'E_STARTING' });
    const again = await worlds.w.baton(['run', '--listen', 'tcp://127.0.0.1:0', '--data-dir', path.join(dir, 'data'), '--state-dir', stateDir, '--', ...PRIMITIVE]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/another baton supervisor is running on state dir/);
    await pollUntil(async () => (await worlds.w.baton(['status', '--state-dir', stateDir])).code === 0, 'generation 1 to serve', 30_000, 100);
    expect((await worlds.w.baton(['stop', '--state-dir', stateDir])).code).toBe(0);
    expect(await exitOf(child)).toEqual({ code: 0, signal: null });
  });
});

describe('item 3: the audit log is bounded on disk and in memory', () => {
  it('paths and bodies are cut, refused requests are rate-limited and summarised, the file rotates (in-process server, small limits)', async () => {
    const dir = h.tempDir('baton-sec-');
    const log = createLogger('test', {});
    const tokens = await AdminTokens.ensure(path.join(dir, 'tokens'), log);
    const auditPath = path.join(dir, 'audit.log');
    const server = new AdminServer({
      socketPath: path.join(dir, 'admin.sock'),
      auditPath,
      log,
      tokens,
      routes: { 'GET /v1/ok': async (): Promise<AdminReply> => ({ status: 200, body: { ok: true } }) },
      auditLimits: { rotateBytes: 64 * 1024, keep: 2, refusedPerSecond: 5, refusedBurst: 10 },
    });
    await server.listen();
    const sock = path.join(dir, 'admin.sock');
    try {
      const long = await raw(sock, `GET /v1/${'p'.repeat(15_000)} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`);
      expect(long).toMatch(/^HTTP\/1.1 404/);
      const body = JSON.stringify({ x: 'y'.repeat(60 * 1024) });
      expect(await raw(sock, httpText('GET', '/v1/ok', body))).toMatch(/^HTTP\/1.1 200/);
      await server.auditFlushed();
      let lines = readFileSync(auditPath, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(lines).toHaveLength(2);
      expect((lines[0]!.path as string).length).toBeLessThan(1100);
      expect(lines[0]!.path).toMatch(/…\(15004 chars\)$/);
      expect(lines[1]!.body).toMatchObject({ cut: true, bytes: body.length });
      for (const l of readFileSync(auditPath, 'utf8').split('\n')) expect(Buffer.byteLength(l)).toBeLessThan(8 * 1024);

      // 60 refused requests at once: 10 (the burst) are logged, the rest summarised.
      const floodStart = Date.now();
      await Promise.all(Array.from({ length: 60 }, () => adminRequest(sock, 'GET', '/v1/nope')));
      const floodS = (Date.now() - floodStart) / 1000;
      await adminRequest(sock, 'GET', '/v1/ok'); // an accepted request is never rate-limited; it carries the summary
      await server.auditFlushed();
      lines = readFileSync(auditPath, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      const refused = lines.filter((l) => l.status === 404);
      // The burst of 10, plus what the 5/s refill allowed while the flood ran (more on a loaded machine).
      expect(refused.length).toBeGreaterThanOrEqual(10);
      expect(refused.length).toBeLessThanOrEqual(11 + Math.ceil(floodS * 5) + 1);
      const suppressed = lines.filter((l) => l.event === 'audit.suppressed').reduce((n, l) => n + (l.count as number), 0);
      expect(suppressed).toBeGreaterThan(0);
      expect(suppressed + refused.length).toBe(60 + 1); // every refusal is a line or counted; the long path above was refused too
      expect(lines.at(-1)).toMatchObject({ path: '/v1/ok', status: 200 });

      // Rotation: audit.log → .1 → .2, never a .3; no file much over the bound.
      for (let i = 0; i < 12; i++) await raw(sock, httpText('GET', '/v1/ok', JSON.stringify({ pad: 'z'.repeat(1500) })));
      for (let i = 0; i < 120; i++) await adminRequest(sock, 'GET', '/v1/ok', { pad: 'q'.repeat(1800) });
      await server.auditFlushed();
      expect(existsSync(`${auditPath}.1`)).toBe(true);
      expect(existsSync(`${auditPath}.2`)).toBe(true);
      expect(existsSync(`${auditPath}.3`)).toBe(false);
      for (const f of [auditPath, `${auditPath}.1`, `${auditPath}.2`]) expect(statSync(f).size, f).toBeLessThan(64 * 1024 + 8 * 1024);
    } finally {
      await server.close();
    }
  });

  it('a write queue over its bound drops lines and counts them in the log', async () => {
    const { AuditLog } = await import('../src/daemon/audit.js');
    const dir = h.tempDir('baton-sec-');
    const file = path.join(dir, 'audit.log');
    const audit = new AuditLog(file, createLogger('test', {}), { maxQueueBytes: 4096 });
    for (let i = 0; i < 200; i++) audit.record({ at: 'now', i, path: '/v1/ok', status: 200, body: { pad: 'x'.repeat(100) } }, false);
    expect(audit.droppedTotal).toBeGreaterThan(150);
    await audit.close();
    const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.filter((l) => l.i !== undefined).length).toBe(200 - audit.droppedTotal);
    expect(lines.at(-1)).toMatchObject({ event: 'audit.dropped', count: audit.droppedTotal });
  });

  it('baton run under a flood of 60 KiB bodies and 15 KB paths: the audit log and the supervisor RSS stay small', async () => {
    const d = await worlds.w.startDaemon();
    const sock = adminSocketPath(d.stateDir);
    const rss = (): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${d.child.pid}/status`, 'utf8'))![1]) * 1024;
    const before = rss();
    const body = JSON.stringify({ x: 'y'.repeat(60 * 1024 - 20) });
    const longPath = `/v1/${'p'.repeat(15_000)}`;
    for (let round = 0; round < 10; round++) {
      await Promise.all(Array.from({ length: 16 }, (_, i) => (i % 2 ? raw(sock, httpText('GET', '/v1/history', body), 500) : raw(sock, `GET ${longPath} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`, 500))));
    }
    expect(d.child.exitCode).toBeNull();
    const size = statSync(path.join(d.stateDir, 'audit.log')).size;
    expect(size).toBeLessThan(160 * 4 * 1024); // ≤ 4 KiB a line
    expect(rss() - before).toBeLessThan(64 * 1024 * 1024);
    await stop(d);
  });
});

/**
 * `n` idle sockets to 127.0.0.1:port that connect again as soon as one is cut (the
 * lock-out attack), until stop() — bounded: it never holds more than n at once.
 */
function idleFlood(port: number, n: number): { stop: () => void; reconnects: () => number } {
  let stopped = false;
  let reconnects = 0;
  const open = new Set<net.Socket>();
  const one = (): void => {
    if (stopped) return;
    const s = net.connect(port, '127.0.0.1');
    open.add(s);
    s.on('error', () => undefined);
    s.on('close', () => {
      open.delete(s);
      reconnects++;
      if (!stopped) setTimeout(one, 5);
    });
  };
  for (let i = 0; i < n; i++) one();
  return {
    stop: () => {
      stopped = true;
      for (const s of open) s.destroy();
    },
    reconnects: () => reconnects,
  };
}

const fdCountOf = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;

describe('item 5: idle connections to the TCP admin port do not lock token holders out', () => {
  it('40 idle sockets that reconnect when cut: every token holder request is answered; the drops are logged', async () => {
    const d = await worlds.w.startDaemon({ extraArgs: ['--admin-listen', '127.0.0.1:0'] });
    const s = (await worlds.w.status(d)) as unknown as { admin: { tcp: string } };
    const port = Number(s.admin.tcp.split(':').pop());
    const flood = idleFlood(port, 40);
    try {
      await new Promise((r) => setTimeout(r, 500)); // the flood holds every slot it can
      const token = readToken(d, 'read');
      const statuses: (number | string)[] = [];
      for (let i = 0; i < 20; i++) {
        statuses.push(await adminRequest({ tcp: { host: '127.0.0.1', port }, token }, 'GET', '/v1/history?limit=1', undefined, { timeoutMs: 10_000 }).then((r) => r.status, (err: Error) => err.message));
        await new Promise((r) => setTimeout(r, 150)); // spread over ~3 s: some while unproven sockets time out
      }
      expect(statuses).toEqual(Array(20).fill(200));
      expect(flood.reconnects()).toBeGreaterThan(20);
    } finally {
      flood.stop();
    }
    expect(fdCountOf(d.child.pid!)).toBeLessThan(200);
    await pollUntil(() => /"event":"admin.connection_dropped"/.test(d.out.stderr), 'the drops to be logged', 15_000, 100);
    await stop(d);
  });
});

describe('item 4: the metrics listener has limits', () => {
  it('2,000 idle connections do not exhaust the supervisor’s fds and scrapes still answer', async () => {
    const port = await new Promise<number>((resolve) => {
      const srv = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as net.AddressInfo).port;
        srv.close(() => resolve(p));
      });
    });
    const d = await worlds.w.startDaemon({ extraArgs: ['--metrics', `127.0.0.1:${port}`] });
    const fdsBefore = fdCountOf(d.child.pid!);
    const sockets: net.Socket[] = [];
    try {
      for (let i = 0; i < 2000; i++) {
        const sock = net.connect(port, '127.0.0.1');
        sock.on('error', () => undefined);
        sockets.push(sock);
        if (i % 200 === 199) await new Promise((r) => setTimeout(r, 20));
      }
      await new Promise((r) => setTimeout(r, 300));
      expect(fdCountOf(d.child.pid!)).toBeLessThan(fdsBefore + 64);
      const scrape = await new Promise<string>((resolve, reject) => {
        const s = net.connect(port, '127.0.0.1', () => s.write('GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n'));
        let out = '';
        s.setEncoding('utf8').on('data', (c: string) => (out += c));
        s.on('close', () => resolve(out));
        s.on('error', reject);
      });
      expect(scrape).toMatch(/^HTTP\/1.1 200[\s\S]*baton_up/);
    } finally {
      for (const s of sockets) s.destroy();
    }
    await pollUntil(() => /"event":"metrics.connection_dropped"/.test(d.out.stderr), 'the drops to be logged', 15_000, 100);
    await stop(d);
  });

  it('a non-loopback address is recognised (the warning at bind)', async () => {
    const { isLoopback } = await import('../src/daemon/conn-guard.js');
    expect(['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1'].map(isLoopback)).toEqual([true, true, true, true]);
    expect(['0.0.0.0', '::', '10.0.0.1', '192.168.1.1', '::ffff:10.0.0.1'].map(isLoopback)).toEqual([false, false, false, false, false]);
  });
});

describe('item 9: validation gaps', () => {
  it('rejects a sub-second health interval, a bad ?mode=, the same address twice, a unix socket in a missing dir, a config or token file that is a device; all before anything starts', async () => {
    const dir = h.tempDir('baton-sec-');
    const base = (extra: string[]) => ['run', '--data-dir', path.join(dir, 'data'), '--state-dir', path.join(dir, 'state'), ...extra, '--', ...PRIMITIVE];
    const cfg = path.join(dir, 'baton.json');
    writeFileSync(cfg, JSON.stringify({ listen: ['tcp://127.0.0.1:0'], healthIntervalS: 0.001 }));
    const cases: [string[], RegExp][] = [
      [base(['--config', cfg]), /"healthIntervalS": expected 0 \(off\) or a number of seconds in 0\.1\.\.86400 \(got 0\.001\)/],
      [base(['--listen', `unix:${dir}/a.sock?mode=9999`]), /"listen\[0\]": expected a listen address; "\?mode=9999": the only option is \?mode=OCTAL/],
      [base(['--listen', `unix:${dir}/a.sock?mode=abc`]), /"\?mode=abc": the only option is \?mode=OCTAL/],
      [base(['--listen', `unix:${dir}/a.sock?mode=4777`]), /"\?mode=4777": the only option/],
      [base(['--listen', 'tcp://127.0.0.1:45678', '--listen', 'tcp://127.0.0.1:45678']), /"listen\[1\]": expected an address not given before; it is the same as listen\[0\]/],
      [base(['--listen', `unix:${dir}/s.sock`, '--listen', `unix:${dir}/s.sock`]), /"listen\[1\]": expected an address not given before/],
      [base(['--listen', `unix:${dir}/missing/a.sock`]), /"listen\[0\]": expected a socket path in an existing directory; .*missing: no such directory/],
      [['run', '--config', '/dev/zero'], /--config \/dev\/zero: cannot read the file \(not a regular file \(a device\)\)/],
      [['run', '--config', dir], /cannot read the file \(not a regular file \(a directory\)\)/],
      [['status', '--state-dir', path.join(dir, 'state'), '--token-file', '/dev/zero'], /--token-file \/dev\/zero: cannot read it \(not a regular file \(a device\)\)/],
    ];
    for (const [args, msg] of cases) {
      const r = await worlds.w.baton(args, {}, 20_000);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(1);
      expect(r.stderr).toMatch(msg);
    }
    expect(existsSync(path.join(dir, 'state'))).toBe(false);
    expect(readdirSync(dir).filter((f) => f.includes('.sock'))).toEqual([]);
    // Two tcp://…:0 listeners are two ports, not a duplicate; 0 turns the health check off.
    writeFileSync(cfg, JSON.stringify({ listen: ['tcp://127.0.0.1:0', 'tcp://127.0.0.1:0'], healthIntervalS: 0, dataDir: 'data', stateDir: 'state', command: PRIMITIVE }));
    const ok = worlds.w.spawnBaton(['run', '--config', cfg]);
    await pollUntil(async () => (await worlds.w.baton(['status', '--state-dir', path.join(dir, 'state')])).code === 0, 'baton run to serve', 30_000, 100);
    expect((await worlds.w.baton(['stop', '--state-dir', path.join(dir, 'state')])).code).toBe(0);
    expect(await exitOf(ok)).toEqual({ code: 0, signal: null });
  });
});

describe('item 8: a corrupt journal next to a live orphan', () => {
  it('says the journal cannot be read (not "another program holds it") and sets it aside', async () => {
    const d = await worlds.w.startDaemon();
    const orphan = (await worlds.w.status(d)).app!.pid;
    d.child.kill('SIGKILL');
    await exitOf(d.child);
    writeFileSync(path.join(d.stateDir, 'handoff.journal'), '{"not": a journal', { mode: 0o644 });
    try {
      const r = await worlds.w.baton(['run', '--listen', `tcp://127.0.0.1:${d.port}`, '--data-dir', d.dataDir, '--state-dir', d.stateDir, '--', ...PRIMITIVE]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/EADDRINUSE; the journal of an earlier supervisor .* cannot be read .*; it was set aside as .*handoff\.journal\.corrupt-\d+, so an app that supervisor started may still hold the address/);
      expect(r.stderr).not.toContain('another program holds it');
      expect(readdirSync(d.stateDir).some((f) => f.startsWith('handoff.journal.corrupt-'))).toBe(true);
      expect(existsSync(path.join(d.stateDir, 'handoff.journal'))).toBe(false);
    } finally {
      process.kill(orphan, 'SIGKILL');
      await pollUntil(async () => (await taggedPids(worlds.tag)).length === 0, 'the orphan to exit', 15_000, 50);
    }
  });
});

describe('item 10: HEAD is a read route', () => {
  it('HEAD on a GET route answers like GET without the body, with the read role; HEAD on an unknown path is 404', async () => {
    const dir = h.tempDir('baton-sec-');
    const log = createLogger('test', {});
    const tokens = await AdminTokens.ensure(path.join(dir, 'tokens'), log);
    const server = new AdminServer({
      socketPath: path.join(dir, 'admin.sock'),
      auditPath: path.join(dir, 'audit.log'),
      log,
      tokens,
      routes: { 'GET /v1/things': async (): Promise<AdminReply> => ({ status: 200, body: { ok: true } }) },
    });
    await server.listen();
    try {
      const sock = path.join(dir, 'admin.sock');
      const read = readFileSync(path.join(dir, 'tokens', 'read.token'), 'utf8').trim();
      const head = await raw(sock, `HEAD /v1/things HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${read}\r\nconnection: close\r\n\r\n`);
      expect(head).toMatch(/^HTTP\/1.1 200 OK\r\n[\s\S]*content-length: 12\r\n[\s\S]*\r\n\r\n$/);
      expect(await raw(sock, 'HEAD /v1/nothing HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n')).toMatch(/^HTTP\/1.1 404/);
    } finally {
      await server.close();
    }
  });
});
