import type { FileHandle } from 'node:fs/promises';
import { rename } from 'node:fs/promises';
import { errorMessage } from '../os/errors.js';
import { safeJson } from '../os/json-limits.js';
import type { Logger } from '../os/log.js';
import { openAppendPrivate } from '../os/secure-fs.js';

/**
 * The admin audit log (`<stateDir>/audit.log`, 0600, one JSON line per request), bounded
 * on disk and in memory (issue #21, item 3):
 *
 *  - each line is bounded: the path, the body, the result and the claimed user are cut
 *    (a cut field says how long it was), and a line is at most `maxLineBytes`;
 *  - lines wait in one queue of at most `maxQueueBytes`; beyond it they are dropped and
 *    counted, and the next line written is preceded by `{"event":"audit.dropped","count":N}`;
 *  - the file is rotated at `rotateBytes` (audit.log → audit.log.1 → … → audit.log.<keep>);
 *  - lines for refused requests (any 4xx: unauthenticated, malformed, unknown, too large)
 *    are rate-limited to `refusedPerSecond` (burst `refusedBurst`); the rest are counted
 *    and summarised as `{"event":"audit.suppressed","count":N}`. Accepted requests are
 *    never rate-limited, only bounded.
 *
 * The file is opened O_NOFOLLOW and must be our private regular file; anything else in
 * its place (a link, another user's file) is set aside and a new file made (secure-fs.ts).
 */
export interface AuditLimits {
  maxLineBytes: number;
  maxQueueBytes: number;
  rotateBytes: number;
  keep: number;
  refusedPerSecond: number;
  refusedBurst: number;
}

export const DEFAULT_AUDIT_LIMITS: AuditLimits = {
  maxLineBytes: 8 * 1024,
  maxQueueBytes: 1024 * 1024,
  rotateBytes: 16 * 1024 * 1024,
  keep: 2,
  refusedPerSecond: 20,
  refusedBurst: 200,
};

const MAX_PATH_CHARS = 1024;
const MAX_BODY_BYTES = 2048;
const MAX_RESULT_BYTES = 1024;

export class AuditLog {
  private fh: FileHandle | undefined;
  private opening: Promise<void> | undefined;
  private size = 0;
  private queue: string[] = [];
  private queuedBytes = 0;
  private pumping: Promise<void> | undefined;
  private closed = false;
  private tokens: number;
  private refilledAt = Date.now();
  /** Lines dropped because the queue was full / refused requests not logged (rate limit): since start. */
  droppedTotal = 0;
  suppressedTotal = 0;
  private droppedPending = 0;
  private suppressedPending = 0;
  private failedLogged = false;
  readonly limits: AuditLimits;

  constructor(
    readonly file: string,
    private readonly log: Logger,
    limits: Partial<AuditLimits> = {},
  ) {
    this.limits = { ...DEFAULT_AUDIT_LIMITS, ...limits };
    this.tokens = this.limits.refusedBurst;
  }

  /** One request. `refused`: a 4xx answer (rate-limited). Never throws. */
  record(entry: Record<string, unknown>, refused: boolean): void {
    if (this.closed) return;
    if (refused && !this.takeToken()) {
      this.suppressedPending++;
      this.suppressedTotal++;
      return;
    }
    const line = boundedLine(entry, this.limits.maxLineBytes);
    if (this.queuedBytes + line.length > this.limits.maxQueueBytes) {
      this.droppedPending++;
      this.droppedTotal++;
      return;
    }
    if (this.droppedPending > 0) this.push(`${JSON.stringify({ at: new Date().toISOString(), event: 'audit.dropped', count: this.droppedPending, reason: 'write queue full' })}\n`);
    if (this.suppressedPending > 0) this.push(`${JSON.stringify({ at: new Date().toISOString(), event: 'audit.suppressed', count: this.suppressedPending, reason: `refused requests over ${this.limits.refusedPerSecond}/s` })}\n`);
    this.droppedPending = 0;
    this.suppressedPending = 0;
    this.push(line);
  }

  /** Writes what is queued (and a last summary line), then closes the file. */
  async close(): Promise<void> {
    if (this.droppedPending > 0 || this.suppressedPending > 0) {
      if (this.droppedPending > 0) this.push(`${JSON.stringify({ at: new Date().toISOString(), event: 'audit.dropped', count: this.droppedPending, reason: 'write queue full' })}\n`);
      if (this.suppressedPending > 0) this.push(`${JSON.stringify({ at: new Date().toISOString(), event: 'audit.suppressed', count: this.suppressedPending, reason: `refused requests over ${this.limits.refusedPerSecond}/s` })}\n`);
      this.droppedPending = this.suppressedPending = 0;
    }
    this.closed = true;
    while (this.pumping) await this.pumping;
    await this.fh?.close().catch(() => undefined);
    this.fh = undefined;
  }

