"""
BatonApp against a hand-driven supervisor in this process: the successor and incumbent
state machines (PROTOCOL.md 8.2, 8.3), jobs, probes and lifecycle notices (7.9), exits.
"""
import json
import os
import stat
import subprocess
import sys
import threading
import time
import unittest

import support
from fake import TIMEOUT, AppCase, Peer

from baton_sdk import BatonError, ProbeResult
from baton_sdk.lock import lock_holder

SEALED_FP = bytes(32)


def hold_lock(data_dir):
    """Another process that takes the lock on data_dir and keeps it until killed."""
    code = 'import sys, time; from baton_sdk.lock import DataDirLock; DataDirLock(sys.argv[1]).acquire(); print("held", flush=True); time.sleep(60)'
    p = subprocess.Popen([sys.executable, '-c', code, data_dir], stdout=subprocess.PIPE, env={**os.environ, 'PYTHONPATH': support.SDK_DIR})
    assert p.stdout is not None and p.stdout.readline() == b'held\n'
    p.stdout.close()
    return p


def holder_pid(data_dir):
    h = lock_holder(data_dir)
    return h[0]['pid'] if h else None


class Successor(AppCase):
    def test_cold_start_hello_begin_ready_commit_then_the_control_socket(self):
        app, sup = self.successor()
        opened = []
        started = self.in_thread(app.run, opened.append)
        hello = sup.hello('h-1')
        self.assertEqual((hello['role'], hello['pid'], hello['protoMin'], hello['protoMax']), ('successor', os.getpid(), 1, 1))
        self.assertNotIn('features', hello)  # no task, probe or startup listener: none listed
        self.assertIsNone(holder_pid(self.data_dir))  # the lock waits for Begin
        sup.send({'type': 'Begin', 'handoffId': 'h-1', 'sealedRevisionPerShard': {'0': 7}, 'sealedFingerprint': SEALED_FP, 'incumbentPid': 0})
        ready = sup.expect('Ready')
        self.assertEqual(ready, {'type': 'Ready', 'handoffId': 'h-1', 'listeningOn': ['http'], 'healthzOk': True,
                                 'advertisedRevisionPerShard': {'0': 0}, 'buildId': b''})
        self.assertEqual(opened[0].sealed_revision_per_shard, {'0': 7})
        self.assertEqual((opened[0].role, opened[0].handoff_id, opened[0].sealed_fingerprint), ('cold', 'h-1', SEALED_FP))
        self.assertEqual(holder_pid(self.data_dir), os.getpid())
        self.assertTrue(started.empty())  # ready() returns only once committed
        sup.send({'type': 'Commit', 'handoffId': 'h-1'})
        self.assertEqual(sup.expect('Committed'), {'type': 'Committed', 'handoffId': 'h-1'})
        self.assertEqual(started.get(timeout=TIMEOUT).handoff_id, 'h-1')
        st = os.stat(self.control_path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(st.st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(os.path.dirname(self.control_path)).st_mode & 0o777, 0o700)

    def test_hello_lists_the_features_the_app_has(self):
        app, sup = self.successor(tasks={'t': lambda p, c, j: None}, probes={'p': lambda: ProbeResult('OK', '')},
                                  on_startup_completed=lambda e: None, build_id='v2')
        self.in_thread(app.begin)
        hello = sup.hello('h-1')
        self.assertEqual((hello['features'], hello['buildId']), (['jobs', 'probes', 'lifecycle'], b'v2'))

    def test_abort_before_begin_exits_0_without_draining(self):
        app, sup = self.successor()
        self.in_thread(app.begin)
        sup.hello('h-1')
        sup.send({'type': 'Abort', 'handoffId': 'h-1', 'reason': 'test'})
        self.assertEqual(self.exit_code(), 0)
        self.assertNotIn('drain', self.drainable.calls)

    def test_abort_after_begin_drains_releases_the_lock_and_exits_0(self):
        app, sup = self.successor()
        begun = self.in_thread(app.begin)
        sup.hello('h-1')
        sup.send({'type': 'Begin', 'handoffId': 'h-1', 'sealedRevisionPerShard': {}, 'sealedFingerprint': b'', 'incumbentPid': 0})
        begun.get(timeout=TIMEOUT)
        sup.send({'type': 'Abort', 'handoffId': 'h-1', 'reason': 'test'})
        self.assertEqual(self.exit_code(), 0)
        self.assertEqual(self.drainable.calls, ['drain'])  # it may have served: it stops cleanly (7.4)
        self.assertLessEqual(self.drainable.deadlines[0] - time.monotonic(), 2.0)
        self.assertIsNone(holder_pid(self.data_dir))

    def test_a_stall_point_holds_the_abort_there(self):
        app, sup = self.successor(env_extra={'BATON_STALL_POINTS': 'successor.on_abort:800'})
        self.in_thread(app.begin)
        sup.hello('h-1')
        t0 = time.monotonic()
        sup.send({'type': 'Abort', 'handoffId': 'h-1', 'reason': 'test'})
        self.assertEqual(self.exit_code(), 0)
        self.assertGreaterEqual(time.monotonic() - t0, 0.8)

    def test_fail_reports_E_OPEN_FAILED_and_exits_1(self):
        app, sup = self.successor()

        def open_data(begin):
            raise RuntimeError('disk on fire')
        self.in_thread(app.run, open_data)
        sup.hello('h-1')
        sup.send({'type': 'Begin', 'handoffId': 'h-1', 'sealedRevisionPerShard': {}, 'sealedFingerprint': b'', 'incumbentPid': 0})
        self.assertEqual(sup.expect('Error'), {'type': 'Error', 'code': 'E_OPEN_FAILED', 'message': 'disk on fire'})
        self.assertEqual(self.exit_code(), 1)
        self.assertIsNone(holder_pid(self.data_dir))

    def test_lock_held_by_a_live_process_is_E_LOCK_HELD_after_5_s(self):
        holder = hold_lock(self.data_dir)
        self.addCleanup(lambda: (holder.kill(), holder.wait()))
        app, sup = self.successor()
        self.in_thread(app.begin)
        sup.hello('h-1')
        t0 = time.monotonic()
        sup.send({'type': 'Begin', 'handoffId': 'h-1', 'sealedRevisionPerShard': {}, 'sealedFingerprint': b'', 'incumbentPid': 0})
        err = sup.expect('Error')
        self.assertEqual(err['code'], 'E_LOCK_HELD')
        self.assertGreaterEqual(time.monotonic() - t0, 4.9)
        self.assertEqual(self.exit_code(), 1)
        self.assertEqual(holder_pid(self.data_dir), holder.pid)  # the other holder's lock is untouched

    def test_supervisor_lost_after_a_healthy_ready_with_no_incumbent_commits_on_its_own(self):
        app, sup = self.successor()
        started = self.in_thread(app.run, lambda b: None)
        sup.hello('h-1')
        sup.send({'type': 'Begin', 'handoffId': 'h-1', 'sealedRevisionPerShard': {}, 'sealedFingerprint': b'', 'incumbentPid': 0})
        sup.expect('Ready')
        sup.close()
        started.get(timeout=TIMEOUT)  # committed on its own (7.5): it binds the control path
        self.assertTrue(stat.S_ISSOCK(os.stat(self.control_path).st_mode))
        self.assertTrue(self.exits.empty())

    def test_an_unexpected_message_is_E_UNEXPECTED_MESSAGE_and_the_successor_exits(self):
        app, sup = self.successor()
        self.in_thread(app.begin)
        sup.hello('h-1')
        sup.send({'type': 'Commit', 'handoffId': 'h-1'})
        self.assertEqual(sup.expect('Error')['code'], 'E_UNEXPECTED_MESSAGE')
        self.assertEqual(self.exit_code(), 1)

    def test_a_silent_supervisor_is_lost_after_the_liveness_timeout(self):
        app, sup = self.successor(env_extra={'BATON_LIVENESS_MS': '500'})
        self.in_thread(app.begin)
        sup.hello('h-1')
        err = sup.expect('Error')  # after one heartbeat period (2 s) with nothing from us
        self.assertEqual(err['code'], 'E_TIMEOUT')
        self.assertEqual(self.exit_code(), 1)


class Incumbent(AppCase):
    def test_handoff_drain_seal_commit_exits_0_after_on_exit(self):
        reasons = []
        app, s = self.incumbent(on_exit=reasons.append)
        s.prepare('h-1')
        self.assertEqual(s.expect('Drained'), {'type': 'Drained', 'handoffId': 'h-1', 'openConnsRemaining': 0, 'acceptClosed': True})
        self.assertAlmostEqual(self.drainable.deadlines[0] - time.monotonic(), 5.0, delta=0.5)
        s.send({'type': 'SealRequest', 'handoffId': 'h-1'})
        self.assertEqual(s.expect('SealProgress')['done'], 1)
        complete = s.expect('SealComplete')
        self.assertEqual(complete['lastRevisionPerShard'], {'0': 0})
        self.assertIsNone(holder_pid(self.data_dir))  # released before SealComplete
        s.send({'type': 'Commit', 'handoffId': 'h-1'})
        s.expect('Committed')
        self.assertEqual(self.exit_code(), 0)
        self.assertEqual(reasons, ['handoff h-1 committed'])
        with self.assertRaises(OSError):  # the control socket was closed before Committed
            Peer.connect(self.control_path).close()

    def test_resume_after_abort_retakes_the_lock_and_a_late_commit_is_E_ABORTED(self):
        app, s = self.incumbent()
        s.drain_and_seal('h-1')
        s.send({'type': 'ResumeAfterAbort', 'handoffId': 'h-1'})
        s.expect('Resumed')
        self.assertEqual(self.drainable.calls[-3:], ['drain', 'seal', 'resume'])
        self.assertEqual(holder_pid(self.data_dir), os.getpid())
        s.close()
        late = self.attach('h-2')
        late.send({'type': 'Commit', 'handoffId': 'h-1'})
        self.assertEqual(late.expect('Error')['code'], 'E_ABORTED')
        self.assertTrue(self.exits.empty())

    def test_losing_the_supervisor_mid_handoff_resumes_on_its_own(self):
        app, s = self.incumbent()
        s.drain_and_seal('h-1')
        s.close()
        wait_for(lambda: self.drainable.calls[-1:] == ['resume'] and holder_pid(self.data_dir) == os.getpid(), 'the self-abort')
        self.attach('h-2').send({'type': 'ResumeAfterAbort', 'handoffId': 'h-2'})  # idempotent: already serving

    def test_drain_or_seal_that_raise_resume_and_report_failed(self):
        app, s = self.incumbent()
        self.drainable.drain_error = RuntimeError('no drain')
        s.prepare('h-1')
        self.assertEqual(s.expect('DrainFailed')['error'], 'no drain')
        self.assertEqual(self.drainable.calls[-2:], ['drain', 'resume'])
        s.close()
        self.drainable.drain_error = None
        err = RuntimeError('no seal')
        err.partial_state = {'0': 3}
        self.drainable.seal_error = err
        s = self.attach('h-2')
        s.prepare('h-2')
        s.expect('Drained')
        s.send({'type': 'SealRequest', 'handoffId': 'h-2'})
        failed = s.expect('SealFailed')
        self.assertEqual((failed['error'], failed['partialState']), ('no seal', {'0': 3}))
        self.assertEqual(holder_pid(self.data_dir), os.getpid())  # never released

    def test_an_app_that_cannot_resume_says_E_RESUME_FAILED_and_exits_70(self):
        app, s = self.incumbent()
        self.drainable.drain_error = RuntimeError('no drain')
        self.drainable.resume_error = RuntimeError('no listener left')
        s.prepare('h-1')
        err = s.expect('Error')
        self.assertEqual(err['code'], 'E_RESUME_FAILED')
        self.assertIn('no listener left', err['message'])
        self.assertEqual(self.exit_code(), 70)

    def test_heartbeats_flow_while_the_seal_keeps_its_thread_busy(self):
        app, s = self.incumbent()
        self.drainable.seal_busy_s = 4.5
        s.prepare('h-1')
        s.expect('Drained')
        before = s.heartbeats
        s.send({'type': 'SealRequest', 'handoffId': 'h-1'})
        s.expect('SealProgress')
        self.assertGreaterEqual(s.heartbeats - before, 2)

    def test_a_second_session_is_E_BUSY_and_the_first_one_goes_on(self):
        app, s = self.incumbent()
        second = Peer.connect(self.control_path)
        self.assertEqual(second.expect('Error')['code'], 'E_BUSY')
        self.assertIsNone(second.recv())
        s.send({'type': 'ProbeRequest', 'requestId': 'r1'})
        self.assertEqual(s.expect('ProbeReport')['probes'], '[]')

    def test_shutdown_notifies_drains_seals_releases_and_exits_0(self):
        events = []
        app, s = self.incumbent(on_shutdown_requested=events.append, on_shutdown_completed=events.append)
        s.send({'type': 'Shutdown', 'reason': 'admin', 'timeoutMs': 10_000})
        self.assertEqual(self.exit_code(), 0)
        self.assertEqual([type(e).__name__ for e in events], ['ShutdownRequested', 'ShutdownCompleted'])
        self.assertEqual((events[0].reason, events[0].timeout_ms, events[1].reason), ('admin', 10_000, 'admin'))
        self.assertEqual(self.drainable.calls[-2:], ['drain', 'seal'])
        self.assertIsNone(holder_pid(self.data_dir))

    def test_startup_completed_reaches_the_listeners(self):
        got = threading.Event()
        seen = []
        app, s = self.incumbent(on_startup_completed=lambda e: (seen.append(e), got.set()))
        app.on('startup-completed', lambda e: seen.append(('on', e.duration_ms)))
        s.send({'type': 'StartupCompleted', 'durationMs': 1234, 'components': ['supervisor', 'app']})
        self.assertTrue(got.wait(TIMEOUT))
        wait_for(lambda: len(seen) == 2, 'both listeners')
        self.assertEqual((seen[0].duration_ms, seen[0].components, seen[1]), (1234, ['supervisor', 'app'], ('on', 1234)))

    def test_lock_lost_exits_70(self):
        app, s = self.incumbent()
        os.rmdir(os.path.join(self.data_dir, '.baton.lock'))
        self.assertEqual(self.exit_code(), 70)  # within one refresh period (2 s)


class Jobs(AppCase):
    def start(self, s, job_id, task, params='{}'):
        s.send({'type': 'JobStart', 'jobId': job_id, 'task': task, 'urgency': 'low', 'reason': 'test', 'params': params})

    def test_a_job_reports_throttled_progress_and_its_result(self):
        def count(progress, cancel, job):
            for i in range(1, job.params['n'] + 1):
                progress(i, job.params['n'], {'items': i})
                cancel.wait(0.01)
            return {'counted': job.params['n'], 'urgency': job.urgency}
        app, s = self.incumbent(tasks={'count': count})
        self.start(s, 'j1', 'count', '{"n": 50}')
        progress = []
        while True:
            msg = s.recv()
            if msg['type'] != 'JobProgress':
                break
            progress.append(msg)
        self.assertEqual(msg['type'], 'JobDone')
        self.assertEqual((msg['jobId'], msg['outcome'], msg['result']), ('j1', 'succeeded', '{"counted": 50, "urgency": "low"}'))
        self.assertNotIn('error', msg)
        self.assertGreaterEqual(len(progress), 2)
        self.assertLess(len(progress), 10)  # >= 500 ms of work, at most one every 200 ms
        self.assertEqual(progress[-1], {'type': 'JobProgress', 'jobId': 'j1', 'done': 50, 'total': 50, 'counters': {'items': 50}})

    def test_job_cancel_probes_while_running_and_failures(self):
        started = threading.Event()

        def wait_for_cancel(progress, cancel, job):
            started.set()
            cancel.wait(TIMEOUT)
            cancel.raise_if_cancelled()

        def boom(progress, cancel, job):
            raise ValueError('bad input')
        app, s = self.incumbent(tasks={'wait': wait_for_cancel, 'boom': boom}, probes={'ok': lambda: ProbeResult('OK', 'fine')})
        self.start(s, 'j1', 'wait')
        self.assertTrue(started.wait(TIMEOUT))
        s.send({'type': 'ProbeRequest', 'requestId': 'r1'})  # allowed while a job runs
        self.assertEqual(s.expect('ProbeReport')['requestId'], 'r1')
        s.send({'type': 'JobCancel', 'jobId': 'j1', 'reason': 'operator'})
        done = s.expect('JobDone')
        self.assertEqual((done['outcome'], done['error']), ('cancelled', 'cancelled: operator'))
        self.start(s, 'j2', 'boom')
        done = s.expect('JobDone')
        self.assertEqual((done['outcome'], done['error'], done['result']), ('failed', 'bad input', 'null'))
        self.start(s, 'j3', 'nope')
        self.assertIn('no task named "nope"', s.expect('JobDone')['error'])
        self.start(s, 'j4', 'wait', '[1]')
        self.assertIn('expected JSON text of an object', s.expect('JobDone')['error'])

    def test_a_lost_session_cancels_the_task_and_the_next_job_fails_while_it_still_runs(self):
        release = threading.Event()
        cancelled = []

        def stubborn(progress, cancel, job):
            cancel.wait(TIMEOUT)
            cancelled.append(cancel.reason)
            release.wait(TIMEOUT)  # ignores its cancellation for a while
        app, s = self.incumbent(tasks={'stubborn': stubborn})
        self.start(s, 'j1', 'stubborn')
        s.close()
        wait_for(lambda: cancelled, 'the cancellation')
        self.assertIn('supervisor connection lost', cancelled[0])
        s2 = self.attach('h-2')
        self.start(s2, 'j2', 'stubborn')
        self.assertIn('still running', s2.expect('JobDone')['error'])
        release.set()

    def test_probes_that_raise_overrun_hang_or_answer_nonsense_are_UNKNOWN(self):
        hang = threading.Event()

        def slow():
            time.sleep(0.03)
            return ProbeResult('OK', 'late')

        def raises():
            raise RuntimeError('probe failed')
        probes = {'ok': lambda: ProbeResult('DEGRADED', 'half', {'n': 1}), 'slow': slow, 'raises': raises,
                  'hangs': lambda: hang.wait(), 'nonsense': lambda: 42}
        app, s = self.incumbent(probes=probes)
        s.send({'type': 'ProbeRequest', 'requestId': 'r1'})
        report = {p['name']: p for p in json.loads(s.expect('ProbeReport')['probes'])}
        self.assertEqual({k: v['status'] for k, v in report.items()},
                         {'ok': 'DEGRADED', 'slow': 'UNKNOWN', 'raises': 'UNKNOWN', 'hangs': 'UNKNOWN', 'nonsense': 'UNKNOWN'})
        self.assertEqual((report['ok']['message'], report['ok']['details']), ('half', {'n': 1}))
        self.assertRegex(report['slow']['message'], r'answered in [\d.]+ ms \(limit 10 ms\)')
        self.assertEqual(report['raises']['message'], 'threw: probe failed')
        self.assertEqual(report['hangs']['message'], 'no answer within 10 ms')
        self.assertIn('bad answer', report['nonsense']['message'])
        s.send({'type': 'ProbeRequest', 'requestId': 'r2'})  # the hung call is not started again
        report = {p['name']: p for p in json.loads(s.expect('ProbeReport')['probes'])}
        self.assertIn('previous call has not returned', report['hangs']['message'])
        hang.set()


class Standalone(AppCase):
    def test_begin_takes_the_lock_ready_returns_close_releases(self):
        app = self.app(self.env())
        self.assertEqual(app.role, 'standalone')
        begin = app.begin()
        self.assertEqual((begin.role, begin.incumbent_pid), ('standalone', 0))
        self.assertEqual(holder_pid(self.data_dir), os.getpid())
        app.ready()
        app.close()
        self.assertIsNone(holder_pid(self.data_dir))

    def test_no_data_dir_is_E_BAD_ENV(self):
        with self.assertRaises(BatonError) as cm:
            self.app({})
        self.assertEqual(cm.exception.code, 'E_BAD_ENV')


def wait_for(check, what, timeout=TIMEOUT):
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f'timed out waiting for {what}')
        time.sleep(0.01)


if __name__ == '__main__':
    unittest.main()
