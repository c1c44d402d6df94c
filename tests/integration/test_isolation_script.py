"""scripts/inspect-isolation.sh: the host's view of a running container with
standard tools (lsns, nsenter, findmnt, ip, /proc).  Each value it prints is
checked against what the kernel shows this test directly, and against
`pyctr inspect`.  Works on v1/hybrid hosts (here) and pure v2 (the guest)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import PYCTR

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "inspect-isolation.sh"
OWN = ("cgroup", "ipc", "mnt", "net", "pid", "uts")  # pyctr makes these for a container
SHARED = ("time", "user")                             # and keeps these the host's


def run_script(pyctr, *args: str, pyctr_cmd: str = PYCTR) -> subprocess.CompletedProcess:
    """The script as a user runs it, pointed at the session's root and run dir."""
    env = dict(os.environ, PYCTR=pyctr_cmd)
    return subprocess.run([str(SCRIPT), "--root", str(pyctr.root), "--run-dir", str(pyctr.run_dir),
                           *args], env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, check=False)


def sections(out: str) -> dict[str, list[str]]:
    """'== NAME   (how)' headed blocks of the output, by NAME."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in out.splitlines():
        if line.startswith("== "):
            current = found.setdefault(line[3:].split("   ", 1)[0].strip(), [])
        else:
            current.append(line)
    return found


def rows(lines: list[str]) -> dict[str, list[str]]:
    return {parts[0]: parts for parts in (line.split() for line in lines) if parts}


def field(lines: list[str], key: str) -> str:
    """The value of a `  key   value` line."""
    for line in lines:
        if line.strip().startswith(key + " "):
            return line.strip()[len(key):].strip()
    raise AssertionError(f"no {key!r} line in {lines}")


def inode(link: str) -> str:
    return link.split("[", 1)[1].rstrip("]")


def status(pid: int | str, key: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(key)


def test_script_shows_what_the_kernel_shows(pyctr, name, tmp_path):
    pyctr.ok("run", "-d", "--name", name, "--memory", "64m", "busybox", "sleep", "60")
    try:
        info = pyctr.container(name)
        pid = info["State"]["Pid"]
        r = run_script(pyctr, name)
        assert r.returncode == 0, r.stderr
        assert r.stderr == ""
        out = sections(r.stdout)
        assert r.stdout.startswith(f"Container {name} ({info['Id'][:12]}): PID 1 is host pid {pid}.")

        # PID 1: the host pid, and 1 inside (the last NSpid)
        assert field(out["PID 1"], "command") == "sleep 60"
        assert field(out["PID 1"], "pid on the host") == str(pid)
        assert field(out["PID 1"], "pid inside").split()[0] == "1"
        assert status(pid, "NSpid").split()[-1] == "1"

        # namespaces: the container's inode as /proc/PID/ns shows it, the host's
        # (this process's: the script's shell shares them) different
        ns = rows(out["namespaces"])
        for kind in OWN + SHARED:
            ctr = inode(os.readlink(f"/proc/{pid}/ns/{kind}"))
            host = inode(os.readlink(f"/proc/self/ns/{kind}"))
            assert ns[kind][1:4] == [host, ctr, "different" if kind in OWN else "same"], ns[kind]
            assert (host != ctr) == (kind in OWN)
        assert ns["pid"][4] == "1"  # lsns: one process in the container's pid namespace

        # hostname: the host's and the container's own (nsenter -u)
        assert field(out["hostname"], "host") == socket.gethostname()
        assert field(out["hostname"], "container") == info["Config"]["Hostname"]
        assert info["Config"]["Hostname"] != socket.gethostname()

        # root mount: the overlay with the container's upperdir and the image's layers
        root = out["root mount"]
        assert field(root, "fstype").startswith("overlay")
        assert field(root, "upperdir").split()[0] == str(pyctr.root / "containers" / info["Id"] / "upper")
        lower = field(root, "lowerdir 1 (top)").split(" -> ")
        assert re.fullmatch(r"l/\w+", lower[0]), lower
        assert Path(lower[1]).is_dir() and Path(lower[1]).name == "diff"
        assert Path(lower[1]).is_relative_to(pyctr.root / "images" / "layers")
        assert "/proc" in rows(root) and rows(root)["/proc"][1] == "proc"

        # cgroup: /proc/PID/cgroup as it is, and the memory limit in its file (v1 or v2)
        cg = out["cgroup"]
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            assert f"  {line}" in cg
        limits = rows(cg)
        mem = limits.get("memory.max") or limits["memory.limit_in_bytes"]
        assert mem[1:] == [str(64 << 20), "(64", "MiB)"]
        assert limits["cgroup.procs"][1:] == [str(pid)]
        assert limits["pids.max"][1] == "max"

        # capabilities: the sets of /proc/PID/status, and this shell's beside them
        caps = rows(out["capabilities"])
        for key in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"):
            assert caps[key][1:3] == [status("self", key), status(pid, key)], caps[key]
        if "container" in caps:  # capsh decoded them
            eff = field(out["capabilities"], "container CapEff:").split(",")
            assert "cap_chown" in eff and "cap_net_raw" in eff and "cap_sys_admin" not in eff

        sec = rows(out["seccomp and no_new_privs"])
        assert sec["NoNewPrivs"][2] == "1" == status(pid, "NoNewPrivs")
        assert sec["Seccomp"][2] == "2" == status(pid, "Seccomp")
        assert sec["Seccomp"][1] == status("self", "Seccomp")

        # network: eth0 with the address pyctr gave it, and its host end on the bridge
        net = out["network"]
        ip = info["NetworkSettings"]["IPAddress"]
        prefix = info["NetworkSettings"]["IPPrefixLen"]
        eth0 = [line.split() for line in net if line.split() and line.split()[0].startswith("eth0@if")]
        assert len(eth0) == 1 and eth0[0][1] == "UP" and f"{ip}/{prefix}" in eth0[0][2:], net
        host_end = [line for line in net if line.strip().startswith("host end of eth0:")]
        assert host_end, net
        veth = host_end[0].split()[4]
        assert Path(f"/sys/class/net/{veth}").exists()
        assert host_end[0].split("ifindex ")[1].split(")")[0] == eth0[0][0].split("@if")[1]
        bridge = Path(f"/sys/class/net/{veth}/master").resolve().name
        assert host_end[0].endswith(f"on bridge {bridge}")

        # uid/gid maps: the identity (no user namespace)
        maps = out["uid/gid maps"]
        assert field(maps, "uid_map") == " ".join(Path(f"/proc/{pid}/uid_map").read_text().split())
        assert field(maps, "uid_map") == "0 0 4294967295"
        assert field(maps, "gid_map") == "0 0 4294967295"

        # a pyctr without `inspect --format` (before it had one): the JSON says the same
        old = tmp_path / "pyctr-without-format"
        old.write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = --format ] && '
                       '{ echo "Error: No such option: --format" >&2; exit 2; }; done\n'
                       f'exec {PYCTR} "$@"\n')
        old.chmod(0o755)
        r2 = run_script(pyctr, name, pyctr_cmd=str(old))
        assert r2.returncode == 0, r2.stderr
        assert r2.stdout.splitlines()[0] == r.stdout.splitlines()[0]
        # by id prefix too
        r3 = run_script(pyctr, info["Id"][:12])
        assert r3.returncode == 0, r3.stderr
        assert f"PID 1 is host pid {pid}." in r3.stdout.splitlines()[0]
    finally:
        pyctr.ok("rm", "-f", name)


def test_errors_say_what_is_wrong(pyctr, name):
    r = run_script(pyctr)
    assert r.returncode == 2
    assert "which container? (NAME or ID)" in r.stderr and "Usage: inspect-isolation.sh" in r.stderr
    assert r.stdout == ""

    r = run_script(pyctr, "--help")
    assert r.returncode == 0 and r.stdout.startswith("Usage: inspect-isolation.sh")

    r = run_script(pyctr, "--bogus", name)
    assert r.returncode == 2 and "unknown option: --bogus" in r.stderr

    r = run_script(pyctr, f"{name}-nope")
    assert r.returncode == 1
    assert f"inspect-isolation.sh: no such container: {name}-nope" in r.stderr
    assert r.stdout == ""

    r = run_script(pyctr, "busybox")  # pyctr inspect takes images too: not a container
    assert r.returncode == 1 and "busybox is not a container" in r.stderr

    pyctr.ok("create", "--name", name, "busybox", "true")
    try:
        r = run_script(pyctr, name)
        assert r.returncode == 1
        assert f"container {name} is not running (status: created)" in r.stderr
    finally:
        pyctr.ok("rm", "-f", name)


@pytest.mark.tools("shellcheck")
def test_script_is_shellcheck_clean():
    r = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout
    assert os.access(SCRIPT, os.X_OK)
