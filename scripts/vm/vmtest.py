"""vm-test: run a command in a pure cgroup v2 kernel guest (qemu, TCG).

The host here has hybrid cgroups; pyctr's v2 driver needs a pure cgroup v2
machine.  This boots Debian's installed (not booted) linux-image-amd64 kernel
under qemu-system-x86 with TCG, from a tiny busybox-static initramfs that

  1. insmods the 9p / virtio / overlay modules (dependency order from
     modules.dep),
  2. mounts the host's / read-only over 9p (multidevs=remap) with a tmpfs
     overlay on top, so the guest sees the host's files and may write,
  3. mounts proc, sys, dev, cgroup2 at /sys/fs/cgroup (controllers enabled
     in the root's cgroup.subtree_control), tmpfs at /tmp and /run,
  4. switch_roots into the overlay and runs the per-run script that vm-test
     wrote into a results dir (/var/tmp/pyctr-vm.XXXX, shared read-write
     over 9p at the same path): cd to the caller's cwd, the caller's
     environment essentials, the command with stdout on ttyS1 and stderr on
     ttyS2 (streamed back to vm-test's stdout and stderr), then the exit
     status into the results dir and a power-off.

Exit status: the command's own; 124 when --timeout expires (qemu is
killed); 125 when the guest could not run the command (missing packages,
boot failure, kernel panic: the last console lines are shown).

Everything here is stdlib only, so the pure parts (argument parsing,
modules.dep resolution, the init and run scripts, cpio) are unit-tested
without root or qemu: tests/unit/test_vmtest_*.py.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import lzma
import os
import re
import select
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CACHE_DIR = Path("/var/cache/pyctr-vm")
RESULTS_PARENT = Path("/var/tmp")
INSTALL_HINT = "apt-get install linux-image-amd64 qemu-system-x86 busybox-static"

# The modules the initramfs loads; their dependencies come from modules.dep.
# virtio_pci: the bus for the 9p devices; 9pnet_virtio + 9p: the host's /;
# overlay: the writable tmpfs layer.  The console is the built-in 8250
# serial port, so no virtio console is needed.  Everything else the guest
# may need later (bridge, veth, nf_*) is auto-loaded by the guest kernel
# through the host's own /sbin/modprobe and /lib/modules, visible over 9p.
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")

# cgroup v2 controllers enabled in the guest's root subtree_control.
CONTROLLERS = ("cpu", "memory", "pids", "io", "cpuset")

# Inside the guest: where pyctr tests keep their root dirs (a tmpfs: an
# overlayfs upperdir cannot live on the guest's own overlay root).
GUEST_TEST_ROOT_BASE = "/run/pyctr-vm"
GUEST_TOOLS = "/run/vm-test"  # busybox copied from the initramfs

# Environment the guest command inherits from the caller.
ENV_KEEP = ("PATH", "TERM", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "VIRTUAL_ENV")
ENV_KEEP_PREFIXES = ("PYCTR_", "PYTHON", "PYTEST_")

EXIT_TIMEOUT = 124
EXIT_VM_ERROR = 125
STATUS_MARKER = "PYCTR-VM-EXIT="
FAIL_MARKER = "PYCTR-VM-FAIL:"


class VmTestError(Exception):
    """A reason vm-test cannot run the command (shown as-is to the user)."""


# ---- arguments -------------------------------------------------------------

def _positive(kind):
    def conv(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
        return value
    return conv


def _mem(text: str) -> int:
    """Memory in MiB: 1024, 1024M, 1G."""
    m = re.fullmatch(r"(\d+)\s*([mMgG]?)(i?[bB])?", text.strip())
    if not m or int(m.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"bad memory size {text!r} (e.g. 1024, 512M, 2G)")
    n = int(m.group(1))
    return n * 1024 if m.group(2).lower() == "g" else n


def _env_pair(text: str) -> str:
    if "=" not in text or text.startswith("="):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vm-test",
        usage="vm-test [options] -- COMMAND [ARGS...]",
        description="Run COMMAND as root in a pure cgroup v2 kernel guest (qemu, TCG) "
                    "that sees the host's filesystem read-only under a tmpfs overlay. "
                    "Exits with COMMAND's status; 124 on timeout; 125 when the guest "
                    "could not run it.")
    p.add_argument("--timeout", type=_positive(float), default=900.0, metavar="S",
                   help="kill the guest after S seconds and exit 124 (default 900)")
    p.add_argument("--mem", type=_mem, default=1024, metavar="M",
                   help="guest memory in MiB, or with a G/M suffix (default 1024)")
    p.add_argument("--cpus", type=_positive(int), default=2, metavar="N",
                   help="guest vCPUs (default 2)")
    p.add_argument("--kernel", metavar="VERSION",
                   help="kernel version under /boot and /lib/modules (default: newest)")
    p.add_argument("-e", "--env", action="append", type=_env_pair, default=[],
                   metavar="NAME=VALUE", help="extra environment for COMMAND (repeatable)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show the guest console (kernel and init messages) on stderr")
    p.add_argument("--keep", action="store_true",
                   help="keep the results dir (console.log, run.sh, status) and print its path")
    p.add_argument("--check", action="store_true",
                   help="only check that a guest can be started here (exit 0) or say why not")
    p.add_argument("--rebuild", action="store_true",
                   help="rebuild the cached initramfs")
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Options, then `--`, then the command (taken verbatim)."""
    p = build_parser()
    if "--" in argv:
        i = argv.index("--")
        opts, command = argv[:i], argv[i + 1:]
        ns = p.parse_args(opts)
    else:
        ns, rest = p.parse_known_args(argv)
        unknown = [a for a in rest if a.startswith("-")]
        if rest and unknown and rest[0] == unknown[0]:
            p.error(f"unrecognized arguments: {' '.join(unknown)}")
        command = rest
    ns.command = command
    if not command and not ns.check:
        p.error("no command given: vm-test [options] -- COMMAND [ARGS...]")
    return ns


