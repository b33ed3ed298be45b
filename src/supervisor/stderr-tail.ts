import type { Readable } from 'node:stream';

/** How much of an app's stderr is kept for abort reasons: the last lines of an exception. */
const TAIL_BYTES = 4096;
const TAIL_LINES = 20;

/**
 * Passes an app's stderr through to the supervisor's own (with backpressure: a slow
 * journal slows the app's writes, as an inherited stderr would) and keeps its last
 * TAIL_BYTES, so a successor that dies or fails during a handoff can be reported with
 * the exception it printed rather than only an exit code.
 */
export class StderrTail {
  private chunks: Buffer[] = [];
  private bytes = 0;

  private readonly ended: Promise<void>;

  constructor(
    private readonly stream: Readable,
    sink: NodeJS.WritableStream = process.stderr,
  ) {
    this.ended = new Promise((resolve) => stream.once('close', resolve));
    stream.on('data', (chunk: Buffer) => this.keep(chunk));
    stream.on('error', () => undefined); // the app's end closing early is its exit, reported elsewhere
    stream.pipe(sink, { end: false });
  }

  private keep(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    while (this.bytes - this.chunks[0]!.length >= TAIL_BYTES) this.bytes -= this.chunks.shift()!.length;
  }

  /** Bytes held (the tail and at most one chunk more): bounded whatever the app writes. */
  get keptBytes(): number {
    return this.bytes;
  }

  /** Resolves once the app's end closed (all it wrote is read), or after `ms`. */
  async drained(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.ended, new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
    clearTimeout(timer);
  }

  /**
   * The read end's fd, for a supervisor that takes over (self-upgrade): reading stops
   * here (in libuv, not just in the stream, so nothing more is read into this process's
   * buffers) until `resumeReading()`. Undefined when the stream has no fd.
   */
  stopReading(): number | undefined {
    const handle = (this.stream as unknown as { _handle?: { fd?: number; readStop?: () => number } })._handle;
    if (typeof handle?.fd !== 'number' || handle.fd < 0 || typeof handle.readStop !== 'function') return undefined;
    handle.readStop();
    return handle.fd;
  }

  /** Reading again after `stopReading()` (the new supervisor did not take over). */
  resumeReading(): void {
    (this.stream as unknown as { _handle?: { readStart?: () => number } })._handle?.readStart?.();
  }

  /** The last lines (at most TAIL_LINES, TAIL_BYTES), trimmed; '' if it printed nothing. */
  text(): string {
    const all = Buffer.concat(this.chunks).toString('utf8');
    const tail = all.length > TAIL_BYTES ? all.slice(-TAIL_BYTES) : all;
    // pino lines and terminal colours are kept as they are, control characters are not.
    // eslint-disable-next-line no-control-regex
    const clean = tail.replace(/\u001b\[[0-9;]*m/g, '').replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, '');
    return clean.split('\n').filter((l) => l.trim() !== '').slice(-TAIL_LINES).join('\n');
  }
}

/**
 * The line of a stderr tail that names the failure: Node ends an uncaught exception with
 * its version line and Python puts the exception after the traceback, so the last line
 * that looks like an error, else the last line; '' for an empty tail.
 */
export function keyLine(tail: string): string {
  const lines = tail.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !/^Node\.js v\d/.test(l));
  return [...lines].reverse().find((l) => /\b\w*(Error|Exception)\b|\bfatal\b|\bpanic\b|failed/i.test(l)) ?? lines[lines.length - 1] ?? '';
}
