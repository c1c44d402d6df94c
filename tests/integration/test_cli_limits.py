"""Resource limits through the CLI, read back from the kernel (v1 here; v2 in the guest).

Run on this hybrid host by the integration tier, and inside the pure cgroup v2
kernel guest by the vm tier (scripts/test.sh runs this file there too).
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from pyctr.cgroups import detect

pytestmark = pytest.mark.root

LAYOUT = detect()
V2 = LAYOUT.driver == "v2"


def cgroup_file(path: str, controller: str, name: str) -> Path:
    """The file of a container's cgroup: /sys/fs/cgroup/<path>/… (v2) or per hierarchy (v1)."""
    base = LAYOUT.unified if V2 else LAYOUT.v1[controller]
    return Path(base) / path.lstrip("/") / name


def test_limit_files_hold_the_values_asked_for(pyctr, name):
    proc = pyctr.start(name, "--memory", "64m", "--cpus", "0.5", "--cpu-shares", "512",
                 "--pids-limit", "64", "--cpuset-cpus", "0", "busybox", "sleep", "60")
    try:
        c = pyctr.container(name)
        path = c["HostConfig"]["CgroupPath"]
        assert path == f"/pyctr/{c['Id']}"
        if V2:
            assert cgroup_file(path, "memory", "memory.max").read_text() == f"{64 << 20}\n"
            assert cgroup_file(path, "cpu", "cpu.max").read_text() == "50000 100000\n"
            assert cgroup_file(path, "pids", "pids.max").read_text() == "64\n"
        else:
            assert int(cgroup_file(path, "memory", "memory.limit_in_bytes").read_text()) \
                == 64 << 20
            assert cgroup_file(path, "cpu", "cpu.cfs_quota_us").read_text() == "50000\n"
            assert cgroup_file(path, "cpu", "cpu.shares").read_text() == "512\n"
            assert cgroup_file(path, "pids", "pids.max").read_text() == "64\n"
        assert cgroup_file(path, "cpuset", "cpuset.cpus").read_text().strip() == "0"
        pid = c["State"]["Pid"]
        procs = cgroup_file(path, "pids", "cgroup.procs").read_text().split()
        assert str(pid) in procs
        inside = pyctr.ok("inspect", name)
        assert json.loads(inside)[0]["HostConfig"]["Memory"] == 64 << 20
    finally:
        pyctr.stop(name, proc)
    # removed with the container
    assert not cgroup_file(path, "pids", "").exists()


def test_cpuset_pins_the_container(pyctr):
    out = pyctr.ok("run", "--rm", "--cpuset-cpus", "0", "busybox", "grep",
                   "Cpus_allowed_list", "/proc/self/status")
    assert out.split() == ["Cpus_allowed_list:", "0"]


def test_memory_hog_is_oom_killed_137_and_reported(pyctr, name):
    # a shell that doubles a string until it no longer fits in 8 MiB
    hog = 'x=x; while :; do x="$x$x"; done'
    r = pyctr("run", "--name", name, "--memory", "8m", "--memory-swap", "8m", "busybox",
              "sh", "-c", hog, timeout=120)
    assert r.returncode == 137
    assert "OOM" in r.stderr and "8MiB" in r.stderr and "--memory" in r.stderr
    c = pyctr.container(name)
    assert c["State"]["OOMKilled"] is True and c["State"]["ExitCode"] == 137
    assert json.loads(pyctr.ok("inspect", name))[0]["State"]["OOMKilled"] is True
    line = next(ln for ln in pyctr.ok("ps", "-a").splitlines() if name in ln)
    assert "Exited (137)" in line and "(OOMKilled)" in line
    pyctr.ok("rm", name)


