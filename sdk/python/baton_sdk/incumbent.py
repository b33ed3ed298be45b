"""
The incumbent (PROTOCOL.md 8.2): the control socket at BATON_CONTROL_PATH, one supervisor
session at a time, handoffs, shutdown, maintenance jobs, probes and lifecycle notices.

Threads: each session's reader (messages are handled under `mu`, quickly), an ops thread
that runs the app's drain / seal / resume_after_abort one at a time, one thread per
running task, and short-lived threads for probe reports and notices.
"""
from __future__ import annotations

import collections
import json
import os
import queue
import secrets
import socket
import threading
import time
from typing import Any, Deque, Dict, Mapping, NoReturn, Optional, Tuple

from . import wire
from .api import CancelSignal, ShutdownCompleted, ShutdownRequested, StartupCompleted, TaskInfo
from .channel import Channel
from .core import Core
from .lock import LockHeld
from .tasks import ProbeRunner, Throttle, clamp_u64, parse_params, run_task

HANDOFF_STATES = ('draining', 'drained', 'sealing', 'sealed')
ABORTED_REMEMBERED = 16  # handoff ids aborted on our own, for E_ABORTED (PROTOCOL.md 7.5)
RELOCK_ATTEMPT_S = 5.0  # re-taking the lock on resume: log and retry this often while a live successor holds it
MAX_ERROR_CHARS = 4096
Op = Tuple[Any, ...]


class Job:
    """A maintenance task in flight (JobStart -> JobDone)."""

    def __init__(self, inc: 'Incumbent', chan: Channel, info: TaskInfo) -> None:
        self.chan = chan
        self.info = info
        self.signal = CancelSignal()
        self.started = time.monotonic()
        self.abandoned = False  # its session was lost: nothing about it is sent any more
        self.progress: Throttle[Dict[str, Any]] = Throttle(lambda p: inc.send_progress(self, p))


