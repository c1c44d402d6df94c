"""What the kernel shows of the runtime's defences: in-rootfs paths, seccomp, non-dumpable init."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import subprocess
import sys
import time

import pytest

from pyctr.runtime import create, default_spec
from tests.integration.runtime_bundle import run

pytestmark = pytest.mark.root


# ---- S1/S4: paths inside the rootfs stay inside it --------------------------

@pytest.mark.parametrize("link", ["dev", "proc"])
def test_image_dir_symlinked_to_a_host_dir_leaves_the_host_dir_untouched(
        bundle, state_root, busybox_rootfs, tmp_path, link):
    host = tmp_path / f"host-{link}"
    host.mkdir()
    (busybox_rootfs / link).rmdir()
    (busybox_rootfs / link).symlink_to(host)  # absolute: on the host it leads out
    try:
        code, out = run(bundle(["sh", "-c", "ls /dev/null /proc/self/status && readlink /dev/ptmx"]),
                        state_root, f"link-{link}")
    finally:
        assert sorted(os.listdir(host)) == []
    assert code == 0, out
    assert out.split()[-1] == "pts/ptmx"


def test_mount_destination_through_a_symlink_lands_inside_the_rootfs(
        bundle, state_root, busybox_rootfs, tmp_path):
    host = tmp_path / "host-target"
    host.mkdir()
    (busybox_rootfs / "escape").symlink_to(host)

    def edit(spec):
        spec["mounts"].append({"destination": "/escape", "type": "tmpfs", "source": "tmpfs"})
    code, out = run(bundle(["sh", "-c", "touch /escape/made && cat /proc/self/mounts"], edit),
                    state_root, "escape")
    assert code == 0, out
    points = {line.split()[1]: line.split()[2] for line in out.splitlines()}
    assert points[str(host)] == "tmpfs"  # the link's target, resolved inside the rootfs
    assert os.listdir(host) == []
    assert (busybox_rootfs / str(host).lstrip("/")).is_dir()


# ---- S2: seccomp --------------------------------------------------------------

def test_pid_1_runs_under_a_seccomp_filter(bundle, state_root):
    code, out = run(bundle(["cat", "/proc/1/status"]), state_root, "scmp-status")
    assert code == 0, out
    status = dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)
    assert status["Seccomp"] == "2"
    assert status["Seccomp_filters"] == "1"


def test_namespaces_and_block_devices_are_refused_ordinary_commands_work(bundle, state_root):
    script = ("unshare -U true; echo user=$?; unshare -m true; echo mnt=$?;"
              " mknod /tmp/disk b 8 0; echo blk=$?; mknod /tmp/tty c 4 1; echo chr=$?;"
              " mknod /tmp/wh c 0 0 && echo whiteout-ok; mkfifo /tmp/f && echo fifo-ok;"
              " ls / >/dev/null && cat /etc/passwd >/dev/null && sleep 0.01 && id -u"
              " && ps >/dev/null && echo ordinary-ok")
    code, out = run(bundle(["sh", "-c", script]), state_root, "scmp-refuse")
    assert code == 0, out
    assert "unshare: unshare(0x10000000): Operation not permitted" in out
    assert "mknod: /tmp/disk: Operation not permitted" in out
    assert "mknod: /tmp/tty: Operation not permitted" in out
    for line in ("user=1", "mnt=1", "blk=1", "chr=1", "whiteout-ok", "fifo-ok", "0",
                 "ordinary-ok"):
        assert line in out.splitlines(), (line, out)


def test_without_a_seccomp_section_there_is_no_filter(bundle, state_root):
    def edit(spec):
        del spec["linux"]["seccomp"]
    script = ("grep Seccomp: /proc/1/status; unshare -U true && echo userns-ok;"
              " mknod /tmp/disk b 8 0 && echo blk-ok")
    code, out = run(bundle(["sh", "-c", script], edit), state_root, "scmp-none")
    assert code == 0, out
    assert out.split() == ["Seccomp:", "0", "userns-ok", "blk-ok"]


def test_the_specs_seccomp_is_what_the_init_applies(bundle, state_root):
    def edit(spec):
        spec["linux"]["seccomp"]["syscalls"].append(
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1})
    code, out = run(bundle(["sh", "-c", "mkdir /x; echo rc=$?; touch /y && echo touch-ok"], edit),
                    state_root, "scmp-mkdir")
    assert code == 0, out
    assert "mkdir: can't create directory '/x': Operation not permitted" in out
    assert "rc=1" in out and "touch-ok" in out


def _syscall_errnos(profile: dict, calls: list[tuple[str, tuple[int, ...]]]) -> dict[str, int]:
    """errno of each raw syscall in a forked child of ours that loaded ``profile``."""
    from pyctr.runtime import seccomp as scmp

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            lib = scmp.preload()
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
            scmp.load(profile)
            result = {}
            for name, args in calls:
                nr = lib.resolve_syscall(lib.Arch.NATIVE, name)
                ret = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
                result[name] = ctypes.get_errno() if ret == -1 else 0
            os.write(w, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = os.read(r, 65536)
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


def test_default_profile_refuses_the_dangerous_syscalls_with_eperm():
    profile = default_spec(["true"])["linux"]["seccomp"]
    got = _syscall_errnos(profile, [
        ("keyctl", (0, 0)), ("add_key", (0, 0, 0, 0, 0)), ("request_key", (0, 0, 0, 0)),
        ("bpf", (0, 0, 0)), ("userfaultfd", (0,)), ("io_uring_setup", (1, 0)),
        ("perf_event_open", (0, 0, -1, -1, 0)), ("kexec_load", (0, 0, 0, 0)),
        ("unshare", (0x10000000,)), ("setns", (-1, 0)), ("mount", (0, 0, 0, 0, 0)),
        ("clone3", (0, 0)), ("getppid", ())])
    refused = {k: v for k, v in got.items() if k not in ("clone3", "getppid")}
    assert refused == dict.fromkeys(refused, errno.EPERM)
    assert got["clone3"] == errno.ENOSYS  # so libc falls back to clone, whose flags are checked
    assert got["getppid"] == 0


# ---- S5: the init is not dumpable until execve --------------------------------

PROBE = """
import os, sys, prctl
prctl.cap_effective.sys_ptrace = False
try:
    print(os.readlink(f"/proc/{sys.argv[1]}/exe"))
except PermissionError:
    print("EPERM")
"""


def _exe_seen_without_ptrace_cap(pid: int) -> str:
    return subprocess.run([sys.executable, "-c", PROBE, str(pid)], capture_output=True,
                          text=True, check=True, timeout=30).stdout.strip()


NO_PTRACE_SLEEP = ("import os, prctl; prctl.capbset.sys_ptrace = False;"
                   " os.execv('/bin/sleep', ['sleep', '30'])")


def test_waiting_init_is_not_dumpable(bundle, state_root):
    # the probe works: without CAP_SYS_PTRACE it reads the exe of a dumpable root process
    # whose capabilities are a subset of its own (as the init's are)
    other = subprocess.Popen([sys.executable, "-c", NO_PTRACE_SLEEP])
    try:
        deadline = time.monotonic() + 10
        while not os.readlink(f"/proc/{other.pid}/exe").endswith("sleep"):
            assert time.monotonic() < deadline, "the probe target never exec'd sleep"
            time.sleep(0.01)
        assert _exe_seen_without_ptrace_cap(other.pid).endswith("sleep")
    finally:
        other.kill()
        other.wait()
    c = create("nodump", bundle(["true"]), state_root=state_root)
    try:
        assert _exe_seen_without_ptrace_cap(c.pid) == "EPERM"
    finally:
        c.delete()