def test_fork_bomb_stops_at_the_pids_limit(pyctr):
    # the bomb runs in a subshell: ash exits (status 2) on its first failed fork, and
    # with every pid taken nothing could fork to count them — so the count is read
    # with shell builtins from the container's own pids.current
    script = "(i=0; while [ $i -lt 40 ]; do sleep 5 & i=$((i+1)); done) 2>/dev/null; " \
             "f=/sys/fs/cgroup/pids.current; [ -e $f ] || f=/sys/fs/cgroup/pids/pids.current; " \
             "read n < $f; echo $n"
    out = pyctr.ok("run", "--rm", "--pids-limit", "16", "busybox", "sh", "-c", script,
                   timeout=60)
    # sh and the sleeps that fit: the limit was reached, never passed
    assert 10 <= int(out.strip()) <= 16


def test_cpus_half_gets_half_a_cpu(pyctr, name):
    proc = pyctr.start(name, "--cpus", "0.5", "busybox", "sh", "-c", "while :; do :; done")
    try:
        c = pyctr.container(name)
        path = c["HostConfig"]["CgroupPath"]

        def usage_ns() -> int:
            if V2:
                stat = cgroup_file(path, "cpu", "cpu.stat").read_text().split()
                return int(stat[stat.index("usage_usec") + 1]) * 1000
            return int(cgroup_file(path, "cpuacct", "cpuacct.usage").read_text())

        u0, t0 = usage_ns(), time.monotonic()
        time.sleep(3)
        u1, t1 = usage_ns(), time.monotonic()
        share = (u1 - u0) / ((t1 - t0) * 1e9)
        assert 0.5 * 0.85 <= share <= 0.5 * 1.15, share
    finally:
        pyctr.stop(name, proc)


def test_stats_update_pause_unpause(pyctr, name):
    proc = pyctr.start(name, "--memory", "64m", "busybox", "sh", "-c",
                 "while :; do :; done")
    try:
        out = json.loads(pyctr.ok("stats", "--no-stream", "--format", "json", name))
        assert out["Name"] == name and out["MemUsage"].endswith(" / 64MiB")
        assert int(out["PIDs"]) >= 1 and out["NetIO"].count(" / ") == 1
        assert float(out["CPUPerc"].rstrip("%")) > 10
        pyctr.ok("update", "--memory", "128m", "--pids-limit", "99", name)
        path = pyctr.container(name)["HostConfig"]["CgroupPath"]
        if V2:
            assert cgroup_file(path, "memory", "memory.max").read_text() == f"{128 << 20}\n"
        else:
            assert int(cgroup_file(path, "memory", "memory.limit_in_bytes").read_text()) \
                == 128 << 20
        assert cgroup_file(path, "pids", "pids.max").read_text() == "99\n"
        assert json.loads(pyctr.ok("inspect", name))[0]["HostConfig"]["Memory"] == 128 << 20

        pyctr.ok("pause", name)
        state = json.loads(pyctr.ok("inspect", name))[0]["State"]
        assert state["Status"] == "paused" and state["Paused"] is True
        assert "(Paused)" in pyctr.ok("ps")
        cpu0 = json.loads(pyctr.ok("stats", "--no-stream", "--format", "json", name))
        assert float(cpu0["CPUPerc"].rstrip("%")) < 1  # a frozen busy loop uses no CPU
        r = pyctr("pause", name)
        assert r.returncode == 1 and "already paused" in r.stderr
        pyctr.ok("unpause", name)
        assert json.loads(pyctr.ok("inspect", name))[0]["State"]["Status"] == "running"
        cpu1 = json.loads(pyctr.ok("stats", "--no-stream", "--format", "json", name))
        assert float(cpu1["CPUPerc"].rstrip("%")) > 10
    finally:
        pyctr.stop(name, proc)


def test_no_cgroup_remains_after_a_sigkill_from_outside(pyctr, name):
    proc = pyctr.start(name, "busybox", "sleep", "60")
    c = pyctr.container(name)
    path = c["HostConfig"]["CgroupPath"]
    assert cgroup_file(path, "pids", "cgroup.procs").exists()
    os.kill(c["State"]["Pid"], signal.SIGKILL)
    assert proc.wait(timeout=20) == 137
    assert not cgroup_file(path, "pids", "").exists()
    pyctr.ok("rm", name)


