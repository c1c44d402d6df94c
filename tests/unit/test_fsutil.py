"""fsutil.remove_tree: the run path's rmtree, which must never follow a symlink."""

from __future__ import annotations

import os

from pyctr.fsutil import remove_tree


def test_removes_a_nested_tree(tmp_path):
    top = tmp_path / "c"
    (top / "upper" / "a" / "b").mkdir(parents=True)
    (top / "upper" / "a" / "b" / "f").write_text("x")
    (top / "config.json").write_text("{}")
    os.mkfifo(top / "fifo")
    remove_tree(top)
    assert not top.exists()


def test_symlinks_are_unlinked_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("precious")
    top = tmp_path / "c"
    (top / "upper").mkdir(parents=True)
    os.symlink(outside, top / "upper" / "dirlink")
    os.symlink(outside / "keep", top / "upper" / "filelink")
    remove_tree(top)
    assert not top.exists()
    assert (outside / "keep").read_text() == "precious"


def test_a_missing_path_is_not_an_error(tmp_path):
    remove_tree(tmp_path / "nothing")
    assert list(tmp_path.iterdir()) == []
