import { existsSync, lstatSync, readdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import * as path from 'node:path';
import { syncBuiltinESMExports } from 'node:module';
import { afterEach, describe, expect, it } from 'vitest';
import { BatonError } from '../src/os/errors.js';
import {
  adoptSystemdListeners,
  assertListenerSupport,
  bindListener,
  bindListeners,
  inheritedListeners,
  listenerEnv,
  parseListenAddress,
  parseListenAddresses,
  scrubInheritedEnv,
  stdioForListeners,
  type HeldListener,
} from '../src/os/listeners.js';
import { Harness, LineReader, exitOf, pollUntil } from './support/harness.js';

const SERVE = path.resolve('test/fixtures-listeners/serve.mjs');
const h = new Harness();
const held: HeldListener[] = [];
afterEach(async () => {
  for (const l of held.splice(0)) l.close();
  await h.cleanup();
});

function bind(address: string): HeldListener {
  const l = bindListener(parseListenAddress(address));
  held.push(l);
  return l;
}

const ipv6Available = (() => {
  try {
    bindListener(parseListenAddress('tcp://[::1]:0')).close();
    return true;
  } catch {
    return false;
  }
})();

type Line = { event: string; pid: number; listeners?: { name: string; address: string; fd: number; kind?: string }[] };

/** An app child serving `listeners` from fds 3.. (the way the supervisor starts one). */
async function startApp(listeners: HeldListener[], mode: 'baton' | 'systemd' = 'baton', extraEnv: NodeJS.ProcessEnv = {}) {
  const child = h.node(SERVE, [mode], {
    stdio: ['pipe', 'pipe', 'pipe', ...stdioForListeners(listeners)],
    env: { ...scrubInheritedEnv(process.env), ...listenerEnv(listeners), ...extraEnv },
  });
  const out = new LineReader(child);
  await out.next<Line>((l) => l.event === 'listening', 'app listening');
  return { child, out, pid: child.pid!, stop: () => child.stdin!.write('exit\n') };
}

function get(target: { port?: number; host?: string; socketPath?: string }): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ ...target, path: '/', agent: false, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
  });
}

const portOf = (l: HeldListener): number => Number(/:(\d+)$/.exec(l.address)![1]);

/** A raw HTTP request whose response we wait for separately. */
function pendingRequest(target: net.NetConnectOpts): { connected: Promise<void>; response: Promise<string>; socket: net.Socket } {
  const socket = net.connect(target);
  let data = '';
  socket.setEncoding('utf8');
  socket.on('data', (c: string) => (data += c));
  const connected = new Promise<void>((resolve, reject) => {
    socket.once('connect', () => {
      socket.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      resolve();
    });
    socket.once('error', reject);
  });
  const response = new Promise<string>((resolve, reject) => {
    socket.once('end', () => resolve(data));
    socket.once('error', reject);
  });
  return { connected, response, socket };
}