# ---- kernel, modules, busybox ---------------------------------------------

@dataclass
class Kernel:
    version: str
    vmlinuz: Path
    moddir: Path


def _version_key(v: str):
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", v)]


def find_kernel(version: str | None = None, boot: Path = Path("/boot"),
                modroot: Path = Path("/lib/modules")) -> Kernel:
    """The newest (or the named) kernel with both a vmlinuz and its modules."""
    found = []
    for vmlinuz in boot.glob("vmlinuz-*"):
        ver = vmlinuz.name[len("vmlinuz-"):]
        if (modroot / ver / "modules.dep").is_file():
            found.append(Kernel(ver, vmlinuz, modroot / ver))
    if version is not None:
        for k in found:
            if k.version == version:
                return k
        raise VmTestError(f"no kernel {version} with modules: need {boot}/vmlinuz-{version} "
                          f"and {modroot}/{version}/modules.dep")
    if not found:
        raise VmTestError(f"no kernel for the guest: no {boot}/vmlinuz-* with "
                          f"{modroot}/<version>/modules.dep (install it: {INSTALL_HINT})")
    found.sort(key=lambda k: _version_key(k.version))
    k = found[-1]
    if not os.access(k.vmlinuz, os.R_OK):
        raise VmTestError(f"cannot read {k.vmlinuz} (run as root)")
    return k


def find_qemu() -> str:
    path = shutil.which("qemu-system-x86_64", path=os.environ.get("PATH", "") + ":/usr/bin")
    if path:
        return path
    raise VmTestError(f"qemu-system-x86_64 not found (install it: {INSTALL_HINT})")


