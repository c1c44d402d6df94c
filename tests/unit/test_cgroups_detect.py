"""detect() on mountinfo texts of the three layouts, against fake cgroupfs roots."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyctr.cgroups.detect import describe, describe_text, detect, parse_mountinfo
from pyctr.errors import PyctrError

HYBRID = """\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

PURE_V2 = """\
25 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""

PURE_V1 = """\
31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 31 0:31 / /sys/fs/cgroup/systemd rw shared:10 - cgroup cgroup rw,xattr,name=systemd
36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw shared:12 - cgroup cgroup rw,cpu,cpuacct
37 31 0:34 / /sys/fs/cgroup/memory rw shared:13 - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/pids rw shared:14 - cgroup cgroup rw,pids
"""


def test_hybrid_like_this_host_uses_v1_for_controllers(tmp_path):
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("\n")
    lay = detect(tmp_path, HYBRID)
    assert lay.kind == "hybrid" and lay.driver == "v1"
    assert lay.unified == tmp_path / "unified"
    assert lay.v1["cpu"] == tmp_path / "cpu" and lay.v1["cpuacct"] == tmp_path / "cpuacct"
    assert set(lay.v1) == {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer",
                           "blkio", "pids"}  # name=systemd is no controller
    assert lay.v2_controllers == frozenset()
    assert lay.controllers == frozenset(lay.v1)


def test_pure_v2_lists_the_roots_cgroup_controllers(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    lay = detect(tmp_path, PURE_V2)
    assert lay.kind == "v2" and lay.driver == "v2"
    assert lay.unified == tmp_path and lay.v1 == {}
    assert lay.controllers == {"cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc"}
    info = describe(lay)
    assert info["Cgroup Version"] == "2" and info["Cgroup Layout"] == "v2"
    assert "controllers: cpu cpuset hugetlb io memory misc pids rdma" in info["Cgroup2 Mount"]


def test_pure_v1_with_comounted_cpu_cpuacct(tmp_path):
    lay = detect(tmp_path, PURE_V1)
    assert lay.kind == "v1" and lay.unified is None
    assert lay.v1["cpu"] == lay.v1["cpuacct"] == tmp_path / "cpu,cpuacct"
    text = describe_text(lay)
    assert "Cgroup Version: 1" in text and "Cgroup Layout: v1" in text
    assert "cpu=" + str(tmp_path / "cpu,cpuacct") in text


def test_no_cgroup_mount_is_a_clear_error(tmp_path):
    with pytest.raises(PyctrError, match="no cgroup filesystem is mounted"):
        detect(tmp_path, "25 1 254:1 / / rw - ext4 /dev/vda1 rw\n")


def test_parse_mountinfo_keeps_only_cgroup_mounts():
    got = parse_mountinfo(PURE_V2 + HYBRID)
    assert got[0] == ("/sys/fs/cgroup", "/", "cgroup2", "rw,nsdelegate,memory_recursiveprot")
    assert all(fs in ("cgroup", "cgroup2") for _, _, fs, _ in got)


def test_default_root_reads_this_hosts_mountinfo():
    lay = detect()
    assert lay.kind in ("v1", "v2", "hybrid")
    assert all(Path(p).is_absolute() for p in lay.v1.values())
