/**
 * The HTTP adapter (`@baton-sh/baton/http`, src/http/): an app built on it
 * (fixtures/http-app, a plain handler or fastify) under a real Supervisor with
 * keep-alive load: handoffs and aborted handoffs with no failed request, the drain's
 * count of connections it could not close; and, in this process on real sockets, what
 * a drain does to a keep-alive connection and the adapter's errors.
 */
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { HttpAdapterError } from '../src/os/errors.js';
import { fastifyOptions } from '../src/http/fastify.js';
import { HttpListeners, type ListenerSource } from '../src/http/listeners.js';
import { Load, lostWrites, request, ROOT } from './support/engine.js';
import { pollUntil } from './support/harness.js';
import { useWorlds, type World, type WorldOptions } from './support/world.js';

const HTTP_APP = ['node', path.join(ROOT, 'dist/fixtures/http-app/main.js')];
const worlds = useWorlds();

const startApp = (opts: WorldOptions = {}): Promise<World> => worlds.start({ ...opts, supervisor: { command: HTTP_APP, ...opts.supervisor } });

/** `count` aborted handoffs in a row (the successor reports unhealthy): the incumbent serves on after each. */
async function abortsInARow(w: World, count: number): Promise<void> {
  const gen1 = w.sup.incumbent!.pid;
  for (let i = 0; i < count; i++) {
    const r = await w.sup.performHandoff({ successorEnv: { HTTPAPP_UNHEALTHY: '1' } });
    expect(r.outcome, `handoff ${i + 1}: ${r.reason}`).toBe('aborted');
    expect(r.code).toBe('E_READY_REJECTED');
    expect(r.restoredBy, `handoff ${i + 1} needed a cold start`).toBeUndefined();
    expect(await w.settledServer()).toBe(gen1);
  }
}

for (const framework of ['plain', 'fastify'] as const) {
  const appEnv: Record<string, string> = framework === 'fastify' ? { HTTPAPP_FASTIFY: '1' } : {};

  describe(`an app on the HTTP adapter (${framework}) under a supervisor`, () => {
    it('4 handoffs under keep-alive load: every one commits, no failed request, no lost write', async () => {
      const w = await startApp({ appEnv });
      const load = new Load(w.port, 12);
      const { results } = await w.handoffsUnderLoad(load, 4);
      await w.expectCleanHandoffs(results, 4, load);
      expect(load.acked.size).toBeGreaterThan(100);
      expect(await lostWrites(w.port, load.acked)).toEqual([]);
    });

    it('4 aborted handoffs in a row under keep-alive load: the incumbent listens again after each, no failed request; then one commits', async () => {
      const w = await startApp({ appEnv, supervisor: { command: HTTP_APP, listenerSpares: 0 } });
      const load = new Load(w.port, 12);
      try {
        await abortsInARow(w, 4);
        const r = await w.sup.performHandoff();
        expect(r.outcome, r.reason).toBe('committed');
        expect(await w.settledServer()).toBe(r.newPid);
      } finally {
        await load.stop();
      }
      expect(load.failures, `failed requests: ${JSON.stringify(load.failures)}`).toEqual({});
      expect(load.acked.size).toBeGreaterThan(100);
      expect(await lostWrites(w.port, load.acked)).toEqual([]);
    });
  });
}

describe('the drain under a supervisor', () => {
  it('reports the connections still open at its deadline (requests in flight), not the idle keep-alive ones it closed', async () => {
    const w = await startApp({ timeouts: { drainGraceMs: 1_500 }, appEnv: { HTTPAPP_IDLE_GRACE_MS: '200' } });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 5 });
    try {
      // Five connections: three idle keep-alive ones, two with a request that outlasts the drain.
      await Promise.all([0, 1, 2, 3, 4].map(() => request(w.port, 'GET', '/slow?ms=50', undefined, agent)));
      const held = [0, 1].map(() => request(w.port, 'GET', '/slow?ms=20000', undefined, agent).catch((err: Error) => err));
      await new Promise((r) => setTimeout(r, 200));
      const r = await w.sup.performHandoff();
      expect(r.outcome, r.reason).toBe('committed');
      expect(r.openConnsAtDrain).toBe(2);
      // The old incumbent exited at Commit: the two requests it still held failed.
      for (const outcome of await Promise.all(held)) expect(outcome).toBeInstanceOf(Error);
    } finally {
      agent.destroy();
    }
  });
});

