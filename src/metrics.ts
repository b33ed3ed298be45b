import http from 'node:http';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Logger } from './log.js';
import type { HandoffResult, Supervisor } from './supervisor.js';

/**
 * Prometheus metrics of one supervisor (`baton run --metrics HOST:PORT`), fed by the
 * Supervisor's events. Names are stable; every series is prefixed `baton_`.
 */
export class SupervisorMetrics {
  readonly registry = new Registry();
  private server: http.Server | undefined;

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
    sup.on('restart-scheduled', () => restarts.inc());
    sup.on('heartbeat', (peer: string, gapMs: number) => gaps.observe({ peer }, gapMs / 1000));
  }

  /** Serves GET /metrics on host:port; resolves once listening (rejects on bind errors). */
  async serve(host: string, port: number, log: Logger): Promise<void> {
    const server = http.createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: GET /metrics\n');
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${String(err)}\n`),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    const addr = server.address();
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
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }
}
