"""scripts/vm-test: the guest's init and run scripts, its environment, qemu's
command line (no root, no qemu).  The run script is executed on the host
with its guest paths pointed into tmp_path."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_vmtest_args import load_vmtest

vt = load_vmtest()

MODS = ["/lib/modules/virtio_ring.ko", "/lib/modules/virtio.ko", "/lib/modules/9p.ko"]


def sh_syntax_ok(script: str) -> None:
    r = subprocess.run(["/bin/sh", "-n"], input=script, check=False, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr


def test_init_script_loads_modules_in_order_and_mounts():
    init = vt.init_script(MODS)
    sh_syntax_ok(init)
    assert init.startswith("#!/bin/sh\n")
    assert "for m in /lib/modules/virtio_ring.ko /lib/modules/virtio.ko /lib/modules/9p.ko;" in init
    assert "mount -t 9p -o \"$opts,ro,cache=loose\" hostroot /host" in init
    assert "lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work" in init
    assert "mount -t cgroup2 -o nsdelegate cgroup2 /newroot/sys/fs/cgroup" in init
    assert "for c in cpu memory pids io cpuset; do" in init
    assert 'echo "+$c" > /newroot/sys/fs/cgroup/cgroup.subtree_control' in init
    assert "tmpfs /newroot/tmp" in init and "tmpfs /newroot/run" in init
    assert "mkdir -p /newroot/run/pyctr-vm" in init
    assert 'exec switch_root /newroot /run/vm-test/busybox sh "$results/run.sh"' in init
    assert "pyctr_vm.results=" in init


def test_init_uses_only_applets_in_the_initramfs():
    init = vt.init_script(MODS)
    used = set()
    for line in init.splitlines():
        word = line.strip().split(" ")[0]
        if word in ("mount", "insmod", "mkdir", "cat", "cp", "switch_root", "poweroff",
                    "hostname", "ip", "echo"):
            used.add(word)
    assert used <= set(vt.BUSYBOX_APPLETS)


@pytest.fixture
def host_run(tmp_path):
    """Run a generated run.sh on the host: busybox from the host, ttys as files."""
    bb = shutil.which("busybox") or "/bin/busybox"
    if not Path(bb).exists():
        pytest.skip("needs busybox (scripts/setup.sh installs busybox-static)")
    results = tmp_path / "results"
    results.mkdir()

    def run(command, cwd=str(tmp_path), env=None, **kw):
        script = vt.run_script(command, cwd, env if env is not None else {"PATH": "/usr/bin:/bin"},
                               str(results), bb=bb, out=str(tmp_path / "ttyS1"),
                               err=str(tmp_path / "ttyS2"), fifo_dir=str(tmp_path),
                               poweroff=": poweroff", **kw)
        sh_syntax_ok(script)
        (results / "run.sh").write_text(script)
        r = subprocess.run(["/bin/sh", str(results / "run.sh")], check=False,
                           capture_output=True, text=True, timeout=60)
        out = (tmp_path / "ttyS1").read_text() if (tmp_path / "ttyS1").exists() else ""
        err = (tmp_path / "ttyS2").read_text() if (tmp_path / "ttyS2").exists() else ""
        return int((results / "status").read_text()), out, err, r.stdout

    return run


def test_run_script_status_output_and_quoting(host_run):
    args = ["a b", "it's", "$HOME", "*", "", "back\\slash", "new\nline"]
    status, out, err, console = host_run(["/bin/sh", "-c",
                                          'printf "[%s]\\n" "$@"; echo oops >&2; exit 7',
                                          "sh", *args])
    assert status == 7
    assert out == "".join(f"[{a}]\n" for a in args)
    assert err == "oops\n"
    assert console.strip().endswith(vt.STATUS_MARKER + "7")


def test_run_script_environment_is_exact(host_run):
    env = {"PATH": "/usr/bin:/bin", "PYCTR_X": "a b'c", "HOME": "/root"}
    status, out, _, _ = host_run(["env"], env=env)
    assert status == 0
    assert sorted(out.splitlines()) == sorted(f"{k}={v}" for k, v in env.items())


def test_run_script_cwd_and_pipes_not_ttys(host_run, tmp_path):
    (tmp_path / "here").mkdir()
    script = "pwd; [ -t 1 ] && echo tty || echo pipe; [ -t 0 ] && echo tty-in || cat"
    status, out, _, _ = host_run(["/bin/sh", "-c", script], cwd=str(tmp_path / "here"))
    assert status == 0
    assert out == f"{tmp_path / 'here'}\npipe\n"  # stdin is /dev/null: cat prints nothing


def test_run_script_tty_streams_go_straight_to_the_port(host_run, tmp_path):
    status, out, err, _ = host_run(["/bin/sh", "-c", "echo o; echo e >&2"],
                                   tty_out=True, tty_err=True)
    assert (status, out, err) == (0, "o\n", "e\n")
    assert not (tmp_path / "stdout").exists() and not (tmp_path / "stderr").exists()


def test_run_script_missing_cwd(host_run, tmp_path):
    status, _, err, _ = host_run(["true"], cwd=str(tmp_path / "gone"))
    assert status == vt.EXIT_VM_ERROR
    assert f"vm-test: cannot cd to {tmp_path / 'gone'} in the guest" in err


def test_run_script_command_not_found(host_run):
    status, _, err, _ = host_run(["no-such-command-pyctr"])
    assert status == 127
    assert "no-such-command-pyctr" in err


def test_run_script_refuses_empty_command():
    with pytest.raises(ValueError):
        vt.run_script([], "/", {}, "/var/tmp/x")


def test_guest_env_keeps_essentials_only():
    host = {"PATH": "/opt/bin:/usr/bin", "HOME": "/home/me", "PYCTR_ROOT": "/r",
            "PYTHONPATH": "/p", "SSH_AUTH_SOCK": "/s", "DISPLAY": ":0", "LANG": "C.UTF-8",
            "PYCTR_IN_VM": "0"}
    env = vt.guest_env(host, ["EXTRA=1", "PATH=/x"], "/var/tmp/pyctr-vm.abc")
    assert env["PATH"] == "/x"  # --env wins
    assert env["HOME"] == "/root" and env["USER"] == "root"
    assert env["PYCTR_ROOT"] == "/r" and env["PYTHONPATH"] == "/p" and env["LANG"] == "C.UTF-8"
    assert env["PYCTR_IN_VM"] == "1"
    assert env["PYCTR_TEST_ROOT_BASE"] == "/run/pyctr-vm"
    assert env["PYCTR_VM_RESULTS"] == "/var/tmp/pyctr-vm.abc"
    assert env["EXTRA"] == "1"
    assert "SSH_AUTH_SOCK" not in env and "DISPLAY" not in env


def test_guest_env_default_path():
    assert "/usr/bin" in vt.guest_env({})["PATH"].split(":")


def test_kernel_cmdline():
    line = vt.kernel_cmdline("/var/tmp/pyctr-vm.abc")
    words = line.split()
    for w in ("console=ttyS0", "panic=-1", "cgroup_no_v1=all", "quiet",
              "pyctr_vm.results=/var/tmp/pyctr-vm.abc"):
        assert w in words
    verbose = vt.kernel_cmdline("/r", verbose=True).split()
    assert "quiet" not in verbose and "loglevel=7" in verbose


def test_qemu_argv():
    argv = vt.qemu_argv("/usr/bin/qemu-system-x86_64", Path("/boot/vmlinuz-6"),
                        Path("/var/cache/pyctr-vm/i.cpio"), "/var/tmp/pyctr-vm.abc",
                        mem=1536, cpus=2, out_fd=7, err_fd=9)
    joined = " ".join(argv)
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert argv[argv.index("-accel") + 1].startswith("tcg")
    assert argv[argv.index("-m") + 1] == "1536" and argv[argv.index("-smp") + 1] == "2"
    assert "-no-reboot" in argv and "-nodefaults" in argv
    assert argv[argv.index("-kernel") + 1] == "/boot/vmlinuz-6"
    assert argv[argv.index("-initrd") + 1] == "/var/cache/pyctr-vm/i.cpio"
    virtfs = [argv[i + 1] for i, a in enumerate(argv) if a == "-virtfs"]
    assert virtfs[0] == ("local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
                         "multidevs=remap")
    assert virtfs[1].startswith("local,path=/var/tmp/pyctr-vm.abc,mount_tag=results,")
    assert "readonly" not in virtfs[1]
    assert "path=/proc/self/fd/7" in joined and "path=/proc/self/fd/9" in joined
    assert "path=/var/tmp/pyctr-vm.abc/console.log" in joined
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-serial"] == \
        ["chardev:con", "chardev:out", "chardev:err"]


def test_tail_lines():
    assert vt.tail_lines("a\r\nb\r\nc\n", 2) == "b\nc"