def test_limits_the_host_cannot_take_fail_before_start(pyctr, name):
    ncpu = os.cpu_count()
    for args, msg in (
            (["--memory", "1k"], "Minimum memory limit allowed is 6MB"),
            (["--cpuset-cpus", str(ncpu + 5)], "Requested CPUs are not available"),
            (["--cpus", str(ncpu + 1)], f"as there are only {ncpu} CPUs available"),
            (["--memory", "lots"], "--memory"),
    ):
        r = pyctr("run", "--name", name, *args, "busybox", "true")
        assert r.returncode == 125, args
        assert msg in r.stderr and "Traceback" not in r.stderr
        with pytest.raises(KeyError):
            pyctr.container(name)  # nothing was created


def test_cgroup_namespace_shows_the_containers_own_cgroup_as_root(pyctr):
    out = pyctr.ok("run", "--rm", "busybox", "cat", "/proc/self/cgroup")
    for line in out.splitlines():
        assert line.split(":", 2)[2] == "/", line  # every hierarchy: the container's own root
    mounts = pyctr.ok("run", "--rm", "busybox", "grep", " /sys/fs/cgroup", "/proc/self/mounts")
    assert all(" ro," in line or line.split()[3].startswith("ro") for line in
               mounts.splitlines())
    if V2:
        assert pyctr.ok("run", "--rm", "--memory", "64m", "busybox", "cat",
                        "/sys/fs/cgroup/memory.max") == f"{64 << 20}\n"


def test_a_crashed_runs_cgroup_goes_with_the_next_command_and_prune(pyctr, name):
    # in the CLI's own process, so that the monitor is what dies
    proc = pyctr.start(name, "--memory", "64m", "busybox", "sleep", "60", local=True)
    c = pyctr.container(name)
    path = c["HostConfig"]["CgroupPath"]
    proc.send_signal(signal.SIGKILL)  # pyctr run dies without cleaning up …
    proc.wait()
    os.kill(c["State"]["Pid"], signal.SIGKILL)  # … and so does the container
    assert cgroup_file(path, "pids", "").exists()
    out = pyctr.ok("ps", "-a")  # the next command notices
    assert name in out and "Exited" in out
    assert not cgroup_file(path, "pids", "").exists()
    # a cgroup no container owns (a crash before the record was written) goes with prune
    orphan = "/pyctr/" + "f" * 64
    for ctrl in (("memory", "pids") if not V2 else ("memory",)):
        cgroup_file(orphan, ctrl, "").mkdir(parents=True, exist_ok=True)
    out = pyctr.ok("system", "prune", "-f")
    assert c["Id"] in out and orphan in out
    assert not cgroup_file(orphan, "memory", "").exists()
    with pytest.raises(KeyError):
        pyctr.container(name)


def test_cgroup_parent_is_made_and_removed_but_never_a_foreign_one(pyctr, name):
    parent = f"pyctr-cgp-{uuid.uuid4().hex[:8]}/sub"  # a test-specific parent
    proc = pyctr.start(name, "--cgroup-parent", parent, "busybox", "sleep", "30")
    try:
        c = pyctr.container(name)
        assert c["HostConfig"]["CgroupPath"] == f"/{parent}/{c['Id']}"
        assert str(c["State"]["Pid"]) in cgroup_file(
            c["HostConfig"]["CgroupPath"], "pids", "cgroup.procs").read_text().split()
    finally:
        pyctr.stop(name, proc)
    assert not cgroup_file(f"/{parent.split('/')[0]}", "pids", "").exists()
    # a cgroup that exists and that pyctr did not make is never filled
    foreign = cgroup_file("/pyctr-test", "pids", "")
    foreign.mkdir(exist_ok=True)
    r = pyctr("run", "--rm", "--cgroup-parent", "pyctr-test", "busybox", "true")
    assert r.returncode == 125 and "pyctr did not create it" in r.stderr
