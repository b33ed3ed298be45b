"""
A PEP 517 build backend for baton_sdk, standard library only, so that `pip install
./sdk/python` works offline and in any Python >= 3.9 (setuptools' backend would need the
`wheel` package, which is not installed everywhere and cannot always be downloaded).

It builds a pure-Python wheel of the package directory baton_sdk/ (every file in it, e.g.
py.typed and schema.json), an sdist, and an editable wheel (a .pth file naming this dir).
Metadata come from pyproject.toml's [project] table (only simple `key = "string"` values
are read: name, version, description, requires-python, license; readme is the long description).
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tarfile
import time
import zipfile
from typing import Any, Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = 'baton_sdk'
SDIST_FILES = ('pyproject.toml', 'README.md')
SDIST_DIRS = ('_build', PACKAGE, 'tests')


def _project() -> Dict[str, str]:
    with open(os.path.join(ROOT, 'pyproject.toml'), encoding='utf-8') as f:
        text = f.read()
    table = re.search(r'^\[project\]\s*$(.*?)(?=^\[|\Z)', text, re.M | re.S)
    if table is None:
        raise RuntimeError('pyproject.toml has no [project] table')
    return dict(re.findall(r'^([A-Za-z-]+)\s*=\s*"([^"]*)"\s*$', table.group(1), re.M))


def _dist_name(p: Dict[str, str]) -> str:
    return re.sub(r'[-_.]+', '_', p['name']).lower()


def _metadata(p: Dict[str, str]) -> str:
    lines = ['Metadata-Version: 2.1', f'Name: {p["name"]}', f'Version: {p["version"]}']
    if 'description' in p:
        lines.append(f'Summary: {p["description"]}')
    if 'requires-python' in p:
        lines.append(f'Requires-Python: {p["requires-python"]}')
    if 'license' in p:
        lines.append(f'License: {p["license"]}')
    readme = os.path.join(ROOT, p.get('readme', 'README.md'))
    body = ''
    if os.path.exists(readme):
        lines.append('Description-Content-Type: text/markdown')
        with open(readme, encoding='utf-8') as f:
            body = f.read()
    return '\n'.join(lines) + '\n\n' + body


def _files(top: str) -> List[Tuple[str, str]]:
    """(path in the archive, path on disk) of every file below top, sorted, caches left out."""
    out = []
    for d, dirs, files in os.walk(os.path.join(ROOT, top)):
        dirs[:] = sorted(x for x in dirs if x != '__pycache__')
        for name in sorted(files):
            if not name.endswith(('.pyc', '.pyo')):
                disk = os.path.join(d, name)
                out.append((os.path.relpath(disk, ROOT).replace(os.sep, '/'), disk))
    return out


def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()
    return f'{arcname},sha256={digest},{len(data)}'


def _write_wheel(wheel_directory: str, contents: List[Tuple[str, bytes]]) -> str:
    p = _project()
    name = f'{_dist_name(p)}-{p["version"]}'
    dist_info = f'{name}.dist-info'
    contents = contents + [
        (f'{dist_info}/METADATA', _metadata(p).encode('utf-8')),
        (f'{dist_info}/WHEEL', b'Wheel-Version: 1.0\nGenerator: baton_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n'),
    ]
    record = [_record_line(a, d) for a, d in contents] + [f'{dist_info}/RECORD,,']
    contents.append((f'{dist_info}/RECORD', ('\n'.join(record) + '\n').encode('utf-8')))
    filename = f'{name}-py3-none-any.whl'
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), 'w', zipfile.ZIP_DEFLATED) as z:
        for arcname, data in contents:
            info = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return filename


def _read(path: str) -> bytes:
    with open(path, 'rb') as f:
        return f.read()


# ---- PEP 517 / PEP 660 hooks

def get_requires_for_build_wheel(config_settings: Optional[Dict[str, Any]] = None) -> List[str]:
    return []


def get_requires_for_build_sdist(config_settings: Optional[Dict[str, Any]] = None) -> List[str]:
    return []


def get_requires_for_build_editable(config_settings: Optional[Dict[str, Any]] = None) -> List[str]:
    return []


def build_wheel(wheel_directory: str, config_settings: Optional[Dict[str, Any]] = None,
                metadata_directory: Optional[str] = None) -> str:
    return _write_wheel(wheel_directory, [(arc, _read(disk)) for arc, disk in _files(PACKAGE)])


def build_editable(wheel_directory: str, config_settings: Optional[Dict[str, Any]] = None,
                   metadata_directory: Optional[str] = None) -> str:
    return _write_wheel(wheel_directory, [(f'{PACKAGE}_editable.pth', (ROOT + '\n').encode('utf-8'))])


def build_sdist(sdist_directory: str, config_settings: Optional[Dict[str, Any]] = None) -> str:
    p = _project()
    name = f'{_dist_name(p)}-{p["version"]}'
    filename = f'{name}.tar.gz'
    with tarfile.open(os.path.join(sdist_directory, filename), 'w:gz', format=tarfile.PAX_FORMAT) as tar:
        def add(arcname: str, data: bytes) -> None:
            info = tarfile.TarInfo(f'{name}/{arcname}')
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))

        add('PKG-INFO', _metadata(p).encode('utf-8'))
        for rel in SDIST_FILES:
            add(rel, _read(os.path.join(ROOT, rel)))
        for top in SDIST_DIRS:
            for arc, disk in _files(top):
                add(arc, _read(disk))
    return filename