describe('the accept fan-out under a supervisor', () => {
  /** The app's own counters (fixtures/http-app `/adapter-stats`), from whichever process answers. */
  const adapterStats = async (w: World): Promise<{ pid: number; acceptedOnCopies: number; acceptCopiesListening: number }> => JSON.parse((await request(w.port, 'GET', '/adapter-stats')).body);

  it('a successor takes the reconnect burst on extra listener copies too; once the backlog is empty it holds one fd of the listener', async () => {
    // A 10-minute window: the copies must close because the burst is over, not because time ran out.
    const w = await startApp({ appEnv: { HTTPAPP_FAN_OUT_MS: '600000' }, supervisor: { command: HTTP_APP, listenerSpares: 0 } });
    const load = new Load(w.port, 32);
    let onCopies = 0;
    try {
      for (let i = 0; i < 3; i++) {
        const r = await w.sup.performHandoff();
        expect(r.outcome, r.reason).toBe('committed');
        const stats = await pollUntil(async () => {
          const s = await adapterStats(w);
          return s.pid === r.newPid ? s : undefined;
        }, 'the successor answering', 30_000);
        onCopies += stats.acceptedOnCopies;
        await new Promise((res) => setTimeout(res, 300));
      }
    } finally {
      await load.stop();
    }
    expect(load.failures, `failed requests: ${JSON.stringify(load.failures)}`).toEqual({});
    expect(await lostWrites(w.port, load.acked)).toEqual([]);
    // The drains closed 32 busy keep-alive connections each; their reconnects waited in the backlog.
    expect(onCopies, 'connections accepted on the fan-out copies over 3 handoffs').toBeGreaterThan(0);
    const pid = w.sup.incumbent!.pid;
    // The burst is taken: the copies are closed, one fd of the socket is left.
    await pollUntil(async () => ((await adapterStats(w)).acceptCopiesListening === 0 ? true : undefined), 'the fan-out to end', 10_000);
    expect(w.listenerFdsOf(pid)).toBe(1);
  });

  it('the copies close at the first loop turn that finds the backlog empty, long before their window ends', async () => {
    // A 10-minute window: only the empty backlog (nobody connects here) can end the fan-out.
    const w = await startApp({ appEnv: { HTTPAPP_FAN_OUT_MS: '600000' }, supervisor: { command: HTTP_APP, listenerSpares: 0 } });
    // Watched through /proc, not over HTTP: a request is a connection, and would end the burst itself.
    const pid = w.sup.incumbent!.pid;
    await pollUntil(() => w.listenerFdsOf(pid) === 1, 'the copies to close', 10_000);
    const r = await w.sup.performHandoff();
    expect(r.outcome, r.reason).toBe('committed');
    await pollUntil(() => w.listenerFdsOf(r.newPid!) === 1, "the successor's copies to close", 10_000);
    expect((await adapterStats(w)).acceptCopiesListening).toBe(0);
  });

  it('a drain closes the copies and a resume asks for new ones: after 4 aborted handoffs the incumbent holds the listener plus one set of copies', async () => {
    const copies = 15;
    const w = await startApp({ appEnv: { HTTPAPP_FAN_OUT_MS: '600000', HTTPAPP_FAN_OUT_KEEP: '1' }, supervisor: { command: HTTP_APP, listenerSpares: 0 } });
    const gen1 = w.sup.incumbent!.pid;
    await pollUntil(async () => ((await adapterStats(w)).acceptCopiesListening === copies ? true : undefined), 'the copies to listen', 30_000);
    expect(w.listenerFdsOf(gen1)).toBe(1 + copies);
    const load = new Load(w.port, 12);
    try {
      await abortsInARow(w, 4);
    } finally {
      await load.stop();
    }
    expect(load.failures, `failed requests: ${JSON.stringify(load.failures)}`).toEqual({});
    await pollUntil(async () => ((await adapterStats(w)).acceptCopiesListening === copies ? true : undefined), 'the copies to listen again', 30_000);
    expect(w.listenerFdsOf(gen1)).toBe(1 + copies);
  });
});

// ---- In this process, on real sockets ---------------------------------------------------

/** A ListenerSource over ephemeral 127.0.0.1 ports (what baton.listenTarget gives, minus the supervisor). */
function ephemeral(names: string[]): ListenerSource {
  return {
    listeners: new Map(names.map((n) => [n, { fd: -1, address: '' }])),
    listenTarget: () => ({ port: 0, host: '127.0.0.1' }),
  };
}
const portOf = (server: http.Server): number => (server.address() as net.AddressInfo).port;

/** One raw keep-alive request on `socket`; resolves with the response head. */
function rawGet(socket: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const onData = (c: Buffer): void => {
      text += c.toString();
      const end = text.indexOf('\r\n\r\n');
      if (end >= 0 && text.length >= end + 4 + Number(/content-length: (\d+)/i.exec(text)?.[1] ?? 0)) {
        socket.off('data', onData);
        resolve(text.slice(0, end));
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  });
}
const connect = (port: number): Promise<net.Socket> =>
  new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
const closed = (s: net.Socket): Promise<void> => new Promise((r) => (s.destroyed ? r() : s.once('close', () => r())));

