/**
 * What every keep-alive load client here (http-load, kv-load, chaos's load and the
 * engine tests' load) shares: its connection loops run until stop(), and every failed
 * request is counted by kind, never retried. A client that must explain each failure
 * (the chaos runner) sets `recordFailures` and gets one record per failure: when, and
 * which server process held the connection, when known.
 */

/** One failed request, as recorded with `recordFailures`. */
export interface FailureRecord {
  kind: string;
  /** Date.now() when the client saw the failure. */
  at: number;
  /** The server process that answered it (a 5xx) or last answered on its connection; undefined for a connection that never got an answer. */
  pid?: number | undefined;
  /** The request went out on a connection that had carried one before. */
  reused?: boolean | undefined;
  /** What the client was doing (`PUT /kv/c1-4`). */
  what?: string | undefined;
}

export abstract class LoadLoops {
  protected running = true;
  protected readonly loops: Promise<void>[] = [];
  /** Failed requests by kind: an error code (ECONNRESET, ETIMEDOUT, ...) or a client-named kind (`put_503`). */
  readonly failures: Record<string, number> = {};
  requests = 0;
  /** Keep a FailureRecord per failure (off by default: a bench would keep them all). */
  protected recordFailures = false;
  private failureLog: FailureRecord[] = [];

  protected fail(kind: string, detail: Omit<FailureRecord, 'kind' | 'at'> = {}): void {
    this.failures[kind] = (this.failures[kind] ?? 0) + 1;
    if (this.recordFailures) this.failureLog.push({ kind, at: Date.now(), ...detail });
  }

  /** The failure records since the last call (empty unless `recordFailures`). */
  takeFailures(): FailureRecord[] {
    return this.failureLog.splice(0);
  }

  get failureCount(): number {
    return Object.values(this.failures).reduce((a, b) => a + b, 0);
  }

  /** Lets every loop finish its request in flight, then returns. */
  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }
}
