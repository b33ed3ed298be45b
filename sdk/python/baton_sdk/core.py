"""What the successor and incumbent machines share: the app's hooks, the lock, the exit."""
from __future__ import annotations

import logging
import socket
import sys
import threading
from typing import Any, Callable, Dict, List, NoReturn, Optional

from .api import Drainable, ProbeFn, TaskHandler
from .channel import Channel, OnLost, OnMessage
from .env import Faults
from .lock import DataDirLock

EXIT_WATCHDOG_S = 3.0  # on_exit gets this long; then the process ends anyway

EVENTS = ('startup-completed', 'shutdown-requested', 'shutdown-completed')


class Core:
    def __init__(self, drainable: Drainable, lock: DataDirLock, log: logging.Logger, *, build_id: bytes,
                 control_path: str, liveness_s: float, faults: Faults,
                 on_exit: Optional[Callable[[str], None]], os_exit: Callable[[int], Any]) -> None:
        self.drainable = drainable
        self.lock = lock
        self.log = log
        self.build_id = build_id
        self.control_path = control_path
        self.liveness_s = liveness_s
        self.faults = faults
        self.on_exit = on_exit
        self.os_exit = os_exit
        self.tasks: Dict[str, TaskHandler] = {}
        self.probes: Dict[str, ProbeFn] = {}
        self.listeners: Dict[str, List[Callable[[Any], None]]] = {e: [] for e in EVENTS}
        self._exiting = threading.Lock()

    def features(self) -> List[str]:
        """Hello.features: only what the app has (the supervisor opens no session for the rest)."""
        out = []
        if self.tasks:
            out.append('jobs')
        if self.probes:
            out.append('probes')
        if self.listeners['startup-completed']:
            out.append('lifecycle')
        return out

    def channel(self, sock: socket.socket, name: str, on_message: OnMessage, on_lost: OnLost,
                aborted: Callable[[str], bool] = lambda h: False) -> Channel:
        return Channel(sock, name, on_message, on_lost, build_id=self.build_id, features=self.features(),
                       log=self.log, liveness_s=self.liveness_s, aborted=aborted)

    def emit(self, event: str, payload: Any) -> None:
        """Lifecycle notice to the app's listeners; a listener that raises is logged, not fatal."""
        for fn in list(self.listeners[event]):
            try:
                fn(payload)
            except Exception:  # noqa: BLE001
                self.log.exception('%s listener raised', event)

    def exit(self, code: int, reason: str) -> NoReturn:
        """Ends the process: on_exit(reason) (at most 3 s), then os._exit(code). Only the first caller gets through."""
        if not self._exiting.acquire(blocking=False):
            threading.Event().wait()  # another thread is ending the process
        self.log.info('exiting (%d): %s', code, reason)
        watchdog = threading.Timer(EXIT_WATCHDOG_S, self.os_exit, (code,))
        watchdog.daemon = True
        watchdog.start()
        if self.on_exit is not None:
            try:
                self.on_exit(reason)
            except Exception:  # noqa: BLE001
                self.log.exception('on_exit raised')
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        self.os_exit(code)
        watchdog.cancel()
        threading.Event().wait()  # a test's os_exit returns; a real one never does
        raise AssertionError('unreachable')

