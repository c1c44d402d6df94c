"""The runtime's side of cgroups: create joins PID 1 to linux.cgroupsPath, delete removes it.

Runs on this hybrid host (v1 driver) and in the cgroup v2 guest (scripts/test.sh's
vm tier).  Every cgroup is below /pyctr-test, named uniquely per test.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest

from pyctr.cgroups import detect
from pyctr.errors import ExecError, PyctrError, UserError
from pyctr.runtime import create, default_spec, state
from tests.integration.runtime_bundle import run

pytestmark = pytest.mark.root

LAYOUT = detect()
V2 = LAYOUT.driver == "v2"
# the hierarchies the v1 driver joins (whatever this host mounts)
V1_JOINED = ("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer", "devices")


def cgroup_dirs(path: str) -> dict[str, Path]:
    """controller → the container's cgroup dir (v2: one dir for all)."""
    rel = path.lstrip("/")
    if V2:
        return {"unified": Path(LAYOUT.unified) / rel}
    return {c: Path(LAYOUT.v1[c]) / rel for c in V1_JOINED if c in LAYOUT.v1}


def cgroup_file(path: str, controller: str, name: str) -> Path:
    base = LAYOUT.unified if V2 else LAYOUT.v1[controller]
    return Path(base) / path.lstrip("/") / name


def gone(path: str) -> bool:
    return not any(d.exists() for d in cgroup_dirs(path).values())


@pytest.fixture
def cgpath() -> str:
    return f"/pyctr-test/rt-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def bundle(bundle, cgpath):
    """The shared bundle maker, with linux.cgroupsPath = cgpath (and ``edit`` applied)."""
    def make(args, edit=None, cgroups_path=cgpath):
        def edit_all(spec):
            if cgroups_path is not None:
                spec["linux"]["cgroupsPath"] = cgroups_path
            if edit:
                edit(spec)
        return bundle(args, edit_all)
    return make


def test_init_is_in_the_cgroup_before_it_execs(bundle, state_root, cgpath):
    c = create("cg-in", bundle(["true"]), state_root=state_root)
    try:
        assert state("cg-in", state_root)["status"] == "created"  # still python, not yet exec
        for ctrl, d in cgroup_dirs(cgpath).items():
            assert str(c.pid) in (d / "cgroup.procs").read_text().split(), ctrl
        lines = Path(f"/proc/{c.pid}/cgroup").read_text().splitlines()
        seen = {line.split(":", 2)[1]: line.split(":", 2)[2] for line in lines}
        if V2:
            assert seen[""] == cgpath
        else:
            for ctrl in cgroup_dirs(cgpath):
                key = next(k for k in seen if ctrl in k.split(","))
                assert seen[key] == cgpath, (ctrl, lines)
        # the init's own memory is charged to the container from the start
        usage = "memory.current" if V2 else "memory.usage_in_bytes"
        assert int(cgroup_file(cgpath, "memory", usage).read_text()) > 0
    finally:
        c.delete()
    assert gone(cgpath)


def test_limits_are_in_the_files_and_seen_inside_as_the_root(bundle, state_root, cgpath):
    def edit(spec):
        spec["linux"]["resources"].update({
            "memory": {"limit": 64 << 20}, "pids": {"limit": 32},
            "cpu": {"quota": 50000, "period": 100000, "shares": 512}})
    inside = ("/sys/fs/cgroup/memory.max" if V2
              else "/sys/fs/cgroup/memory/memory.limit_in_bytes")
    c = create("cg-lim", bundle(["sh", "-c", f"cat /proc/self/cgroup {inside}"], edit),
               state_root=state_root, stdout=(w := os.pipe())[1], stderr=w[1])
    os.close(w[1])
    try:
        if V2:
            assert cgroup_file(cgpath, "memory", "memory.max").read_text() == f"{64 << 20}\n"
            assert cgroup_file(cgpath, "cpu", "cpu.max").read_text() == "50000 100000\n"
        else:
            assert int(cgroup_file(cgpath, "memory", "memory.limit_in_bytes").read_text()) \
                == 64 << 20
            assert cgroup_file(cgpath, "cpu", "cpu.cfs_quota_us").read_text() == "50000\n"
            assert cgroup_file(cgpath, "cpu", "cpu.shares").read_text() == "512\n"
        assert cgroup_file(cgpath, "pids", "pids.max").read_text() == "32\n"
        c.start()
        out = b""
        while chunk := os.read(w[0], 65536):
            out += chunk
        assert c.wait() == 0, out
    finally:
        os.close(w[0])
        c.delete()
    lines = out.decode().splitlines()
    assert lines[-1] == str(64 << 20)
    for line in lines[:-1]:
        assert line.split(":", 2)[2] == "/", line  # the cgroup namespace's root is the cgroup
    assert gone(cgpath)


def _mknod_allowed(spec: dict) -> None:
    """A custom seccomp profile: the default one with mknod/mknodat allowed outright."""
    prof = spec["linux"]["seccomp"]
    prof["syscalls"] = [r for r in prof["syscalls"]
                        if not {"mknod", "mknodat"} & set(r.get("names", []))]
    prof["syscalls"].append({"names": ["mknod", "mknodat"], "action": "SCMP_ACT_ALLOW"})


@pytest.mark.skipif(V2, reason="cgroup v2 has no devices controller (only eBPF, which pyctr "
                               "does not load): there the seccomp mknod rule is the control")
