"""
The SDK's codec (baton_sdk.wire) against the golden vectors (protocol/vectors/, see its
README): every valid.json / large.json frame decodes (whole and split into small pieces)
to its "message", every canonical one is re-encoded byte for byte, and every invalid.json
input fails with its error code. Also: the schema the SDK ships is protocol/schema.json.

    python3 -m unittest discover sdk/python/tests
"""
import json
import os
import unittest

from support import PROTOCOL_DIR

import baton_sdk.wire as w

VECTORS = os.environ.get('BATON_VECTORS_DIR') or os.path.join(PROTOCOL_DIR, 'vectors')


def load(name):
    with open(os.path.join(VECTORS, name), encoding='utf-8') as f:
        return json.load(f)


def kinds_of(msg_type):
    return {spec[0]: spec[1] for spec in w.SCHEMA[msg_type]}


def from_json(m):
    """Vector "message" -> codec message: u64 decimal strings -> int, bin hex -> bytes."""
    kinds = kinds_of(m['type'])
    out = {'type': m['type']}
    for name, v in m.items():
        if name == 'type':
            continue
        k = kinds[name]
        if k == 'u64':
            v = int(v)
        elif k in ('bin', 'bin32'):
            v = bytes.fromhex(v)
        elif k == 'revmap':
            v = {s: int(r) for s, r in v.items()}
        out[name] = v
    return out


def decode_all(data, step=None):
    dec = w.FrameDecoder()
    out = []
    pieces = [data] if step is None else [data[i:i + step] for i in range(0, len(data), step)]
    for p in pieces:
        dec.push(p)
        while (m := dec.next()) is not None:
            out.append(m)
    dec.end()
    return out


def first_error(data):
    dec = w.FrameDecoder()
    try:
        dec.push(data)
        while dec.next() is not None:
            pass
        dec.end()
    except w.ProtocolError as e:
        return e.code
    return None


class ValidVectors(unittest.TestCase):
    def check(self, vectors, steps):
        self.assertGreater(len(vectors), 0)
        for v in vectors:
            with self.subTest(v['name']):
                data = bytes.fromhex(v['hex'])
                want = from_json(v['message'])
                for step in steps:
                    self.assertEqual(decode_all(data, step), [want], f'split every {step} bytes')
                if v['canonical']:
                    self.assertEqual(w.encode_frame(want).hex(), v['hex'])

    def test_valid(self):
        self.check(load('valid.json'), [None, 1, 3, 7])

    def test_large(self):
        vectors = load('large.json')
        self.check(vectors, [None, 65536])
        self.assertEqual(int(vectors[0]['hex'][:8], 16), w.MAX_FRAME_LENGTH)

    def test_every_message_type_has_a_vector(self):
        self.assertEqual({v['message']['type'] for v in load('valid.json')}, set(w.SCHEMA))

    def test_frames_written_at_once(self):
        valid = load('valid.json')
        stream = b''.join(bytes.fromhex(v['hex']) for v in valid)
        self.assertEqual(decode_all(stream, 5), [from_json(v['message']) for v in valid])


class InvalidVectors(unittest.TestCase):
    def test_invalid(self):
        vectors = load('invalid.json')
        self.assertGreater(len(vectors), 0)
        for v in vectors:
            with self.subTest(v['name']):
                self.assertEqual(first_error(bytes.fromhex(v['hex'])), v['error'])

    def test_header_errors_need_no_body(self):
        # E_FRAME_TOO_LARGE / _SHORT from the 4 length bytes, E_BAD_VERSION from the 6 header bytes.
        for hexs, code in [('00100001', 'E_FRAME_TOO_LARGE'), ('00000001', 'E_FRAME_TOO_SHORT'), ('000000280002', 'E_BAD_VERSION')]:
            dec = w.FrameDecoder()
            dec.push(bytes.fromhex(hexs))
            with self.assertRaises(w.ProtocolError) as cm:
                dec.next()
            self.assertEqual(cm.exception.code, code)

    def test_frames_before_an_error_are_delivered(self):
        hb = w.encode_frame({'type': 'Heartbeat', 'tsMs': 1, 'phase': 'x'})
        dec = w.FrameDecoder()
        dec.push(hb + bytes.fromhex('00000000'))
        self.assertEqual(dec.next()['type'], 'Heartbeat')
        with self.assertRaises(w.ProtocolError) as cm:
            dec.next()
        self.assertEqual(cm.exception.code, 'E_FRAME_TOO_SHORT')


class Schema(unittest.TestCase):
    def test_the_sdk_ships_protocol_schema_json(self):
        with open(os.path.join(PROTOCOL_DIR, 'schema.json'), encoding='utf-8') as f:
            repo = f.read()
        with open(os.path.join(os.path.dirname(w.__file__), 'schema.json'), encoding='utf-8') as f:
            shipped = f.read()
        self.assertEqual(shipped, repo, 'sdk/python/baton_sdk/schema.json is stale: cp protocol/schema.json sdk/python/baton_sdk/')


class Extras(unittest.TestCase):
    """Rules of PROTOCOL.md section 5 that the vectors do not cover one by one."""

    def hb_with(self, extra_hex):
        body = bytes.fromhex('84a474797065a9486561727462656174a474734d73cf0000000000000005a57068617365a178a178') + bytes.fromhex(extra_hex)
        return (2 + len(body)).to_bytes(4, 'big') + b'\x00\x01' + body

    def test_rejected_even_in_ignored_fields(self):
        for name, extra in [('ext', 'd40100'), ('0xc1', 'c1'), ('int key', '8101a1'), ('duplicate key', '82a16101a16102'),
                            ('bad utf-8', 'a2c328'), ('surrogate', 'a3eda080'), ('33 levels', '91' * 31 + '90')]:
            with self.subTest(name):
                self.assertEqual(first_error(self.hb_with(extra)), 'E_BAD_MSGPACK')

    def test_accepted_in_ignored_fields(self):
        for name, extra in [('float', 'cb3ff0000000000000'), ('nil', 'c0'), ('32 levels', '91' * 30 + '90'), ('negative int', 'd0ff')]:
            with self.subTest(name):
                self.assertEqual(first_error(self.hb_with(extra)), None)

    def test_version_range(self):
        frame = w.encode_frame({'type': 'Commit', 'handoffId': 'h'}, 2)
        dec = w.FrameDecoder(1, 2)
        dec.push(frame)
        self.assertEqual(dec.next(), {'type': 'Commit', 'handoffId': 'h'})
        self.assertEqual(dec.last_version, 2)

    def test_negotiate(self):
        self.assertEqual(w.negotiate(1, 1), 1)
        self.assertEqual(w.negotiate(1, 5), 1)
        self.assertIsNone(w.negotiate(2, 3))
        self.assertIsNone(w.negotiate(1, 0))


if __name__ == '__main__':
    unittest.main()
