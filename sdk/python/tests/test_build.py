"""The in-tree build backend (_build/baton_build.py): the wheel and the sdist it makes."""
import base64
import hashlib
import os
import re
import shutil
import sys
import tarfile
import tempfile
import unittest
import zipfile

import support

import baton_sdk

sys.path.insert(0, os.path.join(support.SDK_DIR, '_build'))
import baton_build  # noqa: E402


class Build(unittest.TestCase):
    def setUp(self):
        self.out = tempfile.mkdtemp(prefix='baton-sdk-build-')
        self.addCleanup(shutil.rmtree, self.out, True)

    def test_the_wheel_has_every_file_of_the_package_metadata_and_a_correct_record(self):
        name = baton_build.build_wheel(self.out)
        self.assertEqual(name, f'baton_sdk-{baton_sdk.__version__}-py3-none-any.whl')
        with zipfile.ZipFile(os.path.join(self.out, name)) as z:
            files = {i.filename: z.read(i) for i in z.infolist()}
        package = sorted(f for f in os.listdir(os.path.dirname(baton_sdk.__file__)) if not f.startswith('__pycache__'))
        self.assertEqual(sorted(f[len('baton_sdk/'):] for f in files if f.startswith('baton_sdk/')), package)
        self.assertIn('py.typed', package)
        self.assertIn('schema.json', package)
        info = f'baton_sdk-{baton_sdk.__version__}.dist-info'
        meta = files[f'{info}/METADATA'].decode()
        self.assertIn('Name: baton-sdk\n', meta)
        self.assertIn(f'Version: {baton_sdk.__version__}\n', meta)  # pyproject.toml and __version__ agree
        self.assertIn('Requires-Python: >=3.9\n', meta)
        for line in files[f'{info}/RECORD'].decode().splitlines():
            path, digest, size = line.split(',')
            if path.endswith('RECORD'):
                continue
            data = files[path]
            want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()
            self.assertEqual((digest, size), (f'sha256={want}', str(len(data))), path)

    def test_the_sdist_rebuilds(self):
        name = baton_build.build_sdist(self.out)
        with tarfile.open(os.path.join(self.out, name)) as t:
            names = t.getnames()
        top = name[:-len('.tar.gz')]
        for f in ('PKG-INFO', 'pyproject.toml', 'README.md', '_build/baton_build.py', 'baton_sdk/py.typed', 'tests/test_build.py'):
            self.assertIn(f'{top}/{f}', names)
        self.assertFalse([n for n in names if re.search(r'__pycache__|\.pyc$', n)])

    def test_the_editable_wheel_points_here(self):
        name = baton_build.build_editable(self.out)
        with zipfile.ZipFile(os.path.join(self.out, name)) as z:
            self.assertEqual(z.read('baton_sdk_editable.pth').decode().strip(), support.SDK_DIR)


if __name__ == '__main__':
    unittest.main()