def is_static_elf(data: bytes) -> bool:
    """True for an ELF executable without a PT_INTERP (a static binary)."""
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only
        return False
    end = "<" if data[5] == 1 else ">"
    phoff, = struct.unpack_from(end + "Q", data, 0x20)
    phentsize, phnum = struct.unpack_from(end + "HH", data, 0x36)
    for i in range(phnum):
        p_type, = struct.unpack_from(end + "I", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def find_busybox() -> Path:
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        p = Path(cand)
        if p.is_file():
            with open(p, "rb") as f:
                head = f.read(65536)
            if is_static_elf(head):
                return p
    raise VmTestError(f"no static busybox (/bin/busybox): install busybox-static "
                      f"({INSTALL_HINT})")


def module_name(path: str) -> str:
    """kernel/fs/9p/9p.ko(.xz) -> 9p; dashes and underscores are one."""
    base = path.rsplit("/", 1)[-1]
    base = re.sub(r"\.ko(\.(xz|gz|zst))?$", "", base)
    return base.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[str, list[str]]]:
    """modules.dep -> {name: (path, [dependency paths])}."""
    mods: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        path, _, deps = line.partition(":")
        mods[module_name(path)] = (path.strip(), deps.split())
    return mods


def parse_builtin(text: str) -> set[str]:
    return {module_name(line.strip()) for line in text.splitlines() if line.strip()}


def resolve_modules(dep: dict[str, tuple[str, list[str]]], wanted,
                    builtin=frozenset()) -> list[str]:
    """Module paths to insmod, each after everything it depends on, once.

    modules.dep lists every (transitive) dependency of a module already;
    resolving recursively still orders them correctly whatever the file's
    order.  A wanted module built into the kernel is skipped; one that is
    neither built in nor in modules.dep is an error.
    """
    by_path = {path: name for name, (path, _) in dep.items()}
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in seen:
            return
        if name in stack:
            raise VmTestError(f"module dependency cycle: {' -> '.join(stack + (name,))}")
        path, deps = dep[name]
        for d in deps:
            dname = by_path.get(d, module_name(d))
            if dname not in dep:
                raise VmTestError(f"module {name} needs {d}, which modules.dep does not list")
            visit(dname, stack + (name,))
        seen.add(name)
        order.append(path)

    for w in wanted:
        n = module_name(w)
        if n in dep:
            visit(n, ())
        elif n not in builtin:
            raise VmTestError(f"kernel module {w} not found in modules.dep "
                              f"(nor built in): this kernel cannot run the guest")
    return order


def read_module(path: Path) -> bytes:
    """A module's bytes, decompressed (busybox insmod wants a plain .ko)."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        import gzip
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        zstd = shutil.which("zstd")
        if not zstd:
            raise VmTestError(f"{path} is zstd-compressed: install zstd")
        return subprocess.run([zstd, "-dc", str(path)], check=True, capture_output=True).stdout
    return data


def initramfs_module_path(path: str) -> str:
    """Where a module lands in the initramfs: /lib/modules/<basename>.ko."""
    base = path.rsplit("/", 1)[-1]
    return "/lib/modules/" + re.sub(r"\.ko\.(xz|gz|zst)$", ".ko", base)


# ---- the guest's scripts ---------------------------------------------------

BUSYBOX_APPLETS = ("sh", "mount", "umount", "mkdir", "insmod", "cat", "echo", "cp",
                   "switch_root", "poweroff", "hostname", "ip")


def init_script(modules: list[str], controllers=CONTROLLERS) -> str:
    """/init of the initramfs (busybox sh).  `modules` are initramfs paths in
    load order.  The per-run part (command, cwd, env) is NOT here: it is the
    run.sh that vm-test writes into the results dir, named on the kernel
    command line (pyctr_vm.results=DIR), so one initramfs serves all runs."""
    mods = " ".join(shlex.quote(m) for m in modules)
    ctrls = " ".join(controllers)
    return f"""#!/bin/sh
# pyctr vm-test guest init (generated by scripts/vm/vmtest.py)
export PATH=/bin
fail() {{
    echo "{FAIL_MARKER} $*"
    echo "{FAIL_MARKER} $*" >/dev/ttyS2 2>/dev/null
    poweroff -f
}}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in {mods}; do
    insmod "$m" || fail "insmod $m failed"
done
results=
for a in $(cat /proc/cmdline); do
    case "$a" in pyctr_vm.results=*) results="${{a#pyctr_vm.results=}}" ;; esac
done
[ -n "$results" ] || fail "no pyctr_vm.results= on the kernel command line"
opts=trans=virtio,version=9p2000.L,msize=512000
mkdir -p /host /rw /newroot
mount -t 9p -o "$opts,ro,cache=loose" hostroot /host || fail "cannot mount the host's / over 9p"
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work overlay /newroot \\
    || fail "cannot mount the overlay root"