def test_device_cgroup_denies_a_block_device_seccomp_lets_it_make(bundle, state_root):
    loop = os.stat("/dev/loop0") if os.path.exists("/dev/loop0") else None
    if loop is None:
        pytest.skip("no /dev/loop0 to name a block device's major:minor")
    major, minor = os.major(loop.st_rdev), os.minor(loop.st_rdev)
    script = (f"rm -f /tmp/disk; mknod /tmp/disk b {major} {minor} && echo made; "
              "true < /tmp/disk && echo open-ok; echo x > /dev/null && echo null-ok")

    def mknod_only(spec):  # the cgroup allows making this node ("m"), not opening it
        _mknod_allowed(spec)
        spec["linux"]["resources"]["devices"].append(
            {"allow": True, "type": "b", "major": major, "minor": minor, "access": "m"})

    _, out = run(bundle(["sh", "-c", script], _mknod_allowed), state_root, "cg-dev")
    # seccomp lets mknod through; the device cgroup's deny-all refuses it ("m")
    assert "mknod: /tmp/disk: Operation not permitted" in out and "made" not in out
    assert "null-ok" in out.splitlines()
    _, out = run(bundle(["sh", "-c", script], mknod_only), state_root, "cg-dev-m")
    assert "made" in out.splitlines(), out
    assert "can't open /tmp/disk: Operation not permitted" in out, out
    assert "open-ok" not in out and "null-ok" in out.splitlines()
    # without the cgroup the same node is made and opens: the device cgroup refused it
    _, out = run(bundle(["sh", "-c", script], _mknod_allowed, cgroups_path=None),
                 state_root, "cg-dev-none")
    assert {"made", "open-ok"} <= set(out.splitlines()), out


def test_exec_failure_at_create_leaves_no_cgroup(bundle, state_root, cgpath):
    with pytest.raises(ExecError, match="executable file not found"):
        create("cg-exec", bundle(["no-such-command"]), state_root=state_root)
    assert gone(cgpath)
    assert not (state_root / "cg-exec").exists()


def test_a_limit_the_kernel_refuses_is_a_cgroup_error_and_leaves_nothing(
        bundle, state_root, cgpath):
    def edit(spec):
        spec["linux"]["resources"]["cpu"] = {"cpus": "97"}  # no CPU 97 here
    with pytest.raises(PyctrError) as info:
        create("cg-bad", bundle(["true"], edit), state_root=state_root)
    err = info.value
    assert err.step == "cgroup" and "cpuset.cpus" in (err.path or "") and err.errno
    assert "cpuset" in err.render()
    assert gone(cgpath)
    assert not (state_root / "cg-bad").exists()


def test_a_relative_cgroups_path_is_refused_before_anything(bundle, state_root):
    with pytest.raises(UserError, match="linux.cgroupsPath must be an absolute path") as info:
        create("cg-rel", bundle(["true"], cgroups_path="pyctr-test/rel"),
               state_root=state_root)
    assert "caller's own cgroup" in info.value.hint
    assert not (state_root / "cg-rel").exists()
    assert gone("/pyctr-test/rel")


def _cpu_usage(cgpath: str) -> int:
    if V2:
        stat = cgroup_file(cgpath, "cpu", "cpu.stat").read_text().split()
        return int(stat[stat.index("usage_usec") + 1]) * 1000
    return int(cgroup_file(cgpath, "cpuacct", "cpuacct.usage").read_text())


def _advances(cgpath: str, window: float = 0.3) -> bool:
    u0 = _cpu_usage(cgpath)
    time.sleep(window)
    return _cpu_usage(cgpath) > u0


def test_pause_freezes_and_resume_thaws(bundle, state_root, cgpath):
    c = create("cg-pause", bundle(["sh", "-c", "while :; do :; done"]), state_root=state_root)
    try:
        c.start()
        assert _advances(cgpath)
        c.pause()
        assert state("cg-pause", state_root)["status"] == "paused"
        frozen = (cgroup_file(cgpath, "unified", "cgroup.events").read_text() if V2
                  else cgroup_file(cgpath, "freezer", "freezer.state").read_text())
        assert ("frozen 1" in frozen) if V2 else frozen.strip() == "FROZEN"
        assert not _advances(cgpath)  # a frozen busy loop gets no CPU
        with pytest.raises(PyctrError, match="it is paused"):
            c.pause()
        c.resume()
        assert state("cg-pause", state_root)["status"] == "running"
        assert _advances(cgpath)
        c.pause()
    finally:
        c.delete()  # a paused container too: killed, thawed, reaped, removed
    assert gone(cgpath)
    assert not (state_root / "cg-pause").exists()


def test_a_paused_created_container_cannot_start(bundle, state_root, cgpath):
    c = create("cg-pc", bundle(["true"]), state_root=state_root)
    try:
        c.pause()
        assert state("cg-pc", state_root)["status"] == "paused"
        with pytest.raises(PyctrError, match="it is paused"):
            c.start()
    finally:
        c.delete()
    assert gone(cgpath)


def test_delete_kills_what_is_left_in_the_cgroup(bundle, state_root, cgpath):
    c = create("cg-del", bundle(["sh", "-c", "sleep 60 & sleep 60 & wait"]),
               state_root=state_root)
    c.start()
    deadline = time.monotonic() + 10
    procs = next(iter(cgroup_dirs(cgpath).values())) / "cgroup.procs"
    while len(procs.read_text().split()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(procs.read_text().split()) == 3
    c.delete()
    assert gone(cgpath)


def test_no_cgroup_no_import_of_pyctr_cgroups(tmp_path, busybox_rootfs):
    """A spec without cgroupsPath runs without loading pyctr.cgroups (runtime stays light)."""
    import subprocess
    import sys

    spec = default_spec(["true"])
    (tmp_path / "config.json").write_text(json.dumps(spec))
    code = (
        "import sys; from pyctr.runtime import create\n"
        f"c = create('nocg', {str(tmp_path)!r}, state_root={str(tmp_path / 'st')!r})\n"
        "c.start(); c.wait(); c.delete()\n"
        "print('pyctr.cgroups' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
