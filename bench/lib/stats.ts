/** Percentiles and the number formats the reports use. */

export interface Summary {
  n: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentile of an ascending array (p in 0..100). */
export function pct(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export function summarize(xs: readonly number[]): Summary {
  const s = Float64Array.from(xs).sort();
  const mean = xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
  return { n: xs.length, min: s[0] ?? NaN, p50: pct(s, 50), p90: pct(s, 90), p99: pct(s, 99), max: s[s.length - 1] ?? NaN, mean };
}

/** A growable array of doubles (latencies of ~10^5–10^6 requests without boxed numbers). */
export class Samples {
  private buf = new Float64Array(1024);
  length = 0;

  push(v: number): void {
    if (this.length === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.length++] = v;
  }

  sorted(): Float64Array {
    return this.buf.slice(0, this.length).sort();
  }
}

/** Milliseconds: 1 decimal below 100, else whole. */
export function ms(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return 'n/a';
  return v < 100 ? v.toFixed(1) : Math.round(v).toLocaleString('en-US');
}

export function int(v: number): string {
  return Math.round(v).toLocaleString('en-US');
}

export function percent(part: number, whole: number): string {
  if (whole === 0) return 'n/a';
  const p = (100 * part) / whole;
  return p === 0 ? '0 %' : p < 0.01 ? `${p.toFixed(4)} %` : `${p.toFixed(2)} %`;
}

/** A markdown table. */
export function table(head: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.join(' | ')} |`;
  return [line(head), line(head.map(() => '---')), ...rows.map(line)].join('\n');
}
