/**
 * Admin API roles (issue 8), through the real binary: per-role token files, the TCP
 * admin listener (token required: 401 without or with a wrong one, 403 below the
 * route's role), tokens on the Unix socket, the audit log (role and how the request
 * authenticated, never the token) and the CLI's --token-file / --admin / $BATON_TOKEN.
 * Plus the role table itself, against an in-process AdminServer with routes the daemon
 * does not have (a route added later is guarded by the rule).
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { adminRequest, AdminServer, AdminTokens, requiredRole, tokenPath, type AdminReply, type AdminTarget } from '../src/daemon/admin.js';
import { adminSocketPath } from '../src/daemon/daemon.js';
import type { JobRecord } from '../src/daemon/jobs.js';
import { createLogger } from '../src/os/log.js';
import { exitOf, Harness } from './support/harness.js';
import { useCliWorlds, type DaemonHandle } from './support/cli.js';

const h = new Harness();
const worlds = useCliWorlds(h);

const ROLES = ['read', 'write', 'admin'] as const;
const tokenFile = (d: DaemonHandle, role: (typeof ROLES)[number]): string => path.join(d.stateDir, 'tokens', `${role}.token`);
const token = (d: DaemonHandle, role: (typeof ROLES)[number]): string => readFileSync(tokenFile(d, role), 'utf8').trim();

interface AuditLine {
  who: { auth?: string; role?: string };
  transport: string;
  method: string;
  path: string;
  status: number;
}
const auditLines = (d: DaemonHandle): AuditLine[] =>
  readFileSync(path.join(d.stateDir, 'audit.log'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as AuditLine);

async function tcpTarget(d: DaemonHandle): Promise<{ host: string; port: number; url: string }> {
  const s = (await worlds.w.status(d)) as unknown as { admin: { tcp: string | null } };
  expect(s.admin.tcp).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+$/);
  return { host: '127.0.0.1', port: Number(s.admin.tcp!.split(':').pop()), url: s.admin.tcp! };
}

describe('admin API roles', () => {
  it('tokens are made 0600 in a 0700 dir; over TCP: none 401, read GETs only, write upgrades but cannot stop, admin stops; all audited without the token', async () => {
    // Logging at debug: the check below that no token reaches the log then covers every record.
    const d = await worlds.w.startDaemon({ extraArgs: ['--admin-listen', '127.0.0.1:0'], env: { BATON_LOG_LEVEL: 'debug' } });
    expect(statSync(path.join(d.stateDir, 'tokens')).mode & 0o777).toBe(0o700);
    for (const role of ROLES) {
      expect(statSync(tokenFile(d, role)).mode & 0o777).toBe(0o600);
      expect(readFileSync(tokenFile(d, role), 'utf8')).toMatch(/^[0-9a-f]{64}\n$/);
    }
    expect(new Set(ROLES.map((r) => token(d, r))).size).toBe(3);
    const tcp = await tcpTarget(d);
    const api = (t: Omit<AdminTarget, 'tcp'>, method: string, url: string, body?: unknown) => adminRequest({ tcp, ...t }, method, url, body, { timeoutMs: 30_000 });

    // No token, a wrong one, a malformed header: 401 on every path (before routing).
    for (const [method, url] of [['GET', '/v1/status'], ['POST', '/v1/upgrade'], ['GET', '/v1/nosuch']] as const) {
      const r = await api({}, method, url);
      expect(r.status, url).toBe(401);
      expect(r.body.error).toMatchObject({ code: 'E_UNAUTHENTICATED' });
    }
    expect((await api({ token: 'f'.repeat(64) }, 'GET', '/v1/status')).status).toBe(401);
    expect((await api({ token: token(d, 'read').slice(0, -1) }, 'GET', '/v1/status')).status).toBe(401);

    // read: every GET; no write, no stop.
    const read = { token: token(d, 'read') };
    expect((await api(read, 'GET', '/v1/status')).status).toBe(200);
    expect((await api(read, 'GET', '/v1/jobs')).status).toBe(200);
    expect((await api(read, 'GET', '/v1/lifecycle')).status).toBe(200);
    const denied = await api(read, 'POST', '/v1/upgrade', {});
    expect(denied.status).toBe(403);
    expect(denied.body.error).toEqual({ code: 'E_FORBIDDEN', message: 'POST /v1/upgrade needs the write role; the token presented has the read role' });
    expect((await api(read, 'POST', '/v1/jobs', { task: 'work' })).status).toBe(403);
    expect((await api(read, 'POST', '/v1/stop', {})).status).toBe(403);

    // write: an upgrade commits (and the job says who asked, how); stop is admin only.
    const write = { token: token(d, 'write') };
    const up = await api(write, 'POST', '/v1/upgrade', {});
    expect(up.status, JSON.stringify(up.body)).toBe(200);
    const job = up.body.job as JobRecord;
    expect(job).toMatchObject({ state: 'SUCCEEDED', requestedBy: { auth: 'token:write', role: 'write' } });
    const noStop = await api(write, 'POST', '/v1/stop', {});
    expect(noStop.status).toBe(403);
    expect((noStop.body.error as { message: string }).message).toBe('POST /v1/stop needs the admin role; the token presented has the write role');
    expect((await worlds.w.status(d)).app?.generation).toBe(2); // still serving

    // On the Unix socket a token is honoured too: read is refused a write; no token is admin.
    const sock = adminSocketPath(d.stateDir);
    expect((await adminRequest({ socketPath: sock, token: token(d, 'read') }, 'POST', '/v1/upgrade', {})).status).toBe(403);
    expect((await adminRequest({ socketPath: sock, token: 'nonsense-token-that-is-long-enough-000' }, 'GET', '/v1/status')).status).toBe(401);
    expect((await adminRequest(sock, 'GET', '/v1/status')).status).toBe(200);

    // The audit log: refusals and accepted writes with the role and how it authenticated.
    const audit = auditLines(d);
    const find = (p: Partial<{ auth: string; transport: string; method: string; path: string; status: number }>): AuditLine | undefined =>
      audit.find((l) => (p.auth === undefined || l.who.auth === p.auth) && (p.transport === undefined || l.transport === p.transport) && (p.method === undefined || l.method === p.method) && (p.path === undefined || l.path === p.path) && (p.status === undefined || l.status === p.status));
    expect(find({ auth: 'none', transport: 'tcp', method: 'POST', path: '/v1/upgrade', status: 401 })).toBeDefined();
    expect(find({ auth: 'token:invalid', transport: 'tcp', status: 401 })).toBeDefined();
    expect(find({ auth: 'token:read', transport: 'tcp', method: 'POST', path: '/v1/upgrade', status: 403 })?.who.role).toBe('read');
    expect(find({ auth: 'token:write', transport: 'tcp', method: 'POST', path: '/v1/upgrade', status: 200 })?.who.role).toBe('write');
    expect(find({ auth: 'token:write', transport: 'tcp', method: 'POST', path: '/v1/stop', status: 403 })).toBeDefined();
    expect(find({ auth: 'token:read', transport: 'unix', method: 'POST', path: '/v1/upgrade', status: 403 })).toBeDefined();
    expect(find({ auth: 'socket-peer', transport: 'unix', method: 'GET', path: '/v1/status', status: 200 })?.who.role).toBe('admin');

    // admin stops the service over TCP.
    const stop = await api({ token: token(d, 'admin') }, 'POST', '/v1/stop', {});
    expect(stop.status).toBe(200);
    expect(stop.body).toMatchObject({ stopped: true });
    expect(await exitOf(d.child)).toEqual({ code: 0, signal: null });
    const log = readFileSync(path.join(d.stateDir, 'audit.log'), 'utf8');
    expect(log).toMatch(/"auth":"token:admin","role":"admin"\},"transport":"tcp","method":"POST","path":"\/v1\/stop".*"result":"stopped"/);
    for (const role of ROLES) expect(log).not.toContain(token(d, role));
    // Nor does the supervisor's own log (which did record making them).
    expect(d.out.stderr).toContain('"event":"admin.token_created"');
    for (const role of ROLES) expect(JSON.stringify(d.out.lines) + d.out.stderr).not.toContain(token(d, role));
  });

  it('every route the daemon serves (its own 404 list, so routes added later are in it) is enforced: read may only GET, write may not stop', async () => {
    const d = await worlds.w.startDaemon({ extraArgs: ['--admin-listen', '127.0.0.1:0'] });
    const tcp = await tcpTarget(d);
    const notFound = await adminRequest(adminSocketPath(d.stateDir), 'GET', '/v1/nosuch');
    expect(notFound.status).toBe(404);
    const routes = (notFound.body.error as { message: string }).message.split('; known: ')[1]!.split(', ');
    expect(routes).toEqual(expect.arrayContaining(['GET /v1/status', 'POST /v1/upgrade', 'POST /v1/stop', 'POST /v1/jobs/:id/cancel']));
    for (const route of routes) {
      const [method, pattern] = route.split(' ') as [string, string];
      const url = pattern.replace(/:\w+/g, 'no-such-id');
      const as = async (role: (typeof ROLES)[number]): Promise<number> => (await adminRequest({ tcp, token: token(d, role) }, method, url, {}, { timeoutMs: 10_000 })).status;
      const none = await adminRequest({ tcp }, method, url, {}, { timeoutMs: 10_000 });
      expect(none.status, `${route} without a token`).toBe(401);
      if (method === 'GET') {
        expect([401, 403], `${route} as read`).not.toContain(await as('read'));
      } else {
        expect(await as('read'), `${route} as read`).toBe(403);
        if (route === 'POST /v1/stop') expect(await as('write'), `${route} as write`).toBe(403);
      }
    }
    expect((await worlds.w.status(d)).app?.generation).toBe(1); // nothing ran
    expect((await worlds.w.baton(['stop', '--state-dir', d.stateDir])).code).toBe(0);
    expect(await exitOf(d.child)).toEqual({ code: 0, signal: null });
  });

  it('CLI: --token-file with a read token can show status but not upgrade (403, exit 1); --admin tcp:// needs a token; $BATON_TOKEN; admin stops', async () => {
    const d = await worlds.w.startDaemon({ extraArgs: ['--admin-listen', '127.0.0.1:0'] });
    const tcp = await tcpTarget(d);
    const status = await worlds.w.baton(['status', '--json', '--state-dir', d.stateDir, '--token-file', tokenFile(d, 'read')]);
    expect(status.code, status.stderr).toBe(0);
    const upgrade = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir, '--token-file', tokenFile(d, 'read')]);
    expect(upgrade.code).toBe(1);
    expect(upgrade.stderr).toContain('baton: POST /v1/upgrade needs the write role; the token presented has the read role (E_FORBIDDEN)');

    const overTcp = await worlds.w.baton(['status', '--admin', tcp.url, '--token-file', tokenFile(d, 'read')]);
    expect(overTcp.code, overTcp.stderr).toBe(0);
    expect(overTcp.stdout).toMatch(/admin tcp +tcp:\/\/127\.0\.0\.1:\d+ \(token required\)/);
    const noToken = await worlds.w.baton(['history', '--admin', tcp.url]);
    expect(noToken.code).toBe(1);
    expect(noToken.stderr).toMatch(/the TCP admin listener needs a token.*\(E_UNAUTHENTICATED\)/);
    const envToken = await worlds.w.baton(['jobs', '--admin', tcp.url], { BATON_TOKEN: token(d, 'read') });
    expect(envToken.code, envToken.stderr).toBe(0);
    expect(envToken.stdout).toContain('handoff');
    // --token-file wins over $BATON_TOKEN.
    const writeUp = await worlds.w.baton(['upgrade', '--json', '--admin', tcp.url, '--token-file', tokenFile(d, 'write')], { BATON_TOKEN: token(d, 'read') });
    expect(writeUp.code, writeUp.stderr).toBe(0);
    expect((JSON.parse(writeUp.stdout) as JobRecord).requestedBy).toMatchObject({ auth: 'token:write', role: 'write' });

    const badFlag = await worlds.w.baton(['status', '--admin', 'http://127.0.0.1:1']);
    expect(badFlag.code).toBe(1);
    expect(badFlag.stderr).toContain('--admin: expected tcp://HOST:PORT');
    const missing = await worlds.w.baton(['status', '--state-dir', d.stateDir, '--token-file', path.join(d.dir, 'nope.token')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('--token-file');

    const writeStop = await worlds.w.baton(['stop', '--admin', tcp.url, '--token-file', tokenFile(d, 'write')]);
    expect(writeStop.code).toBe(1);
    expect(writeStop.stderr).toContain('needs the admin role');
    const stop = await worlds.w.baton(['stop', '--admin', tcp.url, '--token-file', tokenFile(d, 'admin')]);
    expect(stop.code, stop.stderr).toBe(0);
    expect(await exitOf(d.child)).toEqual({ code: 0, signal: null });
  });

  it('tokens are kept across restarts; a bad adminListen, a taken port or a malformed token file fail the start naming it, nothing left running', async () => {
    const d = await worlds.w.startDaemon();
    const before = ROLES.map((r) => token(d, r));
    expect((await worlds.w.baton(['stop', '--state-dir', d.stateDir])).code).toBe(0);
    await exitOf(d.child);
    const again = await worlds.w.startDaemon({ dir: d.dir });
    expect(ROLES.map((r) => token(again, r))).toEqual(before);
    expect((await worlds.w.baton(['stop', '--state-dir', again.stateDir])).code).toBe(0);
    await exitOf(again.child);

    const run = (extra: string[]) =>
      worlds.w.baton(['run', '--listen', 'tcp://127.0.0.1:0', '--data-dir', path.join(d.dir, 'data'), '--state-dir', path.join(d.dir, 'state'), ...extra, '--', 'node', '-e', 'setInterval(() => {}, 1000)']);
    const bad = await run(['--admin-listen', 'localhost:7070']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('"adminListen": expected HOST:PORT with an IP literal host');
    const cfg = path.join(d.dir, 'baton.json');
    writeFileSync(cfg, JSON.stringify({ adminListen: 7070 }));
    const badType = await run(['--config', cfg]);
    expect(badType.code).toBe(1);
    expect(badType.stderr).toContain('"adminListen": expected a non-empty string (got 7070)');

    const blocker = net.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => blocker.once('listening', r));
    try {
      const taken = await run(['--admin-listen', `127.0.0.1:${(blocker.address() as net.AddressInfo).port}`]);
      expect(taken.code).toBe(1);
      expect(taken.stderr).toMatch(/"adminListen": cannot listen on 127\.0\.0\.1:\d+/);
    } finally {
      blocker.close();
    }

    writeFileSync(tokenPath(path.join(d.dir, 'state', 'tokens'), 'write'), 'short\n', { mode: 0o600 });
    const short = await run([]);
    expect(short.code).toBe(1);
    expect(short.stderr).toMatch(/write\.token: expected a token of 32\.\.512 printable characters/);
  });
});

describe('the role table', () => {
  it('GET is read, any other method write, stop admin: a route the daemon does not have yet is guarded by the rule', async () => {
    expect(requiredRole('GET /v1/status')).toBe('read');
    expect(requiredRole('GET /v1/schedules/:id')).toBe('read');
    expect(requiredRole('POST /v1/upgrade')).toBe('write');
    expect(requiredRole('POST /v1/jobs/:id/cancel')).toBe('write');
    expect(requiredRole('PUT /v1/schedules/:id')).toBe('write');
    expect(requiredRole('PATCH /v1/schedules/:id')).toBe('write');
    expect(requiredRole('DELETE /v1/schedules/:id')).toBe('write');
    expect(requiredRole('POST /v1/stop')).toBe('admin');

    // An in-process server with routes of its own, over a real socket.
    const dir = h.tempDir('baton-roles-');
    const log = createLogger('test', {});
    const tokens = await AdminTokens.ensure(path.join(dir, 'tokens'), log);
    const ok = async (): Promise<AdminReply> => ({ status: 200, body: { ok: true } });
    const server = new AdminServer({
      socketPath: path.join(dir, 'admin.sock'),
      auditPath: path.join(dir, 'audit.log'),
      log,
      tokens,
      routes: { 'GET /v1/things': ok, 'DELETE /v1/things/:id': ok, 'POST /v1/stop': ok },
    });
    await server.listen();
    try {
      const as = (role: 'read' | 'write' | 'admin') => ({ socketPath: path.join(dir, 'admin.sock'), token: readFileSync(tokenPath(path.join(dir, 'tokens'), role), 'utf8').trim() });
      expect((await adminRequest(as('read'), 'GET', '/v1/things')).status).toBe(200);
      expect((await adminRequest(as('read'), 'DELETE', '/v1/things/x')).status).toBe(403);
      expect((await adminRequest(as('write'), 'DELETE', '/v1/things/x')).status).toBe(200);
      expect((await adminRequest(as('write'), 'POST', '/v1/stop')).status).toBe(403);
      expect((await adminRequest(as('admin'), 'POST', '/v1/stop')).status).toBe(200);
      expect((await adminRequest(path.join(dir, 'admin.sock'), 'DELETE', '/v1/things/y')).status).toBe(200);
    } finally {
      await server.close();
    }
  });
});
