"""
baton_sdk: the app side of baton's control protocol for Python 3.9+, standard library only.

An app implements Drainable (drain, seal, resume_after_abort, snapshot_state, readiness),
calls start_baton(drainable=...), then begin() (the data-dir lock is ours), opens its data,
serves on the inherited listeners, and calls ready(). See README.md.
"""
from .api import (BatonError, BeginInfo, CancelSignal, Cancelled, Drainable, DrainResult, ProbeFn, ProbeResult,
                  ProbeStatus, Readiness, RevisionMap, Role, SealProgress, SealResult, ShutdownCompleted,
                  ShutdownReason, ShutdownRequested, StartupCompleted, StateSnapshot, TaskHandler, TaskInfo,
                  TaskProgress, Urgency)
from .app import BatonApp, start_baton
from .lock import LockCompromised, LockHeld

__version__ = '0.1.0'

__all__ = [
    'BatonApp', 'BatonError', 'BeginInfo', 'CancelSignal', 'Cancelled', 'Drainable', 'DrainResult', 'LockCompromised',
    'LockHeld', 'ProbeFn', 'ProbeResult', 'ProbeStatus', 'Readiness', 'RevisionMap', 'Role', 'SealProgress',
    'SealResult', 'ShutdownCompleted', 'ShutdownReason', 'ShutdownRequested', 'StartupCompleted', 'StateSnapshot',
    'TaskHandler', 'TaskInfo', 'TaskProgress', 'Urgency', 'start_baton', '__version__',
]
