"""Facts about the vm-test guest that the cgroup v2 tests build on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.vm.conftest import CGROUP, mount_fstype

pytestmark = [pytest.mark.vm, pytest.mark.root(reason="the guest runs everything as root")]


def test_sys_fs_cgroup_is_cgroup2():
    assert mount_fstype("/sys/fs/cgroup") == "cgroup2"
    # and nothing of v1 is mounted anywhere
    with open("/proc/self/mountinfo") as f:
        types = {line.partition(" - ")[2].split()[0] for line in f}
    assert "cgroup" not in types


def test_controllers_available_and_enabled():
    have = (CGROUP / "cgroup.controllers").read_text().split()
    assert {"cpu", "memory", "pids"} <= set(have), have
    enabled = (CGROUP / "cgroup.subtree_control").read_text().split()
    assert {"cpu", "memory", "pids", "io", "cpuset"} <= set(enabled), enabled


def test_child_cgroup_memory_max_round_trip():
    parent = CGROUP / "pyctr-test"
    created_parent = not parent.exists()
    parent.mkdir(exist_ok=True)
    child = parent / f"guest-{uuid.uuid4().hex[:8]}"
    try:
        (parent / "cgroup.subtree_control").write_text("+memory +pids")
        child.mkdir()
        (child / "memory.max").write_text("67108864")
        (child / "pids.max").write_text("64")
        assert (child / "memory.max").read_text().strip() == "67108864"
        assert (child / "pids.max").read_text().strip() == "64"
        assert "memory" in (child / "cgroup.controllers").read_text().split()
    finally:
        if child.exists():
            child.rmdir()
        if created_parent:
            parent.rmdir()
    assert not child.exists()


def test_root_and_test_root_base():
    # the guest's / is an overlay (host / over 9p, tmpfs upper); the base
    # for pyctr roots is a tmpfs, where an overlay upperdir may live
    assert mount_fstype("/") == "overlay"
    base = os.environ.get("PYCTR_TEST_ROOT_BASE")
    assert base, "vm-test exports PYCTR_TEST_ROOT_BASE"
    assert os.path.isdir(base)
    assert mount_fstype("/run") == "tmpfs" and base.startswith("/run/")


def test_overlay_with_upper_on_tmpfs(vm_root_base):
    from pyctr.runtime import syscalls

    lower = Path("/etc")  # on the guest's root (host / over 9p, under the overlay)
    upper, work, merged = (vm_root_base / n for n in ("upper", "work", "merged"))
    for d in (upper, work, merged):
        d.mkdir()
    syscalls.mount("overlay", str(merged), "overlay", 0,
                   f"lowerdir={lower},upperdir={upper},workdir={work}")
    try:
        assert (merged / "debian_version").read_text() == (lower / "debian_version").read_text()
        (merged / "pyctr-vm-probe").write_text("written in the guest")
        assert (upper / "pyctr-vm-probe").read_text() == "written in the guest"
        assert not (lower / "pyctr-vm-probe").exists()
    finally:
        syscalls.umount2(str(merged))


UNSHARE_ALL = r"""
import json, os, sys
from pyctr.runtime import syscalls as s
before = {k: os.readlink(f"/proc/self/ns/{k}") for k in KINDS}
s.unshare(s.CLONE_NEWUSER | s.CLONE_NEWNS | s.CLONE_NEWUTS | s.CLONE_NEWIPC
          | s.CLONE_NEWNET | s.CLONE_NEWCGROUP | s.CLONE_NEWPID)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    after = {k: os.readlink(f"/proc/self/ns/{k}") for k in KINDS}
    os.write(w, json.dumps({"pid": os.getpid(), "after": after}).encode())
    os._exit(0)
os.close(w)
data = json.loads(os.read(r, 65536))
_, st = os.waitpid(pid, 0)
data["before"] = before
data["status"] = st
print(json.dumps(data))
"""


def test_unshare_all_namespaces():
    kinds = ["user", "mnt", "uts", "ipc", "net", "cgroup", "pid"]
    code = f"KINDS = {kinds!r}\n" + UNSHARE_ALL
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["status"] == 0
    assert data["pid"] == 1, "the first child is PID 1 of the new pid namespace"
    for k in kinds:
        assert data["after"][k] != data["before"][k], k


PIVOT = r"""
import os, sys, tempfile
from pyctr.runtime import syscalls as s
s.unshare(s.CLONE_NEWNS)
s.mount(None, "/", None, s.MS_REC | s.MS_PRIVATE)
new = sys.argv[1]
s.mount(new, new, None, s.MS_BIND | s.MS_REC)
os.chdir(new)
s.pivot_root(".", ".")
s.umount2(".", s.MNT_DETACH)
print(sorted(os.listdir("/")))
"""


def test_pivot_root_works(vm_root_base):
    # pivot_root fails when / is the initramfs: vm-test switch_roots into
    # its overlay, so containers can pivot here
    (vm_root_base / "marker").write_text("")
    r = subprocess.run([sys.executable, "-c", PIVOT, str(vm_root_base)],
                       check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "marker" in r.stdout
