"""The `vm` tier: tests that need a pure cgroup v2 machine.

They run inside the kernel guest that scripts/vm-test boots (this host's
cgroups are hybrid):

    scripts/vm-test -- /opt/pyctr/venv/bin/python -m pytest -p no:cacheprovider tests/vm

Tests marked ``vm`` are skipped, with the reason, anywhere else.  Inside the
guest, keep pyctr roots under $PYCTR_TEST_ROOT_BASE (/run/pyctr-vm, a
tmpfs): an overlayfs upperdir cannot live on the guest's own overlay root.
The fixture ``vm_root_base`` gives a fresh directory there.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

CGROUP = Path("/sys/fs/cgroup")
NEEDED_CONTROLLERS = {"cpu", "memory", "pids"}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "vm: needs the pure cgroup v2 kernel guest (run through scripts/vm-test)")


def mount_fstype(path: str) -> str | None:
    """The filesystem type of the mount at exactly `path` (the top one)."""
    fstype = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if left.split()[4] == path:
                fstype = right.split()[0]
    return fstype


def why_not_in_guest() -> str | None:
    """None inside the vm-test guest, else the reason the vm tier is skipped."""
    if os.environ.get("PYCTR_IN_VM") != "1":
        return ("needs the cgroup v2 kernel guest: run it through "
                "scripts/vm-test -- python -m pytest tests/vm (PYCTR_IN_VM is not set)")
    if mount_fstype(str(CGROUP)) != "cgroup2":
        return f"{CGROUP} is not cgroup2 here, though PYCTR_IN_VM=1"
    try:
        have = set((CGROUP / "cgroup.controllers").read_text().split())
    except OSError as e:
        return f"cannot read {CGROUP}/cgroup.controllers: {e}"
    missing = NEEDED_CONTROLLERS - have
    if missing:
        return f"cgroup2 lacks the controllers {' '.join(sorted(missing))}"
    return None


IN_GUEST = why_not_in_guest() is None


@pytest.fixture(autouse=True)
def _vm_tier_only_in_guest(request):
    if request.node.get_closest_marker("vm") is not None:
        why = why_not_in_guest()
        if why:
            pytest.skip(why)
    yield


@pytest.fixture
def vm_root_base():
    """A fresh directory on a tmpfs for a pyctr root inside the guest."""
    base = Path(os.environ.get("PYCTR_TEST_ROOT_BASE", "/run/pyctr-vm"))
    base.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix="t-", dir=base))
    yield d
    shutil.rmtree(d, ignore_errors=True)