describe('listeners: binding and serving', () => {
  it('checks for the internal API at start-up', async () => {
    expect(() => assertListenerSupport()).not.toThrow();
    const mutableNet = net as unknown as { _createServerHandle: unknown };
    const original = mutableNet._createServerHandle;
    mutableNet._createServerHandle = undefined;
    syncBuiltinESMExports();
    try {
      const err = (() => {
        try {
          assertListenerSupport();
        } catch (e) {
          return e as BatonError;
        }
      })();
      expect(err?.code).toBe('E_NO_LISTENER_SUPPORT');
      expect(err?.message).toMatch(/_createServerHandle/);
    } finally {
      mutableNet._createServerHandle = original;
      syncBuiltinESMExports();
    }
  });

  it('tcp 127.0.0.1:0: we hold it without accepting; connections wait in the backlog for a child', async () => {
    const l = bind('web=tcp://127.0.0.1:0');
    expect(l.name).toBe('web');
    expect(l.address).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+$/);
    expect(portOf(l)).toBeGreaterThan(0);
    const pending = pendingRequest({ host: '127.0.0.1', port: portOf(l) });
    await pending.connected; // LISTEN state: the kernel completed the handshake
    const early = await Promise.race([pending.response, new Promise((r) => setTimeout(() => r('no answer'), 300))]);
    expect(early).toBe('no answer'); // ...and nobody (not us) accepted and answered it
    const app = await startApp([l]);
    const response = await pending.response; // the queued connection is served by the child
    expect(response).toMatch(/^HTTP\/1\.1 200/);
    expect(response.endsWith(String(app.pid))).toBe(true);
    expect(await get({ host: '127.0.0.1', port: portOf(l) })).toBe(String(app.pid));
  });

  it.skipIf(!ipv6Available)('tcp [::1]:0', async () => {
    const l = bind('tcp://[::1]:0');
    expect(l.address).toMatch(/^tcp:\/\/\[::1\]:\d+$/);
    const app = await startApp([l]);
    expect(await get({ host: '::1', port: portOf(l) })).toBe(String(app.pid));
  });

  it('a second child takes over the listener after the first exits, with no failed requests', async () => {
    const l = bind('tcp://127.0.0.1:0');
    const port = portOf(l);
    const a = await startApp([l]);
    const served = new Map<string, number>();
    const failures: unknown[] = [];
    let stop = false;
    const loops = Array.from({ length: 4 }, async () => {
      while (!stop) {
        try {
          const body = await get({ host: '127.0.0.1', port });
          served.set(body, (served.get(body) ?? 0) + 1);
        } catch (err) {
          failures.push(err);
        }
      }
    });
    await pollUntil(() => (served.get(String(a.pid)) ?? 0) > 50, 'requests served by the first child');
    a.stop();
    await exitOf(a.child); // nobody accepts now: connections queue in the backlog
    const gapStart = Date.now();
    const b = await startApp([l]);
    const gapMs = Date.now() - gapStart;
    await pollUntil(() => (served.get(String(b.pid)) ?? 0) > 50, 'requests served by the second child');
    stop = true;
    await Promise.all(loops);
    console.log(`switch with a ${gapMs} ms gap (nobody accepting): ${[...served.values()].reduce((x, y) => x + y)} requests, ${failures.length} failures`);
    expect(failures).toEqual([]);
    expect([...served.keys()].sort()).toEqual([String(a.pid), String(b.pid)].sort());
  });

  it('unix socket: permissions, backlog, served by a child; close() unlinks the path', async () => {
    const dir = h.tempDir();
    const sock = path.join(dir, 'app.sock');
    const l = bind(`unix:${sock}`);
    expect(l.address).toBe(`unix:${sock}`);
    const st = lstatSync(sock);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o660);
    expect(readdirSync(dir)).toEqual(['app.sock']); // the temporary bind name is gone
    const pending = pendingRequest({ path: sock });
    await pending.connected;
    const app = await startApp([l]);
    expect((await pending.response).endsWith(String(app.pid))).toBe(true);
    expect(await get({ socketPath: sock })).toBe(String(app.pid));
    app.stop();
    await exitOf(app.child);
    expect(existsSync(sock)).toBe(true); // a child never unlinks the supervisor's path
    held.splice(held.indexOf(l), 1);
    l.close();
    expect(existsSync(sock)).toBe(false);

    const l2 = bind(`unix:${path.join(dir, 'private.sock')}?mode=0600`);
    expect(lstatSync(l2.spec.path!).mode & 0o777).toBe(0o600);
  });

  it('unix socket: a stale socket file is replaced; a live one or a non-socket is an error', async () => {
    const dir = h.tempDir();
    const sock = path.join(dir, 's.sock');
    // A process that listened on the path and was SIGKILLed leaves the file behind.
    const dead = h.spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(sock)}, () => console.log('up'))`]);
    await new LineReader(dead).next<string>((x) => x === 'up', 'stale server up');
    dead.kill('SIGKILL');
    await exitOf(dead);
    expect(lstatSync(sock).isSocket()).toBe(true);
    const l = bind(`unix:${sock}`);
    const app = await startApp([l]);
    expect(await get({ socketPath: sock })).toBe(String(app.pid));
    // Now it is live (we hold it listening): a second bind must not steal the path.
    const err = caughtSync(() => bindListener(parseListenAddress(`unix:${sock}`)));
    expect(err.code).toBe('E_BIND_FAILED');
    expect(err.message).toMatch(/in use/);
    expect(await get({ socketPath: sock })).toBe(String(app.pid));
    const file = path.join(dir, 'plain');
    writeFileSync(file, 'x');
    const err2 = caughtSync(() => bindListener(parseListenAddress(`unix:${file}`)));
    expect(err2.code).toBe('E_BIND_FAILED');
    expect(err2.message).toMatch(/not a socket/);
  });

  it('EADDRINUSE is E_BIND_FAILED naming the address', async () => {
    const other = net.createServer();
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    const port = (other.address() as net.AddressInfo).port;
    try {
      const err = caughtSync(() => bindListener(parseListenAddress(`tcp://127.0.0.1:${port}`)));
      expect(err.code).toBe('E_BIND_FAILED');
      expect(err.message).toContain(`tcp://127.0.0.1:${port}`);
      expect(err.message).toContain('EADDRINUSE');
    } finally {
      other.close();
    }
    const l = bind('tcp://127.0.0.1:0');
    const err = caughtSync(() => bindListener(parseListenAddress(l.address)));
    expect(err.code).toBe('E_BIND_FAILED');
    // all-or-nothing: a failing batch closes what it bound
    const before = fdCount();
    expect(() => bindListeners(parseListenAddresses(['tcp://127.0.0.1:0', l.address]))).toThrow(/EADDRINUSE/);
    expect(fdCount()).toBeLessThanOrEqual(before + 2);
  });

  it('binding and closing 200 listeners does not leak fds', () => {
    const before = fdCount();
    for (let round = 0; round < 10; round++) {
      const batch = bindListeners(parseListenAddresses(Array.from({ length: 20 }, () => 'tcp://127.0.0.1:0')));
      expect(new Set(batch.map((b) => b.fd)).size).toBe(20);
      for (const b of batch) b.close();
    }
    const after = fdCount();
    console.log(`fds before ${before}, after 200 bind/close: ${after}`);
    expect(Math.abs(after - before)).toBeLessThanOrEqual(4);
  });
});

