/**
 * Forwards the newest of a stream of values at most once per `intervalMs` (the first at
 * once; later ones wait for the interval, and a newer value replaces a waiting one).
 * For progress notes: the peer wants the latest figure, not every figure.
 */
export class LatestWins<T> {
  private pending: T | undefined;
  private has = false;
  private lastSentAt = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly intervalMs: number,
    private readonly send: (value: T) => void,
  ) {}

  push(value: T): void {
    this.pending = value;
    this.has = true;
    const wait = this.lastSentAt + this.intervalMs - Date.now();
    if (wait <= 0) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), wait);
  }

  /** Sends the waiting value now, if there is one. */
  flush(): void {
    this.clearTimer();
    if (!this.has) return;
    const value = this.pending as T;
    this.pending = undefined;
    this.has = false;
    this.lastSentAt = Date.now();
    this.send(value);
  }

  /** Drops the waiting value. */
  cancel(): void {
    this.clearTimer();
    this.pending = undefined;
    this.has = false;
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
