"""Maintenance tasks and health probes inside the app (PROTOCOL.md 7.9), and the progress throttle."""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable, Dict, Generic, List, Mapping, Optional, Set, Tuple, TypeVar

from .api import CancelSignal, ProbeFn, ProbeResult, TaskHandler, TaskInfo

T = TypeVar('T')

PROGRESS_INTERVAL_S = 0.2  # JobProgress / SealProgress at most this often; the newest wins
PROBE_BUDGET_MS = 10.0  # a probe must answer within this
PROBE_WAIT_S = 0.25  # a report waits this long for probes that have not answered (they are UNKNOWN)
MAX_RESULT_CHARS = 256 * 1024
MAX_DETAILS_CHARS = 4096
U64_MAX = 2**64 - 1
STATUSES = ('OK', 'DEGRADED', 'CRITICAL')

TaskOutcome = Tuple[str, str, Optional[str]]  # (succeeded|failed|cancelled, result JSON, error)


class Throttle(Generic[T]):
    """Calls send(value) at most every interval_s; a value pushed meanwhile replaces the waiting one."""

    def __init__(self, send: Callable[[T], None], interval_s: float = PROGRESS_INTERVAL_S) -> None:
        self.send = send
        self.interval_s = interval_s
        self.mu = threading.Lock()
        self.last = -interval_s
        self.pending: Optional[T] = None
        self.timer: Optional[threading.Timer] = None
        self.cancelled = False

    def push(self, value: T) -> None:
        with self.mu:
            if self.cancelled:
                return
            now = time.monotonic()
            if self.timer is None and now - self.last >= self.interval_s:
                self.last = now
            else:
                self.pending = value
                if self.timer is None:
                    self.timer = threading.Timer(self.interval_s - (now - self.last), self._fire)
                    self.timer.daemon = True
                    self.timer.start()
                return
        self.send(value)

    def _take(self) -> Optional[T]:
        value, self.pending = self.pending, None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        return value

    def _fire(self) -> None:
        with self.mu:
            value = self._take()
            self.last = time.monotonic()
        if value is not None:
            self.send(value)

    def flush(self) -> None:
        """Sends the waiting value now (before a JobDone)."""
        with self.mu:
            value = self._take()
        if value is not None:
            self.send(value)

    def cancel(self) -> None:
        """Drops the waiting value; nothing is sent from now on."""
        with self.mu:
            self._take()
            self.cancelled = True


def clamp_u64(v: object) -> int:
    """A progress figure as u64: negative, non-numeric or non-finite is 0; too large is the maximum."""
    try:
        n = int(v)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return 0
    return min(max(n, 0), U64_MAX) if isinstance(n, int) else 0


def parse_params(text: str) -> Optional[Dict[str, Any]]:
    """JobStart.params: JSON text of an object; None if it is not one."""
    try:
        v = json.loads(text or '{}')
    except ValueError:
        return None
    return v if isinstance(v, dict) else None


def run_task(handlers: Mapping[str, TaskHandler], info: TaskInfo, progress: Callable[..., None], signal: CancelSignal) -> TaskOutcome:
    """Runs one task to its end; never raises (the outcome says what happened)."""
    handler = handlers.get(info.task)
    if handler is None:
        return 'failed', 'null', f'no task named {json.dumps(info.task)} in this app (registered: {", ".join(handlers) or "none"})'
    try:
        value = handler(progress, signal, info)
    except Exception as e:  # noqa: BLE001 - the task's failure is the job's outcome
        return ('cancelled' if signal.cancelled else 'failed'), 'null', str(e) or type(e).__name__
    try:
        result = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        result = json.dumps({'unserialisable': str(e)})
    if len(result) > MAX_RESULT_CHARS:
        result = json.dumps({'truncated': True, 'bytes': len(result)})
    return 'succeeded', result, None


class _ProbeCall:
    """One probe run in a thread of its own: a probe that hangs cannot hold up the report."""

    def __init__(self, fn: ProbeFn) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.value: Any = None
        self.error: Optional[BaseException] = None
        self.ms = 0.0

    def run(self) -> None:
        t0 = time.perf_counter()
        try:
            self.value = self.fn()
        except Exception as e:  # noqa: BLE001
            self.error = e
        self.ms = round((time.perf_counter() - t0) * 1000, 2)
        self.done.set()


class ProbeRunner:
    """Runs the app's probes for a ProbeReport: each in its own thread, judged by its own duration."""

    def __init__(self) -> None:
        self.mu = threading.Lock()
        self.hung: Set[str] = set()  # probes whose previous call has not returned: not started again

    def run(self, probes: Mapping[str, ProbeFn]) -> List[Dict[str, Any]]:
        calls: Dict[str, Optional[_ProbeCall]] = {}
        with self.mu:
            for name, fn in probes.items():
                if name in self.hung:
                    calls[name] = None
                    continue
                started = calls[name] = _ProbeCall(fn)
                threading.Thread(target=started.run, name=f'baton-probe-{name}', daemon=True).start()
        deadline = time.monotonic() + PROBE_WAIT_S
        entries = []
        for name, call in calls.items():
            if call is None:
                entries.append(_unknown(name, 'its previous call has not returned yet (hung?)', PROBE_WAIT_S * 1000))
                continue
            if not call.done.wait(max(0.0, deadline - time.monotonic())):
                with self.mu:
                    self.hung.add(name)
                threading.Thread(target=self._forget_when_done, args=(name, call), daemon=True).start()
                entries.append(_unknown(name, f'no answer within {PROBE_BUDGET_MS:g} ms', PROBE_WAIT_S * 1000))
                continue
            entries.append(_judge(name, call))
        return entries

    def _forget_when_done(self, name: str, call: _ProbeCall) -> None:
        call.done.wait()
        with self.mu:
            self.hung.discard(name)


def _unknown(name: str, message: str, ms: float) -> Dict[str, Any]:
    return {'name': name, 'status': 'UNKNOWN', 'message': message, 'ms': ms}


def _judge(name: str, call: _ProbeCall) -> Dict[str, Any]:
    if call.error is not None:
        return _unknown(name, f'threw: {call.error}', call.ms)
    if call.ms > PROBE_BUDGET_MS:
        return _unknown(name, f'answered in {call.ms} ms (limit {PROBE_BUDGET_MS:g} ms)', call.ms)
    r = call.value
    if isinstance(r, Mapping):
        r = ProbeResult(r.get('status'), r.get('message', ''), r.get('details'))  # type: ignore[arg-type]
    if not isinstance(r, ProbeResult) or r.status not in STATUSES:
        return _unknown(name, f'bad answer: expected ProbeResult(status=OK|DEGRADED|CRITICAL, message), got {r!r:.200}', call.ms)
    entry: Dict[str, Any] = {'name': name, 'status': r.status, 'message': str(r.message), 'ms': call.ms}
    if r.details is not None:
        text = json.dumps(dict(r.details), default=str)
        entry['details'] = json.loads(text) if len(text) <= MAX_DETAILS_CHARS else {'truncated': True, 'bytes': len(text)}
    return entry
