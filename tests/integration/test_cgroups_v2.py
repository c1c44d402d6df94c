"""The v2 driver on a real pure cgroup v2 kernel: run inside the guest,

    scripts/vm-test -- /opt/pyctr/venv/bin/python -m pytest tests/integration/test_cgroups_v2.py

Skipped on v1/hybrid hosts.  Cgroups live in /sys/fs/cgroup/pyctr-test/<id>.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pyctr.cgroups import Resources, detect, open_manager, parse_bytes
from pyctr.cgroups.v2 import V2Manager

pytestmark = pytest.mark.root(reason="the cgroup v2 hierarchy of the real kernel")

LAYOUT = detect()
if LAYOUT.driver != "v2":
    pytestmark = [pytestmark, pytest.mark.skip(
        reason=f"needs a pure cgroup v2 host (this one is {LAYOUT.kind}): run it in "
               "scripts/vm-test")]

GATE = "import sys; sys.stdin.buffer.read(1)\n"


def wait_for(pred, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (v := pred()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return v


@pytest.fixture
def cg():
    mgr = open_manager(f"/pyctr-test/{uuid.uuid4().hex[:12]}", LAYOUT)
    assert isinstance(mgr, V2Manager)
    mgr.procs = []
    try:
        yield mgr
    finally:
        mgr.destroy()
        for p in mgr.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
        try:
            os.rmdir(LAYOUT.unified / "pyctr-test")
        except OSError:
            pass


def start_in(mgr, payload: str, **kw) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", GATE + payload], stdin=subprocess.PIPE, **kw)
    mgr.procs.append(p)
    mgr.add(p.pid)
    p.stdin.write(b"g")
    p.stdin.flush()
    return p


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def read(d: Path, name: str) -> str:
    return (d / name).read_text().strip()


def test_limits_the_kernel_reads_back_and_process_membership(cg):
    res = Resources(memory=parse_bytes("64m"), memory_swap=parse_bytes("64m"), cpus=0.5,
                    cpu_shares=1024, cpuset_cpus="0", pids_limit=32)
    cg.create(res)
    cg.apply(res)
    assert read(cg.dir, "memory.max") == str(64 << 20)
    assert read(cg.dir, "cpu.max") == "50000 100000"
    assert read(cg.dir, "cpu.weight") == "39"
    assert read(cg.dir, "cpuset.cpus") == "0"
    assert read(cg.dir, "pids.max") == "32"
    assert set(read(cg.dir.parent, "cgroup.subtree_control").split()) >= {"cpu", "memory", "pids"}
    p = start_in(cg, "import time; time.sleep(60)")
    assert cg.pids() == [p.pid]
    assert Path(f"/proc/{p.pid}/cgroup").read_text() == f"0::{cg.path}\n"
    st = cg.stats()
    assert st.memory_limit == 64 << 20 and st.pids_limit == 32 and st.pids_current == 1
    cg.kill_all()  # cgroup.kill
    assert cg.pids() == [] and p.wait(timeout=10) == -9


def test_memory_hog_is_oom_killed_and_reported(cg):
    res = Resources(memory=parse_bytes("32m"), memory_swap=parse_bytes("32m"))
    cg.create(res)
    cg.apply(res)
    assert cg.oom_killed() is False
    p = start_in(cg, "chunks = []\nfor _ in range(512):\n    chunks.append(b'x' * (1 << 20))\n")
    assert p.wait(timeout=60) == -9
    assert cg.oom_killed() is True


def test_fork_loop_stops_at_pids_max(cg):
    res = Resources(pids_limit=6)
    cg.create(res)
    cg.apply(res)
    p = start_in(cg, "import os\nr, w = os.pipe()\nn = 0\nwhile n < 50:\n"
                     "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
                     "    if pid == 0:\n        os.close(w); os.read(r, 1); os._exit(0)\n"
                     "    n += 1\nprint(n, flush=True)\ninput()\n", stdout=subprocess.PIPE)
    assert int(p.stdout.readline()) == 5
    assert read(cg.dir, "pids.current") == "6"
    cg.destroy()
    assert p.wait(timeout=10) == -9 and not cg.exists


def test_freeze_stops_cpu_usage_and_thaw_resumes_it(cg):
    cg.create()
    p = start_in(cg, "while True:\n    pass\n")
    wait_for(lambda: cg.stats().cpu_usage_ns > 20_000_000, what="the loop to use CPU")
    cg.freeze()
    assert cg.frozen and "frozen 1" in read(cg.dir, "cgroup.events")
    # cpu.stat is flushed lazily (rstat): settle on a reading, then watch it not move
    def settled():
        a = cg.stats().cpu_usage_ns
        time.sleep(0.1)
        return a if cg.stats().cpu_usage_ns == a else None
    before = wait_for(settled, what="cpu.stat to settle")
    ticks = cpu_ticks(p.pid)
    time.sleep(0.3)  # measuring that nothing happens needs time to pass
    assert cg.stats().cpu_usage_ns == before and cpu_ticks(p.pid) == ticks
    cg.thaw()
    wait_for(lambda: cg.stats().cpu_usage_ns > before + 20_000_000, what="usage after thaw")
    assert p.poll() is None
