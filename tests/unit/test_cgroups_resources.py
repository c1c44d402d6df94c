"""docker's flag parsers and checks (with docker's texts), and the OCI mapping."""

from __future__ import annotations

import pytest

from pyctr.cgroups.detect import Layout
from pyctr.cgroups.resources import (
    DeviceRule,
    Resources,
    parse_bytes,
    parse_cpus,
    parse_memory_swap,
    parse_throttle_device,
    validate,
)
from pyctr.errors import UserError


@pytest.fixture
def v1(tmp_path):
    """A v1 layout whose cpuset root offers cpus 0-1 and node 0, with swap accounting."""
    for c in ("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer", "devices"):
        (tmp_path / c).mkdir()
    (tmp_path / "cpuset" / "cpuset.effective_cpus").write_text("0-1\n")
    (tmp_path / "cpuset" / "cpuset.effective_mems").write_text("0\n")
    (tmp_path / "memory" / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    return Layout(kind="hybrid", unified=tmp_path / "unified",
                  v1={c: tmp_path / c for c in ("cpu", "cpuacct", "cpuset", "memory", "pids",
                                               "blkio", "freezer", "devices")})


@pytest.mark.parametrize("text,value", [
    ("64m", 64 << 20), ("64M", 64 << 20), ("64mb", 64 << 20), ("1g", 1 << 30),
    ("512k", 512 << 10), ("1024", 1024), ("1.5g", 3 << 29), ("2 GiB", 2 << 30),
])
def test_parse_bytes_takes_dockers_units(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "m", "-1", "64x", "1..5m"])
def test_parse_bytes_refuses_with_dockers_text(text):
    with pytest.raises(UserError, match=f"^invalid size: '{text}'$"):
        parse_bytes(text)


def test_memory_swap_minus_one_is_unlimited():
    assert parse_memory_swap("-1") == -1
    assert parse_memory_swap("128m") == 128 << 20


def test_cpus_and_throttle_parsers():
    assert parse_cpus("0.5") == 0.5
    with pytest.raises(UserError, match="failed to parse"):
        parse_cpus("half")
    with pytest.raises(UserError, match="bad format: sda"):
        parse_throttle_device("sda")
    with pytest.raises(UserError, match="bad format for device path: sda:1mb"):
        parse_throttle_device("sda:1mb")
    with pytest.raises(UserError, match="invalid rate for device: /dev/null:fast"):
        parse_throttle_device("/dev/null:fast")
    with pytest.raises(UserError, match="/dev/null is not a block device"):
        parse_throttle_device("/dev/null:1mb")


@pytest.mark.parametrize("res,text", [
    (Resources(memory=1024), "Minimum memory limit allowed is 6MB"),
    (Resources(memory_reservation=1024), "Minimum memory reservation allowed is 6MB"),
    (Resources(memory_swap=64 << 20),
     "You should always set the Memory limit when using Memoryswap limit, see usage"),
    (Resources(memory=64 << 20, memory_swap=32 << 20),
     "Minimum memoryswap limit should be larger than memory limit, see usage"),
    (Resources(memory=16 << 20, memory_reservation=32 << 20),
     "Minimum memory limit can not be less than memory reservation limit, see usage"),
    (Resources(cpus=3.0), "range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"),
    (Resources(cpus=0.001),
     "range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"),
    (Resources(cpuset_cpus="7"), "Requested CPUs are not available - requested 7, available: 0-1"),
    (Resources(cpuset_cpus="0-2"),
     "Requested CPUs are not available - requested 0-2, available: 0-1"),
    (Resources(cpuset_cpus="1-0"), "Invalid value 1-0 for cpuset cpus"),
    (Resources(cpuset_mems="1"),
     "Requested memory nodes are not available - requested 1, available: 0"),
    (Resources(blkio_weight=5), "Range of blkio weight is from 10 to 1000"),
])
def test_validate_refuses_with_dockers_text(v1, res, text):
    with pytest.raises(UserError) as exc:
        validate(res, v1, ncpus=2)
    assert exc.value.message == text
    assert exc.value.exit_code == 125


def test_validate_accepts_what_the_host_can_take(v1):
    validate(Resources(memory=64 << 20, memory_swap=128 << 20, memory_reservation=32 << 20,
                       cpus=2.0, cpu_shares=512, cpuset_cpus="0-1", cpuset_mems="0",
                       pids_limit=64, blkio_weight=500), v1, ncpus=2)
    validate(Resources(memory=-1, memory_swap=-1), v1, ncpus=2)


def test_swap_without_accounting_fails_only_when_asked_for(v1):
    (v1.v1["memory"] / "memory.memsw.limit_in_bytes").unlink()
    with pytest.raises(UserError, match="does not support swap limit") as exc:
        validate(Resources(memory=64 << 20, memory_swap=128 << 20), v1, ncpus=2)
    assert "swapaccount=1" in exc.value.hint
    plain = Resources(memory=64 << 20)
    validate(plain, v1, ncpus=2)
    assert plain.with_docker_defaults(v1) == plain  # no implied swap without accounting


def test_docker_default_swap_is_twice_memory(v1):
    assert Resources(memory=64 << 20).with_docker_defaults(v1).memory_swap == 128 << 20
    assert Resources(memory=64 << 20, memory_swap=-1).with_docker_defaults(v1).memory_swap == -1


def test_validate_names_a_missing_controller(tmp_path):
    lay = Layout(kind="v2", unified=tmp_path, v2_controllers=frozenset({"memory", "pids"}))
    with pytest.raises(UserError, match=r"cgroup controller cpu, io is not available"):
        validate(Resources(cpus=1.0, blkio_weight=100), lay, ncpus=2)


def test_to_oci_uses_runtime_spec_names_and_round_trips():
    res = Resources(memory=64 << 20, memory_swap=128 << 20, memory_reservation=32 << 20,
                    cpus=0.5, cpu_shares=512, cpuset_cpus="0", cpuset_mems="0",
                    pids_limit=64, blkio_weight=300, device_read_bps=((8, 0, 1 << 20),),
                    device_write_bps=((8, 0, 2 << 20),),
                    devices=(DeviceRule(allow=False),
                             DeviceRule(allow=True, type="c", major=1, minor=3, access="rwm")))
    oci = res.to_oci()
    assert oci == {
        "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 64},
        "blockIO": {"weight": 300,
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1 << 20}],
                    "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 2 << 20}]},
        "devices": [{"allow": False, "type": "a", "access": "rwm"},
                    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}],
    }
    back = Resources.from_oci(oci)
    assert back.to_oci() == oci
    assert back.cfs() == (50000, 100000)
    assert Resources.from_oci({}).to_oci() == {} and Resources().controllers() == set()


def test_device_rule_v1_lines():
    assert DeviceRule(allow=False).to_v1() == "a"
    assert DeviceRule(allow=True, type="c", major=136, access="rwm").to_v1() == "c 136:* rwm"
    assert DeviceRule(allow=True, type="b", major=-1, minor=-1, access="m").to_v1() == "b *:* m"
