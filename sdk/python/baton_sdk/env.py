"""What the supervisor passes an app in its environment (PROTOCOL.md section 2), read strictly."""
from __future__ import annotations

import json
import os
import re
import signal
import time
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, MutableMapping, Optional

from .api import BatonError, Role

NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$')
FIRST_LISTENER_FD = 3


@dataclass
class Listener:
    fd: int
    """The inherited fd. Never close it: drain by closing a dup (see BatonApp.listen_socket)."""
    address: str
    """e.g. "tcp://127.0.0.1:8080" or "unix:/run/app.sock"."""


@dataclass
class RoleInfo:
    role: Role
    control_fd: int = -1
    control_path: str = ''
    data_dir: Optional[str] = None
    generation: int = 0
    listeners: Dict[str, Listener] = field(default_factory=dict)


def _bad(why: str) -> BatonError:
    return BatonError('E_BAD_ENV', why)


def detect_role(env: MutableMapping[str, str]) -> RoleInfo:
    """The role from the environment; a malformed baton environment is an error, not a guess."""
    role = env.get('BATON_ROLE', '')
    data_dir = env.get('BATON_DATA_DIR') or None
    if role == '':
        return RoleInfo('standalone', data_dir=data_dir)
    if role not in ('cold', 'successor'):
        raise _bad(f'BATON_ROLE={role}: expected "cold" or "successor"')
    fd_text = env.get('BATON_CONTROL_FD', '')
    if not fd_text.isdigit() or int(fd_text) < FIRST_LISTENER_FD:
        raise _bad(f'BATON_CONTROL_FD={fd_text!r}: expected an fd number >= 3')
    control_path = env.get('BATON_CONTROL_PATH', '')
    if not control_path:
        raise _bad('BATON_CONTROL_PATH is not set')
    generation = env.get('BATON_GENERATION', '1')
    return RoleInfo('cold' if role == 'cold' else 'successor', int(fd_text), control_path, data_dir,
                    int(generation) if generation.isdigit() else 1, inherited_listeners(env))


def inherited_listeners(env: MutableMapping[str, str]) -> Dict[str, Listener]:
    """The listeners at fds 3.., by name (spare copies after them are not needed: we dup(2))."""
    text = env.get('BATON_LISTEN_FDS')
    if text is None:
        return {}
    if not text.isdigit() or int(text) > 1000:
        raise _bad(f'BATON_LISTEN_FDS={text!r} is not a count')
    count = int(text)
    names = env.get('BATON_LISTEN_FDNAMES', '').split(':') if count > 0 else []
    if len(names) != count:
        raise _bad(f'BATON_LISTEN_FDNAMES has {len(names)} names for {count} fds')
    try:
        addrs = json.loads(env.get('BATON_LISTEN_ADDRS', '[]'))
    except ValueError:
        raise _bad('BATON_LISTEN_ADDRS is not JSON') from None
    if not isinstance(addrs, list) or len(addrs) != count or not all(isinstance(a, str) for a in addrs):
        raise _bad(f'BATON_LISTEN_ADDRS must be a JSON array of {count} strings')
    out: Dict[str, Listener] = {}
    for i, name in enumerate(names):
        if not NAME_RE.match(name) or name in out:
            raise _bad(f'listener name {name!r} is invalid or appears twice')
        out[name] = Listener(FIRST_LISTENER_FD + i, addrs[i])
    return out


def drop_node_channel(env: MutableMapping[str, str], keep: FrozenSet[int] = frozenset()) -> Optional[int]:
    """
    A supervisor written in Node passes its child-process IPC channel to every app (the fd
    in NODE_CHANNEL_FD). A non-Node app has no use for it: close it (so that the supervisor
    sees it disconnect, and no child of ours inherits it) and remove the variables. Returns
    the fd closed, if any. Fds in `keep` (ours: control, listeners) are never closed.
    """
    text = env.pop('NODE_CHANNEL_FD', None)
    if text is None:
        return None
    env.pop('NODE_CHANNEL_SERIALIZATION_MODE', None)
    if not text.isdigit() or int(text) in keep:
        return None
    try:
        os.close(int(text))
    except OSError:
        return None
    return int(text)


# ---- fault points for tests (the same contract as baton's Node agent: src/os/crashpoints.ts)

@dataclass
class Faults:
    """BATON_CRASH_POINT=name (+ BATON_CRASH_MARKER_DIR): SIGKILL at that point, after a marker
    file; BATON_STALL_POINTS=name:ms,...: the calling thread stops dead there for that long."""
    point: Optional[str] = None
    marker_dir: Optional[str] = None
    stalls: Dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: MutableMapping[str, str]) -> 'Faults':
        stalls = {}
        for item in env.get('BATON_STALL_POINTS', '').split(','):
            m = re.match(r'^([a-z_.]+):(\d+)$', item.strip())
            if m:
                stalls[m.group(1)] = int(m.group(2))
        return cls(env.get('BATON_CRASH_POINT') or None, env.get('BATON_CRASH_MARKER_DIR') or None, stalls)

    def at(self, name: str) -> None:
        ms = self.stalls.get(name)
        if ms:
            time.sleep(ms / 1000)
        if self.point != name:
            return
        if self.marker_dir:
            os.makedirs(self.marker_dir, exist_ok=True)
            with open(os.path.join(self.marker_dir, f'{name}.{os.getpid()}'), 'w') as f:
                f.write(f'{int(time.time() * 1000)}\n')
        os.kill(os.getpid(), signal.SIGKILL)
