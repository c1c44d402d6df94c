"""docker's limit flags to cgroup Resources, cgroup paths and the OOM hint (no root)."""

import pytest

from pyctr.cgroups import Layout
from pyctr.errors import UserError
from pyctr.limits import LimitFlags, cgroup_path, human_bytes, oom_hint, resources_from_flags


def v1_layout(tmp_path) -> Layout:
    ctrls = {}
    for c in ("memory", "cpu", "cpuacct", "cpuset", "pids", "blkio", "freezer", "devices"):
        (tmp_path / c).mkdir()
        ctrls[c] = tmp_path / c
    (tmp_path / "cpuset" / "cpuset.cpus").write_text("0-1\n")
    (tmp_path / "cpuset" / "cpuset.mems").write_text("0\n")
    (tmp_path / "memory" / "memory.memsw.limit_in_bytes").write_text("0\n")
    return Layout(kind="hybrid", unified=None, v1=ctrls, v2_controllers=set())


def test_flags_become_resources(tmp_path):
    res, _ = resources_from_flags(LimitFlags(memory="64m", cpus="0.5", pids_limit=64,
                                             cpuset_cpus="0", cpu_shares=512),
                                  layout=v1_layout(tmp_path))
    assert res.memory == 64 << 20 and res.cpus == 0.5 and res.pids_limit == 64
    assert res.memory_swap == 128 << 20  # docker's implied swap where it is accounted
    assert res.to_oci()["cpu"] == {"shares": 512, "quota": 50000, "period": 100000,
                                   "cpus": "0"}


def test_update_keeps_what_is_not_given(tmp_path):
    layout = v1_layout(tmp_path)
    base, _ = resources_from_flags(LimitFlags(memory="64m", pids_limit=10), layout=layout)
    res, _ = resources_from_flags(LimitFlags(pids_limit=99), base=base, layout=layout)
    assert (res.memory, res.pids_limit) == (64 << 20, 99)


@pytest.mark.parametrize("flags,msg", [
    (LimitFlags(memory="1k"), "Minimum memory limit allowed is 6MB"),
    (LimitFlags(memory="lots"), "--memory"),
    (LimitFlags(cpuset_cpus="7"), "Requested CPUs are not available - requested 7"),
    (LimitFlags(cpus="0.001"), "range of CPUs is from 0.01"),
])
def test_values_the_host_cannot_take(tmp_path, flags, msg):
    with pytest.raises(UserError, match=msg):
        resources_from_flags(flags, layout=v1_layout(tmp_path))


def test_given_tells_whether_any_flag_is_set():
    assert not LimitFlags().given()
    assert LimitFlags(device_read_bps=["/dev/sda:1mb"]).given()


def test_cgroup_paths_are_absolute_below_a_parent():
    assert cgroup_path(None, "abc") == "/pyctr/abc"
    assert cgroup_path("/pyctr-test/run1/", "abc") == "/pyctr-test/run1/abc"
    for bad in ("../etc", "a/../b", "/", "a//b"):
        with pytest.raises(UserError, match="invalid --cgroup-parent"):
            cgroup_path(bad, "abc")


def test_oom_hint_names_the_limit():
    assert "8MiB (--memory)" in oom_hint({"memory": {"limit": 8 << 20}})
    assert "host or a parent cgroup" in oom_hint({})
    assert human_bytes(1536) == "1.5KiB" and human_bytes(12) == "12B"
