"""The v1 driver on this hybrid host's real kernel, in /sys/fs/cgroup/<ctrl>/pyctr-test/<id>.

Every child process is one this test starts, gated on stdin so it runs its
payload only once it is inside the cgroup; every cgroup is destroyed and
pyctr-test is removed again when empty.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pyctr.cgroups import DeviceRule, Resources, detect, open_manager, parse_bytes
from pyctr.cgroups.v1 import V1Manager

pytestmark = pytest.mark.root(reason="cgroup v1 hierarchies of the real kernel")

LAYOUT = detect() if Path("/proc/self/mountinfo").exists() else None
if LAYOUT is None or LAYOUT.driver != "v1":
    pytestmark = [pytestmark, pytest.mark.skip(reason="needs a v1 or hybrid cgroup host")]

GATE = "import sys; sys.stdin.buffer.read(1)\n"


def wait_for(pred, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def cg():
    mgr = open_manager(f"/pyctr-test/{uuid.uuid4().hex[:12]}", LAYOUT)
    assert isinstance(mgr, V1Manager)
    procs: list[subprocess.Popen] = []
    mgr.procs = procs
    try:
        yield mgr
    finally:
        mgr.destroy()
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=5)
        for mount in {m for m in LAYOUT.v1.values()}:
            try:
                os.rmdir(mount / "pyctr-test")
            except OSError:
                pass  # not empty (another test's) or already gone


def start_in(mgr, payload: str, **kw) -> subprocess.Popen:
    """Start python running ``payload`` once it has been moved into the cgroup."""
    p = subprocess.Popen([sys.executable, "-c", GATE + payload], stdin=subprocess.PIPE, **kw)
    mgr.procs.append(p)
    mgr.add(p.pid)
    p.stdin.write(b"g")
    p.stdin.flush()
    return p


def read(d: Path, name: str) -> str:
    return (d / name).read_text().strip()


def test_apply_writes_limits_the_kernel_reads_back(cg):
    res = Resources(memory=parse_bytes("64m"), memory_reservation=parse_bytes("32m"),
                    cpus=0.5, cpu_shares=512, cpuset_cpus="0", pids_limit=32,
                    devices=(DeviceRule(allow=False),
                             DeviceRule(allow=True, type="c", major=1, minor=3, access="rwm")))
    cg.create(res)
    cg.apply(res)
    d = cg.dirs
    assert read(d["memory"], "memory.limit_in_bytes") == str(64 << 20)
    assert read(d["memory"], "memory.soft_limit_in_bytes") == str(32 << 20)
    assert read(d["cpu"], "cpu.cfs_quota_us") == "50000"
    assert read(d["cpu"], "cpu.cfs_period_us") == "100000"
    assert read(d["cpu"], "cpu.shares") == "512"
    assert read(d["cpuset"], "cpuset.cpus") == "0"
    assert read(d["cpuset"], "cpuset.mems") == read(d["cpuset"].parent, "cpuset.mems")
    assert read(d["pids"], "pids.max") == "32"
    assert read(d["devices"], "devices.list") == "c 1:3 rwm"
    st = cg.stats()
    assert st.memory_limit == 64 << 20
    assert st.pids_limit == 32 and st.pids_current == 0
    # update: a running container's limits change in place
    cg.apply(Resources(memory=parse_bytes("128m"), pids_limit=-1))
    assert read(d["memory"], "memory.limit_in_bytes") == str(128 << 20)
    assert read(d["pids"], "pids.max") == "max"
    assert cg.stats().pids_limit is None


def test_added_process_is_in_every_hierarchy_and_kill_all_empties_it(cg):
    cg.create()
    p = start_in(cg, "import time; x = b'x' * (8 << 20); time.sleep(60)")
    for d in cg._unique():
        assert str(p.pid) in read(d, "cgroup.procs").split(), d
    assert cg.pids() == [p.pid]
    cgline = Path(f"/proc/{p.pid}/cgroup").read_text()
    assert f"memory:{cg.path}\n" in cgline and f"pids:{cg.path}\n" in cgline
    # memory charged after the move counts here (v1 does not move earlier charges)
    wait_for(lambda: cg.stats().memory_usage >= 8 << 20, what="the 8 MiB to be charged")
    st = cg.stats()
    assert st.pids_current == int(read(cg.dirs["pids"], "pids.current")) == 1
    assert st.memory_usage == int(read(cg.dirs["memory"], "memory.usage_in_bytes"))
    assert st.cpu_usage_ns == int(read(cg.dirs["cpuacct"], "cpuacct.usage")) > 0
    assert st.memory_limit is None and st.pids_limit is None
    cg.kill_all()
    assert cg.pids() == []
    assert p.wait(timeout=5) == -9
    cg.destroy()
    assert not cg.exists
    assert not any(d.exists() for d in cg.dirs.values())


def test_memory_hog_is_oom_killed_and_reported(cg):
    res = Resources(memory=parse_bytes("32m"), memory_swap=parse_bytes("32m"))
    cg.create(res)
    cg.apply(res)
    assert cg.oom_killed() is False
    p = start_in(cg, "chunks = []\nfor _ in range(512):\n    chunks.append(b'x' * (1 << 20))\n")
    assert p.wait(timeout=10) == -9
    assert cg.oom_killed() is True
    assert "oom_kill 1" in read(cg.dirs["memory"], "memory.oom_control").splitlines()


def test_fork_loop_stops_at_pids_max(cg):
    res = Resources(pids_limit=8)
    cg.create(res)
    cg.apply(res)
    fork_loop = (
        "import os\n"
        "r, w = os.pipe()\n"
        "n = 0\n"
        "while n < 100:\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        os.close(w); os.read(r, 1); os._exit(0)\n"
        "    n += 1\n"
        "print(n, flush=True)\n"
        "print(open('/proc/self/cgroup').read().count('pids:'), flush=True)\n"
        "input()\n"
        "os.close(w)\n"
        "for _ in range(n):\n"
        "    os.wait()\n"
    )
    p = start_in(cg, fork_loop, stdout=subprocess.PIPE)
    forked = int(p.stdout.readline())
    p.stdout.readline()
    assert forked == 7  # the loop itself is the 8th task
    assert read(cg.dirs["pids"], "pids.current") == "8"
    assert cg.stats().pids_current == 8
    assert int(read(cg.dirs["pids"], "pids.events").split()[1]) >= 1  # "max N": refusals
    p.stdin.write(b"\n")
    p.stdin.flush()
    assert p.wait(timeout=5) == 0


def test_freeze_stops_cpu_usage_and_thaw_resumes_it(cg):
    cg.create()
    p = start_in(cg, "while True:\n    pass\n")
    usage = lambda: cg.stats().cpu_usage_ns
    wait_for(lambda: usage() > 20_000_000, what="the busy loop to use CPU")
    cg.freeze()
    assert cg.frozen is True
    assert read(cg.dirs["freezer"], "freezer.state") == "FROZEN"
    before = usage()
    time.sleep(0.2)  # measuring that nothing happens needs time to pass
    assert usage() == before
    assert int(read(cg.dirs["cpuacct"], "cpuacct.usage")) == before
    cg.thaw()
    assert cg.frozen is False
    wait_for(lambda: usage() > before + 20_000_000, what="usage to advance after thaw")
    assert p.poll() is None


def test_destroy_kills_what_is_left_and_removes_every_dir(cg):
    cg.create()
    p = start_in(cg, "import os, time\nos.fork()\ntime.sleep(60)\n")
    wait_for(lambda: len(cg.pids()) == 2, what="the forked child")
    cg.destroy()
    assert p.wait(timeout=5) == -9
    assert not any(d.exists() for d in cg.dirs.values())
    cg.destroy()  # idempotent


def test_frozen_cgroup_is_killed_and_destroyed(cg):
    cg.create()
    p = start_in(cg, "import time; time.sleep(60)")
    cg.freeze()
    cg.destroy()
    assert p.wait(timeout=5) == -9
    assert not cg.exists