  /** Resolves once everything queued so far is written (tests). */
  async flushed(): Promise<void> {
    while (this.pumping) await this.pumping;
  }

  private takeToken(): boolean {
    const now = Date.now();
    this.tokens = Math.min(this.limits.refusedBurst, this.tokens + ((now - this.refilledAt) / 1000) * this.limits.refusedPerSecond);
    this.refilledAt = now;
    if (this.tokens < 1) return false;
    this.tokens--;
    return true;
  }

  private push(line: string): void {
    this.queue.push(line);
    this.queuedBytes += line.length;
    this.pumping ??= this.pump().finally(() => (this.pumping = undefined));
  }

  private async pump(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.join('');
      this.queue = [];
      this.queuedBytes = 0;
      try {
        await this.ensureOpen();
        const buf = Buffer.from(batch, 'utf8');
        if (this.size > 0 && this.size + buf.length > this.limits.rotateBytes) await this.rotate();
        await this.fh!.write(buf);
        this.size += buf.length;
        this.failedLogged = false;
      } catch (err) {
        if (!this.failedLogged) this.log.error({ event: 'admin.audit_failed', file: this.file, err: errorMessage(err) }, 'could not write the audit log');
        this.failedLogged = true;
        await this.fh?.close().catch(() => undefined);
        this.fh = undefined;
      }
    }
  }

  private async ensureOpen(): Promise<void> {
    if (this.fh) return;
    this.opening ??= (async () => {
      const { fh, setAside } = await openAppendPrivate(this.file);
      if (setAside) this.log.warn({ event: 'admin.audit_untrusted', file: this.file, setAsideAs: setAside.to, reason: setAside.reason }, `${this.file} ${setAside.reason}: set aside as ${setAside.to}; writing a new audit log`);
      this.fh = fh;
      this.size = (await fh.stat()).size;
    })().finally(() => (this.opening = undefined));
    await this.opening;
  }

  private async rotate(): Promise<void> {
    await this.fh?.close();
    this.fh = undefined;
    for (let i = this.limits.keep - 1; i >= 1; i--) await rename(`${this.file}.${i}`, `${this.file}.${i + 1}`).catch(() => undefined);
    if (this.limits.keep >= 1) await rename(this.file, `${this.file}.1`);
    this.log.info({ event: 'admin.audit_rotated', file: this.file, bytes: this.size }, `audit log rotated at ${this.size} bytes`);
    this.size = 0;
    await this.ensureOpen();
  }
}

/** One audit line, every free-form field cut to its bound. */
export function boundedLine(entry: Record<string, unknown>, maxLineBytes: number): string {
  const e: Record<string, unknown> = { ...entry };
  if (typeof e.path === 'string' && e.path.length > MAX_PATH_CHARS) e.path = `${e.path.slice(0, MAX_PATH_CHARS)}…(${e.path.length} chars)`;
  if (typeof e.method === 'string' && e.method.length > 32) e.method = `${e.method.slice(0, 32)}…`;
  if ('body' in e) e.body = boundedValue(e.body, MAX_BODY_BYTES);
  if ('result' in e) e.result = boundedValue(e.result, MAX_RESULT_BYTES);
  const who = e.who as Record<string, unknown> | undefined;
  if (who && typeof who.user === 'string' && who.user.length > 64) e.who = { ...who, user: who.user.slice(0, 64) };
  const line = safeJson(e);
  if (line !== undefined && Buffer.byteLength(line) < maxLineBytes) return `${line}\n`;
  return `${JSON.stringify({ at: e.at, event: 'audit.line_cut', transport: e.transport, method: String(e.method).slice(0, 32), path: String(e.path).slice(0, 256), status: e.status, bytes: line === undefined ? null : Buffer.byteLength(line) })}\n`;
}

function boundedValue(v: unknown, maxBytes: number): unknown {
  const json = safeJson(v);
  if (json === undefined) return { unserialisable: true };
  const n = Buffer.byteLength(json);
  if (n <= maxBytes) return v;
  return { cut: true, bytes: n, head: json.slice(0, Math.min(256, maxBytes)) };
}
