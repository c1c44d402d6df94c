"""scripts/vm-test from the host: one real boot of the guest (~10 s).

Runs on the host (root, qemu and a kernel installed); skipped inside the
guest itself (no qemu in qemu) and, with the reason, where vm-test cannot
start a guest.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

VM_TEST = Path(__file__).resolve().parents[2] / "scripts" / "vm-test"

pytestmark = pytest.mark.root(reason="vm-test reads the kernel and exports / to the guest")


def _cannot_boot() -> str | None:
    if os.environ.get("PYCTR_IN_VM") == "1":
        return "already inside the vm-test guest"
    if os.geteuid() != 0:
        return None  # the root marker skips it with its reason
    r = subprocess.run([str(VM_TEST), "--check"], check=False, capture_output=True,
                       text=True, timeout=60)
    if r.returncode != 0:
        return r.stderr.strip() or r.stdout.strip()
    return None


def test_exit_status_and_cgroup2_controllers():
    why = _cannot_boot()
    if why:
        pytest.skip(why)
    script = ("cat /sys/fs/cgroup/cgroup.controllers; "
              "echo to-stderr >&2; exit 7")
    r = subprocess.run([str(VM_TEST), "--timeout", "300", "--", "/bin/sh", "-c", script],
                       check=False, capture_output=True, text=True, timeout=330, cwd="/")
    assert r.returncode == 7, r.stderr
    controllers = r.stdout.split()
    assert "memory" in controllers and "pids" in controllers and "cpu" in controllers, r.stdout
    assert r.stderr.strip() == "to-stderr"


def test_unknown_option_is_refused():
    # no boot: an unknown option is refused before anything starts
    r = subprocess.run([str(VM_TEST), "--bogus", "--", "true"], check=False,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "unrecognized arguments: --bogus" in r.stderr
