/**
 * What every keep-alive load client here (http-load, kv-load, chaos's load and the
 * engine tests' load) shares: its connection loops run until stop(), and every failed
 * request is counted by kind, never retried.
 */
export abstract class LoadLoops {
  protected running = true;
  protected readonly loops: Promise<void>[] = [];
  /** Failed requests by kind: an error code (ECONNRESET, ETIMEDOUT, ...) or a client-named kind (`put_503`). */
  readonly failures: Record<string, number> = {};
  requests = 0;

  protected fail(kind: string): void {
    this.failures[kind] = (this.failures[kind] ?? 0) + 1;
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