mount -t 9p -o "$opts" results "/newroot$results" || fail "cannot mount the results dir $results"
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
mount -t cgroup2 -o nsdelegate cgroup2 /newroot/sys/fs/cgroup || fail "cannot mount cgroup2"
for c in {ctrls}; do
    echo "+$c" > /newroot/sys/fs/cgroup/cgroup.subtree_control \\
        || echo "vm-test init: cannot enable the $c controller" >&2
done
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /newroot/tmp
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /newroot/run
mkdir -p /newroot/dev/pts /newroot/dev/shm /newroot/dev/mqueue /newroot{GUEST_TOOLS}
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /newroot/dev/shm
mount -t mqueue mqueue /newroot/dev/mqueue
mkdir -p /newroot{GUEST_TEST_ROOT_BASE}
cp /bin/busybox /newroot{GUEST_TOOLS}/busybox
hostname pyctr-vm
ip link set lo up 2>/dev/null
exec switch_root /newroot {GUEST_TOOLS}/busybox sh "$results/run.sh"
fail "switch_root failed"
"""


def guest_env(environ: dict[str, str], extra: list[str] = (), results: str = "") -> dict[str, str]:
    """The caller's environment essentials, as the guest command sees them."""
    env = {}
    for k, v in environ.items():
        if k in ENV_KEEP or k.startswith(ENV_KEEP_PREFIXES):
            env[k] = v
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env["HOME"] = "/root"
    env["USER"] = env["LOGNAME"] = "root"
    env.setdefault("TERM", "dumb")
    env["PYCTR_IN_VM"] = "1"
    env["PYCTR_TEST_ROOT_BASE"] = GUEST_TEST_ROOT_BASE
    if results:
        env["PYCTR_VM_RESULTS"] = results
    for pair in extra:
        k, _, v = pair.partition("=")
        env[k] = v
    return env


def run_script(command: list[str], cwd: str, env: dict[str, str], results: str, *,
               tty_out: bool = False, tty_err: bool = False,
               bb: str = f"{GUEST_TOOLS}/busybox", out: str = "/dev/ttyS1",
               err: str = "/dev/ttyS2", fifo_dir: str = GUEST_TOOLS,
               poweroff: str = "$bb sync; $bb poweroff -f") -> str:
    """results/run.sh: PID 1 after switch_root (busybox sh).

    Runs the command with exactly `env` in `cwd`, stdin from /dev/null,
    stdout to ttyS1 and stderr to ttyS2 (raw: bytes pass unchanged), then
    leaves the exit status in results/status (and a marker line on the
    console) and powers off.  Unless the caller's stream is a terminal
    (tty_out, tty_err), the command writes into a fifo that a cat copies to
    the serial port: it sees a pipe, as it would on the host, not a tty.
    The other keyword arguments let the unit tests run it on the host."""
    if not command:
        raise ValueError("empty command")
    q = shlex.quote
    env_args = " ".join(q(f"{k}={v}") for k, v in sorted(env.items()))
    argv = " ".join(q(a) for a in command)
    lines = [
        "# pyctr vm-test run script (generated by scripts/vm/vmtest.py)",
        f"bb={q(bb)}",
        f"results={q(results)}",
        f"$bb stty -F {q(out)} raw -echo 2>/dev/null",
        f"$bb stty -F {q(err)} raw -echo 2>/dev/null",
        "copiers=",
    ]
    redirect = {}
    for name, dev, tty in (("out", out, tty_out), ("err", err, tty_err)):
        if tty:
            redirect[name] = q(dev)
        else:
            fifo = q(f"{fifo_dir}/std{name}")
            lines += [f"$bb rm -f {fifo}; $bb mkfifo {fifo}",
                      f"$bb cat {fifo} >{q(dev)} & copiers=\"$copiers $!\""]
            redirect[name] = fifo
    lines += [
        f"if cd {q(cwd)} 2>/dev/null; then",
        f"    $bb env -i {env_args} {argv} </dev/null >{redirect['out']} 2>{redirect['err']}",
        "    rc=$?",
        "else",
        (f"    echo \"vm-test: cannot cd to \"{q(cwd)}\" in the guest"
         f" (/tmp and /run are fresh tmpfs there)\" >{redirect['err']}"),
        f"    : >{redirect['out']}",
        f"    rc={EXIT_VM_ERROR}",
        "fi",
        "[ -z \"$copiers\" ] || wait $copiers",
        "echo \"$rc\" > \"$results/status.tmp\" && $bb mv \"$results/status.tmp\" \"$results/status\"",
        f"echo \"{STATUS_MARKER}$rc\"",
        poweroff,
        "",
    ]
    return "\n".join(lines)


