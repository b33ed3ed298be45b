"""The data-dir lock (PROTOCOL.md 12): acquire, live and dead holders, ownerless dirs, loss, release."""
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

import support  # noqa: F401 - sys.path

from baton_sdk.lock import (LOCK_DIR_NAME, LOCK_OWNER_NAME, DataDirLock, LockHeld, is_alive, lock_holder,
                            lock_id_of, process_start_time)


class Lock(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='baton-sdk-lock-')
        self.locks = []

    def tearDown(self):
        for lk in self.locks:
            lk._stop.set()
        shutil.rmtree(self.dir, ignore_errors=True)

    def lock(self, **kw):
        lk = DataDirLock(self.dir, **kw)
        self.locks.append(lk)
        return lk

    def owner(self):
        with open(os.path.join(self.dir, LOCK_OWNER_NAME), encoding='utf-8') as f:
            return f.read()

    def plant(self, pid, start_time):
        """A lock dir with a valid owner record naming pid."""
        path = os.path.join(self.dir, LOCK_DIR_NAME)
        os.mkdir(path)
        record = {'pid': pid, 'startTime': start_time, 'bootId': '', 'handoffId': 'h-old', 'acquiredAt': '', 'lockId': lock_id_of(path)}
        with open(os.path.join(self.dir, LOCK_OWNER_NAME), 'w') as f:
            json.dump(record, f)
        return lock_id_of(path)

    def test_acquire_writes_the_owner_record_in_its_exact_form_and_release_removes_both(self):
        lk = self.lock()
        lk.acquire('h-1')
        text = self.owner()
        record = json.loads(text)
        self.assertEqual(list(record), ['pid', 'startTime', 'bootId', 'handoffId', 'acquiredAt', 'lockId'])
        self.assertTrue(text.endswith('}\n') and ' ' not in text)
        self.assertEqual((record['pid'], record['handoffId'], record['startTime']), (os.getpid(), 'h-1', process_start_time(os.getpid())))
        self.assertEqual(record['lockId'], lock_id_of(os.path.join(self.dir, LOCK_DIR_NAME)))
        self.assertEqual(lock_holder(self.dir), (json.loads(text), True))
        with self.assertRaises(LockHeld):
            self.lock().acquire()
        lk.release()
        self.assertEqual(sorted(os.listdir(self.dir)), [])

    def test_a_dead_holder_is_taken_over_at_once_a_live_one_never(self):
        self.assertFalse(is_alive(2**22 + 1))  # above pid_max's default
        child = subprocess.Popen(['sleep', '30'])
        self.addCleanup(lambda: (child.kill(), child.wait()))
        start = None
        while start is None:
            start = process_start_time(child.pid)
        old = self.plant(child.pid, start)
        with self.assertRaises(LockHeld) as cm:
            self.lock().acquire(wait_s=0.2)
        self.assertIn(f'live pid {child.pid}', str(cm.exception))
        child.kill()
        child.wait()
        t0 = time.monotonic()
        lk = self.lock()
        lk.acquire('h-new')
        self.assertLess(time.monotonic() - t0, 1.0)
        self.assertNotEqual(lk.lock_id, old)
        self.assertEqual(json.loads(self.owner())['pid'], os.getpid())
        self.assertEqual(sorted(os.listdir(self.dir)), [LOCK_DIR_NAME, LOCK_OWNER_NAME])  # no reap leftovers

    def test_an_ownerless_dir_is_taken_over_only_once_stale(self):
        path = os.path.join(self.dir, LOCK_DIR_NAME)
        os.mkdir(path)  # a holder that died between its mkdir and its record
        with self.assertRaises(LockHeld) as cm:
            self.lock().acquire(wait_s=0.1)
        self.assertIn('no valid owner record', str(cm.exception))
        old = time.time() - 7
        os.utime(path, (old, old))  # older than max(3 refresh periods, 5 s)
        lk = self.lock()
        lk.acquire()
        self.assertTrue(lk.held)

    def test_a_lost_lock_is_reported_within_a_refresh_period(self):
        lost = threading.Event()
        lk = self.lock(update_ms=100, on_compromised=lambda e: lost.set())
        lk.acquire()
        shutil.rmtree(os.path.join(self.dir, LOCK_DIR_NAME))
        self.assertTrue(lost.wait(5))
        self.assertFalse(lk.held)

    def test_the_refresh_keeps_the_mtime_fresh(self):
        lk = self.lock(update_ms=100)
        lk.acquire()
        path = os.path.join(self.dir, LOCK_DIR_NAME)
        old = time.time() - 60
        os.utime(path, (old, old))
        end = time.monotonic() + 5
        while os.stat(path).st_mtime < time.time() - 5 and time.monotonic() < end:
            time.sleep(0.02)
        self.assertGreater(os.stat(path).st_mtime, time.time() - 5)

    def test_release_never_removes_a_newer_holders_record(self):
        lk = self.lock()
        lk.acquire()
        os.rmdir(os.path.join(self.dir, LOCK_DIR_NAME))  # as if reaped...
        lk2 = self.lock()
        lk2.acquire('h-2')  # ...and taken by someone else meanwhile (same pid here, another generation)
        lk.lock_id, lk2_id = 'x:0', lk2.lock_id
        lk._stop.set()
        lk.release()
        self.assertEqual(json.loads(self.owner())['lockId'], lk2_id)


if __name__ == '__main__':
    unittest.main()
