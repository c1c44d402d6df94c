"""The v2 driver against a fake cgroup2 tree in tmp_path.

The fake kernel: every cgroup dir holds the interface files the kernel
would show; mkdir (fs.mkdir) fills a new one in; writes are recorded in
order (fs._write_raw) and land in the files, so tests assert both the exact
contents and the sequence (subtree_control top-down).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pyctr.cgroups import fs
from pyctr.cgroups.detect import Layout
from pyctr.cgroups.manager import check_path, open_manager
from pyctr.cgroups.resources import Resources
from pyctr.cgroups.v2 import V2Manager
from pyctr.cgroups.v2 import cpu as v2cpu
from pyctr.cgroups.v2 import io as v2io
from pyctr.cgroups.v2 import memory as v2mem
from pyctr.errors import PyctrError, UserError

FILES = {
    "cgroup.controllers": "", "cgroup.subtree_control": "", "cgroup.procs": "",
    "cgroup.events": "populated 0\nfrozen 0\n", "cgroup.freeze": "0", "cgroup.kill": "",
    "memory.max": "max", "memory.swap.max": "max", "memory.low": "0", "memory.current": "0",
    "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
    "cpu.max": "max 100000", "cpu.weight": "100",
    "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
    "cpuset.cpus": "", "cpuset.mems": "", "pids.max": "max", "pids.current": "0",
    "io.weight": "default 100", "io.max": "", "io.stat": "",
}


class FakeKernel:
    def __init__(self, root, controllers="cpuset cpu io memory hugetlb pids rdma misc",
                 subtree="cpuset cpu io memory pids"):
        self.root = root
        self.writes: list[tuple[str, str]] = []
        self.fail: dict[str, int] = {}
        (root / "cgroup.controllers").write_text(controllers + "\n")
        (root / "cgroup.subtree_control").write_text(subtree + "\n")
        (root / "cgroup.procs").write_text("1\n")

    def mkdir(self, path):
        made = not path.exists()
        path.mkdir(exist_ok=True)
        if made:
            parent_sub = (path.parent / "cgroup.subtree_control").read_text().split()
            for name, text in FILES.items():
                (path / name).write_text(text)
            (path / "cgroup.controllers").write_text(" ".join(parent_sub))
        return made

    def write_raw(self, path, data, flags):
        rel = os.path.relpath(path, self.root)
        self.writes.append((rel, data.decode().rstrip("\n")))
        if rel in self.fail:
            raise OSError(self.fail[rel], os.strerror(self.fail[rel]), path)
        if rel.endswith("cgroup.subtree_control"):
            # the kernel keeps a set: "+memory" adds to it
            sub = Path(path)
            have = sub.read_text().split() + [data.decode().strip().lstrip("+")]
            sub.write_text(" ".join(have))
            return
        fs_write = os.open(path, flags)
        try:
            os.write(fs_write, data)
        finally:
            os.close(fs_write)


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    k = FakeKernel(tmp_path)
    monkeypatch.setattr(fs, "mkdir", k.mkdir)
    monkeypatch.setattr(fs, "_write_raw", k.write_raw)
    return k


@pytest.fixture
def layout(kernel):
    return Layout(kind="v2", unified=kernel.root,
                  v2_controllers=frozenset((kernel.root / "cgroup.controllers").read_text().split()))


def read(path) -> str:
    return path.read_text().strip()


def test_open_manager_picks_v2_on_a_pure_v2_host(layout):
    assert isinstance(open_manager("/pyctr/c1", layout), V2Manager)


@pytest.mark.parametrize("path", ["pyctr/c1", "/pyctr", "/process_api/x", "/pyctr/../x", "/"])
def test_paths_outside_pyctrs_parent_are_refused(path):
    with pytest.raises(UserError, match="cgroup path"):
        check_path(path)


def test_create_enables_controllers_top_down_never_in_the_root(kernel, layout):
    mgr = V2Manager("/pyctr/pod/c1", layout)
    mgr.create()
    sub = [(f, v) for f, v in kernel.writes if f.endswith("subtree_control")]
    assert sub == [("pyctr/cgroup.subtree_control", f"+{c}")
                   for c in ("cpuset", "cpu", "io", "memory", "pids")] + \
                  [("pyctr/pod/cgroup.subtree_control", f"+{c}")
                   for c in ("cpuset", "cpu", "io", "memory", "pids")]
    assert all(f != "cgroup.subtree_control" for f, _ in kernel.writes)
    assert read(kernel.root / "pyctr/pod/c1/cgroup.controllers") == "cpuset cpu io memory pids"
    assert read(kernel.root / "pyctr/pod/c1/cgroup.subtree_control") == ""  # a leaf


def test_create_skips_controllers_already_enabled(kernel, layout):
    V2Manager("/pyctr/a", layout).create()
    kernel.writes.clear()
    V2Manager("/pyctr/b", layout).create()
    assert not [w for w in kernel.writes if w[0].endswith("subtree_control")]


def test_root_without_the_controllers_is_explained_not_written(tmp_path, monkeypatch):
    k = FakeKernel(tmp_path, subtree="cpu")
    monkeypatch.setattr(fs, "mkdir", k.mkdir)
    monkeypatch.setattr(fs, "_write_raw", k.write_raw)
    lay = Layout(kind="v2", unified=tmp_path, v2_controllers=frozenset({"cpu", "memory", "pids"}))
    with pytest.raises(PyctrError) as exc:
        V2Manager("/pyctr/c1", lay).create()
    assert exc.value.message == (f"cgroup controller memory pids is not enabled in "
                                 f"{tmp_path}/cgroup.subtree_control")
    assert f"echo '+memory +pids' > {tmp_path}/cgroup.subtree_control" in exc.value.hint
    assert k.writes == [] and not (tmp_path / "pyctr").exists()


def test_a_controller_the_kernel_lacks_is_named(tmp_path, monkeypatch):
    k = FakeKernel(tmp_path, controllers="cpu memory pids", subtree="cpu memory pids")
    monkeypatch.setattr(fs, "mkdir", k.mkdir)
    lay = Layout(kind="v2", unified=tmp_path, v2_controllers=frozenset({"cpu", "memory", "pids"}))
    with pytest.raises(PyctrError, match="cgroup controller io is not available in"):
        V2Manager("/pyctr/c1", lay).create(Resources(blkio_weight=100))


def test_ebusy_on_subtree_control_names_the_file_and_the_rule(kernel, layout):
    (kernel.root / "pyctr").mkdir()
    for name, text in FILES.items():
        (kernel.root / "pyctr" / name).write_text(text)
    kernel.fail["pyctr/cgroup.subtree_control"] = errno.EBUSY
    with pytest.raises(PyctrError) as exc:
        V2Manager("/pyctr/c1", layout).create()
    e = exc.value
    assert e.step == "cgroup" and e.errno == errno.EBUSY
    assert e.path == str(kernel.root / "pyctr/cgroup.subtree_control")
    assert "no-internal-processes rule" in e.hint
    assert "write '+cpuset' to" in e.render() and "EBUSY" in e.render()


def test_add_writes_cgroup_procs_and_refuses_an_inner_node(kernel, layout):
    mgr = V2Manager("/pyctr/c1", layout)
    mgr.create()
    mgr.add(4242)
    assert read(mgr.dir / "cgroup.procs") == "4242"
    assert mgr.pids() == [4242]
    parent = V2Manager("/pyctr/x", layout)
    parent.create()
    (parent.dir / "cgroup.subtree_control").write_text("memory")
    with pytest.raises(PyctrError, match="it enables controllers for children") as exc:
        parent.add(4242)
    assert "no-internal-processes" in exc.value.hint


def test_eopnotsupp_on_cgroup_procs_is_explained(kernel, layout):
    mgr = V2Manager("/pyctr/c1", layout)
    mgr.create()
    kernel.fail["pyctr/c1/cgroup.procs"] = errno.EOPNOTSUPP
    with pytest.raises(PyctrError) as exc:
        mgr.add(4242)
    assert exc.value.errno == errno.EOPNOTSUPP and "threaded" in exc.value.hint
    assert exc.value.path.endswith("pyctr/c1/cgroup.procs")


def test_apply_writes_each_controllers_files(kernel, layout):
    mgr = V2Manager("/pyctr/c1", layout)
    res = Resources(memory=64 << 20, memory_swap=96 << 20, memory_reservation=32 << 20,
                    cpus=0.5, cpu_shares=512, cpuset_cpus="0", cpuset_mems="0", pids_limit=64,
                    blkio_weight=500, device_read_bps=((8, 0, 1 << 20),),
                    device_write_bps=((8, 0, 2 << 20),))
    mgr.create(res)
    kernel.writes.clear()
    mgr.apply(res)
    d = mgr.dir
    assert read(d / "memory.max") == str(64 << 20)
    assert read(d / "memory.swap.max") == str(32 << 20)  # swap alone, not memory+swap
    assert read(d / "memory.low") == str(32 << 20)
    assert read(d / "cpu.max") == "50000 100000"
    assert read(d / "cpu.weight") == "20"  # 1 + (510 * 9999) // 262142
    assert read(d / "cpuset.cpus") == "0" and read(d / "cpuset.mems") == "0"
    assert read(d / "pids.max") == "64"
    assert read(d / "io.weight") == "default 4950"  # 1 + (490 * 9999) // 990
    assert (d / "io.max").read_text() == f"8:0 rbps={1 << 20}\n8:0 wbps={2 << 20}\n"
    assert [f.split("/")[-1] for f, _ in kernel.writes][:3] == ["memory.swap.max", "memory.max",
                                                                "memory.low"]


def test_apply_unlimited_values_write_max(kernel, layout):
    mgr = V2Manager("/pyctr/c1", layout)
    mgr.create()
    mgr.apply(Resources(memory=-1, memory_swap=-1, pids_limit=0, cpu_quota=-1))
    assert read(mgr.dir / "memory.max") == "max"
    assert read(mgr.dir / "memory.swap.max") == "max"
    assert read(mgr.dir / "pids.max") == "max"
    assert read(mgr.dir / "cpu.max") == "max 100000"


def test_apply_needs_the_controller_enabled_for_the_cgroup(kernel, layout):
    mgr = V2Manager("/pyctr/c1", layout)
    mgr.create()
    (mgr.dir / "cgroup.controllers").write_text("cpu memory pids")
    with pytest.raises(PyctrError, match="cgroup controller cpuset is not enabled for"):
        mgr.apply(Resources(cpuset_cpus="0"))


def test_bfq_weight_is_used_as_is_when_present(tmp_path):
    (tmp_path / "io.bfq.weight").write_text("100")
    v2io.apply(tmp_path, Resources(blkio_weight=500))
    assert read(tmp_path / "io.bfq.weight") == "500"
    with pytest.raises(PyctrError, match="neither io.bfq.weight nor io.weight"):
        v2io.apply(tmp_path / "none", Resources(blkio_weight=500))


def test_conversions():
    assert v2cpu.shares_to_weight(2) == 1
    assert v2cpu.shares_to_weight(1024) == 39
    assert v2cpu.shares_to_weight(262144) == 10000
    assert v2io.blkio_to_io_weight(10) == 1 and v2io.blkio_to_io_weight(1000) == 10000
    assert v2mem.swap_max(64, 64) == "0" and v2mem.swap_max(64, -1) == "max"
    assert v2mem.swap_max(64, None) is None
    with pytest.raises(PyctrError, match="without a memory limit"):
        v2mem.swap_max(None, 128)


def test_missing_swap_file_is_fine_only_for_no_or_unlimited_swap(kernel, layout):
    mgr = V2Manager("/pyctr/c1", layout)
    mgr.create()
    (mgr.dir / "memory.swap.max").unlink()
    mgr.apply(Resources(memory=64 << 20, memory_swap=64 << 20))
    assert read(mgr.dir / "memory.max") == str(64 << 20)
    with pytest.raises(PyctrError) as exc:
        mgr.apply(Resources(memory=64 << 20, memory_swap=128 << 20))
    assert exc.value.errno == errno.ENOENT and exc.value.path.endswith("memory.swap.max")


def test_stats_and_oom_read_the_files(kernel, layout):
    mgr = V2Manager("/pyctr/c1", layout)
    mgr.create()
    d = mgr.dir
    (d / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
    (d / "memory.current").write_text("4096\n")
    (d / "memory.max").write_text(f"{64 << 20}\n")
    (d / "pids.current").write_text("3\n")
    (d / "io.stat").write_text("8:0 rbytes=100 wbytes=200 rios=1 wios=2\n"
                               "8:16 rbytes=1 wbytes=2 rios=1 wios=1\n")
    st = mgr.stats()
    assert (st.cpu_usage_ns, st.memory_usage, st.memory_limit) == (1_500_000, 4096, 64 << 20)
    assert (st.pids_current, st.pids_limit, st.io_read_bytes, st.io_write_bytes) == \
        (3, None, 101, 202)
    assert mgr.oom_killed() is False
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n")
    assert mgr.oom_killed() is True


def test_freeze_waits_for_the_kernels_frozen_event(kernel, layout):
    mgr = V2Manager("/pyctr/c1", layout)
    mgr.create()
    real = kernel.write_raw

    def kernel_freezes(path, data, flags):
        real(path, data, flags)
        if path.endswith("cgroup.freeze"):
            (mgr.dir / "cgroup.events").write_text(f"populated 1\nfrozen {data.decode()}\n")

    kernel.write_raw = kernel_freezes
    fs._write_raw = kernel_freezes
    mgr.freeze()
    assert mgr.frozen and read(mgr.dir / "cgroup.freeze") == "1"
    mgr.thaw()
    assert not mgr.frozen and read(mgr.dir / "cgroup.freeze") == "0"


def test_kill_all_uses_cgroup_kill_and_destroy_removes_only_the_leaf(kernel, layout):
    mgr = V2Manager("/pyctr/c1", layout)
    mgr.create()
    mgr.kill_all()
    assert ("pyctr/c1/cgroup.kill", "1") in kernel.writes
    for f in mgr.dir.iterdir():  # the kernel's files go with rmdir; a fake needs help
        f.unlink()
    mgr.destroy()
    assert not mgr.exists and (kernel.root / "pyctr").is_dir()