# ---- cpio (newc) ----------------------------------------------------------

def cpio_newc(entries) -> bytes:
    """An uncompressed newc archive.  entries: (path, mode, data: bytes) where a
    symlink's data is its target.  Uncompressed: the kernel unpacks it faster
    under TCG than it would inflate a gzip."""
    out = io.BytesIO()
    ino = 1000

    def put(name: str, mode: int, data: bytes) -> None:
        nonlocal ino
        ino += 1
        nameb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{x:08X}" for x in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nameb), 0))
        out.write(hdr.encode())
        out.write(nameb)
        out.write(b"\0" * ((-(110 + len(nameb))) % 4))
        out.write(data)
        out.write(b"\0" * ((-len(data)) % 4))

    for name, mode, data in entries:
        put(name.lstrip("/"), mode, data)
    put("TRAILER!!!", 0, b"")
    return out.getvalue()


S_DIR, S_REG, S_LNK = 0o040000, 0o100000, 0o120000


def initramfs_entries(busybox: bytes, modules: list[tuple[str, bytes]], init: str):
    ents = []
    for d in ("bin", "dev", "proc", "sys", "lib", "lib/modules", "host", "rw", "newroot"):
        ents.append((d, S_DIR | 0o755, b""))
    ents.append(("bin/busybox", S_REG | 0o755, busybox))
    for a in BUSYBOX_APPLETS:
        ents.append((f"bin/{a}", S_LNK | 0o777, b"busybox"))
    for path, data in modules:
        ents.append((path.lstrip("/"), S_REG | 0o644, data))
    ents.append(("init", S_REG | 0o755, init.encode()))
    return ents


def cache_key(kernel: Kernel, busybox: Path, sources: list[Path]) -> str:
    h = hashlib.sha256()
    for p in [kernel.vmlinuz, kernel.moddir / "modules.dep", busybox]:
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    for p in sources:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def build_initramfs(kernel: Kernel, cache_dir: Path = CACHE_DIR, rebuild: bool = False) -> Path:
    """The cached initramfs for this kernel (rebuilt when the kernel, busybox or
    this script changes)."""
    busybox = find_busybox()
    key = cache_key(kernel, busybox, [Path(__file__).resolve()])
    target = cache_dir / f"initramfs-{kernel.version}-{key}.cpio"
    if target.is_file() and not rebuild:
        return target
    dep = parse_modules_dep((kernel.moddir / "modules.dep").read_text())
    builtin_file = kernel.moddir / "modules.builtin"
    builtin = parse_builtin(builtin_file.read_text()) if builtin_file.is_file() else set()
    paths = resolve_modules(dep, BOOT_MODULES, builtin)
    modules = [(initramfs_module_path(p), read_module(kernel.moddir / p)) for p in paths]
    init = init_script([m for m, _ in modules])
    data = cpio_newc(initramfs_entries(busybox.read_bytes(), modules, init))
    cache_dir.mkdir(parents=True, exist_ok=True)
    for old in cache_dir.glob(f"initramfs-{kernel.version}-*.cpio"):
        if old != target:
            old.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".initramfs.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return target


# ---- qemu ------------------------------------------------------------------

