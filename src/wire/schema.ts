/**
 * The control-protocol message schema: the ONE definition of every message.
 *
 * The TypeScript types (below, `Message`, `MessageOf<T>`) and the runtime
 * validators (src/messages.ts) are both derived from `SCHEMA`; protocol/schema.json
 * is generated from it for other languages (`npm run gen:protocol`, checked in CI).
 *
 * Field kinds and their msgpack encoding:
 *   u32     non-negative integer < 2^32, smallest msgpack int encoding; TS `number`
 *   u64     non-negative integer < 2^64, ALWAYS encoded as msgpack uint64 (0xcf);
 *           decoders accept any msgpack int encoding; TS `bigint`
 *   str     UTF-8 string
 *   bool    msgpack true/false
 *   bin     msgpack bin (any length); TS `Uint8Array`
 *   bin32   msgpack bin of exactly 32 bytes (SHA-256 fingerprints); TS `Uint8Array`
 *   revmap  map of shard name (str) to revision (u64); TS `Record<string, bigint>`
 *   strlist array of str; TS `string[]`
 *   enum    one of the listed strings
 */

export const PROTOCOL_VERSION = 1;
export const PROTO_MIN = 1;
export const PROTO_MAX = 1;
/** Maximum value of the frame length field (bytes after the length prefix). */
export const MAX_FRAME_LENGTH = 1_048_576;

export type ScalarKind = 'u32' | 'u64' | 'str' | 'bool' | 'bin' | 'bin32' | 'revmap' | 'strlist';
export interface FieldSpec {
  readonly kind: ScalarKind | 'enum';
  readonly values?: readonly string[];
  readonly optional?: boolean;
  readonly doc: string;
}
export interface MessageSpec {
  /** Who sends it: S = supervisor, I = incumbent, N = successor (new), A = any. */
  readonly from: readonly ('S' | 'I' | 'N' | 'A')[];
  readonly doc: string;
  readonly fields: Readonly<Record<string, FieldSpec>>;
}

const handoffId = { kind: 'str', doc: 'Handoff id assigned by the supervisor in HelloAck' } as const;
const jobId = { kind: 'str', doc: 'Job id assigned by the supervisor (one job per control connection)' } as const;

