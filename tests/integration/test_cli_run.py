"""`pyctr run` as a user types it, checked against what the kernel shows."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

DOCKER_DEFAULT_CAPS = "00000000a80425fb"


def test_echo_hello_and_nothing_left(pyctr, name):
    r = pyctr("run", "--rm", "--name", name, "busybox", "echo", "hello")
    assert (r.returncode, r.stdout, r.stderr) == (0, "hello\n", "")
    assert name not in pyctr.ok("ps", "-a")


def test_image_cmd_is_the_default_command(pyctr):
    r = pyctr("run", "--rm", "-i", "busybox", input="echo from-sh-$((1+2))\n")
    assert r.stdout == "from-sh-3\n"


@pytest.mark.parametrize("kind", ["pid", "mnt", "uts", "ipc", "net", "cgroup"])
def test_every_namespace_differs_from_the_host(pyctr, kind):
    inside = pyctr.ok("run", "--rm", "busybox", "readlink", f"/proc/self/ns/{kind}").strip()
    assert inside.startswith(f"{kind}:[")
    assert inside != os.readlink(f"/proc/self/ns/{kind}")


def test_command_is_pid_1_and_alone(pyctr):
    out = pyctr.ok("run", "--rm", "busybox", "ps", "-o", "pid,args")
    lines = out.strip().splitlines()
    assert lines[1:] == ["    1 ps -o pid,args"] or [ln.split() for ln in lines[1:]] == [
        ["1", "ps", "-o", "pid,args"]]


def test_hostname_default_and_flag(pyctr, name):
    assert pyctr.ok("run", "--rm", "--hostname", "web1", "busybox", "hostname") == "web1\n"
    pyctr.ok("run", "--name", name, "busybox", "hostname")
    c = pyctr.container(name)
    assert c["Config"]["Hostname"] == c["Id"][:12]
    pyctr.ok("rm", name)


def test_capabilities_are_dockers_default_set_and_no_new_privs(pyctr):
    status = pyctr.ok("run", "--rm", "busybox", "cat", "/proc/1/status")
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["CapEff"].strip() == DOCKER_DEFAULT_CAPS
    assert fields["CapBnd"].strip() == DOCKER_DEFAULT_CAPS
    assert fields["CapPrm"].strip() == DOCKER_DEFAULT_CAPS
    assert fields["CapAmb"].strip() == "0000000000000000"
    assert fields["NoNewPrivs"].strip() == "1"


def test_user_from_the_images_passwd(pyctr):
    # supplementary groups are those whose member list names the user (runc's rule)
    assert pyctr.ok("run", "--rm", "-u", "user", "busybox", "id") == \
        "uid=1000(user) gid=1000(user) groups=50(staff)\n"
    status = pyctr.ok("run", "--rm", "-u", "1000:50", "busybox", "cat", "/proc/self/status")
    assert "Uid:\t1000\t1000\t1000\t1000" in status and "Gid:\t50\t50\t50\t50" in status
    assert "CapEff:\t0000000000000000" in status
    r = pyctr("run", "--rm", "-u", "nosuchuser", "busybox", "id")
    assert r.returncode == 125
    assert "unable to find user nosuchuser" in r.stderr


@pytest.mark.parametrize("argv,code", [
    (["true"], 0),
    (["sh", "-c", "exit 3"], 3),
    (["/etc/passwd"], 126),
])
def test_exit_codes(pyctr, argv, code):
    assert pyctr("run", "--rm", "busybox", *argv).returncode == code


def test_command_not_found_is_127_with_dockers_message(pyctr, name):
    r = pyctr("run", "--rm", "--name", name, "busybox", "nosuchcmd")
    assert r.returncode == 127
    assert 'exec: "nosuchcmd": executable file not found in $PATH' in r.stderr
    assert "Traceback" not in r.stderr
    assert name not in pyctr.ok("ps", "-a")


def test_sigkill_of_the_container_is_137(pyctr, name):
    proc = pyctr.start(name, "busybox", "sleep", "60")
    try:
        pid = pyctr.container(name)["State"]["Pid"]
        assert "running" in pyctr.ok("ps", "--format", "json")
        os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=20) == 137
        c = pyctr.container(name)
        assert (c["State"]["Status"], c["State"]["ExitCode"]) == ("exited", 137)
        assert "Exited (137)" in pyctr.ok("ps", "-a")
    finally:
        pyctr.stop(name, proc)


def test_signals_to_the_cli_reach_pid_1(pyctr, name):
    script = 'trap "echo got-term; exit 42" TERM; echo ready; while :; do sleep 0.05; done'
    proc = subprocess.Popen(pyctr.argv("run", "--rm", "--name", name, "busybox", "sh", "-c",
                                       script),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 42
        assert proc.stdout.read() == "got-term\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stdin_is_piped_through_with_i_only(pyctr):
    assert pyctr.ok("run", "--rm", "-i", "busybox", "cat", input="some\ndata\n") == "some\ndata\n"
    # without -i the container reads /dev/null, as with docker
    assert pyctr.ok("run", "--rm", "busybox", "cat", input="ignored\n") == ""


def test_writes_land_in_the_upper_dir_only(pyctr, name):
    pyctr.ok("run", "--name", name, "busybox", "sh", "-c",
             "echo hi > /newfile && rm /bin/vi && mkdir /made")
    c = pyctr.container(name)
    upper = Path(c["GraphDriver"]["Data"]["UpperDir"])
    assert (upper / "newfile").read_text() == "hi\n"
    wh = os.lstat(upper / "bin" / "vi")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0  # overlayfs whiteout
    layers = pyctr.root / "images" / "layers"
    lower_vi = [p for p in layers.glob("*/diff/bin/vi")]
    assert lower_vi and all(os.path.islink(p) for p in lower_vi)
    assert not list(layers.glob("*/diff/newfile"))
    # the rootfs is not left mounted after the container exits
    assert str(pyctr.root) not in Path("/proc/self/mountinfo").read_text()
    # the next container from the same image sees the pristine image
    assert pyctr("run", "--rm", "busybox", "test", "-e", "/newfile").returncode == 1
    pyctr.ok("rm", name)
    assert not (pyctr.root / "containers" / c["Id"]).exists()


def test_generated_etc_files(pyctr):
    out = pyctr.ok("run", "--rm", "--hostname", "box", "busybox", "sh", "-c",
                   "cat /etc/hostname; echo ---; cat /etc/hosts; echo ---; cat /etc/resolv.conf")
    hostname, hosts, resolv = out.split("---\n")
    assert hostname == "box\n"
    assert "127.0.0.1\tlocalhost" in hosts and "\tbox" in hosts
    assert "nameserver" in resolv
    assert "nameserver 127." not in resolv


def test_env_workdir_entrypoint(pyctr, tmp_path):
    envfile = tmp_path / "env"
    envfile.write_text("FROM_FILE=yes\n")
    out = pyctr.ok("run", "--rm", "-e", "A=1", "--env-file", str(envfile), "-w", "/tmp",
                   "busybox", "sh", "-c", 'echo "$A $FROM_FILE $HOME $(pwd)"')
    assert out == "1 yes /root /tmp\n"
    assert pyctr.ok("run", "--rm", "--entrypoint", "echo", "busybox", "a", "b") == "a b\n"


def test_read_only_rootfs_with_tmpfs(pyctr):
    r = pyctr("run", "--rm", "--read-only", "busybox", "touch", "/x")
    assert r.returncode == 1 and "Read-only file system" in r.stderr
    assert pyctr.ok("run", "--rm", "--read-only", "--tmpfs", "/scratch", "busybox", "sh", "-c",
                    "touch /scratch/x && grep ' /scratch ' /proc/mounts | cut -d' ' -f3") \
        == "tmpfs\n"


def test_bind_volumes_rw_and_ro(pyctr, tmp_path):
    (tmp_path / "in").write_text("from-host\n")
    out = pyctr.ok("run", "--rm", "-v", f"{tmp_path}:/data", "busybox", "sh", "-c",
                   "cat /data/in; echo from-ctr > /data/out")
    assert out == "from-host\n" and (tmp_path / "out").read_text() == "from-ctr\n"
    r = pyctr("run", "--rm", "-v", f"{tmp_path}:/data:ro", "busybox", "touch", "/data/x")
    assert r.returncode == 1 and "Read-only file system" in r.stderr
    assert not (tmp_path / "x").exists()


def test_root_is_the_overlay_and_sys_is_read_only(pyctr):
    mounts = pyctr.ok("run", "--rm", "busybox", "cat", "/proc/self/mounts").splitlines()
    by_target = {m.split()[1]: m.split() for m in mounts}
    assert by_target["/"][2] == "overlay"
    assert by_target["/proc"][2] == "proc"
    assert by_target["/dev"][2] == "tmpfs"
    assert by_target["/dev/pts"][2] == "devpts"
    assert by_target["/sys"][3].split(",")[0] == "ro"


def test_ps_rm_lifecycle(pyctr, name):
    assert pyctr("run", "--name", name, "busybox", "sh", "-c", "exit 3").returncode == 3
    ps = pyctr.ok("ps", "-a")
    line = next(ln for ln in ps.splitlines() if name in ln)
    assert "Exited (3)" in line and "busybox" in line
    assert name not in pyctr.ok("ps")  # only running ones without -a
    r = pyctr("run", "--name", name, "busybox", "true")
    assert r.returncode == 125 and f'container name "/{name}" is already in use' in r.stderr
    pyctr.ok("rm", name)
    r = pyctr("rm", name)
    assert r.returncode == 1 and f"no such container: {name}" in r.stderr


def test_rmi_refused_while_a_container_uses_the_image(pyctr, name):
    pyctr.ok("tag", "busybox", f"bb-{name}:1")
    pyctr.ok("run", "--name", name, f"bb-{name}:1", "true")
    assert f"bb-{name}:1" in pyctr.image_names()
    assert pyctr.ok("images", "-q", f"bb-{name}:1") == pyctr.ok("images", "-q", "busybox")
    # busybox:latest still names the image: untagging the second name is allowed
    r = pyctr("rmi", f"bb-{name}:1")
    assert r.returncode == 0 and f"Untagged: bb-{name}:1" in r.stdout
    # the last name of an image a container uses is refused, then forced
    pyctr.ok("tag", "busybox", f"only-{name}:1")
    image_id = pyctr.ok("images", "-q", "--no-trunc", f"only-{name}:1").strip()
    assert image_id.startswith("sha256:")
    r = pyctr("rmi", image_id)
    assert r.returncode == 1 and "image is being used by container" in r.stderr
    assert name in r.stderr
    pyctr.ok("rm", name)
    assert "Untagged: only-" in pyctr.ok("rmi", f"only-{name}:1")


def test_errors_a_user_can_cause(pyctr):
    r = pyctr("run", "--rm", "nosuchimage")
    assert r.returncode == 125
    assert "no such image: nosuchimage:latest" in r.stderr and "busybox:latest" in r.stderr
    assert "Traceback" not in r.stderr
    r = pyctr("run", "--badflag", "busybox")
    assert r.returncode == 125 and "--badflag" in r.stderr and "pyctr run --help" in r.stderr
    before = set(os.listdir(pyctr.root / "containers"))
    r = pyctr("run", "--rm", "-v", "relative:/x:zz", "busybox", "true")
    assert r.returncode == 125 and 'invalid mode "zz"' in r.stderr
    assert set(os.listdir(pyctr.root / "containers")) == before  # nothing half-made
    r = pyctr("run", "--rm", "-w", "/nonexistent", "busybox", "true")
    assert r.returncode in (125, 126, 127) and "/nonexistent" in r.stderr
    assert "Traceback" not in r.stderr


def test_not_root_gets_a_hint(pyctr):
    r = subprocess.run(pyctr.argv("ps"), check=False, capture_output=True, text=True,
                       preexec_fn=lambda: os.setuid(65534))
    assert r.returncode == 125
    assert "pyctr needs root" in r.stderr and "try sudo pyctr" in r.stderr


def test_a_killed_cli_never_leaves_its_container_running_unwatched(pyctr, name):
    """The foreground `pyctr run` is its container's monitor (as the shim is for -d):
    killed, nobody could reap the container or record its exit, so the next
    command that looks (ps) kills it and records why; rm then cleans up."""
    proc = pyctr.start(name, "busybox", "sleep", "60", local=True)
    try:
        pid = pyctr.container(name)["State"]["Pid"]
        proc.kill()
        proc.wait()
        line = next(ln for ln in pyctr.ok("ps", "-a").splitlines() if name in ln)
        assert "Exited (137)" in line
        state = pyctr.container(name)["State"]
        assert state["Running"] is False and "monitor" in state["Error"]
        assert not os.path.exists(f"/proc/{pid}") or \
            Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
        assert pyctr.ok("rm", name) == f"{name}\n"
        assert str(pyctr.root) not in Path("/proc/self/mountinfo").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pyctr("rm", "-f", name)


def test_through_the_daemon_a_killed_cli_leaves_its_container_running(pyctr, name):
    """As with docker: the CLI is only attached; the daemon's worker watches the container."""
    proc = pyctr.start(name, "busybox", "sleep", "60")
    try:
        state = pyctr.container(name)["State"]
        proc.kill()
        proc.wait()
        time.sleep(0.3)
        line = next(ln for ln in pyctr.ok("ps").splitlines() if name in ln)
        assert "Up " in line
        assert pyctr.container(name)["State"]["Pid"] == state["Pid"]
        assert pyctr.ok("rm", "-f", name) == f"{name}\n"
        assert str(pyctr.root) not in Path("/proc/self/mountinfo").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pyctr("rm", "-f", name)