def kernel_cmdline(results: str, verbose: bool = False) -> str:
    parts = ["console=ttyS0", "panic=-1", "oops=panic", "cgroup_no_v1=all",
             "8250.nr_uarts=4", "tsc=reliable", "no_timer_check", "mitigations=off",
             "nokaslr", "rdinit=/init", f"pyctr_vm.results={results}"]
    parts.append("loglevel=7" if verbose else "quiet")
    return " ".join(p for p in parts if p)


def qemu_argv(qemu: str, kernel: Path, initramfs: Path, results: str, mem: int, cpus: int,
              out_fd: int, err_fd: int, verbose: bool = False) -> list[str]:
    return [
        qemu, "-accel", "tcg,thread=multi", "-M", "pc", "-cpu", "max",
        "-smp", str(cpus), "-m", str(mem),
        "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
        "-no-reboot",
        "-kernel", str(kernel), "-initrd", str(initramfs),
        "-append", kernel_cmdline(results, verbose),
        # ttyS0: kernel and init messages; ttyS1: stdout; ttyS2: stderr
        "-chardev", f"file,id=con,path={results}/console.log",
        "-serial", "chardev:con",
        "-chardev", f"file,id=out,path=/proc/self/fd/{out_fd},append=on",
        "-serial", "chardev:out",
        "-chardev", f"file,id=err,path=/proc/self/fd/{err_fd},append=on",
        "-serial", "chardev:err",
        # the host's / read-only (guest writes land in its tmpfs overlay)
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        # the results dir read-write, at the same path in the guest
        "-virtfs", f"local,path={results},mount_tag=results,security_model=none,multidevs=remap",
    ]


def tail_lines(text: str, n: int = 30) -> str:
    lines = [ln.rstrip("\r") for ln in text.splitlines()]
    return "\n".join(lines[-n:])


def check() -> tuple[Kernel, str]:
    kernel = find_kernel()
    qemu = find_qemu()
    find_busybox()
    if os.geteuid() != 0:
        raise VmTestError("needs root (reading the kernel, exporting / to the guest)")
    return kernel, qemu


def run(ns: argparse.Namespace) -> int:
    t0 = time.monotonic()
    kernel = find_kernel(ns.kernel)
    qemu = find_qemu()
    if os.geteuid() != 0:
        raise VmTestError("needs root (reading the kernel, exporting / to the guest)")
    initramfs = build_initramfs(kernel, rebuild=ns.rebuild)
    remove_stale_results()
    results = tempfile.mkdtemp(prefix="pyctr-vm.", dir=RESULTS_PARENT)
    os.chmod(results, 0o755)
    Path(results, "owner").write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
    try:
        return _run_in(ns, kernel, qemu, initramfs, results, t0)
    finally:
        if ns.keep:
            print(f"vm-test: results kept in {results}", file=sys.stderr)
        else:
            shutil.rmtree(results, ignore_errors=True)


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def remove_stale_results(parent: Path = RESULTS_PARENT) -> None:
    """Remove results dirs whose vm-test is gone (killed with SIGKILL: its
    qemu died with it, through PR_SET_PDEATHSIG, but the dir stayed)."""
    for d in parent.glob("pyctr-vm.*"):
        try:
            pid, start = (d / "owner").read_text().split()
        except (OSError, ValueError):
            continue
        if _start_time(int(pid)) != start:
            shutil.rmtree(d, ignore_errors=True)


def _relay(fd: int, sink) -> bool:
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        return True
    if not data:
        return False
    sink.write(data)
    sink.flush()
    return True


