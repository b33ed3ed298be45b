import { readFileSync } from 'node:fs';

/** The package's name and version (dist/src/daemon/ → the package root): `baton --version`, the help's first line. */
export const { PACKAGE, VERSION } = (() => {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { name: string; version: string };
    return { PACKAGE: pkg.name, VERSION: pkg.version };
  } catch {
    return { PACKAGE: '@baton-sh/baton', VERSION: 'unknown' };
  }
})();

export const TARGET_HELP = `  --state-dir DIR   the supervisor's state dir (default: from --config, else $BATON_STATE_DIR,
                    else $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/baton/NAME or /tmp/baton-UID/NAME)
  --name NAME       service name used for the default state dir (default: baton)
  --config FILE     take stateDir/name from this config file
  --admin ADDR      talk to a TCP admin listener (tcp://HOST:PORT, see run --admin-listen)
                    instead of the Unix socket <state-dir>/admin.sock
  --token-file FILE send the token in FILE (e.g. <state-dir>/tokens/read.token; default:
                    $BATON_TOKEN); required with --admin, optional on the socket`;

export const HELP: Record<string, string> = {
  main: `baton ${VERSION} (npm package ${PACKAGE}) — hand a live service over to a new process with no dropped connection

Usage: baton <command> [options]

Commands:
  run       run a service under the supervisor (foreground, long-lived)
  upgrade   hand the service over to a freshly started process (the command is re-resolved)
  rollback  go back to the last known-good build (a handoff, or a cold start if nothing serves)
  status    supervisor, app, generation, listeners, lock holder, last handoff, health
  history   past jobs (handoffs and maintenance): outcome, phases, pids, reasons
  maintenance run TYPE | cancel ID
            run a maintenance task inside the app now (waits, live progress), or cancel one
  jobs      jobs with their task, state and progress (maintenance and handoffs)
  schedules list | get | create | replace | patch | delete | enable | disable | run
            maintenance tasks on a cron schedule, in an optional UTC window
  health    aggregated health: the app's probes and the supervisor's view
  stop      stop the app gracefully (drain, seal, exit), then the supervisor
  unit      print a systemd service unit (and --socket units) for a baton run command line

Options:
  -h, --help     help (also: baton <command> --help)
  -V, --version  print the version

Exit codes: 0 ok, 1 error; upgrade and rollback: 2 aborted (the old process serves on),
3 another handoff or a critical maintenance job holds the lease, 4 aborted and nothing
serves (the restart policy retries); rollback: 5 no earlier known-good build;
maintenance run: 2 failed, 3 skipped, 5 cancelled; health: 2 not OK; run: 4 crash loop.`,
  maintenance: `Usage: baton maintenance run TYPE [options]
       baton maintenance cancel JOB-ID [options]

run: runs the maintenance task TYPE (registered by the app) inside the serving process
now and waits for it, showing its progress. It never overlaps a handoff: while an
upgrade runs it is SKIPPED at once (exit 3). An upgrade requested while it runs waits
for it (up to the upgrade's --lease-wait, default 30 s), then cancels it, unless its
urgency is critical (then the upgrade is refused).

Options (run):
  --urgency U       low | normal | high | critical (default normal)
  --reason TEXT     why (recorded in the job and passed to the app)
  --params JSON     task parameters, a JSON object
  --json            print the job record (no progress)
${TARGET_HELP}
  -h, --help

Exit codes: 0 succeeded, 2 failed, 3 skipped (lease held, stopping, no app), 5 cancelled, 1 error.`,
  schedules: `Usage: baton schedules list [options]
       baton schedules get NAME [options]
       baton schedules create (--file F | --name N --cron EXPR --task T [--task T2 ...]) [flags]
       baton schedules replace NAME (--file F | --cron EXPR --task T ...) [flags]
       baton schedules patch NAME [--file F] [flags]
       baton schedules delete | enable | disable | run NAME [options]

A schedule runs its tasks in order (each a maintenance job, trigger "schedule") when its
cron expression fires, in UTC: "minute hour day-of-month month day-of-week" (*, a,b,
a-b, */n, a-b/n, JAN, MON; @hourly, @daily, @weekly, @monthly, @yearly). Outside its
window a fire records one SKIPPED job and runs nothing. With halt-on-failure (default),
a task that does not succeed skips the rest. A fire while the previous run still runs
is SKIPPED. Fires missed while the supervisor was down are not replayed. Schedules
persist in <state-dir>/schedules.json; "schedules": [...] in the run config file seeds
a state dir that has none yet. run: fire now (same window, halt, overlap rules) and
wait for the run.

Flags (create, replace, patch):
  --file F               a JSON schedule {"name","cron","window"?,"tasks":[{"task","params"?,
                         "urgency"?}],"haltOnFailure"?,"enabled"?}; the flags below override it
                         (patch: a JSON object with the fields to change)
  --name N               a slug: 1-63 of [a-z0-9_-]
  --cron EXPR            e.g. "30 2 * * *" (quote it)
  --window START-END     hours in UTC, end exclusive, may wrap midnight: 22-4 = 22:00-03:59
  --no-window            (patch) remove the window: any hour
  --task T               a task, repeatable, in order (patch: replaces the list)
  --urgency U            urgency of the --task tasks: low | normal | high | critical
  --halt-on-failure / --no-halt-on-failure
  --enabled / --disabled
Options:
  --json                 print the schedule (list: {"schedules": [...]}, run: {"run": ...})
${TARGET_HELP.replace(/ {2}--name NAME.*\n/, '')}
  (--name is the schedule's name here: find the supervisor with --state-dir or --config)
  -h, --help

Exit codes: 0 ok; 1 error (the supervisor's message names the field); run: 2 a task did
not succeed (FAILED or HALTED), 3 nothing ran (SKIPPED: outside the window, overlap).`,
  jobs: `Usage: baton jobs [options]

Jobs, newest first: maintenance runs (task, state, progress, result) and handoffs.

Options:
  --json            print {"jobs": [...]}
  --limit N         how many (default 20)
  --kind K          only maintenance or handoff
${TARGET_HELP}
  -h, --help`,
  health: `Usage: baton health [options]

Aggregated health: the supervisor's own checks (the app is running, GET /healthz) and
every probe the app registered (a probe that throws or takes over 10 ms is UNKNOWN),
plus the supervisor's view (generation, last handoff, lock holder, lease).

Options:
  --json            print the health report
${TARGET_HELP}
  -h, --help

Exit codes: 0 OK, 2 DEGRADED / UNKNOWN / CRITICAL, 1 error.`,
  run: `Usage: baton run [options] -- COMMAND [ARGS...]

Runs COMMAND under the supervisor: binds the listeners (or adopts systemd socket
activation), starts generation 1, restarts a crashed app with backoff, serves the
admin socket <state-dir>/admin.sock. Signals: SIGHUP upgrade, SIGUSR2 upgrade baton
itself (like baton upgrade --self), SIGTERM/SIGINT stop.

A baton run started again after the previous one was killed takes the listeners back
from the app it left serving (with python3 and Linux pidfd_getfd; see docs/cli.md) and
re-adopts that app: nothing is refused and the app is not restarted. Without that it
stops the app gracefully and starts it again (a short gap).

Options:
  --config FILE       JSON config with the same options (flags win): command, listen, dataDir,
                      stateDir, name, metrics, handoff {deadlineS, drainGraceS, helloTimeoutS,
                      readyTimeoutS, listenerSpares, listenerCopies, bakeS}, stopTimeoutS,
                      history {maxRecords, maxAgeS}, restart {maxRestarts, windowS},
                      healthIntervalS (periodic health check, logs health.changed; default 10, 0 = off)
  --listen ADDR       a listener, repeatable: [name=]tcp://HOST:PORT, tcp://[::1]:PORT,
                      [name=]unix:/path.sock[?mode=0660]
  --data-dir DIR      the app's data dir (holds the data-dir lock)
  --state-dir DIR     private state: admin socket, journal, history, audit log
  --name NAME         service name (default: baton)
  --metrics HOST:PORT serve Prometheus metrics at http://HOST:PORT/metrics
  --admin-listen HOST:PORT
                      serve the admin API on TCP too ("adminListen"); every request there
                      needs a token (<state-dir>/tokens/{read,write,admin}.token)
  -h, --help

Socket activation, for an unmodified server ("socketActivation" in --config):
  --socket-activation COMMAND gets the listeners as fds 3.. with LISTEN_FDS, LISTEN_FDNAMES
                      and LISTEN_PID (systemd's convention; it is exec'd through
                      sh -c 'LISTEN_PID=$$ exec "$0" "$@"' so LISTEN_PID is its own pid)
                      and speaks no protocol. An upgrade starts the new process on the
                      same sockets, waits until it is ready, then sends the old one
                      --stop-signal; a new process that exits or is not ready within
                      handoff.readyTimeoutS (10 s) is stopped and the old one serves on.
                      NOT given in this mode: no drain, no seal, no data-dir lock (both
                      processes serve at once for a while): for stateless servers or ones
                      that coordinate their own state. --data-dir is optional.
  --ready-after S     ready once it has been up S seconds (default 1)
  --ready-cmd CMD     and once \`sh -c CMD\` exits 0 (retried; env BATON_APP_PID)
  --ready-http PATH   and once GET PATH answers 2xx on a private listener only the new
                      process gets (the last fd, named baton-ready; the server must
                      serve every fd it is given, as gunicorn does)
  --stop-signal SIG   the server's graceful stop (default SIGTERM; nginx: SIGQUIT)
  --stop-grace S      SIGKILL the old process this long after it (default 30)
  See docs/socket-activation.md.

Exit codes: 0 stopped, 1 bad configuration or start-up failure, 4 the app crash-looped.`,
  upgrade: `Usage: baton upgrade [options]

Asks the running supervisor for a handoff to a freshly started COMMAND and waits for
the outcome. Shows a live progress line on a terminal, plain lines otherwise.

With --self, upgrades baton itself instead: the running supervisor starts the baton now
on disk with the same command line (so the configuration now on disk), hands it the
listeners, the app's stderr and its state, and exits once the new one serves. The app
is not restarted and no connection is touched. If the new supervisor fails to come up
(a bad configuration, a crash), the old one serves on (exit 2). Configuration that
cannot change live (a listener's address, a removed listener, the state or data dir)
is refused naming the key. Same as SIGUSR2 to baton run.

Options:
  --self            upgrade the supervisor (baton itself), not the app
  --json            print one JSON result object (no progress)
  --deadline S      overall deadline of the handoff in seconds
  --drain-grace S   how long the old process may take to drain its connections
  --ready-timeout S how long the new process has from taking over the data to Ready
                    (default handoff.readyTimeoutS, 10): clients wait meanwhile, so a
                    build that hangs there is aborted and the old process serves on
  --lease-wait S    a maintenance job runs: wait this long for it, then cancel it (default 30;
                    a critical job is not cancelled: the upgrade is refused, exit 3)
${TARGET_HELP}
  -h, --help

After a commit the new build bakes for handoff.bakeS (default 30 s): if it crashes or
its health goes CRITICAL within that window, baton rolls back to the last known-good
build by itself (a 'rollback' job in the history). A failed upgrade prints the last
lines the new process wrote to stderr.

Exit codes: 0 committed (--self: the new supervisor serves), 2 aborted (the old process,
or with --self the old supervisor, serves on), 3 another handoff or a job is running, 4 aborted and nothing serves (the old process could not serve again and the
cold start failed; the restart policy keeps trying: see baton status), 1 any other
error (no supervisor, bad arguments).`,
  rollback: `Usage: baton rollback [options]

Goes back to the last known-good build: the newest build that lasted its bake window,
other than the serving one. A handoff when a process serves (drain, seal, Begin, Ready,
Commit, like an upgrade), a cold start when none does. The build it leaves is marked bad
(no restart returns to it). Builds are told apart by their resolved command: deploy
each release to its own directory behind a symlink (current -> releases/v7) and the
previous release is still there to go back to; a deploy that overwrites files in place
cannot be rolled back, and baton says so.

Options:
  --reason TEXT     why (recorded in the job; default "requested by an operator")
  --json            print one JSON result object (no progress)
${TARGET_HELP}
  -h, --help

Exit codes: 0 committed, 2 aborted (the serving process serves on), 3 another handoff
is running, 4 aborted and nothing serves, 5 no earlier known-good build, 1 any other error.`,
  unit: `Usage: baton unit --name NAME [options] [run options] -- COMMAND [ARGS...]

Prints a systemd service unit that runs \`baton run [run options] -- COMMAND\`, with the
settings baton needs: Type=notify, NotifyAccess=all, KillMode=process, ExecReload=baton
upgrade (systemctl reload = a handoff), WatchdogSec, StateDirectory=NAME. With --socket,
also a .socket unit per listener (systemd holds it; baton adopts it). Nothing is
installed: redirect the output, or use --out-dir.

  baton unit --name kv --user kv --listen http=tcp://127.0.0.1:8080 -- node /srv/kv/main.js

The unit runs baton as this command does (this node, this install; --baton PATH to
use another), a bare COMMAND is resolved on $PATH now, relative paths against the
current directory (also the unit's WorkingDirectory). Defaults: --state-dir
/var/lib/NAME/supervisor, --data-dir /var/lib/NAME/data.

Options:
  --name NAME         unit name (NAME.service) and baton run --name; required
                      unless --config has "name"
  --socket            socket activation: NAME.socket (NAME-LISTENER.socket for several
                      listeners) from the --listen addresses, which need fixed ports
  --user USER         User= (default: none, root); --group GROUP: Group=
  --working-dir DIR   WorkingDirectory= (default: the current directory)
  --baton PATH        the baton executable for ExecStart/ExecReload (e.g. /usr/local/bin/baton)
  --description TEXT  Description=
  --out-dir DIR       write the units into DIR (e.g. /etc/systemd/system) instead of
                      printing them; an existing file is never replaced
  --json              print {"units": [{"file", "content"}]} ({"written": [...]} with --out-dir)
  -h, --help
Run options (passed on to baton run, see baton run --help):
  --config FILE, --listen ADDR..., --data-dir DIR, --state-dir DIR, --metrics HOST:PORT,
  --admin-listen HOST:PORT, --socket-activation, --ready-after S, --ready-cmd CMD,
  --ready-http PATH, --stop-signal SIG, --stop-grace S

Exit codes: 0 printed or written, 1 error (the message names the flag).`,
  status: `Usage: baton status [options]

Options:
  --json            print the status object
${TARGET_HELP}
  -h, --help`,
  history: `Usage: baton history [options]

Job history, newest first: handoffs and maintenance runs.

Options:
  --json            print {"jobs": [...]}
  --limit N         how many jobs (default 20)
${TARGET_HELP}
  -h, --help`,
  stop: `Usage: baton stop [options]

Stops the app gracefully (drain, seal, exit; SIGTERM then SIGKILL past the timeout),
then the supervisor. Waits until both are gone.

Options:
  --timeout S       how long the app gets to stop (default: stopTimeoutS, 30)
${TARGET_HELP}
  -h, --help`,
};