export const SCHEMA = {
  Hello: {
    from: ['I', 'N'],
    doc: 'First frame an app peer sends on a new control connection. The supervisor answers HelloAck or Error.',
    fields: {
      role: { kind: 'enum', values: ['supervisor', 'incumbent', 'successor'], doc: 'Role of the sender: successor on the successor channel, incumbent on the incumbent channel. "supervisor" is reserved (no peer sends it; S answers it with E_WRONG_ROLE)' },
      pid: { kind: 'u32', doc: 'Process id of the sender' },
      buildId: { kind: 'bin', doc: 'Opaque build identifier of the sender (e.g. a git sha)' },
      protoMin: { kind: 'u32', doc: 'Lowest protocol version the sender speaks' },
      protoMax: { kind: 'u32', doc: 'Highest protocol version the sender speaks' },
      features: {
        kind: 'strlist',
        optional: true,
        doc: 'What the app implements beyond handoffs: "jobs" (JobStart/JobCancel), "probes" (ProbeRequest), "lifecycle" (StartupCompleted). Absent: none; the supervisor sends those messages (and opens sessions for them) only to an app that lists them. An app SHOULD send the same list on both channels',
      },
    },
  },
  HelloAck: {
    from: ['S'],
    doc: 'Supervisor accepts the Hello; fixes the protocol version and the handoff id for this connection.',
    fields: {
      handoffId,
      protoVersion: { kind: 'u32', doc: 'Negotiated version: highest version both peers speak' },
    },
  },
  PrepareHandoff: {
    from: ['S'],
    doc: 'Supervisor asks the incumbent to drain: stop accepting, finish in-flight work.',
    fields: {
      handoffId,
      successorPid: { kind: 'u32', doc: 'Pid of the successor already started' },
      deadlineMs: { kind: 'u64', doc: 'Overall handoff deadline, Unix epoch milliseconds' },
      drainGraceMs: { kind: 'u32', doc: 'How long drain may take, milliseconds' },
    },
  },
  Drained: {
    from: ['I'],
    doc: 'Incumbent finished draining.',
    fields: {
      handoffId,
      openConnsRemaining: { kind: 'u32', doc: 'Connections still open when drain returned (the incumbent closes them when it exits after Commit; S reports the number)' },
      acceptClosed: { kind: 'bool', doc: 'True when the incumbent no longer accepts. MUST be true: S aborts on false (a sealed process must take no request)' },
    },
  },
  DrainFailed: {
    from: ['I'],
    doc: 'Drain threw; the incumbent has already resumed serving. The supervisor aborts.',
    fields: { handoffId, error: { kind: 'str', doc: 'What went wrong' } },
  },
  SealRequest: {
    from: ['S'],
    doc: 'Supervisor asks the drained incumbent to seal its data and release the data-dir lock.',
    fields: { handoffId },
  },
  SealProgress: {
    from: ['I'],
    doc: 'Optional progress during a long seal.',
    fields: {
      handoffId,
      done: { kind: 'u32', doc: 'Units sealed so far' },
      total: { kind: 'u32', doc: 'Units to seal in all' },
    },
  },
  SealComplete: {
    from: ['I'],
    doc: 'Seal succeeded and the incumbent has RELEASED the data-dir lock (sent after the release).',
    fields: {
      handoffId,
      lastRevisionPerShard: { kind: 'revmap', doc: 'Last durable revision of each shard' },
      dataDirFingerprint: { kind: 'bin32', doc: 'SHA-256 over the sealed shard heads' },
    },
  },
  SealFailed: {
    from: ['I'],
    doc: 'Seal failed; the incumbent still holds the lock and has resumed. The supervisor aborts.',
    fields: {
      handoffId,
      error: { kind: 'str', doc: 'What went wrong' },
      partialState: { kind: 'revmap', doc: 'Shards sealed before the failure, with revisions' },
    },
  },
  Begin: {
    from: ['S'],
    doc: 'Supervisor tells the successor to take the data-dir lock and open the data.',
    fields: {
      handoffId,
      sealedRevisionPerShard: { kind: 'revmap', doc: 'Revisions from SealComplete (empty on cold start)' },
      sealedFingerprint: { kind: 'bin', doc: 'dataDirFingerprint from SealComplete (empty on cold start)' },
      incumbentPid: { kind: 'u32', doc: 'Pid of the incumbent (0 on cold start)' },
    },
  },
  Ready: {
    from: ['N'],
    doc: 'Successor holds the lock, has opened the data and is serving.',
    fields: {
      handoffId,
      listeningOn: { kind: 'strlist', doc: 'Listener names the successor serves' },
      healthzOk: { kind: 'bool', doc: 'Result of the successor self health check' },
      advertisedRevisionPerShard: { kind: 'revmap', doc: 'Revisions the successor sees in the data' },
      buildId: { kind: 'bin', doc: 'Build identifier of the successor' },
    },
  },
  Commit: {
    from: ['S'],
    doc: 'Handoff committed. To the incumbent first, once S has checked that the successor is alive (it answers Committed, then exits), then to the successor.',
    fields: { handoffId },
  },
  Committed: {
    from: ['I', 'N'],
    doc: 'Acknowledges Commit. From the incumbent it is the point of no return; the handoff is committed only with the successor\'s.',
    fields: { handoffId },
  },
  Abort: {
    from: ['S'],
    doc: 'Supervisor abandons the handoff. A successor that receives it exits without serving.',
    fields: { handoffId, reason: { kind: 'str', doc: 'Why the handoff was aborted' } },
  },
  ResumeAfterAbort: {
    from: ['S'],
    doc: 'Supervisor tells the incumbent to re-take the lock (if released) and serve again.',
    fields: { handoffId },
  },
  Resumed: {
    from: ['I'],
    doc: 'Incumbent serves again after an abort (also sent when it resumed on its own).',
    fields: { handoffId },
  },
  Heartbeat: {
    from: ['A'],
    doc: 'Liveness, every 2 s in each direction from HelloAck for as long as the connection is open. Any frame resets the 10 s receive timeout.',
    fields: {
      tsMs: { kind: 'u64', doc: 'Sender wall clock, Unix epoch milliseconds' },
      phase: { kind: 'str', doc: 'Sender phase, e.g. "draining", "sealing"' },
    },
  },
  Shutdown: {
    from: ['S'],
    doc: 'Graceful stop: drain, seal, release the lock, exit within timeoutMs.',
    fields: {
      reason: { kind: 'str', doc: 'Who asked (7.7): graceful | signal | admin | error' },
      timeoutMs: { kind: 'u32', doc: 'Time allowed before the supervisor kills the process' },
    },
  },
  JobStart: {
    from: ['S'],
    doc: 'Supervisor asks the attached incumbent (ATTACHED, on a connection of its own) to run a maintenance task. The incumbent answers JobProgress* then JobDone; heartbeats go on meanwhile.',
    fields: {
      jobId,
      task: { kind: 'str', doc: 'Task type the app registered (e.g. "compaction")' },
      urgency: { kind: 'enum', values: ['low', 'normal', 'high', 'critical'], doc: 'How urgent the request is (advisory for the app; the supervisor uses it for the lease policy)' },
      reason: { kind: 'str', doc: 'Why the job runs (free text, for the app and its logs)' },
      params: { kind: 'str', doc: 'Task parameters: JSON text of an object ("{}" when none)' },
    },
  },
  JobProgress: {
    from: ['I'],
    doc: 'Progress snapshot of the running job (the newest one replaces the previous; sent at most every 200 ms).',
    fields: {
      jobId,
      done: { kind: 'u64', doc: 'Units done so far' },
      total: { kind: 'u64', doc: 'Units to do in all (0: unknown)' },
      counters: { kind: 'revmap', doc: 'Task-specific counters, name to u64 (e.g. bytesReclaimed); same encoding as a revmap' },
    },
  },
  JobDone: {
    from: ['I'],
    doc: 'The job ended. The incumbent is ATTACHED again; the supervisor closes the connection.',
    fields: {
      jobId,
      outcome: { kind: 'enum', values: ['succeeded', 'failed', 'cancelled'], doc: 'How the task ended (cancelled: it stopped after JobCancel)' },
      durationMs: { kind: 'u64', doc: 'Time the task ran in the app, milliseconds' },
      result: { kind: 'str', doc: 'The task\'s result summary: JSON text ("null" when none)' },
      error: { kind: 'str', optional: true, doc: 'Why it failed or how it was cancelled' },
    },
  },
  JobCancel: {
    from: ['S'],
    doc: 'Supervisor asks the incumbent to stop the running job (the task sees its abort signal). Answered by JobDone; ignored when that job is already done.',
    fields: { jobId, reason: { kind: 'str', doc: 'Why the job is cancelled' } },
  },
  ProbeRequest: {
    from: ['S'],
    doc: 'Supervisor asks the attached incumbent for its health probes (also allowed while a job runs).',
    fields: { requestId: { kind: 'str', doc: 'Echoed in ProbeReport' } },
  },
  ProbeReport: {
    from: ['I'],
    doc: 'Answer to ProbeRequest.',
    fields: {
      requestId: { kind: 'str', doc: 'requestId of the ProbeRequest' },
      probes: {
        kind: 'str',
        doc: 'JSON text of an array of {name, status: OK|DEGRADED|CRITICAL|UNKNOWN, message, details?, ms}; a probe that threw or answered after 10 ms is UNKNOWN with the reason',
      },
    },
  },
  StartupCompleted: {
    from: ['S'],
    doc: 'Lifecycle notice to the attached incumbent: the node finished starting (supervisor, listeners, app, admin). No answer.',
    fields: {
      durationMs: { kind: 'u64', doc: 'Supervisor start to serving, milliseconds' },
      components: { kind: 'strlist', doc: 'What was started, in order' },
    },
  },
  Error: {
    from: ['A'],
    doc: 'The sender rejects the last frame or the connection; the sender closes after it.',
    fields: {
      code: { kind: 'str', doc: 'Stable error code, e.g. E_UNEXPECTED_MESSAGE' },
      message: { kind: 'str', doc: 'Human-readable explanation' },
    },
  },
} as const satisfies Record<string, MessageSpec>;