def _run_in(ns, kernel: Kernel, qemu: str, initramfs: Path, results: str, t0: float) -> int:
    env = guest_env(dict(os.environ), ns.env, results)
    Path(results, "run.sh").write_text(run_script(
        ns.command, os.getcwd(), env, results,
        tty_out=os.isatty(1), tty_err=os.isatty(2)))
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    argv = qemu_argv(qemu, kernel.vmlinuz, initramfs, results, ns.mem, ns.cpus,
                     out_w, err_w, ns.verbose)
    with open(Path(results, "qemu.log"), "wb") as qlog:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=qlog, stderr=qlog,
                                pass_fds=(out_w, err_w), start_new_session=True,
                                preexec_fn=_die_with_parent)  # noqa: PLW1509 (no threads)
    os.close(out_w)
    os.close(err_w)
    sinks = {out_r: sys.stdout.buffer, err_r: sys.stderr.buffer}
    console = Path(results, "console.log")
    con_pos = 0
    deadline = time.monotonic() + ns.timeout
    timed_out = False
    try:
        while sinks:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select(list(sinks), [], [], min(left, 0.2))
            for fd in ready:
                if not _relay(fd, sinks[fd]):
                    del sinks[fd]
            if ns.verbose:
                con_pos = _show_console(console, con_pos)
        if not timed_out:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
    except (KeyboardInterrupt, _Terminated) as e:
        _kill(proc)
        signum = e.args[0] if isinstance(e, _Terminated) else signal.SIGINT
        print(f"vm-test: interrupted: killed qemu (pid {proc.pid})", file=sys.stderr)
        return 128 + signum
    finally:
        if timed_out:
            _kill(proc)
        for fd in (out_r, err_r):
            os.close(fd)
    if ns.verbose:
        _show_console(console, con_pos)
    elapsed = time.monotonic() - t0
    con_text = console.read_text(errors="replace") if console.exists() else ""
    if timed_out:
        print(f"vm-test: timed out after {ns.timeout:g} s: killed qemu (pid {proc.pid})",
              file=sys.stderr)
        _show_tail("last console lines", con_text)
        return EXIT_TIMEOUT
    status_file = Path(results, "status")
    if status_file.is_file():
        try:
            rc = int(status_file.read_text().strip())
        except ValueError:
            rc = None
        if rc is not None:
            if os.environ.get("PYCTR_VM_TIMING"):
                print(f"vm-test: {elapsed:.1f} s in all", file=sys.stderr)
            return rc
    m = re.findall(re.escape(STATUS_MARKER) + r"(\d+)", con_text)
    if m:
        return int(m[-1])
    # no status: say why
    qemu_log = Path(results, "qemu.log").read_text(errors="replace").strip()
    panic = re.search(r"Kernel panic - [^\r\n]*", con_text)
    if panic:
        print(f"vm-test: the guest kernel panicked: {panic.group(0)}", file=sys.stderr)
    elif FAIL_MARKER in con_text:
        why = con_text.split(FAIL_MARKER, 1)[1].splitlines()[0].strip()
        print(f"vm-test: guest init failed: {why}", file=sys.stderr)
    elif proc.returncode not in (0, None):
        print(f"vm-test: qemu exited with status {proc.returncode}"
              + (f": {qemu_log}" if qemu_log else ""), file=sys.stderr)
    else:
        print("vm-test: the guest stopped without reporting an exit status", file=sys.stderr)
    _show_tail("last console lines", con_text)
    return EXIT_VM_ERROR


def _show_console(console: Path, pos: int) -> int:
    try:
        with open(console, "rb") as f:
            f.seek(pos)
            data = f.read()
    except FileNotFoundError:
        return pos
    if data:
        sys.stderr.buffer.write(data.replace(b"\r\n", b"\n"))
        sys.stderr.flush()
    return pos + len(data)


def _show_tail(title: str, text: str, n: int = 30) -> None:
    if text.strip():
        print(f"--- {title} ---\n{tail_lines(text, n)}\n---", file=sys.stderr)


def _die_with_parent() -> None:
    """In the qemu child before exec: SIGKILL when vm-test dies (even by
    SIGKILL, e.g. a test's timeout), so no guest outlives its caller.
    vm-test is single-threaded, so preexec_fn is safe here."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class _Terminated(Exception):
    pass


def _on_term(signum, frame):
    raise _Terminated(signum)


def _kill(proc: subprocess.Popen) -> None:
    """Kill the qemu we started (its own session: by its PID, nothing else)."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGHUP, _on_term)
    try:
        if ns.check:
            kernel, qemu = check()
            print(f"vm-test: ok: kernel {kernel.version}, {qemu}")
            return 0
        return run(ns)
    except VmTestError as e:
        print(f"vm-test: {e}", file=sys.stderr)
        return EXIT_VM_ERROR
