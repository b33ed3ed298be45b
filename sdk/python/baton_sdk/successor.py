"""
The successor (PROTOCOL.md 8.3), also on a cold start: Hello on the inherited socketpair,
Begin -> the data-dir lock -> the app opens its data (BatonApp.begin returns) -> Ready
(BatonApp.ready) -> Commit -> Committed, then it becomes the incumbent.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Callable, NoReturn, Optional

from . import wire
from .api import BatonError, BeginInfo, Readiness, Role
from .channel import Channel
from .core import Core
from .incumbent import Incumbent
from .lock import LockHeld, is_alive

LOCK_WAIT_S = 7.0  # Begin -> lock acquired (PROTOCOL.md 9: longer than an ownerless lock dir takes to be abandoned, 6 s)
INCUMBENT_EXIT_WAIT_S = 3.0  # after losing S post-Ready: how long to wait for the incumbent to be gone
ABORT_DRAIN_S = 2.0  # an aborted successor that was sent Begin may serve: it drains this long at most (7.4)
ABORT_DRAIN_SLACK_S = 0.2  # a drain that overruns its deadline is not waited for past this


class Successor:
    def __init__(self, core: Core, role: Role, control_fd: int) -> None:
        self.core = core
        self.role = role
        self.control_fd = control_fd
        self.mu = threading.RLock()
        self.state = 'starting'
        self.chan: Optional[Channel] = None
        self.incumbent_pid = 0
        self.ready_healthy = False
        self.begin_info: Optional[BeginInfo] = None
        self.begun = threading.Event()
        self.committed = threading.Event()
        self.locker: Optional[threading.Thread] = None

    def _set_state(self, s: str) -> None:
        self.state = s
        if self.chan is not None:
            self.chan.phase = s

    def start(self) -> None:
        """Says Hello on the inherited socketpair (the supervisor's Hello timeout runs from the spawn)."""
        self.core.faults.at('successor.before_hello')
        chan = self.chan = self.core.channel(socket.socket(fileno=self.control_fd), 'successor', self._on_message, self._on_lost)
        self._set_state('hello')
        chan.start('successor')
        self.core.faults.at('successor.after_hello')

    # ---------------------------------------------------------------- the app's calls (main thread)

    def wait_begin(self) -> BeginInfo:
        self.begun.wait()
        assert self.begin_info is not None
        return self.begin_info

    def ready(self, readiness: Callable[[], Readiness]) -> None:
        """Sends Ready (what readiness() says) and returns once this process is the committed incumbent."""
        if self.begin_info is None:
            raise BatonError('E_NOT_BEGUN', 'ready() before begin() returned')
        try:
            r = readiness()
            msg: wire.Message = {'type': 'Ready', 'handoffId': self.begin_info.handoff_id, 'listeningOn': list(r.listening_on),
                                 'healthzOk': r.healthz_ok, 'advertisedRevisionPerShard': r.advertised_revision_per_shard,
                                 'buildId': self.core.build_id}
            wire.encode_body(msg)
        except Exception as e:  # noqa: BLE001
            self.fail(e)
        self.core.faults.at('successor.before_ready')
        with self.mu:
            if self.state == 'opening':
                self._set_state('ready_sent')
                self.ready_healthy = r.healthz_ok
                assert self.chan is not None
                self.chan.send(msg)
        self.core.faults.at('successor.after_ready')
        self.committed.wait()  # an abort ends the process instead

    def fail(self, error: BaseException, code: str = 'E_OPEN_FAILED') -> NoReturn:
        """The app cannot open its data: tell the supervisor, stop serving cleanly, exit 1."""
        message = str(error) or type(error).__name__
        self.core.log.error('open failed: %s', message)
        if self.chan is not None:
            self.chan.send({'type': 'Error', 'code': getattr(error, 'code', None) or code, 'message': message})
        self.abort(f'open failed: {message}', 1)

    # ---------------------------------------------------------------- the supervisor's messages (reader thread)

    def _on_message(self, chan: Channel, msg: wire.Message) -> None:
        t = msg['type']
        with self.mu:
            st = self.state
            if t == 'HelloAck' and st == 'hello':
                self._set_state('wait_begin')
                return
            if t == 'Begin' and st == 'wait_begin':
                self.core.faults.at('successor.on_begin')
                self.incumbent_pid = msg['incumbentPid']
                self._set_state('locking')
                self.locker = threading.Thread(target=self._take_lock, args=(msg,), name='baton-begin', daemon=True)
                self.locker.start()
                return
            if t == 'Commit' and st == 'ready_sent':
                self.core.faults.at('successor.on_commit')
                chan.send_handoff('Committed')
                self._set_state('committed')
                self.core.faults.at('successor.after_committed')
                self._become_incumbent()
                return
            aborting = t == 'Abort' and st in ('wait_begin', 'locking', 'opening', 'ready_sent')
        if aborting:
            self.core.faults.at('successor.on_abort')
            self.core.log.info('Abort: %s', msg['reason'])
            self.abort(msg['reason'], 0)
        why = f'{t} in state {st}'
        chan.reject(why)  # the 'lost' report that follows decides

    def _take_lock(self, begin: wire.Message) -> None:
        try:
            self.core.lock.acquire(begin['handoffId'], wait_s=LOCK_WAIT_S, cancelled=lambda: self.state != 'locking')
        except Exception as e:  # noqa: BLE001 - lock held, or the data dir is unusable
            if self.state == 'locking':
                self.fail(e, 'E_LOCK_HELD' if isinstance(e, LockHeld) else 'E_OPEN_FAILED')
            return
        with self.mu:
            if self.state != 'locking':
                return  # aborted meanwhile: the abort releases the lock
            self.core.faults.at('successor.after_lock')
            self.begin_info = BeginInfo(self.role, begin['handoffId'], dict(begin['sealedRevisionPerShard']),
                                        begin['sealedFingerprint'], begin['incumbentPid'])
            self._set_state('opening')
            self.begun.set()

    def _on_lost(self, chan: Channel, why: str) -> None:
        with self.mu:
            st = self.state
        if st in ('committed', 'aborted'):
            return  # after Committed the successor channel is done: this is not "losing S" (7.3)
        # Only after a healthy Ready (data opened and verified) may a successor commit on its own (7.5).
        if st == 'ready_sent' and self.core.lock.held and self.ready_healthy:
            end = time.monotonic() + INCUMBENT_EXIT_WAIT_S
            pid = self.incumbent_pid
            while pid and is_alive(pid) and time.monotonic() < end:
                time.sleep(0.05)
            if not pid or not is_alive(pid):
                self.core.log.warning('supervisor lost after Ready and the incumbent is gone: serving on as the incumbent')
                with self.mu:
                    self._set_state('committed')
                    self._become_incumbent()
                return
        self.abort(f'supervisor lost in {st}: {why}', 1)

    def _become_incumbent(self) -> None:
        Incumbent(self.core).start()
        self.core.faults.at('successor.after_bind_control')
        if self.chan is not None:
            self.chan.close()
        self.committed.set()

    def abort(self, reason: str, code: int) -> NoReturn:
        """Stop serving cleanly (drain <= 2 s if the app may serve: 7.4), release the lock, exit."""
        with self.mu:
            may_serve = self.state in ('opening', 'ready_sent')
            self._set_state('aborted')
        if may_serve:
            drained = threading.Thread(target=self._abort_drain, name='baton-abort-drain', daemon=True)
            drained.start()
            drained.join(ABORT_DRAIN_S + ABORT_DRAIN_SLACK_S)
        if self.locker is not None and self.locker is not threading.current_thread():
            self.locker.join(LOCK_WAIT_S)  # its acquire notices the abort within one retry
        if self.core.lock.held:
            try:
                self.core.lock.release()
            except Exception as e:  # noqa: BLE001
                self.core.log.error('releasing the lock failed: %s', e)
        if self.chan is not None:
            self.chan.close()
        self.core.exit(code, f'successor aborted: {reason}')

    def _abort_drain(self) -> None:
        try:
            r = self.core.drainable.drain(time.monotonic() + ABORT_DRAIN_S)
            self.core.log.info('drained after abort: %s', r)
        except Exception as e:  # noqa: BLE001
            self.core.log.warning('drain after abort failed: %s', e)