describe('listeners: address parsing', () => {
  it('parses tcp and unix addresses and names', () => {
    expect(parseListenAddress('tcp://127.0.0.1:8080')).toEqual({ name: 'l0', kind: 'tcp', host: '127.0.0.1', port: 8080 });
    expect(parseListenAddress('tcp://[::1]:8080', 2)).toEqual({ name: 'l2', kind: 'tcp', host: '::1', port: 8080 });
    expect(parseListenAddress('tcp://0.0.0.0:0', 'web')).toMatchObject({ name: 'web', host: '0.0.0.0', port: 0 });
    expect(parseListenAddress('admin=tcp://[::]:9000')).toMatchObject({ name: 'admin', host: '::', port: 9000 });
    expect(parseListenAddress('unix:/run/app.sock')).toEqual({ name: 'l0', kind: 'unix', path: '/run/app.sock', mode: 0o660 });
    expect(parseListenAddress('unix:rel/app.sock?mode=0600')).toEqual({ name: 'l0', kind: 'unix', path: path.resolve('rel/app.sock'), mode: 0o600 });
    expect(parseListenAddresses(['tcp://127.0.0.1:1', 'x=unix:/a', 'tcp://127.0.0.1:2']).map((s) => s.name)).toEqual(['l0', 'x', 'l2']);
  });

  it.each([
    ['tcp://127.0.0.1', /HOST:PORT/],
    ['tcp://localhost:80', /not an IP literal/],
    ['tcp://::1:80', /HOST:PORT|brackets/],
    ['tcp://[127.0.0.1]:80', /only IPv6/],
    ['tcp://127.0.0.1:65536', /out of range/],
    ['tcp://:80', /host is empty/],
    ['http://127.0.0.1:80', /unknown scheme/],
    ['unix:', /path is empty/],
    [`unix:/${'x'.repeat(200)}`, /limit is 107/],
    ['bad name=tcp://127.0.0.1:1', /unknown scheme|name/],
    ['', /unknown scheme/],
  ])('%j → E_BAD_ADDRESS', (text, why) => {
    const err = caughtSync(() => parseListenAddress(text));
    expect(err.code).toBe('E_BAD_ADDRESS');
    expect(err.message).toMatch(why);
    expect(err.message).toMatch(/expected \[name=\]tcp:\/\/HOST:PORT/);
  });

  it('duplicate names are rejected', () => {
    expect(caughtSync(() => parseListenAddresses(['a=tcp://127.0.0.1:1', 'a=tcp://127.0.0.1:2'])).message).toMatch(/used twice/);
  });
});

