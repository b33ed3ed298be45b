import http from 'node:http';
import { errorMessage } from '../os/errors.js';
import type { HeldListener } from '../os/listeners.js';
import { lockHolder } from '../os/lock.js';
import type { ProbeEntry } from '../supervisor/probes.js';
import type { Supervisor } from '../supervisor/supervisor.js';
import type { JobRecord, JobStore } from './jobs.js';
import type { SupervisorMetrics } from './metrics.js';

/** What the aggregated health is made of (the Daemon's parts). */
export interface HealthSources {
  sup: Supervisor;
  listeners: readonly HeldListener[];
  jobs: JobStore;
  metrics: SupervisorMetrics | undefined;
  dataDir: string;
}

/** Aggregated health: the supervisor's own checks, the app's probes, the supervisor's view. */
export async function aggregateHealth(s: HealthSources): Promise<HealthReport> {
  const inc = s.sup.incumbent;
  const probes: (ProbeEntry & { source: 'supervisor' | 'app'; stale?: boolean })[] = [];
  if (!inc?.alive) {
    probes.push({ name: 'app', source: 'supervisor', status: 'CRITICAL', message: 'no app running' });
  } else {
    const http = await probeHealth(s.listeners);
    probes.push({ name: 'http', source: 'supervisor', status: http.status, message: http.detail, ...(http.ms !== undefined && { ms: http.ms }) });
    const app = await s.sup.probe();
    if (app) {
      for (const e of app) probes.push({ ...e, source: 'app' });
    } else if (s.sup.lastProbes) {
      // A handoff holds the incumbent's connection: the newest answer, marked stale.
      for (const e of s.sup.lastProbes.entries) probes.push({ ...e, source: 'app', stale: true });
    }
  }
  const status = worst(probes.map((p) => p.status));
  s.metrics?.probes(probes, status);
  const holder = await lockHolder(s.dataDir).catch(() => undefined);
  return {
    status,
    checkedAt: new Date().toISOString(),
    probes,
    supervisor: {
      generation: s.sup.generation,
      appPid: inc?.pid ?? null,
      phase: s.sup.phase,
      lease: s.sup.leaseHolder() ?? null,
      lock: holder ? { pid: holder.owner.pid, alive: holder.alive, since: holder.owner.acquiredAt } : null,
      lastHandoff: s.jobs.lastOf('handoff') ?? null,
      runningJob: s.sup.runningJob ?? null,
    },
  };
}

/**
 * GET /healthz on the first TCP listener (else the first unix one with a path), 500 ms
 * budget. OK on 2xx, CRITICAL on another status, UNKNOWN when it cannot tell.
 */
export async function probeHealth(listeners: readonly HeldListener[], budgetMs = 500): Promise<{ status: 'OK' | 'CRITICAL' | 'UNKNOWN'; detail: string; ms?: number }> {
  const tcp = listeners.find((l) => l.spec.kind === 'tcp' && l.address.startsWith('tcp://'));
  const unix = listeners.find((l) => l.spec.kind === 'unix' && l.spec.path);
  const target: http.RequestOptions | undefined = tcp
    ? { host: loopbackFor(tcp.spec.host!), port: Number(tcp.address.split(':').pop()) }
    : unix
      ? { socketPath: unix.spec.path! }
      : undefined;
  if (!target) return { status: 'UNKNOWN', detail: 'no listener to probe' };
  const t0 = Date.now();
  return new Promise((resolve) => {
    const req = http.request({ ...target, method: 'GET', path: '/healthz', agent: false, timeout: budgetMs }, (res) => {
      res.resume();
      const ms = Date.now() - t0;
      const ok = (res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300;
      resolve({ status: ok ? 'OK' : 'CRITICAL', detail: `GET /healthz ${res.statusCode}`, ms });
    });
    const timer = setTimeout(() => req.destroy(new Error(`no answer within ${budgetMs} ms`)), budgetMs);
    req.on('timeout', () => req.destroy(new Error(`no answer within ${budgetMs} ms`)));
    req.on('error', (err) => resolve({ status: 'UNKNOWN', detail: `GET /healthz: ${errorMessage(err)}` }));
    req.on('close', () => clearTimeout(timer));
    req.end();
  });
}

export interface HealthReport {
  status: 'OK' | 'DEGRADED' | 'CRITICAL' | 'UNKNOWN';
  checkedAt: string;
  probes: (ProbeEntry & { source: 'supervisor' | 'app'; stale?: boolean })[];
  supervisor: {
    generation: number;
    appPid: number | null;
    phase: string;
    lease: string | null;
    lock: { pid: number; alive: boolean; since: string } | null;
    lastHandoff: JobRecord | null;
    runningJob: unknown;
  };
}

const SEVERITY = { OK: 0, DEGRADED: 1, UNKNOWN: 2, CRITICAL: 3 } as const;
export type HealthStatus = keyof typeof SEVERITY;

/** The worst status (OK < DEGRADED < UNKNOWN < CRITICAL); OK for none. */
export function worst(statuses: readonly (keyof typeof SEVERITY)[]): keyof typeof SEVERITY {
  let w: keyof typeof SEVERITY = 'OK';
  for (const s of statuses) if (SEVERITY[s] > SEVERITY[w]) w = s;
  return w;
}

function loopbackFor(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '::1';
  return host;
}
