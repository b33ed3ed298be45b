"""The app's handle on baton: start_baton() and BatonApp."""
from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any, Callable, Dict, Mapping, MutableMapping, NoReturn, Optional, Union

from .api import (BatonError, BeginInfo, Drainable, ProbeFn, Role, ShutdownCompleted, ShutdownRequested,
                  StartupCompleted, TaskHandler)
from .channel import LIVENESS_S
from .core import Core
from .env import NAME_RE, Faults, detect_role, drop_node_channel
from .lock import DataDirLock, LockCompromised, LockHeld
from .successor import LOCK_WAIT_S, Successor

LOCK_LOST_EXIT = 70


class BatonApp:
    """
    An app's handle on baton. Typical use::

        baton = start_baton(drainable=app, tasks={'compact': compact}, probes={'store': probe})
        begin = baton.begin()        # says Hello; returns once the data-dir lock is ours
        app.open(baton.data_dir, begin)   # verify begin.sealed_revision_per_shard
        app.serve(baton.listen_socket('http'))
        baton.ready()                # sends Ready; returns once this process is the committed incumbent
        baton.wait()                 # the SDK ends the process (after Commit to a successor, Shutdown, ...)
    """

    def __init__(self, drainable: Drainable, *, tasks: Optional[Mapping[str, TaskHandler]] = None,
                 probes: Optional[Mapping[str, ProbeFn]] = None, build_id: Union[str, bytes, None] = None,
                 data_dir: Optional[str] = None, env: Optional[MutableMapping[str, str]] = None,
                 log: Optional[logging.Logger] = None,
                 on_startup_completed: Optional[Callable[[StartupCompleted], None]] = None,
                 on_shutdown_requested: Optional[Callable[[ShutdownRequested], None]] = None,
                 on_shutdown_completed: Optional[Callable[[ShutdownCompleted], None]] = None,
                 on_exit: Optional[Callable[[str], None]] = None,
                 on_lock_lost: Optional[Callable[[LockCompromised], None]] = None,
                 _os_exit: Callable[[int], Any] = os._exit) -> None:
        env = os.environ if env is None else env
        info = detect_role(env)
        # Node's child-process IPC channel, if a supervisor passed it: not ours to keep.
        drop_node_channel(env, frozenset([info.control_fd] + [lst.fd for lst in info.listeners.values()]))
        self.role: Role = info.role
        """cold (first generation), successor (a handoff is under way) or standalone (no supervisor)."""
        self.generation = info.generation
        self.listeners: Dict[str, int] = {name: lst.fd for name, lst in info.listeners.items()}
        """Inherited listening sockets, name -> fd. Never close these fds: see listen_socket()."""
        self.addresses: Dict[str, str] = {name: lst.address for name, lst in info.listeners.items()}
        data_dir = data_dir or info.data_dir
        if not data_dir:
            raise BatonError('E_BAD_ENV', 'no data dir: pass data_dir or set BATON_DATA_DIR')
        self.data_dir = os.path.abspath(data_dir)
        self.log = log or logging.getLogger('baton_sdk')
        if isinstance(build_id, str):
            build_id = build_id.encode('utf-8')
        self._on_lock_lost = on_lock_lost
        lock = DataDirLock(self.data_dir, on_compromised=self._lock_lost, log=self.log)
        liveness_ms = env.get('BATON_LIVENESS_MS', '')
        self._core = Core(drainable, lock, self.log,
                          build_id=build_id if build_id is not None else env.get('BATON_BUILD_ID', '').encode('utf-8'),
                          control_path=info.control_path,
                          liveness_s=int(liveness_ms) / 1000 if liveness_ms.isdigit() else LIVENESS_S,
                          faults=Faults.from_env(env), on_exit=on_exit, os_exit=_os_exit)
        for name, fn in (tasks or {}).items():
            self.register_task(name, fn)
        for name, probe in (probes or {}).items():
            self.register_probe(name, probe)
        for event, cb in (('startup-completed', on_startup_completed), ('shutdown-requested', on_shutdown_requested),
                          ('shutdown-completed', on_shutdown_completed)):
            if cb is not None:
                self.on(event, cb)
        self._successor = Successor(self._core, info.role, info.control_fd) if info.role != 'standalone' else None
        self._begin_mu = threading.Lock()
        self._begin: Optional[BeginInfo] = None

    # ---- registration (before begin(): what is registered by then is what the supervisor is told)

    def register_task(self, name: str, handler: TaskHandler) -> 'BatonApp':
        """Registers (or replaces) a maintenance task the supervisor can run (`baton maintenance run NAME`)."""
        if not NAME_RE.match(name):
            raise BatonError('E_BAD_TASK', f'task name {name!r}: expected 1-64 of [A-Za-z0-9._-], starting with a letter or digit')
        self._core.tasks[name] = handler
        return self

    def register_probe(self, name: str, fn: ProbeFn) -> 'BatonApp':
        """Registers (or replaces) a health probe; it must answer within 10 ms."""
        if not NAME_RE.match(name):
            raise BatonError('E_BAD_PROBE', f'probe name {name!r}: expected 1-64 of [A-Za-z0-9._-], starting with a letter or digit')
        self._core.probes[name] = fn
        return self

    def on(self, event: str, fn: Callable[[Any], None]) -> 'BatonApp':
        """Lifecycle notices: 'startup-completed', 'shutdown-requested', 'shutdown-completed'."""
        if event not in self._core.listeners:
            raise BatonError('E_BAD_EVENT', f'no event {event!r} (have: {", ".join(self._core.listeners)})')
        self._core.listeners[event].append(fn)
        return self

    # ---- the start

    def begin(self) -> BeginInfo:
        """
        Says Hello to the supervisor and blocks until Begin: the data-dir lock is then held by
        this process, and the app may open its data. Call it within the supervisor's Hello
        timeout (5 s) of the start; start-up work done before it costs no write blackout (a
        successor's Hello starts the incumbent's drain). Standalone: creates the data dir and
        takes the lock. If the supervisor aborts meanwhile, the process exits instead.
        """
        with self._begin_mu:
            if self._begin is not None:
                return self._begin
            if self._successor is None:
                try:
                    self._core.lock.acquire('standalone', wait_s=LOCK_WAIT_S)
                except LockHeld as e:
                    raise BatonError('E_LOCK_HELD', str(e)) from None
                self._begin = BeginInfo('standalone', 'standalone', {}, b'', 0)
            else:
                self._successor.start()
                self._begin = self._successor.wait_begin()
            return self._begin

    def ready(self) -> None:
        """Sends Ready (the Drainable's readiness()) and returns once this process is the committed
        incumbent. If readiness() raises, it is reported like fail(). Standalone: returns at once."""
        if self._begin is None:
            raise BatonError('E_NOT_BEGUN', 'ready() before begin()')
        if self._successor is not None:
            self._successor.ready(self._core.drainable.readiness)

    def fail(self, error: BaseException, code: str = 'E_OPEN_FAILED') -> NoReturn:
        """The app cannot open its data after begin(): reports Error{code} (or error.code) to the
        supervisor, drains what it may serve (<= 2 s), releases the lock and exits 1."""
        if self._successor is None:
            raise error
        self._successor.fail(error, code)

    def run(self, open_data: Callable[[BeginInfo], None]) -> BeginInfo:
        """begin(), open_data(begin) (an exception is fail()), ready(): returns once committed."""
        info = self.begin()
        try:
            open_data(info)
        except Exception as e:  # noqa: BLE001
            self.fail(e)
        self.ready()
        return info

    def wait(self) -> NoReturn:
        """Blocks for good: the SDK ends the process (after Commit to a successor, Shutdown, a lost lock)."""
        while True:
            threading.Event().wait(3600)

    def listen_socket(self, name: str) -> socket.socket:
        """
        A new socket object on a dup(2) of listener `name`, to accept on. To drain, close it (the
        inherited fd stays open, the listening socket with it); to serve again after an aborted
        handoff, call this again. Another generation may accept from the same socket: expect
        accept() to raise BlockingIOError, and never shutdown() it.
        """
        fd = self.listeners.get(name)
        if fd is None:
            raise BatonError('E_NO_LISTENER', f'no inherited listener named {name} (have: {", ".join(self.listeners) or "none"})')
        return socket.socket(fileno=os.dup(fd))

    def close(self) -> None:
        """Standalone: releases the data-dir lock (call it before exiting)."""
        if self._successor is not None:
            raise BatonError('E_NOT_STANDALONE', 'under a supervisor the SDK releases the lock (on seal)')
        if self._core.lock.held:
            self._core.lock.release()

    def _lock_lost(self, err: LockCompromised) -> None:
        self.log.critical('%s', err)
        if self._on_lock_lost is not None:
            self._on_lock_lost(err)
        else:
            self._core.exit(LOCK_LOST_EXIT, str(err))


start_baton = BatonApp
"""start_baton(drainable, **options): reads the role from the environment and prepares this
process for baton (the Node SDK's startBaton); the same as BatonApp(...)."""