describe('listeners: environment for children', () => {
  it('listenerEnv round-trips through inheritedListeners; scrubInheritedEnv drops systemd vars', () => {
    const fake = [
      { name: 'web', fd: 40, address: 'tcp://127.0.0.1:8080' },
      { name: 'sock', fd: 41, address: 'unix:/a:b.sock' },
    ] as HeldListener[];
    const env = listenerEnv(fake);
    expect(env).toMatchObject({ BATON_LISTEN_FDS: '2', BATON_LISTEN_FDNAMES: 'web:sock' });
    expect(stdioForListeners(fake)).toEqual([40, 41]);
    expect([...inheritedListeners(env)]).toEqual([
      ['web', { fd: 3, address: 'tcp://127.0.0.1:8080' }],
      ['sock', { fd: 4, address: 'unix:/a:b.sock' }],
    ]);
    expect(inheritedListeners({}).size).toBe(0);
    const scrubbed = scrubInheritedEnv({ LISTEN_PID: '1', LISTEN_FDS: '2', LISTEN_FDNAMES: 'a:b', KEEP: 'x' });
    expect(scrubbed).toEqual({ KEEP: 'x' });
  });

  it.each([
    [{ BATON_LISTEN_FDS: 'two' }, /not a count/],
    [{ BATON_LISTEN_FDS: '2', BATON_LISTEN_FDNAMES: 'a', BATON_LISTEN_ADDRS: '["x","y"]' }, /1 names for 2 fds/],
    [{ BATON_LISTEN_FDS: '1', BATON_LISTEN_FDNAMES: 'a', BATON_LISTEN_ADDRS: '{' }, /not JSON/],
    [{ BATON_LISTEN_FDS: '1', BATON_LISTEN_FDNAMES: 'a', BATON_LISTEN_ADDRS: '[1]' }, /array of 1 strings/],
    [{ BATON_LISTEN_FDS: '2', BATON_LISTEN_FDNAMES: 'a:a', BATON_LISTEN_ADDRS: '["x","y"]' }, /twice/],
  ])('malformed BATON_LISTEN_* env %j is a clear error', (env, why) => {
    const err = caughtSync(() => inheritedListeners(env));
    expect(err.code).toBe('E_BAD_ENV');
    expect(err.message).toMatch(why);
  });

  it('adoptSystemdListeners: only for the pid named by LISTEN_PID', () => {
    expect(adoptSystemdListeners({}, 123)).toBeUndefined();
    expect(adoptSystemdListeners({ LISTEN_PID: '124', LISTEN_FDS: '1' }, 123)).toBeUndefined();
    expect(caughtSync(() => adoptSystemdListeners({ LISTEN_PID: '123', LISTEN_FDS: 'x' }, 123)).code).toBe('E_BAD_ENV');
  });

  it('adoptSystemdListeners: a child given fds 3.. and LISTEN_* adopts and serves them', async () => {
    const dir = h.tempDir();
    const tcp = bind('tcp://127.0.0.1:0');
    const unix = bind(`unix:${path.join(dir, 'sd.sock')}`);
    const child = h.node(SERVE, ['systemd'], {
      stdio: ['pipe', 'pipe', 'pipe', tcp.fd, unix.fd],
      env: { ...scrubInheritedEnv(process.env), LISTEN_FDS: '2', LISTEN_FDNAMES: 'http:admin' },
    });
    const out = new LineReader(child);
    const adopted = await out.next<Line>((l) => l.event === 'adopted', 'adopted');
    expect(adopted.listeners).toEqual([
      { name: 'http', address: tcp.address, fd: 3, kind: 'tcp' },
      { name: 'admin', address: 'fd:4', fd: 4, kind: 'unix' },
    ]);
    await out.next<Line>((l) => l.event === 'listening', 'listening');
    expect(await get({ host: '127.0.0.1', port: portOf(tcp) })).toBe(String(child.pid));
  });
});

function caughtSync(fn: () => unknown): BatonError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(BatonError);
    return e as BatonError;
  }
  throw new Error('expected an error');
}

function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

