"""scripts/vm-test: kernel and module discovery, modules.dep, the initramfs (no root, no qemu)."""

from __future__ import annotations

import lzma
import os
import sys
from pathlib import Path

import pytest

from tests.unit.test_vmtest_args import load_vmtest

vt = load_vmtest()

# Debian 6.1's lines for what the guest loads, shuffled, plus noise.
SAMPLE_DEP = """\
kernel/fs/overlayfs/overlay.ko:
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/net/9p/9pnet.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/fs/netfs/netfs.ko:
kernel/drivers/char/hw_random/virtio-rng.ko.xz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
"""


def names(paths):
    return [vt.module_name(p) for p in paths]


def test_module_names():
    assert vt.module_name("kernel/fs/9p/9p.ko") == "9p"
    assert vt.module_name("kernel/drivers/char/hw_random/virtio-rng.ko.xz") == "virtio_rng"
    assert vt.module_name("a/b/foo.ko.zst") == "foo"


def test_parse_modules_dep():
    dep = vt.parse_modules_dep(SAMPLE_DEP + "\n# comment\n")
    assert dep["9p"] == ("kernel/fs/9p/9p.ko", ["kernel/net/9p/9pnet.ko",
                                                "kernel/fs/fscache/fscache.ko",
                                                "kernel/fs/netfs/netfs.ko"])
    assert dep["overlay"] == ("kernel/fs/overlayfs/overlay.ko", [])
    assert "virtio_rng" in dep


def test_resolve_orders_dependencies_first_once():
    dep = vt.parse_modules_dep(SAMPLE_DEP)
    order = vt.resolve_modules(dep, vt.BOOT_MODULES)
    assert len(order) == len(set(order))
    got = names(order)
    assert set(got) == {"virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
                        "virtio_pci", "9pnet", "9pnet_virtio", "netfs", "fscache", "9p", "overlay"}
    for name, (_, deps) in dep.items():
        if name in got:
            for d in deps:
                assert got.index(vt.module_name(d)) < got.index(name), (d, name)
    assert order[-1] == "kernel/fs/overlayfs/overlay.ko"


def test_resolve_dash_and_underscore_are_one():
    dep = vt.parse_modules_dep(SAMPLE_DEP)
    assert names(vt.resolve_modules(dep, ["virtio-rng"])) == ["virtio_ring", "virtio", "virtio_rng"]


def test_builtin_module_is_skipped_missing_one_is_an_error():
    dep = vt.parse_modules_dep("kernel/fs/overlayfs/overlay.ko:\n")
    builtin = vt.parse_builtin("kernel/fs/9p/9p.ko\nkernel/net/9p/9pnet.ko\n")
    assert vt.resolve_modules(dep, ["9p", "overlay"], builtin) == ["kernel/fs/overlayfs/overlay.ko"]
    with pytest.raises(vt.VmTestError, match="kernel module 9pnet_virtio not found"):
        vt.resolve_modules(dep, ["9pnet_virtio"], builtin)


def test_dependency_missing_from_modules_dep_and_cycles():
    with pytest.raises(vt.VmTestError, match="needs kernel/x/b.ko"):
        vt.resolve_modules(vt.parse_modules_dep("kernel/x/a.ko: kernel/x/b.ko\n"), ["a"])
    cyc = "kernel/x/a.ko: kernel/x/b.ko\nkernel/x/b.ko: kernel/x/a.ko\n"
    with pytest.raises(vt.VmTestError, match="cycle: a -> b -> a"):
        vt.resolve_modules(vt.parse_modules_dep(cyc), ["a"])


def test_initramfs_module_path():
    assert vt.initramfs_module_path("kernel/fs/9p/9p.ko") == "/lib/modules/9p.ko"
    assert vt.initramfs_module_path("kernel/x/virtio-rng.ko.xz") == "/lib/modules/virtio-rng.ko"


def test_read_module_decompresses_xz(tmp_path):
    p = tmp_path / "m.ko.xz"
    p.write_bytes(lzma.compress(b"\x7fELF module"))
    assert vt.read_module(p) == b"\x7fELF module"
    q = tmp_path / "m.ko"
    q.write_bytes(b"plain")
    assert vt.read_module(q) == b"plain"


def fake_kernel(tmp_path, version, with_modules=True):
    boot, mods = tmp_path / "boot", tmp_path / "lib" / "modules"
    boot.mkdir(exist_ok=True)
    (boot / f"vmlinuz-{version}").write_bytes(b"kernel")
    if with_modules:
        (mods / version).mkdir(parents=True)
        (mods / version / "modules.dep").write_text(SAMPLE_DEP)
    return boot, mods


