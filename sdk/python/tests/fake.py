"""A hand-driven supervisor and a recording Drainable, to run a real BatonApp in this process."""
import hashlib
import os
import queue
import shutil
import socket
import tempfile
import threading
import time
import unittest
from typing import Any, Dict, List, Optional

import support  # noqa: F401 - sys.path

from baton_sdk import BatonApp, DrainResult, Readiness, SealResult, StateSnapshot
from baton_sdk import wire

TIMEOUT = 10.0


class Peer:
    """The supervisor's end of one control connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(TIMEOUT)
        self.dec = wire.FrameDecoder()
        self.heartbeats = 0

    @classmethod
    def connect(cls, path: str) -> 'Peer':
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        return cls(s)

    def recv(self, skip_heartbeats: bool = True) -> Optional[Dict[str, Any]]:
        """The next message (None at EOF)."""
        while True:
            msg = self.dec.next()
            if msg is not None:
                if msg['type'] == 'Heartbeat' and skip_heartbeats:
                    self.heartbeats += 1
                    continue
                return msg
            data = self.sock.recv(65536)
            if not data:
                return None
            self.dec.push(data)

    def expect(self, msg_type: str) -> Dict[str, Any]:
        msg = self.recv()
        assert msg is not None and msg['type'] == msg_type, f'expected {msg_type}, got {msg}'
        return msg

    def send(self, msg: Dict[str, Any]) -> None:
        self.sock.sendall(wire.encode_frame(msg))

    def hello(self, handoff_id: str) -> Dict[str, Any]:
        """Reads Hello, answers HelloAck."""
        hello = self.expect('Hello')
        self.send({'type': 'HelloAck', 'handoffId': handoff_id, 'protoVersion': 1})
        return hello

    def prepare(self, handoff_id: str) -> None:
        """PrepareHandoff (5 s drain grace), the drain starts."""
        self.send({'type': 'PrepareHandoff', 'handoffId': handoff_id, 'successorPid': 1,
                   'deadlineMs': int(time.time() * 1000) + 60_000, 'drainGraceMs': 5_000})

    def drain_and_seal(self, handoff_id: str) -> Dict[str, Any]:
        """PrepareHandoff -> Drained, SealRequest -> SealProgress, SealComplete (returned)."""
        self.prepare(handoff_id)
        self.expect('Drained')
        self.send({'type': 'SealRequest', 'handoffId': handoff_id})
        self.expect('SealProgress')
        return self.expect('SealComplete')

    def close(self) -> None:
        self.sock.close()


class Recorder:
    """A Drainable that records its calls; each behaviour can be swapped per test."""

    def __init__(self) -> None:
        self.calls: List[str] = []
        self.revs = {'0': 0}
        self.drain_error: Optional[Exception] = None
        self.seal_error: Optional[Exception] = None
        self.resume_error: Optional[Exception] = None
        self.seal_busy_s = 0.0
        self.deadlines: List[float] = []

    def drain(self, deadline: float) -> DrainResult:
        self.calls.append('drain')
        self.deadlines.append(deadline)
        if self.drain_error:
            raise self.drain_error
        return DrainResult(0, True)

    def seal(self, progress: Any) -> SealResult:
        self.calls.append('seal')
        if self.seal_error:
            raise self.seal_error
        until = time.monotonic() + self.seal_busy_s
        while time.monotonic() < until:
            pass  # busy: heartbeats must still flow
        progress(1, 1)
        return SealResult(dict(self.revs), hashlib.sha256(b'sealed').digest())

    def resume_after_abort(self) -> None:
        self.calls.append('resume')
        if self.resume_error:
            raise self.resume_error

    def snapshot_state(self) -> StateSnapshot:
        return StateSnapshot(1, 0, dict(self.revs))

    def readiness(self) -> Readiness:
        self.calls.append('readiness')
        return Readiness(['http'], True, dict(self.revs))


class AppCase(unittest.TestCase):
    """A temp dir, a socketpair as the successor channel, and helpers to run a BatonApp on it."""

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix='baton-sdk-test-')
        self.data_dir = os.path.join(self.dir, 'data')
        self.control_path = os.path.join(self.dir, 'state', 'control', 'incumbent.sock')
        self.exits: 'queue.Queue[int]' = queue.Queue()
        self.apps: List[BatonApp] = []
        self.peers: List[Peer] = []
        self.drainable = Recorder()

    def tearDown(self) -> None:
        for app in self.apps:
            app._core.lock._stop.set()  # no refresh thread outlives its test
        for p in self.peers:
            p.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def env(self, **extra: str) -> Dict[str, str]:
        return {'BATON_DATA_DIR': self.data_dir, **extra}

    def app(self, env: Dict[str, str], **options: Any) -> BatonApp:
        app = BatonApp(self.drainable, env=env, _os_exit=self.exits.put, **options)
        self.apps.append(app)
        return app

    def successor(self, role: str = 'cold', env_extra: Optional[Dict[str, str]] = None, **options: Any) -> 'tuple[BatonApp, Peer]':
        """A BatonApp started as `role` on a socketpair; the test holds the supervisor's end."""
        sup, ours = socket.socketpair()
        env = self.env(BATON_ROLE=role, BATON_CONTROL_FD=str(ours.detach()), BATON_CONTROL_PATH=self.control_path,
                       BATON_LISTEN_FDS='0', BATON_GENERATION='1', **(env_extra or {}))
        peer = Peer(sup)
        self.peers.append(peer)
        return self.app(env, **options), peer

    def in_thread(self, fn: Any, *args: Any) -> 'queue.Queue[Any]':
        """Runs fn(*args) in a daemon thread; its result (or exception) arrives on the queue."""
        out: 'queue.Queue[Any]' = queue.Queue()

        def run() -> None:
            try:
                out.put(fn(*args))
            except BaseException as e:  # noqa: BLE001
                out.put(e)
        threading.Thread(target=run, daemon=True).start()
        return out

    def exit_code(self) -> int:
        return self.exits.get(timeout=TIMEOUT)

    def incumbent(self, **options: Any) -> 'tuple[BatonApp, Peer]':
        """A committed incumbent (cold start done) and a fresh, attached supervisor session to it."""
        app, sup = self.successor(**options)
        started = self.in_thread(app.run, lambda begin: None)
        sup.hello('h-cold')
        sup.send({'type': 'Begin', 'handoffId': 'h-cold', 'sealedRevisionPerShard': {}, 'sealedFingerprint': b'', 'incumbentPid': 0})
        sup.expect('Ready')
        sup.send({'type': 'Commit', 'handoffId': 'h-cold'})
        sup.expect('Committed')
        started.get(timeout=TIMEOUT)
        return app, self.attach('h-1')

    def attach(self, handoff_id: str) -> Peer:
        session = Peer.connect(self.control_path)
        self.peers.append(session)
        session.hello(handoff_id)
        return session