export type MessageType = keyof typeof SCHEMA;
export const MESSAGE_TYPES = Object.keys(SCHEMA) as MessageType[];

type KindToTs<F> = F extends { kind: 'u32' }
  ? number
  : F extends { kind: 'u64' }
    ? bigint
    : F extends { kind: 'str' }
      ? string
      : F extends { kind: 'bool' }
        ? boolean
        : F extends { kind: 'bin' | 'bin32' }
          ? Uint8Array
          : F extends { kind: 'revmap' }
            ? Record<string, bigint>
            : F extends { kind: 'strlist' }
              ? string[]
              : F extends { kind: 'enum'; values: readonly (infer V)[] }
                ? V
                : never;

type Fields<T extends MessageType> = (typeof SCHEMA)[T]['fields'];
type RequiredKeys<F> = { [K in keyof F]: F[K] extends { optional: true } ? never : K }[keyof F];
type OptionalKeys<F> = { [K in keyof F]: F[K] extends { optional: true } ? K : never }[keyof F];

/** The TS shape of one message, derived from SCHEMA. */
type MessageShape<T extends MessageType> = { type: T } & {
  -readonly [K in RequiredKeys<Fields<T>>]: KindToTs<Fields<T>[K]>;
} & { -readonly [K in OptionalKeys<Fields<T>>]?: KindToTs<Fields<T>[K]> };

/** Any control-protocol message. */
export type Message = { [T in MessageType]: MessageShape<T> }[MessageType];

/** The message(s) with type T; distributes over unions ('Drained' | 'DrainFailed'). */
export type MessageOf<T extends MessageType> = Extract<Message, { type: T }>;

/** Revisions per shard, as carried by SealComplete/Begin/Ready. */
export type RevisionMap = Record<string, bigint>;
