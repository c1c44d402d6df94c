"""resolve_user reads the image's passwd and group, in every form docker accepts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyctr.errors import UserError
from pyctr.runtime import ResolvedUser, resolve_user


@pytest.mark.parametrize("spec,expected", [
    ("", ResolvedUser(0, 0, [], "/root")),
    ("root", ResolvedUser(0, 0, [], "/root")),
    ("user", ResolvedUser(1000, 1000, [50], "/home/user")),
    ("1000", ResolvedUser(1000, 1000, [50], "/home/user")),
    ("user:staff", ResolvedUser(1000, 50, [], "/home/user")),
    ("user:65534", ResolvedUser(1000, 65534, [50], "/home/user")),
    ("1000:1234", ResolvedUser(1000, 1234, [50], "/home/user")),
    ("nobody", ResolvedUser(65534, 65534, [], "/nonexistent")),
    ("4242", ResolvedUser(4242, 0, [], "/")),  # like docker: no entry -> gid 0, home /
    ("4242:7", ResolvedUser(4242, 7, [], "/")),
])
def test_forms(busybox_rootfs, spec, expected):
    assert resolve_user(busybox_rootfs, spec) == expected


def test_unknown_user_says_what_docker_says(busybox_rootfs):
    with pytest.raises(UserError) as info:
        resolve_user(busybox_rootfs, "foo")
    assert str(info.value).startswith(
        "unable to find user foo: no matching entries in passwd file")


def test_unknown_group(busybox_rootfs):
    with pytest.raises(UserError, match="unable to find group nogrp: no matching entries"):
        resolve_user(busybox_rootfs, "user:nogrp")


def test_image_without_passwd_allows_only_numeric_ids(tmp_path):
    (tmp_path / "etc").mkdir()
    assert resolve_user(tmp_path, "0") == ResolvedUser(0, 0, [], "/")
    with pytest.raises(UserError, match="unable to find user root"):
        resolve_user(tmp_path, "root")


def test_absolute_passwd_symlink_does_not_read_the_hosts(tmp_path):
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    (host_dir / "passwd").write_text("evil:x:0:0::/:/bin/sh\n")
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    os.symlink(str(host_dir / "passwd"), rootfs / "etc" / "passwd")
    with pytest.raises(UserError, match="unable to find user evil"):
        resolve_user(rootfs, "evil")


def test_relative_passwd_symlink_to_the_hosts_etc_passwd_stays_inside(tmp_path):
    assert "daemon:" in Path("/etc/passwd").read_text()  # the host has the user we must not find
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "host").mkdir()
    (rootfs / "host" / "passwd").write_text("inside:x:7:7::/in:/bin/sh\n")
    os.symlink("../" * 20 + "host/passwd", rootfs / "etc" / "passwd")
    with pytest.raises(UserError, match="unable to find user daemon"):
        resolve_user(rootfs, "daemon")
    assert resolve_user(rootfs, "inside") == ResolvedUser(7, 7, [], "/in")
