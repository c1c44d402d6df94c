"""Lifecycle edges on the real kernel: pid reuse, reaping, racing starts, consoles, rbind ro."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import pytest

from pyctr.errors import Conflict, ContainerInitError
from pyctr.runtime import container as rt
from pyctr.runtime import create, process
from pyctr.runtime.statedir import FIFO, start_time, write_state
from tests.integration.runtime_bundle import run

pytestmark = pytest.mark.root


def _children(state: str | None = None) -> list[int]:
    """Our child processes (in ``state``, e.g. "Z"), from /proc."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and (state is None or fields[0] == state):
            found.append(int(name))
    return found


def test_delete_leaves_a_process_that_reused_the_pid_alone(state_root, tmp_path):
    other = subprocess.Popen(["sleep", "60"])
    try:
        directory = state_root / "reused"
        directory.mkdir(parents=True)
        write_state(directory, {"ociVersion": "1.0.2", "id": "reused", "pid": other.pid,
                                "pidStartTime": start_time(other.pid) - 1,
                                "bundle": str(tmp_path), "created": time.time()})
        rt.delete("reused", state_root)
        assert other.poll() is None, "delete killed a process that merely reused the pid"
        assert start_time(other.pid) is not None
        assert not directory.exists()
    finally:
        other.kill()
        other.wait()


def test_failing_create_leaves_no_zombie_even_if_the_pid_report_is_late(
        bundle, state_root, monkeypatch):
    """The intermediate child is slow to report PID 1's pid; PID 1 fails meanwhile."""
    me = os.getpid()

    class SlowJson:
        @staticmethod
        def dumps(obj):
            if os.getpid() != me:
                time.sleep(0.3)  # the intermediate child, descheduled before it reports
            return json.dumps(obj)

        loads = staticmethod(json.loads)

    monkeypatch.setattr(process, "json", SlowJson)
    before = set(_children())

    def edit(spec):
        spec["mounts"].insert(0, {"destination": "/bad", "type": "nosuchfs", "source": "x"})
    with pytest.raises(ContainerInitError, match="mounts /bad"):
        create("zombie", bundle(["true"], edit), state_root=state_root)
    deadline = time.monotonic() + 3
    while set(_children()) - before and time.monotonic() < deadline:
        time.sleep(0.02)  # a leftover PID 1 would stay a zombie: this waits for it to show
    assert set(_children("Z")) - before == set()
    assert set(_children()) - before == set()


def test_second_start_after_the_init_went_is_a_conflict_not_a_hang(bundle, state_root):
    c = create("race", bundle(["sleep", "30"]), state_root=state_root)
    try:
        # another starter takes the init's byte (and has not yet removed the fifo)
        fd = os.open(state_root / "race" / FIFO, os.O_RDONLY | os.O_CLOEXEC)
        try:
            assert os.read(fd, 1) == b"0"
        finally:
            os.close(fd)
        code = f"from pyctr.runtime import start; start('race', {str(state_root)!r})"
        r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                           text=True, timeout=20)
        assert r.returncode != 0
        assert "cannot start container race: another start got there first" in r.stderr
        c.kill(9)
        assert c.wait() == 137
    finally:
        c.delete()


def test_wait_on_a_foreign_pid_blocks_on_the_kernel_not_on_sleep(bundle, state_root, monkeypatch):
    sh = subprocess.Popen(["sh", "-c", "sleep 0.3; true"])  # sleep's parent is sh, not us
    try:
        deadline = time.monotonic() + 5
        kids = ""
        while not kids and time.monotonic() < deadline:
            with open(f"/proc/{sh.pid}/task/{sh.pid}/children") as f:
                kids = f.read().split()
        pid = int(kids[0])

        def no_sleep(_seconds):
            raise AssertionError("wait() polled with time.sleep")
        monkeypatch.setattr(rt.time, "sleep", no_sleep)
        c = rt.Container("foreign", pid, bundle(["true"]), state_root,
                         pid_start_time=start_time(pid))
        with pytest.raises(Conflict, match="was not created by this process"):
            c.wait()
        assert start_time(pid) is None
    finally:
        sh.wait()


def test_terminal_binds_the_pty_over_dev_console(bundle, state_root):
    c = create("console", bundle(["stat", "-c", "%t:%T", "/dev/console"], terminal=True),
               state_root=state_root)
    try:
        c.start()
        out = b""
        while True:
            try:
                chunk = os.read(c.console_fd, 4096)
            except OSError as exc:
                assert exc.errno == errno.EIO
                break
            if not chunk:
                break
            out += chunk
        assert c.wait() == 0, out
    finally:
        c.delete()
    assert out.decode().split() == ["88:0"]  # 136:0, /dev/pts/0


def test_no_terminal_no_dev_console(bundle, state_root):
    code, out = run(bundle(["sh", "-c", "test -e /dev/console && echo present || echo absent"]),
                    state_root, "noconsole")
    assert (code, out.strip()) == (0, "absent")


def test_rbind_read_only_reaches_submounts(bundle, state_root, tmp_path):
    shared = tmp_path / "shared"
    (shared / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(shared / "sub")], check=True)
    try:
        def edit(spec):
            spec["mounts"].append({"destination": "/data", "type": "bind",
                                   "source": str(shared), "options": ["rbind", "ro"]})
        script = "touch /data/top || echo top-ro; touch /data/sub/x || echo sub-ro"
        code, out = run(bundle(["sh", "-c", script], edit), state_root, "rro")
        assert not (shared / "sub" / "x").exists()
        assert not (shared / "top").exists()
    finally:
        subprocess.run(["umount", str(shared / "sub")], check=True)
    assert code == 0, out
    assert "top-ro" in out and "sub-ro" in out

