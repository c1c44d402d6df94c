"""secure_join resolves like the container would and never leaves the root."""

from __future__ import annotations

import errno
import os

import pytest

from pyctr.errors import UserError
from pyctr.runtime import secure_join


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "usr" / "lib").mkdir(parents=True)
    return r


def test_plain_and_missing_components(root):
    assert secure_join(root, "/etc/passwd") == root / "etc" / "passwd"
    assert secure_join(root, "a/b/c") == root / "a" / "b" / "c"
    assert secure_join(root, "/") == root


def test_dotdot_is_clamped_at_the_root(root):
    assert secure_join(root, "../../../etc") == root / "etc"
    assert secure_join(root, "/usr/../../..//etc/./x") == root / "etc" / "x"


def test_absolute_symlink_resolves_inside_the_root(root):
    os.symlink("/usr/lib", root / "lib")
    assert secure_join(root, "/lib/x") == root / "usr" / "lib" / "x"
    os.symlink("/etc/shadow", root / "etc" / "passwd")
    assert secure_join(root, "/etc/passwd") == root / "etc" / "shadow"


def test_relative_symlink_escaping_with_dotdot_is_clamped(root):
    os.symlink("../../../../../../../tmp", root / "usr" / "escape")
    assert secure_join(root, "/usr/escape/f") == root / "tmp" / "f"


def test_symlink_chain_and_dangling_target(root):
    os.symlink("b", root / "a")
    os.symlink("/c", root / "b")
    assert secure_join(root, "a/d") == root / "c" / "d"


def test_symlink_loop_is_an_error(root):
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    with pytest.raises(UserError) as info:
        secure_join(root, "/loop1/x")
    assert info.value.errno == errno.ELOOP
    assert "too many levels of symbolic links resolving '/loop1/x'" in str(info.value)
