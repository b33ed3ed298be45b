"""The types an app works with: what it implements (Drainable, tasks, probes) and what it is told."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Literal, Mapping, Optional, Protocol

Role = Literal['cold', 'successor', 'standalone']
Urgency = Literal['low', 'normal', 'high', 'critical']
ProbeStatus = Literal['OK', 'DEGRADED', 'CRITICAL']
ShutdownReason = Literal['graceful', 'signal', 'admin', 'error']
RevisionMap = Dict[str, int]


@dataclass
class DrainResult:
    open_conns_remaining: int
    """Connections still open when drain returned (closed when this process exits after Commit)."""
    accept_closed: bool = True
    """True once this process no longer accepts; the supervisor aborts on False."""


@dataclass
class SealResult:
    last_revision_per_shard: RevisionMap
    data_dir_fingerprint: bytes
    """SHA-256 over the sealed shard heads: exactly 32 bytes."""


@dataclass
class Readiness:
    listening_on: List[str]
    healthz_ok: bool
    advertised_revision_per_shard: RevisionMap


@dataclass
class StateSnapshot:
    shard_count: int
    open_conns: int
    last_revision_per_shard: RevisionMap


SealProgress = Callable[[int, int], None]
"""seal()'s progress callback: (units done, units in all)."""


class Drainable(Protocol):
    """
    What an app implements so baton can hand it off (the Node SDK's Drainable). The SDK
    calls drain, seal and resume_after_abort from its own thread, one at a time; each may
    block for as long as it needs: heartbeats and lock refreshes run in other threads.
    """

    def drain(self, deadline: float) -> DrainResult:
        """Stop accepting; let in-flight requests finish; close keep-alive connections cleanly by
        `deadline` (a time.monotonic() value)."""
        ...

    def seal(self, progress: SealProgress) -> SealResult:
        """Make all data durable and stop writing. The SDK releases the data-dir lock after this returns.
        Raise to refuse the handoff (an exception's `partial_state` revmap, if any, is reported)."""
        ...

    def resume_after_abort(self) -> None:
        """Undo drain (and seal, if it ran): re-open for writes, re-reading anything a successor
        wrote, and accept again. Raise if this process cannot serve again: it then exits (70)."""
        ...

    def snapshot_state(self) -> StateSnapshot:
        """The app's state in numbers (logged by the SDK before a drain; not sent on the wire)."""
        ...

    def readiness(self) -> Readiness:
        """What Ready reports, once the data is open and verified and this process accepts."""
        ...


@dataclass
class BeginInfo:
    """What begin() returns: the data-dir lock is held by this process now."""
    role: Role
    handoff_id: str
    sealed_revision_per_shard: RevisionMap
    """Revisions the previous incumbent sealed ({} on a cold start or after it died)."""
    sealed_fingerprint: bytes
    """Its data_dir_fingerprint (empty when there was no seal)."""
    incumbent_pid: int
    """0 on a cold start; a dead process's pid on a promotion."""


# ---- maintenance tasks, probes, lifecycle

class Cancelled(Exception):
    """Raised by CancelSignal.raise_if_cancelled(): a task that lets it propagate ends CANCELLED."""


class CancelSignal:
    """A task's cancellation (the Node SDK's AbortSignal): set on JobCancel, on a lost
    supervisor connection and on Shutdown."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: Optional[str] = None

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Sleeps until cancelled or timeout; True if cancelled. Use it instead of time.sleep."""
        return self._event.wait(timeout)

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled(f'cancelled: {self.reason}')

    def cancel(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()


@dataclass
class TaskInfo:
    job_id: str
    task: str
    params: Dict[str, Any]
    urgency: Urgency
    reason: str


TaskProgress = Callable[..., None]
"""progress(done, total, counters=None): units done, units in all (0: unknown), counters name -> int."""
TaskHandler = Callable[[TaskProgress, CancelSignal, TaskInfo], Any]
"""A maintenance task: runs in a thread of its own; returns a JSON-serialisable summary. It
should watch its CancelSignal and raise (e.g. raise_if_cancelled()) to stop: the job is then CANCELLED."""


@dataclass
class ProbeResult:
    status: ProbeStatus
    message: str
    details: Optional[Mapping[str, Any]] = None


ProbeFn = Callable[[], ProbeResult]
"""A health probe: must answer within 10 ms; one that raises, overruns or answers nonsense is UNKNOWN."""


@dataclass
class StartupCompleted:
    duration_ms: int
    components: List[str] = field(default_factory=list)


@dataclass
class ShutdownRequested:
    reason: ShutdownReason
    timeout_ms: int


@dataclass
class ShutdownCompleted:
    reason: ShutdownReason
    duration_ms: int
    """From Shutdown to the lock's release."""


class BatonError(Exception):
    """An error with a protocol or SDK code (e.g. E_BAD_ENV, E_NO_LISTENER, E_LOCK_HELD)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f'{code}: {message}')
        self.code = code
        self.message = message
