import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { MAX_JSON_DEPTH, valueDepth } from './json-limits.js';
import { readStateFile, setAside } from './secure-fs.js';

/** The deepest entry a state list keeps: a job record around the deepest value the wire carries. */
export const MAX_STATE_ENTRY_DEPTH = MAX_JSON_DEPTH + 8;
/** The largest state list read (100,000 job records at their bounds fit). */
export const MAX_STATE_FILE_BYTES = 256 * 1024 * 1024;

/**
 * Replace a small file atomically and durably: write a temp file beside it, fsync it,
 * rename it over the target, fsync the directory. A reader sees the old or the new
 * content, never a mix; after return the new content survives a power cut.
 */
export async function writeFileAtomic(filePath: string, data: string | Uint8Array, opts: { durable?: boolean } = {}): Promise<void> {
  // durable: false keeps the atomic replace (readers see old or new) without the two
  // fsyncs (≈ 10 ms on this machine's disk), for state that a power cut makes moot anyway.
  const durable = opts.durable ?? true;
  const tmp = tempPathFor(filePath);
  try {
    const fh = await fsp.open(tmp, 'wx', 0o644);
    try {
      await fh.writeFile(data);
      if (durable) await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, filePath);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  if (durable) await fsyncDir(path.dirname(filePath));
}

/** Synchronous twin of writeFileAtomic (crash-point timing, exit paths, the lock's critical path). */
export function writeFileAtomicSync(filePath: string, data: string | Uint8Array, opts: { durable?: boolean } = {}): void {
  const durable = opts.durable ?? true;
  const tmp = tempPathFor(filePath);
  try {
    const fd = fs.openSync(tmp, 'wx', 0o644);
    try {
      fs.writeFileSync(fd, data);
      if (durable) fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, filePath);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  if (durable) fsyncDirSync(path.dirname(filePath));
}

/** Make a rename/unlink in `dir` durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export function fsyncDirSync(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

// Unique per process AND thread (a worker may write the same file as the main thread).
function tempPathFor(filePath: string): string {
  return `${filePath}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
}

/**
 * Loads the list `key` of a `{"version": 1, "<key>": [...]}` state file (job history,
 * lifecycle records). Missing file: undefined. A file that does not parse or has another
 * shape never stops a start: it is kept aside as `<file>.corrupt-<ms>`, `corrupt` is told
 * why, and the list starts empty. Entries failing `keep` are dropped.
 */
export async function loadStateList<T>(
  filePath: string,
  key: string,
  keep: (entry: T) => boolean,
  corrupt: (reason: string) => void,
  opts: { dropped?: (count: number, reason: string) => void } = {},
): Promise<T[] | undefined> {
  // O_NOFOLLOW | O_NONBLOCK + fstat (secure-fs.ts): a planted link, FIFO, directory or
  // another user's file is never read; it is set aside (renamed, never followed).
  const read = await readStateFile(filePath, MAX_STATE_FILE_BYTES);
  if (read.kind === 'missing') return undefined;
  if (read.kind === 'untrusted') {
    const aside = await setAside(filePath, 'untrusted').catch((err: unknown) => `(could not be set aside: ${err instanceof Error ? err.message : String(err)})`);
    corrupt(`${filePath} ${read.reason}; set aside as ${aside}`);
    return [];
  }
  const text = read.text;
  try {
    const data = JSON.parse(text) as Record<string, unknown> | null;
    const list = data?.[key];
    if (data?.version !== 1 || !Array.isArray(list)) throw new Error(`not a version-1 file with a "${key}" list`);
    // An entry nested deeper than any baton writes (a record made before params were
    // bounded, or planted) would overflow the stack wherever it is serialised: dropped.
    const shaped = (list as T[]).filter((e) => typeof e === 'object' && e !== null && keep(e));
    const kept = shaped.filter((e) => valueDepth(e, MAX_STATE_ENTRY_DEPTH) <= MAX_STATE_ENTRY_DEPTH);
    if (kept.length < shaped.length) opts.dropped?.(shaped.length - kept.length, `nested deeper than ${MAX_STATE_ENTRY_DEPTH} levels`);
    return kept;
  } catch (err) {
    corrupt(err instanceof Error ? err.message : String(err));
    await writeFileAtomic(`${filePath}.corrupt-${Date.now()}`, text).catch(() => undefined);
    return [];
  }
}
