/**
 * The store of the node:http, fastify and express examples: a key-value map kept as an
 * append-only log in the data dir, one JSON line per write, fsynced before the write is
 * acknowledged. Small on purpose (a write blocks the event loop for its fsync; a real
 * store batches them, like the repository's fixtures/kv).
 *
 * Its revision (the number of writes) and a SHA-256 chain over the lines (each link is
 * sha256(previous link, line)) are what `seal()` reports to baton and what the
 * successor compares with `verifyOpened` after opening the log (docs/embedded-db.md).
 */
import { createHash } from 'node:crypto';
import { closeSync, existsSync, fdatasyncSync, openSync, readFileSync, truncateSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { SealResult } from '@baton-sh/baton';

/** A write after `seal()`: the next process takes it (answer 503 with Retry-After). */
export class SealedError extends Error {}

export class AppendLog {
  readonly file: string;
  private fd: number | undefined;
  private readonly values = new Map<string, string>();
  private revision = 0n;
  private chain = Buffer.alloc(32);

  constructor(dataDir: string) {
    this.file = path.join(dataDir, 'kv.log');
  }

  /**
   * Reads the whole log and opens it for appends; again after an aborted handoff, for
   * what the successor wrote. A torn last line (a write that never returned) is cut off.
   */
  open(): void {
    this.close();
    this.values.clear();
    this.revision = 0n;
    this.chain = Buffer.alloc(32);
    const bytes = existsSync(this.file) ? readFileSync(this.file) : Buffer.alloc(0);
    let start = 0;
    for (let end = bytes.indexOf(10); end >= 0; start = end + 1, end = bytes.indexOf(10, start)) this.apply(bytes.subarray(start, end + 1));
    if (start < bytes.length) truncateSync(this.file, start);
    this.fd = openSync(this.file, 'a');
  }

  get(key: string): string | undefined {
    return this.values.get(key);
  }

  get size(): number {
    return this.values.size;
  }

  get rev(): bigint {
    return this.revision;
  }

  /** Appends `key = value` and returns its revision once it is on disk. */
  put(key: string, value: string): bigint {
    if (this.fd === undefined) throw new SealedError('sealed for a handoff');
    const line = Buffer.from(`${JSON.stringify({ key, value })}\n`);
    try {
      writeSync(this.fd, line);
      fdatasyncSync(this.fd);
    } catch (err) {
      // Half a line may be on disk: write nothing more (the next open cuts it off).
      this.close();
      throw err;
    }
    this.apply(line);
    return this.revision;
  }

  /** Revision and chain: what `seal()` reports and what a successor must open again. */
  summary(): SealResult {
    return { lastRevisionPerShard: { '0': this.revision }, dataDirFingerprint: this.chain };
  }

  /** Stops writing (every write is on disk already) and reports the summary. */
  seal(): SealResult {
    this.close();
    return this.summary();
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  private apply(line: Buffer): void {
    const { key, value } = JSON.parse(line.toString('utf8')) as { key: string; value: string };
    this.values.set(key, value);
    this.revision++;
    this.chain = createHash('sha256').update(this.chain).update(line).digest();
  }
}
