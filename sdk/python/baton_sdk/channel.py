"""One control connection to the supervisor: framing, handshake, heartbeats, liveness (PROTOCOL.md 2-4, 7.1, 9)."""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Callable, List, Optional, Tuple

from . import wire

HELLO_TIMEOUT_S = 5.0
HEARTBEAT_S = 2.0
LIVENESS_S = 10.0

OnMessage = Callable[['Channel', wire.Message], None]
OnLost = Callable[['Channel', str], None]


class Channel:
    """
    The app side of one connection. It speaks first (Hello), then runs a reader thread
    (messages go to on_message, in order) and, after HelloAck, a heartbeat thread that
    also enforces liveness. on_lost is called once, from whichever thread noticed.
    """

    def __init__(self, sock: socket.socket, name: str, on_message: OnMessage, on_lost: OnLost, *,
                 build_id: bytes, features: List[str], log: logging.Logger, liveness_s: float = LIVENESS_S,
                 aborted: Callable[[str], bool] = lambda h: False) -> None:
        self.sock = sock
        self.name = name
        self.on_message = on_message
        self.on_lost = on_lost
        self.build_id = build_id
        self.features = features
        self.log = log
        self.liveness_s = liveness_s
        self.aborted = aborted  # handoff ids the incumbent aborted on its own (a late Commit gets E_ABORTED)
        self.wlock = threading.Lock()
        self.mu = threading.Lock()
        self.decoder = wire.FrameDecoder(wire.HANDSHAKE_VERSION, wire.HANDSHAKE_VERSION)
        self.version = wire.HANDSHAKE_VERSION
        self.handoff_id: Optional[str] = None
        self.last_rx = time.monotonic()
        self.closed = False
        self.lost_reported = False
        self.phase = 'hello'

    def start(self, role: str) -> None:
        threading.Thread(target=self._reader, name=f'baton-{self.name}-reader', daemon=True).start()
        hello: wire.Message = {'type': 'Hello', 'role': role, 'pid': os.getpid(), 'buildId': self.build_id,
                               'protoMin': wire.PROTO_MIN, 'protoMax': wire.PROTO_MAX}
        if self.features:
            hello['features'] = self.features
        self.send(hello)
        threading.Thread(target=self._hello_timer, name=f'baton-{self.name}-hello', daemon=True).start()

    def _hello_timer(self) -> None:
        time.sleep(HELLO_TIMEOUT_S)
        if self.handoff_id is None and not self.closed:
            why = f'no HelloAck within {HELLO_TIMEOUT_S:.0f} s'
            self.lose(why, ('E_TIMEOUT', why))

    def send(self, msg: wire.Message) -> bool:
        frame = wire.encode_frame(msg, self.version)
        with self.wlock:
            if self.closed:
                return False
            try:
                self.sock.sendall(frame)
                return True
            except OSError as e:
                self.log.info('%s: send %s failed: %s', self.name, msg['type'], e)
                return False

    def send_handoff(self, msg_type: str, **fields: object) -> bool:
        return self.send({'type': msg_type, 'handoffId': self.handoff_id, **fields})

    def close(self) -> None:
        with self.wlock:
            if self.closed:
                return
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()

    def lose(self, reason: str, error: Optional[Tuple[str, str]] = None) -> None:
        """Peer lost: optionally tell it (Error), close, report once."""
        if error is not None and not self.closed:
            self.send({'type': 'Error', 'code': error[0], 'message': error[1]})
        self.close()
        with self.mu:
            if self.lost_reported:
                return
            self.lost_reported = True
        self.log.info('%s: supervisor lost: %s', self.name, reason)
        self.on_lost(self, reason)

    def _heartbeats(self) -> None:
        while not self.closed:
            time.sleep(HEARTBEAT_S)
            if self.closed:
                return
            if time.monotonic() - self.last_rx > self.liveness_s:
                why = f'no frame for {self.liveness_s:g} s'
                self.lose(f'silent: {why}', ('E_TIMEOUT', why))
                return
            self.send({'type': 'Heartbeat', 'tsMs': int(time.time() * 1000), 'phase': self.phase})

    def _reader(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError as e:
                self.lose(f'read error: {e}')
                return
            if not data:
                try:
                    self.decoder.end()
                except wire.ProtocolError as e:
                    self.lose(f'{e.code}: {e.message}')
                    return
                self.lose('EOF')
                return
            self.last_rx = time.monotonic()
            self.decoder.push(data)
            while True:
                try:
                    msg = self.decoder.next()
                except wire.ProtocolError as e:
                    self.lose(f'{e.code}: {e.message}', (e.code, e.message))
                    return
                if msg is None:
                    break
                if not self._dispatch(msg):
                    return

    def _dispatch(self, msg: wire.Message) -> bool:
        t = msg['type']
        if t == 'Heartbeat':
            return True
        if t == 'Error':
            self.lose(f'supervisor sent Error {msg["code"]}: {msg["message"]}')
            return False
        if self.handoff_id is None:
            if t != 'HelloAck':
                self.lose(f'{t} before HelloAck', ('E_UNEXPECTED_MESSAGE', f'{t} before HelloAck'))
                return False
            v = msg['protoVersion']
            if not wire.PROTO_MIN <= v <= wire.PROTO_MAX:
                self.lose(f'HelloAck.protoVersion {v} not offered',
                          ('E_VERSION_MISMATCH', f'HelloAck.protoVersion {v} outside {wire.PROTO_MIN}..{wire.PROTO_MAX}'))
                return False
            self.version = v
            self.decoder.set_version_range(v, v)
            self.handoff_id = msg['handoffId']
            threading.Thread(target=self._heartbeats, name=f'baton-{self.name}-heartbeat', daemon=True).start()
            self.log.debug('%s: attached, handoff %s, version %s', self.name, self.handoff_id, v)
            self.on_message(self, msg)
            return not self.closed
        if t == 'HelloAck':
            self.lose('second HelloAck', ('E_UNEXPECTED_MESSAGE', 'HelloAck after the handshake'))
            return False
        if 'handoffId' in msg and msg['handoffId'] != self.handoff_id and not (t == 'Commit' and self.aborted(msg['handoffId'])):
            why = f'{t} for handoff {msg["handoffId"]}, expected {self.handoff_id}'
            self.lose(why, ('E_WRONG_HANDOFF', why))
            return False
        self.on_message(self, msg)
        return not self.closed

    def reject(self, why: str, code: str = 'E_UNEXPECTED_MESSAGE') -> None:
        """Refuse the last message: Error, close; the 'lost' report that follows decides what next."""
        self.lose(why, (code, why))

    def peer_gone(self) -> bool:
        """True if the supervisor closed its end (or we did): a connection that is not 'busy' any more."""
        if self.closed:
            return True
        try:  # a supervisor that closed its end just before reconnecting is not "busy"
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b''
        except BlockingIOError:
            return False
        except OSError:
            return True
