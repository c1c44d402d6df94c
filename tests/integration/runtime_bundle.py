"""What the runtime's integration tests share: a bundle maker, a state root, create+start+wait.

The fixtures are registered in tests/integration/conftest.py; ``run`` is
imported by the modules that use it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pyctr.runtime import create, default_spec


@pytest.fixture
def bundle(tmp_path, busybox_rootfs):
    """A function writing config.json for ``args`` (spec tweaked by ``edit``) into the bundle."""
    def make(args, edit=None, terminal=False):
        spec = default_spec(args, terminal=terminal)
        if edit:
            edit(spec)
        (tmp_path / "config.json").write_text(json.dumps(spec))
        return tmp_path
    return make


@pytest.fixture
def state_root(tmp_path):
    return tmp_path / "state"


def run(bundle_dir: Path, state_root: Path, name: str, stdin_data: bytes | None = None):
    """create + start + wait, returning (exit code, stdout+stderr text)."""
    r, w = os.pipe()
    in_r = None
    if stdin_data is not None:
        in_r, in_w = os.pipe()
        os.write(in_w, stdin_data)
        os.close(in_w)
    try:
        c = create(name, bundle_dir, state_root=state_root, stdout=w, stderr=w,
                   stdin=in_r if in_r is not None else 0)
    finally:
        os.close(w)
        if in_r is not None:
            os.close(in_r)
    try:
        c.start()
        out = b""
        while chunk := os.read(r, 65536):
            out += chunk
        code = c.wait()
    finally:
        os.close(r)
        c.delete()
    return code, out.decode()
