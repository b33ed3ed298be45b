#!/usr/bin/env -S node --max-semi-space-size=1 --v8-pool-size=1 --lite-mode --no-expose-wasm
/**
 * `baton`: run a service under the handoff supervisor and control it.
 * The shebang's V8 flags keep the long-lived supervisor small (BENCHMARKS.md, memory);
 * all can only be set at start-up (not from v8.setFlagsFromString); `env -S` is GNU/BSD env:
 * - `--max-semi-space-size=1`: 1 MiB per young-generation semi-space. The supervisor
 *   allocates little, but V8 otherwise grows them to 16 MiB × 2 over a few hundred
 *   handoffs, which was most of its RSS growth.
 * - `--v8-pool-size=1`: one V8 background thread instead of four for an ≈ 8 MiB heap:
 *   ≈ 0.6–1 MiB less RSS after 100 handoffs, fewer malloc arenas touched.
 * - `--lite-mode` (= `--jitless --optimize-for-size` + lazy feedback): bytecode only, no
 *   compiled code. The supervisor is a control plane (a few dozen frames and log lines
 *   per handoff; it never touches the service's traffic), so the interpreter costs nothing
 *   measurable in a handoff (blackout and trigger → commit unchanged within run-to-run
 *   noise, interleaved A/B), and RSS drops ≈ 6 MiB at rest and ≈ 8 MiB after 100 handoffs:
 *   the compilers' pages of the node binary are never touched and no JIT code accumulates.
 *   jitless has no WebAssembly, so nothing here may use it (e.g. global fetch, whose HTTP
 *   parser is WebAssembly); apps are spawned without these flags.
 * - `--no-expose-wasm`: says so explicitly, which silences V8's "disabling flag
 *   --expose_wasm" warning on every command.
 * Every command but `run` talks to the running supervisor over its admin socket
 * (<stateDir>/admin.sock). Exit codes: 0 ok; 1 error (bad arguments, no supervisor);
 * upgrade: 2 aborted, 3 another handoff is running; run: 4 the app crash-looped.
 */
import { runCli } from './daemon/cli.js';

runCli(process.argv.slice(2));