class Incumbent:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.mu = threading.RLock()
        self.state = 'serving'
        self.current_handoff = ''
        self.aborted_handoffs: Deque[str] = collections.deque(maxlen=ABORTED_REMEMBERED)
        self.session: Optional[Channel] = None
        self.control_srv: Optional[socket.socket] = None
        self.ops: 'queue.Queue[Op]' = queue.Queue()
        self.job: Optional[Job] = None
        self.probe_runner = ProbeRunner()

    def start(self) -> None:
        threading.Thread(target=self._ops_loop, name='baton-ops', daemon=True).start()
        self._bind_control_path()

    # ---------------------------------------------------------------- the control socket

    def _bind_control_path(self) -> None:
        """Atomically (PROTOCOL.md 2): a temporary name in the same 0700 dir, 0600, renamed over the path."""
        path = self.core.control_path
        d = os.path.dirname(path) or '.'
        os.makedirs(d, mode=0o700, exist_ok=True)
        tmp = os.path.join(d, f'.ctl-{os.getpid()}-{secrets.token_hex(3)}')
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(tmp)
        os.chmod(tmp, 0o600)
        srv.listen(8)
        os.rename(tmp, path)  # the path names a live incumbent or a stale socket, never nothing
        self.core.log.info('incumbent: control socket bound at %s', path)
        self.control_srv = srv
        threading.Thread(target=self._control_accept, args=(srv,), name='baton-control-accept', daemon=True).start()

    def _close_control_socket(self) -> None:
        """On Commit, before Committed: no further supervisor connections (never unlink the path)."""
        srv, self.control_srv = self.control_srv, None
        if srv is not None:
            try:
                srv.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in another thread
            except OSError:
                pass
            srv.close()

    def _control_accept(self, srv: socket.socket) -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return  # closed after Commit
            with self.mu:
                busy = self.session is not None and not self.session.peer_gone()
                if not busy:
                    chan = self.core.channel(c, 'incumbent', self._on_message, self._on_lost,
                                             aborted=lambda h: h in self.aborted_handoffs)
                    chan.phase = self.state
                    self.session = chan
            if busy:
                try:
                    c.sendall(wire.encode_frame({'type': 'Error', 'code': 'E_BUSY', 'message': 'the incumbent already has a supervisor connection'}))
                    c.close()
                except OSError:
                    pass
                continue
            self.core.faults.at('incumbent.on_hello')
            chan.start('incumbent')

    def _set_state(self, s: str) -> None:
        self.state = s
        if self.session is not None:
            self.session.phase = s

    # ---------------------------------------------------------------- messages

    def _on_message(self, chan: Channel, msg: wire.Message) -> None:
        t = msg['type']
        with self.mu:
            if chan is not self.session or t == 'HelloAck':
                return
            st = self.state
            if t == 'ProbeRequest' and st in ('serving', 'job_running'):
                threading.Thread(target=self._answer_probes, args=(chan, msg['requestId']), name='baton-probes', daemon=True).start()
                return
            if st == 'job_running':
                if t == 'JobCancel':
                    if self.job is not None and self.job.info.job_id == msg['jobId']:
                        self.core.log.info('cancelling task %s: %s', self.job.info.task, msg['reason'])
                        self.job.signal.cancel(msg['reason'])
                    return
            elif self._on_message_locked(chan, msg, st):
                return
        why = f'{t} in state {st}'
        chan.reject(why)  # the 'lost' report that follows decides

    def _on_message_locked(self, chan: Channel, msg: wire.Message, st: str) -> bool:
        """Handles msg in state st (not job_running); False if it is unexpected there."""
        t = msg['type']
        if st == 'serving':
            if t == 'PrepareHandoff':
                self.core.faults.at('incumbent.on_prepare')
                self.current_handoff = msg['handoffId']
                self._set_state('draining')
                deadline = time.monotonic() + min(msg['drainGraceMs'] / 1000, max(0.0, msg['deadlineMs'] / 1000 - time.time()))
                self.ops.put(('drain', chan, deadline))
            elif t == 'JobStart':
                self._start_job(chan, msg)
            elif t == 'StartupCompleted':
                event = StartupCompleted(msg['durationMs'], list(msg['components']))
                threading.Thread(target=self.core.emit, args=('startup-completed', event), daemon=True).start()
            elif t == 'Shutdown':
                self._set_state('stopping')
                self.ops.put(('shutdown', msg['reason'], msg['timeoutMs']))
            elif t == 'ResumeAfterAbort':
                chan.send_handoff('Resumed')  # already serving (e.g. after DrainFailed)
            elif t == 'Commit' and msg['handoffId'] in self.aborted_handoffs:
                chan.reject(f'handoff {msg["handoffId"]} was aborted by the incumbent; it serves on', 'E_ABORTED')
            elif t != 'JobCancel':  # a JobCancel that crossed its JobDone has nothing to stop
                return False
            return True
        if t == 'SealRequest' and st == 'drained':
            self.core.faults.at('incumbent.on_seal_request')
            self._set_state('sealing')
            self.ops.put(('seal', chan))
            return True
        if t == 'Commit' and st == 'sealed' and msg['handoffId'] == self.current_handoff:
            self.core.faults.at('incumbent.on_commit')
            self._close_control_socket()  # before Committed: PROTOCOL.md 2, "Incumbent channel"
            chan.send_handoff('Committed')  # the point of no return
            self._set_state('committed')
            self.core.faults.at('incumbent.after_committed')
            threading.Thread(target=self.core.exit, args=(0, f'handoff {msg["handoffId"]} committed'), daemon=True).start()
            return True
        if t == 'Commit' and msg['handoffId'] in self.aborted_handoffs:
            chan.reject(f'handoff {msg["handoffId"]} was aborted by the incumbent', 'E_ABORTED')
            return True
        if t == 'ResumeAfterAbort' and st in HANDOFF_STATES + ('resuming',):
            if st != 'resuming':
                self.aborted_handoffs.append(self.current_handoff)
                self._set_state('resuming')
            self.ops.put(('resume', chan))
            return True
        return False

    def _on_lost(self, chan: Channel, why: str) -> None:
        with self.mu:
            if chan is not self.session:
                return
            self.session = None
            if self.state == 'job_running':
                self._abandon_job(f'supervisor connection lost: {why}')
                self._set_state('serving')
            elif self.state in HANDOFF_STATES:
                # PROTOCOL.md 7.5: self-abort before Committed; never after.
                self.core.log.warning('incumbent: supervisor lost mid-handoff (%s); resuming on our own', why)
                self.aborted_handoffs.append(self.current_handoff)
                self._set_state('resuming')
                self.ops.put(('resume', None))

    # ---------------------------------------------------------------- jobs and probes

    def _start_job(self, chan: Channel, msg: wire.Message) -> None:
        if self.job is not None:
            # A task whose session was lost (and which ignores its cancellation) still runs.
            chan.send({'type': 'JobDone', 'jobId': msg['jobId'], 'outcome': 'failed', 'durationMs': 0, 'result': 'null',
                       'error': f'task {self.job.info.task} (job {self.job.info.job_id}) is still running in the app after its cancellation'})
            return
        params = parse_params(msg['params'])
        info = TaskInfo(msg['jobId'], msg['task'], params or {}, msg['urgency'], msg['reason'])
        job = self.job = Job(self, chan, info)
        self._set_state('job_running')
        self.core.log.info('running task %s (job %s)', info.task, info.job_id)
        threading.Thread(target=self._run_job, args=(job, params is None, msg['params']), name=f'baton-task-{info.task}', daemon=True).start()

    def _run_job(self, job: Job, bad_params: bool, params_text: str) -> None:
        def progress(done: object, total: object, counters: Optional[Mapping[str, object]] = None) -> None:
            job.progress.push({'done': clamp_u64(done), 'total': clamp_u64(total),
                               'counters': {str(k): clamp_u64(v) for k, v in (counters or {}).items()}})

        error: Optional[str] = f'JobStart.params: expected JSON text of an object (got {params_text[:80]!r})'
        outcome, result = 'failed', 'null'
        if not bad_params:
            outcome, result, error = run_task(self.core.tasks, job.info, progress, job.signal)
        with self.mu:
            current = self.job is job
            if current:
                job.progress.flush()
                self.job = None
            self.core.log.info('task %s %s%s', job.info.task, outcome, f': {error}' if error else '')
            if current and not job.abandoned and self.state == 'job_running':
                self._set_state('serving')
                done: wire.Message = {'type': 'JobDone', 'jobId': job.info.job_id, 'outcome': outcome,
                                      'durationMs': int((time.monotonic() - job.started) * 1000), 'result': result}
                if error is not None:
                    done['error'] = error[:MAX_ERROR_CHARS]
                job.chan.send(done)

    def send_progress(self, job: Job, p: Dict[str, Any]) -> None:
        if not job.abandoned:
            job.chan.send({'type': 'JobProgress', 'jobId': job.info.job_id, **p})

    def _abandon_job(self, why: str) -> None:
        """The job's session is gone: cancel the task (a handoff may want the connection)."""
        job = self.job
        if job is None:
            return
        job.abandoned = True
        job.progress.cancel()
        self.core.log.warning('cancelling task %s: %s', job.info.task, why)
        job.signal.cancel(why)

    def _answer_probes(self, chan: Channel, request_id: str) -> None:
        probes = self.probe_runner.run(dict(self.core.probes))
        chan.send({'type': 'ProbeReport', 'requestId': request_id, 'probes': wire_json(probes)})

    # ---------------------------------------------------------------- the app's side (ops thread)

    def _ops_loop(self) -> None:
        while True:
            op = self.ops.get()
            try:
                getattr(self, '_op_' + op[0])(*op[1:])
            except Exception:  # noqa: BLE001
                self.core.log.exception('%s crashed', op[0])
                self.core.exit(1, f'{op[0]} crashed')

    def _op_drain(self, chan: Channel, deadline: float) -> None:
        with self.mu:
            if self.state != 'draining':
                return
        d = self.core.drainable
        try:
            self.core.log.debug('draining; state %s', d.snapshot_state())
        except Exception:  # noqa: BLE001
            pass
        try:
            self.core.faults.at('incumbent.mid_drain')
            r = d.drain(deadline)
            drained: wire.Message = {'type': 'Drained', 'handoffId': self.current_handoff,
                                     'openConnsRemaining': r.open_conns_remaining, 'acceptClosed': r.accept_closed}
            wire.encode_body(drained)  # a malformed result is a failed drain
        except Exception as e:  # noqa: BLE001
            self.core.log.error('drain failed: %s; resuming', e)
            self._resume_app(chan)
            with self.mu:
                if self.state == 'draining':
                    self.aborted_handoffs.append(self.current_handoff)
                    self._set_state('serving')
                    chan.send_handoff('DrainFailed', error=str(e) or type(e).__name__)
            return
        with self.mu:
            if self.state == 'draining':
                self._set_state('drained')
                chan.send(drained)
                self.core.faults.at('incumbent.after_drained')

    def _op_seal(self, chan: Channel) -> None:
        with self.mu:
            if self.state != 'sealing':
                return
            progress: Throttle[Tuple[int, int]] = Throttle(lambda p: self._send_seal_progress(chan, p))
        try:
            self.core.faults.at('incumbent.mid_seal')
            r = self.core.drainable.seal(lambda done, total: progress.push((clamp_u64(done), clamp_u64(total))))
            complete: wire.Message = {'type': 'SealComplete', 'handoffId': self.current_handoff,
                                      'lastRevisionPerShard': r.last_revision_per_shard, 'dataDirFingerprint': r.data_dir_fingerprint}
            wire.encode_body(complete)  # a malformed result is a failed seal (the lock stays ours)
        except Exception as e:  # noqa: BLE001
            progress.cancel()
            self.core.log.error('seal failed: %s; resuming', e)
            partial = getattr(e, 'partial_state', None)
            self._resume_app(chan)
            with self.mu:
                if self.state == 'sealing':
                    self.aborted_handoffs.append(self.current_handoff)
                    self._set_state('serving')
                    chan.send_handoff('SealFailed', error=str(e) or type(e).__name__, partialState=partial if isinstance(partial, dict) else {})
            return
        progress.cancel()
        with self.mu:
            if self.state != 'sealing':
                return  # aborted meanwhile: the resume that follows re-opens the data
            self.core.faults.at('incumbent.after_seal_before_release')
            self.core.lock.release()  # after a successful seal, immediately before SealComplete
            self.core.faults.at('incumbent.after_lock_release')
            self._set_state('sealed')
            chan.send(complete)
            self.core.faults.at('incumbent.after_seal_complete')

    def _send_seal_progress(self, chan: Channel, p: Tuple[int, int]) -> None:
        if self.state == 'sealing':
            chan.send_handoff('SealProgress', done=min(p[0], wire.U32_MAX), total=min(p[1], wire.U32_MAX))

    def _op_resume(self, chan: Optional[Channel]) -> None:
        with self.mu:
            if self.state != 'resuming':
                if self.state == 'serving' and chan is not None:
                    chan.send_handoff('Resumed')
                return
        self.core.faults.at('incumbent.on_resume')
        while not self.core.lock.held:
            # A live successor may still hold it: it releases it when it exits.
            try:
                self.core.lock.acquire(self.current_handoff, wait_s=RELOCK_ATTEMPT_S)
            except LockHeld as e:
                self.core.log.warning('waiting to re-take the data-dir lock: %s', e)
        self.core.faults.at('incumbent.after_relock')
        self._resume_app(chan)
        with self.mu:
            self._set_state('serving')
            self.core.log.info('incumbent: resumed')
            if chan is not None:
                chan.send_handoff('Resumed')

    def _resume_app(self, chan: Optional[Channel]) -> None:
        try:
            self.core.drainable.resume_after_abort()
        except Exception as e:  # noqa: BLE001
            self._cannot_resume(chan, e)

    def _cannot_resume(self, chan: Optional[Channel], e: Exception) -> NoReturn:
        """A process that holds the lock and does not serve must not last (PROTOCOL.md 7.4): say why, exit."""
        reason = f'the app cannot serve again after the abort: {e}'
        self.core.log.critical('%s; exiting', reason)
        if chan is not None:
            chan.reject(reason, 'E_RESUME_FAILED')
        self.core.exit(70, reason)

    def _op_shutdown(self, reason: Any, timeout_ms: int) -> None:
        started = time.monotonic()
        self.core.emit('shutdown-requested', ShutdownRequested(reason, timeout_ms))
        with self.mu:
            if self.job is not None:
                self.job.signal.cancel(f'shutdown requested ({reason})')
        try:
            self.core.drainable.drain(time.monotonic() + timeout_ms / 2000)
            self.core.drainable.seal(lambda done, total: None)
            if self.core.lock.held:
                self.core.lock.release()
        except Exception as e:  # noqa: BLE001
            self.core.log.error('shutdown (%s) failed: %s', reason, e)
            self.core.exit(1, f'shutdown ({reason}) failed: {e}')
        self.core.emit('shutdown-completed', ShutdownCompleted(reason, int((time.monotonic() - started) * 1000)))
        self._close_control_socket()
        self.core.exit(0, f'shutdown ({reason})')


def wire_json(v: Any) -> str:
    text = json.dumps(v, ensure_ascii=False)
    if len(text) > 512 * 1024:
        text = json.dumps([{'name': 'app', 'status': 'UNKNOWN', 'message': f'probe report too large ({len(text)} bytes)', 'ms': 0}])
    return text
