"""default_spec carries Docker's defaults; load_spec names the bad field."""

from __future__ import annotations

import json

import pytest

from pyctr.errors import UserError
from pyctr.runtime import default_spec, load_spec
from pyctr.runtime.spec import CAPABILITIES, validate


def _capeff(names: list[str]) -> str:
    return f"{sum(1 << CAPABILITIES[n] for n in names):016x}"


def test_default_capabilities_are_dockers_set_as_the_kernel_shows_it():
    caps = default_spec(["sh"])["process"]["capabilities"]
    for kind in ("bounding", "effective", "permitted"):
        assert _capeff(caps[kind]) == "00000000a80425fb", kind
    assert caps["inheritable"] == [] and caps["ambient"] == []


def test_default_process_and_root():
    spec = default_spec(["sh", "-c", "x"], terminal=True)
    proc = spec["process"]
    assert proc["args"] == ["sh", "-c", "x"] and proc["terminal"] is True
    assert proc["user"] == {"uid": 0, "gid": 0} and proc["cwd"] == "/"
    assert proc["env"][0] == "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert proc["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    assert proc["noNewPrivileges"] is True
    assert spec["root"] == {"path": "rootfs", "readonly": False}


def test_default_mounts_namespaces_and_paths():
    spec = default_spec(["sh"])
    mounts = {m["destination"]: m for m in spec["mounts"]}
    assert list(mounts) == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys",
                            "/sys/fs/cgroup"]
    assert {"newinstance", "ptmxmode=0666", "mode=0620", "gid=5"} <= set(
        mounts["/dev/pts"]["options"])
    assert "ro" in mounts["/sys"]["options"] and mounts["/sys/fs/cgroup"]["type"] == "cgroup"
    linux = spec["linux"]
    assert sorted(n["type"] for n in linux["namespaces"]) == [
        "cgroup", "ipc", "mount", "network", "pid", "uts"]
    assert "/proc/kcore" in linux["maskedPaths"] and "/sys/firmware" in linux["maskedPaths"]
    assert linux["readonlyPaths"] == ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                      "/proc/sysrq-trigger"]
    validate(spec)  # the defaults pass their own validation


@pytest.mark.parametrize("edit,message", [
    (lambda s: s["process"].update(args=[]), "config.json: process.args must be a non-empty list"),
    (lambda s: s["process"].update(cwd="rel"), "config.json: process.cwd must be an absolute path"),
    (lambda s: s["process"].update(env=["NOEQUALS"]), "process.env must be a list of KEY=VALUE"),
    (lambda s: s["process"]["capabilities"]["bounding"].append("CAP_BOGUS"),
     "process.capabilities.bounding must be known capability names (got \"CAP_BOGUS\")"),
    (lambda s: s["process"]["rlimits"].append({"type": "RLIMIT_X", "soft": 1, "hard": 1}),
     "process.rlimits[1].type must be a known RLIMIT_* name"),
    (lambda s: s["process"]["user"].update(uid=-1), "process.user.uid must be a non-negative"),
    (lambda s: s["mounts"].append({"destination": "mnt"}),
     "mounts[7].destination must be an absolute path"),
    (lambda s: s["linux"]["namespaces"].append({"type": "pid"}),
     "linux.namespaces[6].type must be unique"),
    (lambda s: s["linux"]["namespaces"].append({"type": "time"}),
     "linux.namespaces[6].type must be one of"),
    (lambda s: s["linux"].update(namespaces=[{"type": "pid"}]),
     "linux.namespaces must include a mount namespace"),
    (lambda s: s["linux"].update(namespaces=[{"type": "mount"}]),
     "hostname needs a uts namespace"),
    (lambda s: s["linux"]["namespaces"].append({"type": "user"}), "user namespaces are not"),
    (lambda s: s["linux"].update(rootfsPropagation="weird"),
     "linux.rootfsPropagation must be one of"),
])
def test_validation_names_the_field(edit, message):
    spec = default_spec(["sh"])
    edit(spec)
    with pytest.raises(UserError) as info:
        validate(spec)
    assert message in str(info.value)
    assert info.value.hint


def test_namespace_with_path_is_accepted():
    spec = default_spec(["sh"])
    spec["linux"]["namespaces"][1] = {"type": "network", "path": "/run/netns/x"}
    assert validate(spec) is spec


def test_load_spec_reads_the_bundle(tmp_path):
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "config.json").write_text(json.dumps(default_spec(["true"])))
    assert load_spec(tmp_path)["process"]["args"] == ["true"]


def test_load_spec_errors(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        load_spec(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="config.json must be valid JSON"):
        load_spec(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(default_spec(["true"])))
    with pytest.raises(UserError, match="root.path 'rootfs' is not a directory"):
        load_spec(tmp_path)
