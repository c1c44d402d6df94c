"""The init pipeline's order, asserted against RecordingSyscalls (no root needed)."""

from __future__ import annotations

import errno

import pytest

from pyctr.errors import ContainerInitError, ExecError
from pyctr.runtime import STEP_NAMES, default_spec
from pyctr.runtime import syscalls as sc
from pyctr.runtime.fake import RecordingSyscalls
from pyctr.runtime.init import InitContext, run_pipeline
from pyctr.runtime.process import join_namespaces
from pyctr.runtime.rootfs import parse_options

KERNEL_FILES = {"/proc/kcore": False, "/proc/timer_list": False, "/sys/firmware": True,
                "/proc/sys": True, "/proc/sysrq-trigger": False}


def _run(rootfs, spec, bundle="/bundle"):
    fake = RecordingSyscalls(str(rootfs), present=KERNEL_FILES)
    ctx = InitContext(spec=spec, rootfs=str(rootfs), bundle=bundle, sys=fake, fifo_fd=7)
    run_pipeline(ctx)
    return fake, ctx


def _index(calls, pred):
    for i, call in enumerate(calls):
        if pred(call):
            return i
    raise AssertionError("call not recorded")


def test_step_names_are_the_lesson():
    assert STEP_NAMES == [
        "mount propagation", "rootfs bind", "mounts", "devices", "dev symlinks",
        "masked paths", "readonly paths", "seccomp compile", "pivot_root", "root readonly",
        "console", "hostname", "loopback", "rlimits", "seccomp without no_new_privs", "user",
        "capabilities", "no_new_privs", "seccomp", "chdir", "lookup executable", "close fds",
        "signals", "wait for start", "execve"]


def test_default_pipeline_runs_in_order(busybox_rootfs):
    root = str(busybox_rootfs)
    fake, ctx = _run(busybox_rootfs, default_spec(["sh", "-c", "true"]))
    calls = fake.calls
    assert calls[0] == ("mount", None, "/", None, sc.MS_PRIVATE | sc.MS_REC, None)
    assert calls[1] == ("mount", root, root, None, sc.MS_BIND | sc.MS_REC, None)
    mounted = [c[2] for c in calls if c[0] == "mount" and c[3] not in (None, "cgroup")]
    assert mounted[:6] == [f"{root}/proc", f"{root}/dev", f"{root}/dev/pts", f"{root}/dev/shm",
                           f"{root}/dev/mqueue", f"{root}/sys"]
    order = [
        _index(calls, lambda c: c[0] == "mount" and c[2] == f"{root}/proc"),
        _index(calls, lambda c: c[0] == "mknod" and c[1] == f"{root}/dev/null"),
        _index(calls, lambda c: c[0] == "symlink" and c[2] == f"{root}/dev/ptmx"),
        _index(calls, lambda c: c[0] == "mount" and c[2] == f"{root}/sys/firmware"),
        _index(calls, lambda c: c[0] == "mount" and c[2] == f"{root}/proc/sys"
               and c[4] & sc.MS_REMOUNT),
        _index(calls, lambda c: c[0] == "pivot_root"),
        _index(calls, lambda c: c[0] == "umount"),
        _index(calls, lambda c: c[0] == "sethostname"),
        _index(calls, lambda c: c[0] == "set_link_up"),
        _index(calls, lambda c: c[0] == "setrlimit"),
        _index(calls, lambda c: c[0] == "setuid"),
        _index(calls, lambda c: c[0] == "capbset_drop"),
        _index(calls, lambda c: c[0] == "capset" and c[1]),
        _index(calls, lambda c: c[0] == "set_no_new_privs"),
        _index(calls, lambda c: c[0] == "seccomp"),
        max(i for i, c in enumerate(calls) if c[0] == "chdir"),  # the cwd
        _index(calls, lambda c: c[0] == "close_fds_except"),
        _index(calls, lambda c: c[0] == "wait_for_start"),
        _index(calls, lambda c: c[0] == "execve"),
    ]
    assert order == sorted(order)
    i = _index(calls, lambda c: c[0] == "pivot_root")
    assert calls[i - 1:i + 4] == [
        ("chdir", root), ("pivot_root", ".", "."),
        ("mount", None, ".", None, sc.MS_SLAVE | sc.MS_REC, None),
        ("umount", ".", sc.MNT_DETACH), ("chdir", "/")]
    masked = [c for c in calls
              if c[0] == "mount" and ("/proc/" in c[2] or "firmware" in c[2])]
    assert masked[:3] == [
        ("mount", f"{root}/dev/null", f"{root}/proc/kcore", None, sc.MS_BIND, None),
        ("mount", f"{root}/dev/null", f"{root}/proc/timer_list", None, sc.MS_BIND, None),
        ("mount", "tmpfs", f"{root}/sys/firmware", "tmpfs", sc.MS_RDONLY, None)]
    assert calls[-4:] == [("close_fds_except", [0, 1, 2, 7]), ("reset_signals",),
                          ("wait_for_start", 7), ("execve", "/bin/sh", ["sh", "-c", "true"])]
    assert ctx.env["PATH"].startswith("/usr/local/sbin")


