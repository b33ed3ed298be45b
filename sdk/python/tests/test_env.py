"""What the supervisor passes in the environment (PROTOCOL.md 2), and Node's IPC channel fd."""
import os
import socket
import unittest

import support  # noqa: F401 - sys.path
from fake import AppCase

from baton_sdk import BatonError
from baton_sdk.env import Faults, detect_role, drop_node_channel, inherited_listeners

BATON = {'BATON_ROLE': 'successor', 'BATON_CONTROL_FD': '9', 'BATON_CONTROL_PATH': '/run/x/incumbent.sock',
         'BATON_DATA_DIR': '/var/lib/x', 'BATON_GENERATION': '4', 'BATON_LISTEN_FDS': '2', 'BATON_LISTEN_FDNAMES': 'http:admin',
         'BATON_LISTEN_ADDRS': '["tcp://127.0.0.1:8080", "unix:/run/x/admin.sock"]', 'BATON_LISTEN_SPARES': '1'}


class Env(unittest.TestCase):
    def test_role_and_listeners(self):
        info = detect_role(dict(BATON))
        self.assertEqual((info.role, info.control_fd, info.control_path, info.data_dir, info.generation),
                         ('successor', 9, '/run/x/incumbent.sock', '/var/lib/x', 4))
        self.assertEqual({n: (lst.fd, lst.address) for n, lst in info.listeners.items()},
                         {'http': (3, 'tcp://127.0.0.1:8080'), 'admin': (4, 'unix:/run/x/admin.sock')})
        self.assertEqual(detect_role({}).role, 'standalone')

    def test_a_malformed_environment_is_E_BAD_ENV(self):
        for change in [{'BATON_ROLE': 'incumbent'}, {'BATON_CONTROL_FD': '2'}, {'BATON_CONTROL_PATH': ''},
                       {'BATON_LISTEN_FDNAMES': 'http'}, {'BATON_LISTEN_ADDRS': '["tcp://127.0.0.1:1"]'},
                       {'BATON_LISTEN_ADDRS': 'nope'}, {'BATON_LISTEN_FDNAMES': 'http:http'}, {'BATON_LISTEN_FDS': 'x'}]:
            with self.subTest(change), self.assertRaises(BatonError) as cm:
                detect_role({**BATON, **change})
            self.assertEqual(cm.exception.code, 'E_BAD_ENV')
        self.assertEqual(inherited_listeners({'BATON_LISTEN_FDS': '0'}), {})

    def test_drop_node_channel_closes_the_fd_and_removes_the_variables(self):
        theirs, ours = socket.socketpair()
        env = {'NODE_CHANNEL_FD': str(ours.fileno()), 'NODE_CHANNEL_SERIALIZATION_MODE': 'json', 'PATH': '/bin'}
        fd = ours.detach()
        self.assertEqual(drop_node_channel(env), fd)
        self.assertEqual(env, {'PATH': '/bin'})
        theirs.settimeout(5)
        self.assertEqual(theirs.recv(1), b'')  # the other end sees it closed
        theirs.close()
        with self.assertRaises(OSError):
            os.fstat(fd)
        self.assertIsNone(drop_node_channel(env))  # not set: nothing to do
        keep = {'NODE_CHANNEL_FD': '3'}
        self.assertIsNone(drop_node_channel(keep, frozenset([3])))  # never one of ours
        self.assertEqual(keep, {})

    def test_stall_points(self):
        faults = Faults.from_env({'BATON_STALL_POINTS': 'successor.on_abort:50, bad, incumbent.mid_seal:0'})
        self.assertEqual(faults.stalls, {'successor.on_abort': 50, 'incumbent.mid_seal': 0})
        faults.at('elsewhere')  # neither stalls nor crashes


class NodeChannel(AppCase):
    def test_start_baton_drops_the_node_channel(self):
        theirs, ours = socket.socketpair()
        env = self.env(NODE_CHANNEL_FD=str(ours.detach()))
        self.app(env)
        self.assertNotIn('NODE_CHANNEL_FD', env)
        theirs.settimeout(5)
        self.assertEqual(theirs.recv(1), b'')
        theirs.close()


if __name__ == '__main__':
    unittest.main()
