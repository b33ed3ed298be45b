import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * pino JSON logger. Every record carries `event` (a stable name such as
 * `handoff.phase`) so logs can be filtered by machine; `msg` is for people.
 * Level from BATON_LOG_LEVEL (default `info`); writes to stderr so stdout stays
 * free for command output.
 */
export function createLogger(name: string, bindings: Record<string, unknown> = {}): Logger {
  return pino(
    { name, level: process.env.BATON_LOG_LEVEL ?? 'info', base: { pid: process.pid, ...bindings } },
    pino.destination({ fd: 2, sync: true }),
  );
}
