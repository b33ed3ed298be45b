import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Journal } from '../src/supervisor/journal.js';
import { BatonError } from '../src/os/errors.js';
import { Harness, exitOf } from './support/harness.js';

const distJournal = path.resolve('dist/src/supervisor/journal.js');
const h = new Harness();
afterEach(() => h.cleanup());

describe('Journal', () => {
  it('round-trips records including bigint values', async () => {
    const j = new Journal<{ handoffId: string; revs: Record<string, bigint>; n: number; nested: { big: bigint }[] }>(
      path.join(h.tempDir(), 'handoff.json'),
    );
    expect(await j.read()).toBeUndefined();
    const rec = { handoffId: 'h1', revs: { a: 2n ** 64n - 1n, b: 0n }, n: 3, nested: [{ big: -5n }] };
    await j.write(rec);
    expect(await j.read()).toEqual(rec);
    j.writeSync({ ...rec, n: 4 });
    expect((await j.read())?.n).toBe(4);
    expect(readFileSync(j.filePath, 'utf8')).toContain('{"$bigint":"18446744073709551615"}');
  });

  it('clear removes the record and tolerates a missing file', async () => {
    const j = new Journal<{ a: number }>(path.join(h.tempDir(), 'j.json'));
    await j.write({ a: 1 });
    await j.clear();
    expect(await j.read()).toBeUndefined();
    await j.clear();
  });

  it('a corrupt file is an E_JOURNAL_CORRUPT error, not a crash', async () => {
    const j = new Journal<{ a: number }>(path.join(h.tempDir(), 'j.json'));
    for (const junk of ['{"a": 1', '', '\0\0\0']) {
      writeFileSync(j.filePath, junk);
      const err = await j.read().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(BatonError);
      expect((err as BatonError).code).toBe('E_JOURNAL_CORRUPT');
      expect((err as BatonError).message).toContain(j.filePath);
    }
  });

  it('a reader polling while another process rewrites 500 times never sees a partial file', async () => {
    const file = path.join(h.tempDir(), 'j.json');
    await new Journal(file).write({ seq: -1, pad: '' });
    // 64 KiB records: a non-atomic rewrite would be observable as a short/garbled read.
    const script = `
      const { Journal } = await import(${JSON.stringify(distJournal)});
      const j = new Journal(${JSON.stringify(file)});
      const pad = 'x'.repeat(65536);
      for (let seq = 0; seq < 500; seq++) await j.write({ seq, pad: pad.slice(seq % 7) });
    `;
    const child = h.spawn(process.execPath, ['--input-type=module', '-e', script]);
    const exited = exitOf(child);
    let done = false;
    void exited.then(() => (done = true));
    const reader = new Journal<{ seq: number; pad: string }>(file);
    let reads = 0;
    let lastSeq = -1;
    while (!done) {
      const rec = await reader.read(); // throws E_JOURNAL_CORRUPT on a torn file
      expect(rec).toBeDefined();
      expect(rec!.seq).toBeGreaterThanOrEqual(lastSeq);
      expect(rec!.pad.length).toBe(rec!.seq < 0 ? 0 : 65536 - (rec!.seq % 7));
      lastSeq = rec!.seq;
      reads++;
    }
    expect(await exited).toEqual({ code: 0, signal: null });
    expect((await reader.read())?.seq).toBe(499);
    expect(reads).toBeGreaterThan(50);
  });
});
