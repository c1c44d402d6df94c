"""`pyctr inspect --isolation` and `inspect --format`: the host and the container side by
side, checked against what /proc shows."""

from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.root


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f)}


def test_isolation_shows_the_kernels_view_beside_the_hosts(pyctr, name):
    pyctr.ok("run", "-d", "--name", name, "--memory", "64m", "--pids-limit", "32",
             "busybox", "sleep", "60")
    try:
        rec = pyctr.container(name)
        pid = rec["State"]["Pid"]
        rows = json.loads(pyctr.ok("inspect", "--isolation", "--format", "json", name))
        got = {(r["section"], r["what"]): r for r in rows}
        for ns in ("pid", "mnt", "uts", "ipc", "net", "cgroup"):
            r = got[("namespaces", ns)]
            assert r["container"] == os.readlink(f"/proc/{pid}/ns/{ns}")
            assert r["host"] == os.readlink(f"/proc/self/ns/{ns}") and r["differs"]
        assert not got[("namespaces", "user")]["differs"]  # no user namespace: the same
        assert got[("process", "PID 1 (host pid → pid inside)")]["container"] == \
            f"{pid} → 1: sleep 60"
        assert got[("uts", "hostname")]["container"] == rec["Config"]["Hostname"]
        assert got[("mounts", "root (/) mount")]["container"].startswith("overlay overlay ")
        assert got[("cgroup", "memory limit")]["container"] == "67108864"
        assert got[("cgroup", "pids limit")]["container"] == "32"
        status = _status(pid)
        assert got[("capabilities", "CapEff")]["container"].startswith(status["CapEff"] + " (14:")
        assert got[("security", "Seccomp")]["container"] == "2 (filter)"
        assert got[("security", "NoNewPrivs")]["container"] == "1 (no_new_privs)"
        ip = rec["NetworkSettings"]["IPAddress"]
        assert f"eth0 {ip}/16 UP" in got[("network", "interfaces")]["container"]
        assert got[("user", "uid_map")]["container"] == "0 0 4294967295"
        text = pyctr.ok("inspect", "--isolation", name)
        assert "≠ pid" in text and "[capabilities]" in text and "  user " in text
    finally:
        pyctr("rm", "-f", name)


def test_isolation_needs_one_running_container(pyctr, name):
    pyctr.ok("create", "--name", name, "--network", "none", "busybox", "true")
    try:
        r = pyctr("inspect", "--isolation", name)
        assert r.returncode != 0 and f"container {name} is not running" in r.stderr
        r = pyctr("inspect", "--isolation", name, name)
        assert r.returncode == 125 and "one container at a time" in r.stderr
        r = pyctr("inspect", "--isolation", "--format", "xml", name)
        assert r.returncode == 125 and "--format json only" in r.stderr
    finally:
        pyctr("rm", "-f", name)


def test_inspect_format_is_a_template_as_dockers(pyctr, name):
    pyctr.ok("create", "--name", name, "--network", "none", "busybox", "true")
    try:
        rec = pyctr.container(name)
        out = pyctr.ok("inspect", "-f", "{{.Id}} {{.State.Status}} {{json .Config.Cmd}}", name)
        assert out == f"{rec['Id']} created {json.dumps(rec['Config']['Cmd'])}\n"
        assert pyctr.ok("inspect", "--format", "{{.State.Running}}", name) == "false\n"
        r = pyctr("inspect", "-f", "{{.State.Nope}}", name)
        assert r.returncode != 0 and "no field 'Nope'" in r.stderr
    finally:
        pyctr("rm", "-f", name)


def test_inspect_takes_an_image_too_as_docker_does(pyctr):
    [img] = json.loads(pyctr.ok("inspect", "busybox"))
    local = json.loads(pyctr.ok("images", "--format", "json", "busybox"))
    assert img["Id"] == f"sha256:{img['Id'][7:]}" and img["Id"][7:19] == local["ID"]
    assert "busybox:latest" in img["RepoTags"] and img["RootFS"]["Type"] == "layers"
    assert img["RepoDigests"] == [f"busybox@{local['Digest']}"]
    r = pyctr("inspect", "nosuchthing")
    assert r.returncode == 1 and "no such object: nosuchthing" in r.stderr
