import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { writeFileAtomic, writeFileAtomicSync, fsyncDir } from '../os/atomic-file.js';
import { BatonError, errorMessage } from '../os/errors.js';
import { readStateFile } from '../os/secure-fs.js';

/**
 * A single-record journal file: the latest record replaces the previous one
 * atomically (see atomic-file.ts), so a crash at any point leaves the old or the new
 * record, never a torn one. JSON on disk; bigint values round-trip as
 * `{"$bigint":"123"}` (JSON has no 64-bit integers).
 *
 * Errors: E_JOURNAL_CORRUPT (the file exists but is not a valid record),
 * E_JOURNAL_IO (the file system refused).
 */
export class Journal<T> {
  constructor(
    readonly filePath: string,
    /** false: atomic but not fsynced (for records about live processes, moot after a power cut). */
    private readonly durable = true,
  ) {}

  async write(record: T): Promise<void> {
    const text = encodeJournal(record);
    try {
      await writeFileAtomic(this.filePath, text, { durable: this.durable });
    } catch (err) {
      throw ioError('write', this.filePath, err);
    }
  }

  /** Blocking variant: the record is durable when this returns. */
  writeSync(record: T): void {
    const text = encodeJournal(record);
    try {
      writeFileAtomicSync(this.filePath, text);
    } catch (err) {
      throw ioError('write', this.filePath, err);
    }
  }

  /** The last record written, or undefined if there is none. */
  async read(): Promise<T | undefined> {
    let text: string;
    try {
      // O_NOFOLLOW | O_NONBLOCK + fstat (secure-fs.ts): a planted link, FIFO or another user's file is not read.
      const read = await readStateFile(this.filePath, 4 * 1024 * 1024);
      if (read.kind === 'missing') return undefined;
      if (read.kind === 'untrusted') {
        throw new BatonError('E_JOURNAL_UNTRUSTED', `journal ${this.filePath} ${read.reason}; it cannot be trusted`, { path: this.filePath });
      }
      text = read.text;
    } catch (err) {
      if (err instanceof BatonError && err.code === 'E_JOURNAL_UNTRUSTED') throw err;
      throw ioError('read', this.filePath, err);
    }
    try {
      return decodeJournal(text) as T;
    } catch (err) {
      throw new BatonError(
        'E_JOURNAL_CORRUPT',
        `journal ${this.filePath} is corrupt (${errorMessage(err)}); expected one JSON record written by baton`,
        { path: this.filePath, bytes: text.length },
        { cause: err },
      );
    }
  }

  /** Remove the record (durably, if this journal is); a missing file is fine. */
  async clear(): Promise<void> {
    try {
      await fsp.rm(this.filePath, { force: true });
      if (this.durable) await fsyncDir(path.dirname(this.filePath));
    } catch (err) {
      throw ioError('clear', this.filePath, err);
    }
  }
}

const BIGINT_KEY = '$bigint';

export function encodeJournal(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? { [BIGINT_KEY]: v.toString() } : v)) + '\n';
}

export function decodeJournal(text: string): unknown {
  return JSON.parse(text, (_key, v: unknown) => {
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      const keys = Object.keys(v);
      const digits = (v as Record<string, unknown>)[BIGINT_KEY];
      if (keys.length === 1 && typeof digits === 'string' && /^-?\d+$/.test(digits)) return BigInt(digits);
    }
    return v;
  });
}

function ioError(op: string, filePath: string, err: unknown): BatonError {
  const code = (err as NodeJS.ErrnoException).code;
  return new BatonError('E_JOURNAL_IO', `journal ${op} of ${filePath} failed: ${errorMessage(err)}`, { path: filePath, errno: code }, { cause: err });
}
