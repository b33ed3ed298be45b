import http from 'node:http';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { ConnectionGuard, isLoopback } from './conn-guard.js';
import type { Logger } from '../os/log.js';
import type { Supervisor } from '../supervisor/supervisor.js';
import type { JobResult } from '../supervisor/lease.js';
import type { HandoffResult } from '../supervisor/results.js';

const PROBE_VALUE = { OK: 0, DEGRADED: 1, UNKNOWN: 2, CRITICAL: 3 } as const;

/**
 * Prometheus metrics of one supervisor (`baton run --metrics HOST:PORT`), fed by the
 * Supervisor's events. Names are stable; every series is prefixed `baton_`.
 */
export class SupervisorMetrics {
  readonly registry = new Registry();
  private server: http.Server | undefined;
  private guard: ConnectionGuard | undefined;
  private readonly jobs: Counter;
  private readonly skipped: Counter;
  private readonly probeStatus: Gauge;
  private readonly healthStatus: Gauge;

  constructor(sup: Supervisor, labels: { service: string }) {
    const registers = [this.registry];
    this.registry.setDefaultLabels(labels);
    collectDefaultMetrics({ register: this.registry, prefix: 'baton_' }); // baton_process_resident_memory_bytes, …
    new Gauge({ name: 'baton_up', help: 'The supervisor is running', registers }).set(1);
    new Gauge({
      name: 'baton_generation',
      help: 'Generation of the serving app (0 before the first start)',
      registers,
      collect() {
        this.set(sup.generation);
      },
    });
    new Gauge({
      name: 'baton_handoff_in_progress',
      help: '1 while a handoff (or a scheduled restart) is under way',
      registers,
      collect() {
        this.set(sup.busy ? 1 : 0);
      },
    });
    const handoffs = new Counter({ name: 'baton_handoffs_total', help: 'Handoffs by outcome', labelNames: ['outcome'], registers });
    const duration = new Histogram({
      name: 'baton_handoff_duration_seconds',
      help: 'Handoff duration, trigger to outcome',
      labelNames: ['outcome'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300],
      registers,
    });
    const phases = new Histogram({
      name: 'baton_handoff_phase_duration_seconds',
      help: 'Time spent in each handoff phase',
      labelNames: ['phase'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30],
      registers,
    });
    const restarts = new Counter({ name: 'baton_app_restarts_total', help: 'Restarts of an app that exited outside a handoff', registers });
    const gaps = new Histogram({
      name: 'baton_heartbeat_gap_seconds',
      help: 'Gap between frames received from a peer during a handoff',
      labelNames: ['peer'],
      buckets: [0.5, 1, 1.5, 2, 2.5, 3, 5, 10],
      registers,
    });
    sup.on('handoff', (r: HandoffResult) => {
      handoffs.inc({ outcome: r.outcome });
      duration.observe({ outcome: r.outcome }, (r.endedAt - r.startedAt) / 1000);
      for (const p of r.phases) phases.observe({ phase: p.phase }, p.ms / 1000);
    });
    this.jobs = new Counter({ name: 'baton_jobs_total', help: 'Maintenance jobs by task type and outcome (succeeded, failed, cancelled, skipped)', labelNames: ['type', 'outcome'], registers });
    const jobDuration = new Histogram({
      name: 'baton_job_duration_seconds',
      help: 'Maintenance job duration, lease taken to outcome',
      labelNames: ['type', 'outcome'],
      buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600],
      registers,
    });
    this.skipped = new Counter({ name: 'baton_jobs_skipped_total', help: 'Maintenance runs skipped, by task type and reason code (E_LEASE_HELD, E_STOPPING, E_NO_APP, E_OUTSIDE_WINDOW)', labelNames: ['type', 'code'], registers });
    new Gauge({
      name: 'baton_job_running',
      help: '1 while a maintenance job runs',
      registers,
      collect() {
        this.set(sup.runningJob ? 1 : 0);
      },
    });
    this.probeStatus = new Gauge({ name: 'baton_probe_status', help: 'Last status of each health probe: 0 OK, 1 DEGRADED, 2 UNKNOWN, 3 CRITICAL', labelNames: ['probe'], registers });
    this.healthStatus = new Gauge({ name: 'baton_health_status', help: 'Aggregated health at the last check: 0 OK, 1 DEGRADED, 2 UNKNOWN, 3 CRITICAL', registers });
    sup.on('job', (r: JobResult) => {
      if (r.outcome === 'skipped') return this.jobSkipped(r.task, r.code ?? '-');
      this.jobs.inc({ type: r.task, outcome: r.outcome });
      if (r.startedAt !== undefined) jobDuration.observe({ type: r.task, outcome: r.outcome }, (r.endedAt - r.startedAt) / 1000);
    });
    sup.on('restart-scheduled', () => restarts.inc());
    sup.on('heartbeat', (peer: string, gapMs: number) => gaps.observe({ peer }, gapMs / 1000));
  }

  /** A maintenance run refused before it ran. */
  jobSkipped(type: string, code: string): void {
    this.jobs.inc({ type, outcome: 'skipped' });
    this.skipped.inc({ type, code });
  }

  /** Probe results of a health check (on demand or periodic); a probe no longer reported loses its series. */
  probes(entries: readonly { name: string; status: keyof typeof PROBE_VALUE }[], overall: keyof typeof PROBE_VALUE): void {
    this.probeStatus.reset();
    for (const e of entries) this.probeStatus.set({ probe: e.name }, PROBE_VALUE[e.status]);
    this.healthStatus.set(PROBE_VALUE[overall]);
  }

  /** Serves GET /metrics on host:port; resolves once listening (rejects on bind errors). */
  async serve(host: string, port: number, log: Logger): Promise<void> {
    // The admin server's limits (issue #21 item 4): bounded headers and request time, and
    // a connection guard (conn-guard.ts): at most 32 connections, 16 from one address, one
    // that sends no request within 2 s is closed, idle ones are evicted oldest-first.
    const server = http.createServer({ requestTimeout: 10_000, headersTimeout: 5_000, maxHeaderSize: 16 * 1024, connectionsCheckingInterval: 1_000 }, (req, res) => {
      this.guard?.prove(req.socket);
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: GET /metrics\n');
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${String(err)}\n`),
      );
    });
    server.keepAliveTimeout = 5_000;
    this.guard = new ConnectionGuard({ name: 'metrics', log, maxConnections: 32, maxPerAddress: 16, unprovenTimeoutMs: 2_000 });
    this.guard.attach(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    const addr = server.address();
    if (!isLoopback(host)) {
      log.warn({ event: 'metrics.not_loopback', address: `${host}:${this.port}` }, `metrics endpoint on ${host}:${this.port}: not a loopback address; anyone who can reach it can read the metrics (no authentication)`);
    }
    log.info({ event: 'metrics.listening', address: typeof addr === 'object' && addr ? `${addr.address}:${addr.port}` : String(addr) }, 'metrics endpoint up');
  }

  /** The bound port (useful when 0 was asked). */
  get port(): number | undefined {
    const addr = this.server?.address();
    return typeof addr === 'object' && addr ? addr.port : undefined;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    this.guard?.close();
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }
}
