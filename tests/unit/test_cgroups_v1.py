"""The v1 driver against fake v1 hierarchies in tmp_path (one dir per controller)."""

from __future__ import annotations

import errno
import os

import pytest

from pyctr.cgroups import fs
from pyctr.cgroups.detect import Layout
from pyctr.cgroups.manager import open_manager
from pyctr.cgroups.resources import DeviceRule, Resources
from pyctr.cgroups.v1 import V1Manager
from pyctr.errors import PyctrError

UNLIMITED = "9223372036854771712"
FILES = {
    "cpu": {"cpu.shares": "1024", "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1"},
    "cpuacct": {"cpuacct.usage": "0"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "memory": {"memory.limit_in_bytes": UNLIMITED, "memory.memsw.limit_in_bytes": UNLIMITED,
               "memory.soft_limit_in_bytes": UNLIMITED, "memory.usage_in_bytes": "0",
               "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"},
    "pids": {"pids.max": "max", "pids.current": "0"},
    "blkio": {"blkio.bfq.weight": "100", "blkio.throttle.read_bps_device": "",
              "blkio.throttle.write_bps_device": "",
              "blkio.throttle.io_service_bytes_recursive": "Total 0\n"},
    "freezer": {"freezer.state": "THAWED"},
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm"},
}


class FakeKernel:
    def __init__(self, root):
        self.root = root
        self.writes: list[tuple[str, str]] = []
        for c in FILES:
            (root / c).mkdir()
            (root / c / "cgroup.procs").write_text("")
        (root / "cpuset" / "cpuset.cpus").write_text("0-1\n")
        (root / "cpuset" / "cpuset.mems").write_text("0\n")

    def mkdir(self, path):
        if path.exists():
            return False
        path.mkdir()
        ctrl = path.relative_to(self.root).parts[0]
        (path / "cgroup.procs").write_text("")
        for name, text in FILES[ctrl].items():
            (path / name).write_text(text)
        return True

    def write_raw(self, path, data, flags):
        self.writes.append((os.path.relpath(path, self.root), data.decode().rstrip("\n")))
        fd = os.open(path, flags)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    k = FakeKernel(tmp_path)
    monkeypatch.setattr(fs, "mkdir", k.mkdir)
    monkeypatch.setattr(fs, "_write_raw", k.write_raw)
    return k


@pytest.fixture
def mgr(kernel):
    lay = Layout(kind="hybrid", unified=kernel.root / "unified",
                 v1={c: kernel.root / c for c in FILES})
    m = open_manager("/pyctr/c1", lay)
    assert isinstance(m, V1Manager)
    return m


def read(path) -> str:
    return path.read_text().strip()


def test_create_makes_the_cgroup_in_every_hierarchy(kernel, mgr):
    mgr.create()
    for c in FILES:
        assert (kernel.root / c / "pyctr" / "c1").is_dir(), c
    assert mgr.exists


def test_cpuset_levels_are_initialised_from_their_parent_top_down(kernel, mgr):
    mgr.create()
    cs = [w for w in kernel.writes if w[0].startswith("cpuset/")]
    assert cs == [("cpuset/pyctr/cpuset.cpus", "0-1"), ("cpuset/pyctr/cpuset.mems", "0"),
                  ("cpuset/pyctr/c1/cpuset.cpus", "0-1"), ("cpuset/pyctr/c1/cpuset.mems", "0")]


def test_comounted_cpu_cpuacct_is_one_dir(tmp_path, monkeypatch):
    (tmp_path / "cpu,cpuacct").mkdir()
    made = []
    monkeypatch.setattr(fs, "mkdir", lambda p: made.append(p) or p.mkdir() or True)
    monkeypatch.setattr(fs, "_write_raw", lambda *a: None)
    lay = Layout(kind="v1", v1={"cpu": tmp_path / "cpu,cpuacct",
                                "cpuacct": tmp_path / "cpu,cpuacct"})
    m = V1Manager("/pyctr/c1", lay)
    m.create()
    m.add(42)
    assert made == [tmp_path / "cpu,cpuacct/pyctr", tmp_path / "cpu,cpuacct/pyctr/c1"]


def test_add_writes_the_pid_to_each_hierarchy(kernel, mgr):
    mgr.create()
    kernel.writes.clear()
    mgr.add(4242)
    assert sorted(f for f, v in kernel.writes) == sorted(f"{c}/pyctr/c1/cgroup.procs"
                                                         for c in FILES)
    assert mgr.pids() == [4242]


def test_apply_writes_each_controllers_files(kernel, mgr):
    res = Resources(memory=64 << 20, memory_swap=128 << 20, memory_reservation=32 << 20,
                    cpus=1.5, cpu_shares=512, cpuset_cpus="1", cpuset_mems="0", pids_limit=100,
                    blkio_weight=300, device_read_bps=((254, 0, 1 << 20),),
                    device_write_bps=((254, 0, 2 << 20),),
                    devices=(DeviceRule(allow=False),
                             DeviceRule(allow=True, type="c", major=1, minor=3, access="rwm"),
                             DeviceRule(allow=True, type="c", major=136, access="rw"),
                             DeviceRule(allow=False, type="c", major=5, minor=1, access="m")))
    mgr.create(res)
    kernel.writes.clear()
    mgr.apply(res)
    d = mgr.dirs
    assert read(d["memory"] / "memory.limit_in_bytes") == str(64 << 20)
    assert read(d["memory"] / "memory.memsw.limit_in_bytes") == str(128 << 20)  # memory+swap
    assert read(d["memory"] / "memory.soft_limit_in_bytes") == str(32 << 20)
    assert read(d["cpu"] / "cpu.shares") == "512"
    assert read(d["cpu"] / "cpu.cfs_period_us") == "100000"
    assert read(d["cpu"] / "cpu.cfs_quota_us") == "150000"
    assert read(d["cpuset"] / "cpuset.cpus") == "1"
    assert read(d["pids"] / "pids.max") == "100"
    assert read(d["blkio"] / "blkio.bfq.weight") == "300"
    assert read(d["blkio"] / "blkio.throttle.read_bps_device") == f"254:0 {1 << 20}"
    assert read(d["blkio"] / "blkio.throttle.write_bps_device") == f"254:0 {2 << 20}"
    dev = [(f.rsplit("/", 1)[1], v) for f, v in kernel.writes if f.startswith("devices/")]
    assert dev == [("devices.deny", "a"), ("devices.allow", "c 1:3 rwm"),
                   ("devices.allow", "c 136:* rw"), ("devices.deny", "c 5:1 m")]
    # from unlimited: the limit first (memsw, still unlimited, stays above it)
    mem = [f.rsplit("/", 1)[1] for f, _ in kernel.writes if f.startswith("memory/")]
    assert mem[:2] == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]