@pytest.mark.parametrize("how", [["--no-daemon", "run"], ["run"]])
def test_pid_1_inherits_no_ignored_or_blocked_signal(pyctr, how):
    """python ignores SIGPIPE and SIGXFSZ, a shim SIGINT and SIGHUP: an ignored
    disposition survives execve, so the init resets them all before it."""
    out = pyctr.ok(*how, "--rm", "--network", "none", "busybox", "grep", "-E",
                   "^Sig(Ign|Blk)", "/proc/1/status")
    assert out.split() == ["SigBlk:", "0000000000000000", "SigIgn:", "0000000000000000"]


def test_rm_f_of_a_half_created_container_removes_everything_it_had(pyctr, name):
    """The CLI dies (SIGKILL) while it sets a container up — its rootfs mounted, its
    cgroup and runtime state perhaps made — and `rm -f` takes all of it away."""
    proc = subprocess.Popen(pyctr.argv("--no-daemon", "run", "--name", name, "busybox",
                                       "sleep", "60"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    record = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the moment its overlay is mounted
        for entry in (pyctr.root / "containers").glob("*/container.json"):
            try:
                data = json.loads(entry.read_text())
            except (OSError, ValueError):
                continue
            if data.get("Name") == name and "GraphDriver" in data:
                record = data
        if record:
            break
        time.sleep(0.001)
    proc.kill()
    proc.wait()
    assert record, "the run never got as far as its rootfs"
    cid = record["Id"]
    r = pyctr("rm", "-f", name)
    assert r.returncode == 0, r.stderr
    assert not (pyctr.root / "containers" / cid).exists()
    assert not (pyctr.run_dir / "runtime" / cid).exists()
    assert cid not in Path("/proc/self/mountinfo").read_text()
    roots = [Path("/sys/fs/cgroup"), *Path("/sys/fs/cgroup").iterdir()]  # v2, and v1's
    assert not any(Path(h, "pyctr", cid).exists() for h in roots if h.is_dir())