describe('HttpListeners in this process', () => {
  it('one server per listener; a drain answers the next request on a keep-alive connection with Connection: close, ends one idle past the grace, and resume serves again', async () => {
    const web = new HttpListeners((_req, res) => res.end('ok'), { idleGraceMs: 150 });
    await web.serve(ephemeral(['a', 'b']));
    expect(web.listeningOn).toEqual(['a', 'b']);
    const [a, b] = [...web.servers.values()];
    const busy = await connect(portOf(a!));
    const idle = await connect(portOf(b!));
    expect(await rawGet(busy)).toMatch(/^HTTP\/1\.1 200 OK[\s\S]*Connection: keep-alive/);
    expect(await rawGet(idle)).toMatch(/Connection: keep-alive/);
    expect(web.openConns).toBe(2);

    const drained = web.drain(new Date(Date.now() + 5_000));
    expect(web.listeningOn).toEqual([]);
    const last = await rawGet(busy);
    expect(last).toMatch(/Connection: close/);
    await closed(busy);
    const t0 = Date.now();
    await closed(idle); // ended by the server after the idle grace
    expect(Date.now() - t0).toBeLessThan(1_000);
    expect(await drained).toEqual({ openConnsRemaining: 0, acceptClosed: true });
    expect(web.stats).toEqual({ drains: 1, closedIdleInDrain: 1, acceptedOnCopies: 0, copyListenErrors: 0 });

    await web.resume();
    expect(web.listeningOn).toEqual(['a', 'b']);
    expect(web.draining).toBe(false);
    const again = await connect(portOf(a!)); // the same server, listening again
    expect(await rawGet(again)).toMatch(/Connection: keep-alive/);
    again.destroy();
    await web.drain(new Date(Date.now() + 1_000));
  });

  it('a request in flight when the drain starts is its connection\'s last: answered with Connection: close and closed at once, not after the idle grace', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const web = new HttpListeners((_req, res) => void gate.then(() => res.end('late')), { idleGraceMs: 10_000 });
    await web.serve(ephemeral(['a']));
    const s = await connect(portOf([...web.servers.values()][0]!));
    const answer = rawGet(s);
    await new Promise((r) => setTimeout(r, 50)); // the request is in
    const drained = web.drain(new Date(Date.now() + 3_000));
    release();
    expect(await answer).toMatch(/Connection: close/);
    await closed(s);
    expect(await drained).toEqual({ openConnsRemaining: 0, acceptClosed: true });
    expect(web.stats.closedIdleInDrain).toBe(0);
  });

  it('prepare makes one server per listener ahead, not listening; serve listens on those same servers', async () => {
    const web = new HttpListeners((_req, res) => res.end('ok'));
    const source = ephemeral(['a', 'b']);
    web.prepare(source);
    const made = [...web.servers.values()];
    expect([...web.servers.keys()]).toEqual(['a', 'b']);
    expect(made.map((m) => m.listening)).toEqual([false, false]);
    expect(web.listeningOn).toEqual([]);
    await web.serve(source);
    expect([...web.servers.values()].every((m, i) => m === made[i])).toBe(true);
    expect(web.listeningOn).toEqual(['a', 'b']);
    await web.drain(new Date());
  });

  it('counts a connection held past the deadline', async () => {
    const web = new HttpListeners(() => undefined /* never answers */, { idleGraceMs: 50 });
    await web.serve(ephemeral(['a']));
    const s = await connect(portOf([...web.servers.values()][0]!));
    s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await new Promise((r) => setTimeout(r, 50));
    expect(await web.drain(new Date(Date.now() + 300))).toEqual({ openConnsRemaining: 1, acceptClosed: true });
    s.destroy();
  });

  it('says what was misused, with stable codes', async () => {
    const code = async (f: () => unknown): Promise<string> => {
      try {
        await f();
      } catch (err) {
        expect(err).toBeInstanceOf(HttpAdapterError);
        return (err as HttpAdapterError).code;
      }
      return 'no error';
    };
    expect(await code(() => new HttpListeners(undefined).serve(ephemeral(['a'])))).toBe('E_HTTP_NO_HANDLER');
    expect(await code(() => new HttpListeners(undefined).resume())).toBe('E_HTTP_NOT_SERVING');
    expect(await code(() => new HttpListeners({ names: [] }))).toBe('E_HTTP_BAD_NAMES');
    expect(await code(() => new HttpListeners(() => undefined, { names: ['a', 'a'] }))).toBe('E_HTTP_BAD_NAMES');
    expect(await code(() => new HttpListeners(() => undefined).serverFactory(() => undefined))).toBe('E_HTTP_HANDLER_TWICE');
    expect(await code(() => fastifyOptions(new HttpListeners(undefined), { server: http.createServer(), ready: async () => undefined }))).toBe('E_HTTP_NOT_OURS');
    const web = new HttpListeners(() => undefined);
    await web.serve(ephemeral(['a']));
    expect(await code(() => web.serve(ephemeral(['a'])))).toBe('E_HTTP_SERVING');
    await web.drain(new Date());
    const bad = new HttpListeners(() => undefined);
    const unusable: ListenerSource = { listeners: new Map([['a', { fd: -1, address: '' }]]), listenTarget: () => ({ fd: 987_654 }) };
    expect(await code(() => bad.serve(unusable))).toBe('E_HTTP_LISTEN');
  });
});
