/**
 * Every error baton raises is a BatonError with a stable, documented `code`.
 * Callers branch on `code`, never on message text.
 */
export class BatonError extends Error {
  readonly code: string;
  readonly details: Record<string, unknown> | undefined;
  constructor(code: string, message: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }
}

/** Malformed or unexpected bytes/messages on a control channel. */
export class ProtocolError extends BatonError {}

/** A data-dir lock problem (held by a live process, compromised, not acquired). */
export class LockError extends BatonError {}

/** A handoff did not commit; `code` says why (e.g. E_HANDOFF_IN_PROGRESS, E_ABORTED). */
export class HandoffError extends BatonError {}

/** Bad configuration or arguments; the message names the field. */
export class ConfigError extends BatonError {}

/** A misuse or failure of `@baton-sh/baton/http` (E_HTTP_*: E_HTTP_LISTEN, E_HTTP_NO_HANDLER, …). */
export class HttpAdapterError extends BatonError {}

/**
 * What a successor opened is not what the incumbent sealed (`verifyOpened`, code
 * E_SEAL_MISMATCH): `field` names the first value that differs (`lastRevisionPerShard.<shard>`
 * or `dataDirFingerprint`), `sealed` and `opened` are both values as text (revisions in
 * decimal, fingerprints in hex, `none` where one side has none). Also in `details`.
 */
export class SealMismatchError extends BatonError {
  declare readonly details: { field: string; sealed: string; opened: string };
  constructor(field: string, sealed: string, opened: string, message: string) {
    super('E_SEAL_MISMATCH', message, { field, sealed, opened });
  }
  get field(): string {
    return this.details.field;
  }
  get sealed(): string {
    return this.details.sealed;
  }
  get opened(): string {
    return this.details.opened;
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Any thrown value as a BatonError: its own code when it has a string one, else E_INTERNAL. */
export function asBatonError(err: unknown): BatonError {
  if (err instanceof BatonError) return err;
  const code = (err as { code?: unknown })?.code;
  return new BatonError(typeof code === 'string' ? code : 'E_INTERNAL', errorMessage(err));
}
