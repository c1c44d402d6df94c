"""The default seccomp profile as data, its validation, and in-rootfs resolution (no root)."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from pyctr.errors import ContainerInitError, UserError
from pyctr.runtime import default_spec, inroot, seccomp
from pyctr.runtime.spec import DEFAULT_CAPABILITIES, validate

DANGEROUS = ["keyctl", "add_key", "request_key", "kexec_load", "kexec_file_load", "bpf",
             "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
             "perf_event_open", "mount", "umount2", "pivot_root", "unshare", "setns",
             "open_by_handle_at", "init_module", "reboot"]


def _unconditional(profile: dict) -> set[str]:
    return {n for r in profile["syscalls"] if r["action"] == "SCMP_ACT_ALLOW"
            and not r.get("args") for n in r["names"]}


def test_default_profile_is_an_allow_list_refusing_with_eperm():
    profile = default_spec(["true"])["linux"]["seccomp"]
    assert (profile["defaultAction"], profile["defaultErrnoRet"]) == ("SCMP_ACT_ERRNO", 1)
    allowed = _unconditional(profile)
    assert {"read", "execve", "chroot"} <= allowed  # CAP_SYS_CHROOT is in Docker's set
    assert not set(DANGEROUS) & allowed
    assert "clone" not in allowed and "mknod" not in allowed
    assert seccomp.problems(profile) == []


def test_every_refused_syscall_has_a_reason():
    refused = {n for names in seccomp.REFUSED for n in names.split()}
    assert set(DANGEROUS) <= refused
    assert not refused & set(seccomp.ALLOWED)
    gated = {n for names in seccomp.BY_CAPABILITY.values() for n in names.split()}
    assert gated <= refused


def test_clone_is_allowed_only_without_namespace_flags_unless_cap_sys_admin():
    profile = seccomp.default_profile(DEFAULT_CAPABILITIES)
    clone = [r for r in profile["syscalls"] if r["names"] == ["clone"]]
    assert clone == [{"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [
        {"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}]
    assert {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38} in profile["syscalls"]
    admin = seccomp.default_profile(DEFAULT_CAPABILITIES + ["CAP_SYS_ADMIN"])
    assert {"mount", "umount2", "unshare", "setns", "clone", "clone3", "pivot_root"} \
        <= _unconditional(admin)
    assert not [r for r in admin["syscalls"] if r["names"] == ["clone3"]]


def test_mknod_allows_files_fifos_sockets_and_the_whiteout_only():
    rules = [r for r in seccomp.default_profile(DEFAULT_CAPABILITIES)["syscalls"]
             if r["names"] == ["mknodat"]]
    kinds = sorted(r["args"][0]["valueTwo"] for r in rules)
    assert kinds == sorted([0, stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR])
    (chr_rule,) = [r for r in rules if r["args"][0]["valueTwo"] == stat.S_IFCHR]
    assert chr_rule["args"] == [
        {"index": 2, "value": 0o170000, "valueTwo": stat.S_IFCHR, "op": "SCMP_CMP_MASKED_EQ"},
        {"index": 3, "value": 0, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]  # device 0:0


def test_bad_seccomp_sections_are_refused_by_load_spec():
    spec = default_spec(["true"])
    spec["linux"]["seccomp"]["syscalls"].append({"names": ["mkdir"], "action": "SCMP_ACT_NOPE"})
    with pytest.raises(UserError, match=r"config.json: linux.seccomp.syscalls\[\d+\].action "
                                        r'must be one of .* \(got "SCMP_ACT_NOPE"\)'):
        validate(spec)


def test_pyseccomp_is_not_imported_with_the_runtime():
    code = ("import sys, pyctr.runtime.container, pyctr.runtime.spec; "
            "pyctr.runtime.spec.default_spec(['x']); "
            "assert 'pyseccomp' not in sys.modules and 'ctypes' not in sys.modules")
    assert os.spawnv(os.P_WAIT, sys.executable, [sys.executable, "-c", code]) == 0


# ---- inroot: lookups the kernel confines to the rootfs ------------------------

def test_symlinks_resolve_inside_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "up").symlink_to("../../../../etc")
    (root / "abs").symlink_to(str(tmp_path))
    for link, inside in (("/up", root / "etc"), ("/abs", root / str(tmp_path).lstrip("/"))):
        inroot.mkdir(str(root), link)
        fd = inroot.open_in_root(str(root), link)
        try:
            assert os.readlink(f"/proc/self/fd/{fd}") == str(inside)
        finally:
            os.close(fd)
    assert not (tmp_path / "etc").exists()


def test_an_fd_outside_the_root_is_refused(tmp_path):
    (tmp_path / "root").mkdir()
    fd = os.open(tmp_path, os.O_PATH)
    try:
        with pytest.raises(ContainerInitError, match=f"resolved to {tmp_path}, outside the "
                                                     f"rootfs {tmp_path}/root"):
            inroot.check_under(str(tmp_path / "root"), fd, "/x")
    finally:
        os.close(fd)


CACHED = """
import sys
from pyctr.runtime import default_spec, seccomp
bpf = seccomp.program(default_spec(["x"])["linux"]["seccomp"], sys.argv[1])
print(len(bpf), "pyseccomp" in sys.modules)
"""


def _program_in_new_process(cache_dir) -> list[str]:
    import subprocess

    return subprocess.run([sys.executable, "-c", CACHED, str(cache_dir)], check=True,
                          capture_output=True, text=True, timeout=60).stdout.split()


def test_compiled_filter_is_cached_and_checked_against_the_profile(tmp_path):
    cache = tmp_path / "cache"
    size, imported = _program_in_new_process(cache)
    assert int(size) % 8 == 0 and int(size) > 8 * 100 and imported == "True"
    assert _program_in_new_process(cache) == [size, "False"]  # a read, no libseccomp
    (path,) = cache.iterdir()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"SCMP_ACT_ERRNO"', b'"SCMP_ACT_ALLOW"', 1))  # another profile
    assert _program_in_new_process(cache) == [size, "True"]  # not trusted: compiled again
    assert path.read_bytes() == data