def test_find_kernel_newest_with_modules(tmp_path):
    fake_kernel(tmp_path, "6.1.0-9-amd64")
    fake_kernel(tmp_path, "6.1.0-10-amd64")
    boot, mods = fake_kernel(tmp_path, "6.5.0-1-amd64", with_modules=False)
    k = vt.find_kernel(boot=boot, modroot=mods)
    assert k.version == "6.1.0-10-amd64"  # numeric order; 6.5 has no modules
    assert k.vmlinuz == boot / "vmlinuz-6.1.0-10-amd64"
    assert vt.find_kernel("6.1.0-9-amd64", boot=boot, modroot=mods).version == "6.1.0-9-amd64"
    with pytest.raises(vt.VmTestError, match="no kernel 6.5.0-1-amd64 with modules"):
        vt.find_kernel("6.5.0-1-amd64", boot=boot, modroot=mods)


def test_no_kernel_names_the_packages(tmp_path):
    (tmp_path / "boot").mkdir()
    with pytest.raises(vt.VmTestError) as e:
        vt.find_kernel(boot=tmp_path / "boot", modroot=tmp_path / "none")
    assert "apt-get install linux-image-amd64 qemu-system-x86" in str(e.value)


def test_no_qemu_names_the_packages(monkeypatch):
    monkeypatch.setattr(vt.shutil, "which", lambda *a, **k: None)
    with pytest.raises(vt.VmTestError) as e:
        vt.find_qemu()
    assert "qemu-system-x86_64 not found" in str(e.value)
    assert "apt-get install linux-image-amd64 qemu-system-x86" in str(e.value)


def test_is_static_elf():
    assert not vt.is_static_elf(b"#!/bin/sh\n" + b"\0" * 64)
    with open(os.path.realpath(sys.executable), "rb") as f:
        head = f.read(65536)
    if head[:4] == b"\x7fELF":
        assert not vt.is_static_elf(head)  # a dynamic python has a PT_INTERP
    if Path("/bin/busybox").exists():
        with open("/bin/busybox", "rb") as f:
            data = f.read(65536)
        # Debian's busybox-static is static; the dynamic `busybox` package is not
        assert vt.is_static_elf(data) == (b"/lib64/ld-linux" not in data)


def parse_newc(data: bytes):
    """(name, mode, data) of each entry of a newc archive, checking the alignment."""
    out, pos = [], 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[pos + 110: pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += (-pos) % 4
        body = data[pos:pos + size]
        pos += size
        pos += (-pos) % 4
        if name == "TRAILER!!!":
            assert pos == len(data)
            return out
        out.append((name, mode, body))


def test_cpio_newc_round_trip():
    ents = [("bin", 0o040755, b""), ("bin/busybox", 0o100755, b"abc"),
            ("bin/sh", 0o120777, b"busybox"), ("/init", 0o100755, b"#!/bin/sh\n")]
    got = parse_newc(vt.cpio_newc(ents))
    assert got == [("bin", 0o040755, b""), ("bin/busybox", 0o100755, b"abc"),
                   ("bin/sh", 0o120777, b"busybox"), ("init", 0o100755, b"#!/bin/sh\n")]


def test_build_initramfs_cached_and_rebuilt(tmp_path):
    try:
        vt.find_busybox()
    except vt.VmTestError:
        pytest.skip("needs busybox-static (scripts/setup.sh installs it)")
    boot, mods = fake_kernel(tmp_path, "6.1.0-10-amd64")
    moddir = mods / "6.1.0-10-amd64"
    for line in SAMPLE_DEP.splitlines():
        path = moddir / line.split(":")[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        data = b"module " + path.name.encode()
        path.write_bytes(lzma.compress(data) if path.name.endswith(".xz") else data)
    k = vt.find_kernel(boot=boot, modroot=mods)
    cache = tmp_path / "cache"
    first = vt.build_initramfs(k, cache)
    assert vt.build_initramfs(k, cache) == first
    files = {n: (m, d) for n, m, d in parse_newc(first.read_bytes())}
    init = files["init"][1].decode()
    assert files["lib/modules/9p.ko"][1] == b"module 9p.ko"
    assert files["bin/mount"] == (0o120777, b"busybox")
    assert init.index("/lib/modules/netfs.ko") < init.index("/lib/modules/9p.ko")
    # a kernel update (modules.dep changes) makes a new one and drops the old
    os.utime(moddir / "modules.dep", ns=(1, 1))
    second = vt.build_initramfs(k, cache)
    assert second != first and second.exists() and not first.exists()


def test_remove_stale_results(tmp_path):
    import os as _os
    live = tmp_path / "pyctr-vm.live"
    dead = tmp_path / "pyctr-vm.dead"
    other = tmp_path / "pyctr-vm.noowner"
    for d in (live, dead, other):
        d.mkdir()
    me = _os.getpid()
    (live / "owner").write_text(f"{me} {vt._start_time(me)}\n")
    (dead / "owner").write_text(f"{me} 1\n")  # same pid, another start time: reused pid
    vt.remove_stale_results(tmp_path)
    assert live.exists() and other.exists() and not dead.exists()