def test_capabilities_keep_only_dockers_set(busybox_rootfs):
    fake, _ = _run(busybox_rootfs, default_spec(["true"]))
    dropped = {c[1] for c in fake.calls if c[0] == "capbset_drop"}
    kept = {0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31}  # 0xa80425fb
    assert not dropped & kept
    assert set(range(41)) - kept <= dropped
    capset = [c for c in fake.calls if c[0] == "capset"][-1]
    assert capset == ("capset", sorted(kept), sorted(kept), [])


def test_user_switch_keeps_caps_then_raises_effective_before_dropping(busybox_rootfs):
    spec = default_spec(["true"])
    spec["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [50]}
    fake, _ = _run(busybox_rootfs, spec)
    names = fake.names()
    start = names.index("set_keepcaps")
    assert fake.calls[start:start + 5] == [
        ("set_keepcaps", True), ("setgroups", [50]), ("setgid", 1000), ("setuid", 1000),
        ("raise_effective",)]
    assert names.index("raise_effective") < names.index("capbset_drop")


def test_terminal_opens_the_pty_after_pivot_root(busybox_rootfs):
    spec = default_spec(["sh"], terminal=True)
    spec["process"]["consoleSize"] = {"height": 30, "width": 90}
    fake, _ = _run(busybox_rootfs, spec)
    names = fake.names()
    assert names.index("pivot_root") < names.index("open_pty") < names.index("sethostname")
    i = names.index("open_pty")
    assert fake.calls[i + 1:i + 5] == [
        ("set_console_size", 101, 30, 90), ("touch", "/dev/console"),
        ("mount", "/proc/self/fd/101", "/dev/console", None, sc.MS_BIND, None),
        ("make_controlling_tty", 101)]


def test_bind_mount_is_remounted_read_only(busybox_rootfs, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    spec = default_spec(["true"])
    spec["mounts"] = [{"destination": "/data", "type": "bind", "source": str(src),
                       "options": ["rbind", "ro", "nosuid"]}]
    fake, _ = _run(busybox_rootfs, spec)
    dest = f"{busybox_rootfs}/data"
    mounts = [c for c in fake.calls if c[0] in ("mount", "mount_setattr") and c[1:3].count(dest)]
    assert mounts == [
        ("mount", str(src), dest, None, sc.MS_BIND | sc.MS_REC, None),
        ("mount", None, dest, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID,
         None),
        # the remount changes the top mount only: every submount of the rbind as well
        ("mount_setattr", dest, sc.MOUNT_ATTR_RDONLY | sc.MOUNT_ATTR_NOSUID)]
    assert ("mkdir", dest) in fake.calls


def test_mount_destination_through_a_symlink_stays_in_the_rootfs(busybox_rootfs):
    (busybox_rootfs / "escape").symlink_to("/../../../../../tmp/outside")
    spec = default_spec(["true"])
    spec["mounts"] = [{"destination": "/escape", "type": "tmpfs", "source": "tmpfs"}]
    fake, _ = _run(busybox_rootfs, spec)
    assert ("mount", "tmpfs", f"{busybox_rootfs}/tmp/outside", "tmpfs", 0, None) in fake.calls


def test_readonly_root_is_remounted_after_pivot(busybox_rootfs):
    spec = default_spec(["true"])
    spec["root"]["readonly"] = True
    fake, _ = _run(busybox_rootfs, spec)
    ro = ("mount", None, "/", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY, None)
    assert fake.calls.index(ro) == fake.names().index("umount") + 2


def test_missing_cwd_fails_in_step_chdir(busybox_rootfs):
    spec = default_spec(["true"])
    spec["process"]["cwd"] = "/nope"
    with pytest.raises(ContainerInitError) as info:
        _run(busybox_rootfs, spec)
    err = info.value
    assert (err.step, err.errno) == ("chdir", errno.ENOENT)
    assert str(err).startswith(
        'chdir: chdir to cwd ("/nope") set in config.json failed: no such file or directory')


def test_executable_lookup_errors(busybox_rootfs):
    with pytest.raises(ExecError) as info:
        _run(busybox_rootfs, default_spec(["nosuch"]))
    assert info.value.exit_code == 127 and info.value.step == "lookup executable"
    assert info.value.message == 'exec: "nosuch": executable file not found in $PATH'
    (busybox_rootfs / "bin" / "plain").write_text("x")
    with pytest.raises(ExecError) as info:
        _run(busybox_rootfs, default_spec(["plain"]))
    assert info.value.exit_code == 126
    with pytest.raises(ExecError) as info:
        _run(busybox_rootfs, default_spec(["/bin/missing"]))
    assert info.value.message == 'exec: "/bin/missing": stat /bin/missing: no such file or directory'


def test_namespaces_with_a_path_are_joined_before_unsharing_the_rest():
    fake = RecordingSyscalls("/")
    join_namespaces(fake, [{"type": "pid"}, {"type": "network", "path": "/run/netns/n"},
                           {"type": "mount"}])
    assert fake.calls == [("setns", "/run/netns/n", sc.CLONE_NEWNET),
                          ("unshare", sc.CLONE_NEWPID | sc.CLONE_NEWNS)]


def test_parse_options():
    assert parse_options(["nosuid", "strictatime", "mode=755", "size=65536k"]) == (
        sc.MS_NOSUID | sc.MS_STRICTATIME, 0, "mode=755,size=65536k")
    assert parse_options(["rbind", "ro", "rw", "rslave"]) == (
        sc.MS_BIND | sc.MS_REC, sc.MS_SLAVE | sc.MS_REC, None)


def test_seccomp_loads_last_with_no_new_privs_and_before_the_user_without(busybox_rootfs):
    fake, _ = _run(busybox_rootfs, default_spec(["true"]))
    names = fake.names()
    cwd = max(i for i, n in enumerate(names) if n == "chdir")
    assert names.index("set_no_new_privs") < names.index("seccomp") < cwd
    spec = default_spec(["true"])
    spec["process"]["noNewPrivileges"] = False  # the filter then needs CAP_SYS_ADMIN
    fake, _ = _run(busybox_rootfs, spec)
    names = fake.names()
    assert names.count("seccomp") == 1
    assert names.index("setrlimit") < names.index("seccomp") < names.index("set_keepcaps")
    del spec["linux"]["seccomp"]
    fake, _ = _run(busybox_rootfs, spec)
    assert "seccomp" not in fake.names()


class _Failing(RecordingSyscalls):
    """Fails one method with EPERM, as the kernel would."""

    def __init__(self, rootfs, method):
        super().__init__(rootfs, present=KERNEL_FILES)
        self.method = method

    def __getattribute__(self, name):
        if name != "method" and name == object.__getattribute__(self, "method"):
            def fail(*_args, **_kw):
                raise PermissionError(errno.EPERM, "Operation not permitted")
            return fail
        return object.__getattribute__(self, name)


@pytest.mark.parametrize("method,step,root_hint", [
    ("mount_in", "mounts /proc", True),
    ("close_fds_except", "close fds", False),
    ("wait_for_start", "wait for start", False)])
def test_eperm_hint_names_root_only_before_capabilities_are_dropped(busybox_rootfs, method,
                                                                   step, root_hint):
    fake = _Failing(str(busybox_rootfs), method)
    ctx = InitContext(spec=default_spec(["true"]), rootfs=str(busybox_rootfs), bundle="/b",
                      sys=fake, fifo_fd=7)
    with pytest.raises(ContainerInitError) as info:
        run_pipeline(ctx)
    err = info.value
    assert (err.step, err.errno) == (step, errno.EPERM)
    assert ("CAP_SYS_ADMIN" in err.hint) is root_hint
    if not root_hint:
        assert "dropped its capabilities" in err.hint


def test_os_errors_name_their_syscall(tmp_path):
    from pyctr.runtime import inroot
    from pyctr.runtime.init import as_error
    from pyctr.runtime.seam import Syscalls

    (tmp_path / "etc").mkdir()
    ctx = InitContext(spec={}, rootfs=str(tmp_path), bundle="/b", sys=Syscalls())
    with pytest.raises(FileExistsError) as info:
        inroot.symlink(str(tmp_path), "x", "/etc")
    assert str(as_error("dev symlinks", info.value, ctx)).startswith(
        f"dev symlinks: symlinkat {tmp_path}/etc: File exists")
    with pytest.raises(FileExistsError) as info:
        inroot.mknod(str(tmp_path), "/etc", 0o10644, 0, 0, 0)
    assert str(as_error("devices", info.value, ctx)).startswith(
        f"devices: mknodat {tmp_path}/etc: File exists")
    with pytest.raises(FileNotFoundError) as info:
        Syscalls().chdir(str(tmp_path / "nope"))
    assert str(as_error("chdir", info.value, ctx)).startswith(f"chdir: chdir {tmp_path}/nope")
