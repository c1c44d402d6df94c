"""`--explain`: each kernel-level step, in order, with the object it made — checked against
what the kernel shows (namespace inodes, cgroup files) and the init pipeline's own names."""

from __future__ import annotations

import json
import os
import re

import pytest

from pyctr.explain import WHY
from pyctr.runtime.init import STEP_NAMES

pytestmark = pytest.mark.root

# the order a `run` with limits and a bridge network goes through (no "loopback": the
# network namespace is the engine's, made and configured before)
ORDER = ["image", "network", "config.json", "cgroup", "namespaces", "mount propagation",
         "rootfs bind", "mounts", "devices", "dev symlinks", "masked paths", "readonly paths",
         "seccomp compile", "pivot_root", "hostname", "rlimits", "user",
         "capabilities", "no_new_privs", "seccomp", "chdir", "lookup executable", "close fds",
         "signals", "wait for start", "execve"]


def _events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def _first_seen(events: list[dict]) -> list[str]:
    return list(dict.fromkeys(e["step"] for e in events))


def test_explain_json_has_every_step_in_order_with_its_objects(pyctr):
    r = pyctr("run", "--rm", "--explain=json", "--memory", "64m", "--pids-limit", "32",
              "busybox", "echo", "hello")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello\n"  # the explanation goes to stderr only
    events = _events(r.stderr)
    seen = _first_seen(events)
    assert [s for s in seen if s in ORDER] == ORDER
    assert "overlay" in seen and seen.index("overlay") < seen.index("config.json")
    # every line names its step, says what and why, and when (ms since the command began)
    assert all(e["what"] and e["why"] == WHY[e["step"]] and e["ms"] >= 0 for e in events)
    text = {s: [e["what"] for e in events if e["step"] == s] for s in seen}
    assert any(re.search(r"lowerdir=l/\w+.*upperdir=.*/upper,workdir=.*/work", w)
               for w in text["overlay"])
    assert any(w.startswith("echo 67108864 > /sys/fs/cgroup/memory/") or
               w.startswith("echo 67108864 > /sys/fs/cgroup/") and "memory.max" in w
               for w in text["cgroup"])
    assert any(re.match(r"echo 32 > /sys/fs/cgroup/.*pids\.max$", w) for w in text["cgroup"])
    assert any("type veth peer name eth0" in w for w in text["network"])
    assert any(re.search(r"ip route add default via 10\.\d+\.\d+\.1", w) for w in text["network"])
    assert any(w.startswith("mount proc proc on /proc") for w in text["mounts"])
    assert text["execve"] == ["execve(/bin/echo, ['echo', 'hello'])"]
    assert "no_new_privs" in seen and text["capabilities"][0].startswith("capset: 14 of ")
    # the namespaces: new ones, and not the host's (this process is on the host)
    for kind in ("pid", "mnt", "uts", "ipc", "cgroup"):
        [line] = [w for w in text["namespaces"] if w.startswith(f"{kind}:[")]
        host = os.readlink(f"/proc/self/ns/{kind}")
        assert line.endswith(f"(new; the host's is {host})"), line
        assert not line.startswith(host)
    [net] = [w for w in text["namespaces"] if w.startswith("net:[")]
    assert "(joined;" in net  # the network namespace file the engine made first


def test_explain_text_is_one_line_per_step_with_a_why_once(pyctr):
    r = pyctr("run", "--rm", "--explain", "--network", "none", "busybox", "true")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    steps = [m.group(1) for ln in lines
             if (m := re.match(r"pyctr explain +[\d.]+ ms  (.+?)\s{2,}", ln))]
    assert steps and "network" not in steps  # --network none: no veth, no bridge
    whys = [ln.strip() for ln in lines if ln.strip().startswith("↳")]
    assert len(whys) == len(set(steps))  # the why once per step
    assert f"↳ {WHY['pivot_root']}" in whys


def test_exec_explain_joins_the_containers_namespaces(pyctr, name):
    pyctr.ok("run", "-d", "--name", name, "--network", "none", "busybox", "sleep", "60")
    try:
        pid1 = pyctr.container(name)["State"]["Pid"]
        r = pyctr("exec", "--explain=json", name, "true")
        assert r.returncode == 0, r.stderr
        events = _events(r.stderr)
        setns = [e["what"] for e in events if e["step"] == "setns"]
        assert f"setns(/proc/{pid1}/ns/pid) — the pid namespace" in setns
        joined = [e["what"] for e in events if e["step"] == "namespaces"]
        for kind in ("pid", "mnt", "net", "uts", "ipc"):
            theirs = os.readlink(f"/proc/{pid1}/ns/{kind}")
            assert any(w.startswith(f"{theirs} (joined;") for w in joined), (kind, joined)
        assert _first_seen(events)[-1] == "execve"
    finally:
        pyctr("rm", "-f", name)


def test_run_d_explains_what_the_shim_did(pyctr, name):
    r = pyctr("run", "-d", "--explain=json", "--name", name, "--network", "none", "busybox",
              "sleep", "60")
    try:
        assert r.returncode == 0, r.stderr
        assert re.fullmatch(r"[0-9a-f]{64}\n", r.stdout)
        events = _events(r.stderr)
        pid1 = pyctr.container(name)["State"]["Pid"]
        theirs = os.readlink(f"/proc/{pid1}/ns/pid")
        assert any(e["what"].startswith(f"{theirs} (new;") for e in events
                   if e["step"] == "namespaces")
        assert _first_seen(events)[-1] == "execve"
    finally:
        pyctr("rm", "-f", name)


def test_explain_takes_a_value_only_after_an_equals_sign(pyctr):
    r = pyctr("run", "--rm", "--explain", "--network", "none", "busybox", "echo", "--explain")
    assert r.returncode == 0 and r.stdout == "--explain\n"  # the command's own word
    bad = pyctr("run", "--rm", "--explain=xml", "busybox", "true")
    assert bad.returncode == 125 and "'xml' is not one of 'text', 'json'" in bad.stderr


def test_every_init_step_has_a_why():
    assert set(STEP_NAMES) <= set(WHY)
