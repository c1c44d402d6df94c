"""Real containers from a busybox bundle: what the kernel shows inside, exit codes, errors."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys

import pytest

from pyctr.errors import Conflict, ContainerInitError, ExecError, UserError
from pyctr.runtime import create, default_spec, resolve_user, start, state
from tests.integration.runtime_bundle import run

pytestmark = pytest.mark.root




def test_every_namespace_differs_from_the_hosts(bundle, state_root):
    kinds = ["pid", "mnt", "uts", "ipc", "net", "cgroup"]
    script = "; ".join(f"readlink /proc/self/ns/{k}" for k in kinds)
    code, out = run(bundle(["sh", "-c", script]), state_root, "ns")
    assert code == 0, out
    inside = out.split()
    host = [os.readlink(f"/proc/self/ns/{k}") for k in kinds]
    assert len(inside) == len(kinds)
    for k, i, h in zip(kinds, inside, host):
        assert i.startswith(f"{k}:[") and i != h, (k, i, h)


def test_ps_shows_only_the_container_with_the_command_as_pid_1(bundle, state_root):
    code, out = run(bundle(["sh", "-c", "ps -o pid,args; true"]), state_root, "ps")
    assert code == 0, out
    rows = [line.split(None, 1) for line in out.strip().splitlines()[1:]]
    pids = [int(p) for p, _ in rows]
    assert rows[0] == ["1", "sh -c ps -o pid,args; true"]
    assert len(pids) == 2 and max(pids) < 10, out  # sh and ps, numbered in the new pid ns


def test_hostname_is_the_specs(bundle, state_root):
    def edit(spec):
        spec["hostname"] = "box-42"
    code, out = run(bundle(["hostname"], edit), state_root, "host")
    assert (code, out.strip()) == (0, "box-42")
    assert os.uname().nodename != "box-42"


def _mounts(text: str) -> dict[str, tuple[str, set[str]]]:
    table = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            table[parts[1]] = (parts[2], set(parts[3].split(",")))
    return table


def test_mount_table_masks_and_read_only_paths(bundle, state_root):
    script = ("cat /proc/self/mounts; echo ===; wc -c < /proc/timer_list;"
              " ls /sys/firmware | wc -l; echo 1 > /proc/sys/kernel/domainname || echo ro-sys;"
              " touch /sys/x || echo ro-sysfs")
    code, out = run(bundle(["sh", "-c", script]), state_root, "mounts")
    assert code == 0, out
    mounts_text, _, rest = out.partition("===")
    table = _mounts(mounts_text)
    assert table["/proc"][0] == "proc"
    assert table["/dev"][0] == "tmpfs" and {"nosuid", "mode=755"} <= table["/dev"][1]
    assert table["/dev/pts"][0] == "devpts" and "ptmxmode=666" in table["/dev/pts"][1]
    assert table["/dev/shm"][0] == "tmpfs" and "noexec" in table["/dev/shm"][1]
    assert table["/dev/mqueue"][0] == "mqueue"
    assert table["/sys"][0] == "sysfs" and "ro" in table["/sys"][1]
    assert "ro" in table["/sys/fs/cgroup"][1]
    assert table["/sys/firmware"][0] == "tmpfs" and "ro" in table["/sys/firmware"][1]
    for p in ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"):
        assert "ro" in table[p][1], p
    assert table["/proc/timer_list"][0] == "tmpfs"  # /dev/null (on the /dev tmpfs) bound over it
    lines = rest.split()
    assert lines[:2] == ["0", "0"]  # masked file reads empty, masked dir is empty
    assert "ro-sys" in rest and "ro-sysfs" in rest
    # the host's root is detached: "/" is mounted once, and every mount is one the spec made
    points = [line.split()[1] for line in mounts_text.splitlines() if line.strip()]
    assert points.count("/") == 1
    spec = default_spec(["true"])
    made = {m["destination"] for m in spec["mounts"]} | set(spec["linux"]["maskedPaths"]) \
        | set(spec["linux"]["readonlyPaths"])
    strays = [p for p in points if p != "/" and p not in made
              and not p.startswith("/sys/fs/cgroup/")]
    assert strays == [], strays


def test_root_has_dockers_capabilities_and_no_new_privs(bundle, state_root):
    code, out = run(bundle(["cat", "/proc/1/status"]), state_root, "caps")
    assert code == 0, out
    status = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert status["CapEff"].strip() == "00000000a80425fb"
    assert status["CapPrm"].strip() == "00000000a80425fb"
    assert status["CapBnd"].strip() == "00000000a80425fb"
    assert status["CapInh"].strip() == "0000000000000000"
    assert status["CapAmb"].strip() == "0000000000000000"
    assert status["NoNewPrivs"].strip() == "1"


def test_user_from_the_images_passwd_runs_without_capabilities(bundle, state_root,
                                                              busybox_rootfs):
    user = resolve_user(busybox_rootfs, "user")

    def edit(spec):
        spec["process"]["user"] = {"uid": user.uid, "gid": user.gid,
                                   "additionalGids": user.additional_gids}
    code, out = run(bundle(["cat", "/proc/self/status"], edit), state_root, "user")
    assert code == 0, out
    status = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert status["Uid"].split() == ["1000"] * 4
    assert status["Gid"].split() == ["1000"] * 4
    assert status["Groups"].split() == ["50"]
    assert status["CapEff"].strip() == "0000000000000000"
    assert status["CapBnd"].strip() == "00000000a80425fb"


@pytest.mark.parametrize("script,expected", [("exit 0", 0), ("exit 3", 3)])
def test_exit_code(bundle, state_root, script, expected):
    code, _ = run(bundle(["sh", "-c", script]), state_root, f"exit{expected}")
    assert code == expected


def test_missing_command_fails_at_create_with_127(bundle, state_root):
    with pytest.raises(ExecError) as info:
        create("missing", bundle(["nosuchcmd"]), state_root=state_root)
    assert info.value.exit_code == 127
    assert 'exec: "nosuchcmd": executable file not found in $PATH' in str(info.value)
    assert not (state_root / "missing").exists()


def test_non_executable_file_fails_with_126(bundle, state_root, busybox_rootfs):
    (busybox_rootfs / "bin" / "notexec").write_text("#!/bin/sh\necho hi\n")
    (busybox_rootfs / "bin" / "notexec").chmod(0o644)
    with pytest.raises(ExecError) as info:
        create("noexec", bundle(["notexec"]), state_root=state_root)
    assert info.value.exit_code == 126
    assert 'exec: "notexec": permission denied' in str(info.value)


def test_killed_by_sigkill_is_137_and_status_follows_the_kernel(bundle, state_root):
    c = create("killed", bundle(["sleep", "100"]), state_root=state_root)
    try:
        assert state("killed", state_root)["status"] == "created"
        c.start()
        st = state("killed", state_root)
        assert (st["status"], st["pid"]) == ("running", c.pid)
        c.kill(signal.SIGKILL)
        assert c.wait() == 137
        assert state("killed", state_root)["status"] == "stopped"
    finally:
        c.delete()
    assert not (state_root / "killed").exists()


def test_stdin_is_piped_through(bundle, state_root):
    code, out = run(bundle(["cat"]), state_root, "stdin", stdin_data=b"hello through stdin\n")
    assert (code, out) == (0, "hello through stdin\n")


def test_start_from_another_process(bundle, state_root):
    c = create("other", bundle(["true"]), state_root=state_root)
    try:
        subprocess.run([sys.executable, "-c",
                        f"from pyctr.runtime import start; start('other', {str(state_root)!r})"],
                       check=True, timeout=30)
        assert c.wait() == 0
    finally:
        c.delete()


def test_start_twice_is_refused(bundle, state_root):
    c = create("twice", bundle(["sleep", "100"]), state_root=state_root)
    try:
        c.start()
        with pytest.raises(Conflict, match="cannot start container twice: it is running"):
            start("twice", state_root)
    finally:
        c.delete()


def test_terminal_gives_pts_0_with_the_console_size(bundle, state_root):
    def edit(spec):
        spec["process"]["consoleSize"] = {"height": 33, "width": 101}
    c = create("tty", bundle(["sh", "-c", "tty; stty size"], edit, terminal=True),
               state_root=state_root)
    try:
        assert c.console_fd is not None
        c.start()
        out = b""
        while True:
            try:
                chunk = os.read(c.console_fd, 4096)
            except OSError as exc:  # EIO once the slave's last holder exits
                assert exc.errno == errno.EIO
                break
            if not chunk:
                break
            out += chunk
        assert c.wait() == 0
    finally:
        c.delete()
    assert out.decode().split() == ["/dev/pts/0", "33", "101"]


def test_missing_cwd_fails_in_step_chdir_and_leaves_nothing(bundle, state_root):
    def edit(spec):
        spec["process"]["cwd"] = "/nonexistent"
    with pytest.raises(ContainerInitError) as info:
        create("nocwd", bundle(["true"], edit), state_root=state_root)
    assert info.value.step == "chdir"
    assert ('chdir to cwd ("/nonexistent") set in config.json failed: no such file or directory'
            in str(info.value))
    assert not (state_root / "nocwd").exists()


def test_invalid_mount_type_names_the_step_and_mount(bundle, state_root):
    def edit(spec):
        spec["mounts"].append({"destination": "/mnt", "type": "nosuchfs", "source": "none"})
    with pytest.raises(ContainerInitError) as info:
        create("badmount", bundle(["true"], edit), state_root=state_root)
    err = info.value
    assert (err.step, err.syscall, err.errno) == ("mounts /mnt", "mount", errno.ENODEV)
    assert str(err).startswith("mounts /mnt: mount")
    assert "hint:" in str(err)


def test_network_namespace_has_only_lo_and_it_is_up(bundle, state_root):
    code, out = run(bundle(["sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/flags"]),
                    state_root, "net")
    assert code == 0, out
    names = out.split()
    assert names[0] == "lo" and len(names) == 2
    assert int(names[1], 16) & 1  # IFF_UP


def test_read_only_root_and_read_only_bind_mount(bundle, state_root, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "file").write_text("from the host\n")

    def edit(spec):
        spec["root"]["readonly"] = True
        spec["mounts"].append({"destination": "/data", "type": "bind", "source": str(shared),
                               "options": ["rbind", "ro"]})
    script = ("cat /data/file; touch /x || echo root-ro;"
              " touch /data/y || echo data-ro; touch /dev/shm/ok && echo shm-rw")
    code, out = run(bundle(["sh", "-c", script], edit), state_root, "ro")
    assert code == 0, out
    assert out.splitlines()[0] == "from the host"
    assert "root-ro" in out and "data-ro" in out and "shm-rw" in out
    assert not (shared / "y").exists()


def test_bad_bundle_is_refused_before_any_fork(bundle, state_root):
    def edit(spec):
        spec["process"]["args"] = []
    with pytest.raises(UserError, match="config.json: process.args must be a non-empty list"):
        create("badspec", bundle(["x"], edit), state_root=state_root)


def test_execve_failure_is_reported_at_start_with_126(bundle, state_root, busybox_rootfs):
    garbage = busybox_rootfs / "bin" / "garbage"
    garbage.write_bytes(b"\x00\x01\x02 not an executable format\n")
    garbage.chmod(0o755)
    c = create("enoexec", bundle(["garbage"]), state_root=state_root)
    try:
        with pytest.raises(ExecError) as info:
            c.start()
        assert info.value.exit_code == 126
        assert info.value.step == "execve"
        assert 'exec: "/bin/garbage": exec format error' in str(info.value)
        assert c.wait() == 126
    finally:
        c.delete()


def test_rlimits_apply_and_raising_a_hard_limit_fails_clearly(bundle, state_root):
    code, out = run(bundle(["sh", "-c", "ulimit -n; ulimit -Hn"]), state_root, "rl")
    assert (code, out.split()) == (0, ["1024", "1024"])
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("the hard nofile limit is unlimited here: nothing to exceed")

    def edit(spec):
        spec["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": hard + 1}]
    with pytest.raises(ContainerInitError) as info:
        create("rl2", bundle(["true"], edit), state_root=state_root)
    err = info.value
    assert (err.step, err.errno) == ("rlimits", errno.EPERM)
    assert f"setrlimit RLIMIT_NOFILE to 1024/{hard + 1} failed" in str(err)
    assert "CAP_SYS_RESOURCE" in err.hint