def test_raising_memory_writes_memsw_before_the_limit(kernel, mgr):
    mgr.create()
    (mgr.dirs["memory"] / "memory.limit_in_bytes").write_text(str(32 << 20))
    kernel.writes.clear()
    mgr.apply(Resources(memory=128 << 20, memory_swap=256 << 20))
    assert [f.rsplit("/", 1)[1] for f, _ in kernel.writes] == [
        "memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]


def test_lowering_memory_writes_the_limit_before_memsw(kernel, mgr):
    mgr.create()
    (mgr.dirs["memory"] / "memory.limit_in_bytes").write_text(str(256 << 20))
    kernel.writes.clear()
    mgr.apply(Resources(memory=32 << 20, memory_swap=64 << 20))
    assert [f.rsplit("/", 1)[1] for f, _ in kernel.writes] == [
        "memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]


def test_missing_memsw_is_an_error_only_when_swap_is_asked_for(kernel, mgr):
    mgr.create()
    (mgr.dirs["memory"] / "memory.memsw.limit_in_bytes").unlink()
    mgr.apply(Resources(memory=64 << 20))
    with pytest.raises(PyctrError) as exc:
        mgr.apply(Resources(memory=64 << 20, memory_swap=128 << 20))
    assert exc.value.errno == errno.ENOENT and "swapaccount=1" in exc.value.hint
    assert exc.value.path.endswith("memory.memsw.limit_in_bytes")


def test_blkio_weight_prefers_blkio_weight_and_fails_when_none_exists(kernel, mgr):
    mgr.create()
    (mgr.dirs["blkio"] / "blkio.weight").write_text("500")
    mgr.apply(Resources(blkio_weight=200))
    assert read(mgr.dirs["blkio"] / "blkio.weight") == "200"
    (mgr.dirs["blkio"] / "blkio.weight").unlink()
    (mgr.dirs["blkio"] / "blkio.bfq.weight").unlink()
    with pytest.raises(PyctrError, match="neither blkio.weight nor blkio.bfq.weight"):
        mgr.apply(Resources(blkio_weight=200))


def test_ebusy_from_the_kernel_names_the_file(kernel, mgr, monkeypatch):
    mgr.create()

    def busy(path, data, flags):
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)

    monkeypatch.setattr(fs, "_write_raw", busy)
    with pytest.raises(PyctrError) as exc:
        mgr.apply(Resources(memory=8 << 20))
    e = exc.value
    assert (e.step, e.errno) == ("cgroup", errno.EBUSY)
    assert e.path == str(mgr.dirs["memory"] / "memory.limit_in_bytes")
    assert "more memory than the new limit" in e.hint
    assert e.render().startswith(f"cgroup: write '{8 << 20}' to {e.path}")


def test_a_missing_controller_is_named(kernel):
    lay = Layout(kind="v1", v1={"memory": kernel.root / "memory"})
    m = V1Manager("/pyctr/c1", lay)
    with pytest.raises(PyctrError, match="the pids cgroup controller is not mounted"):
        m.create(Resources(pids_limit=10))


def test_stats_and_oom_read_the_files(kernel, mgr):
    mgr.create()
    d = mgr.dirs
    (d["cpuacct"] / "cpuacct.usage").write_text("123456789\n")
    (d["memory"] / "memory.usage_in_bytes").write_text("4096\n")
    (d["pids"] / "pids.current").write_text("2\n")
    (d["pids"] / "pids.max").write_text("64\n")
    (d["blkio"] / "blkio.throttle.io_service_bytes_recursive").write_text(
        "254:0 Read 100\n254:0 Write 200\n254:0 Sync 300\n254:0 Total 300\nTotal 300\n")
    st = mgr.stats()
    assert (st.cpu_usage_ns, st.memory_usage, st.memory_limit) == (123456789, 4096, None)
    assert (st.pids_current, st.pids_limit, st.io_read_bytes, st.io_write_bytes) == \
        (2, 64, 100, 200)
    assert mgr.oom_killed() is False
    (d["memory"] / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n"
                                                    "oom_kill 1\n")
    assert mgr.oom_killed() is True


def test_freeze_and_thaw_write_freezer_state(kernel, mgr):
    mgr.create()
    mgr.freeze()
    assert mgr.frozen and read(mgr.dirs["freezer"] / "freezer.state") == "FROZEN"
    mgr.thaw()
    assert not mgr.frozen


def test_destroy_removes_the_leaf_in_every_hierarchy_and_keeps_the_parent(kernel, mgr):
    mgr.create()
    for d in mgr.dirs.values():  # the kernel's files go with rmdir; a fake needs help
        for f in d.iterdir():
            f.unlink()
    mgr.destroy()
    assert not mgr.exists
    assert all((kernel.root / c / "pyctr").is_dir() for c in FILES)
