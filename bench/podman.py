"""podman as a benchmark anchor, on a root of the benchmark's own.

podman 4.3 as Debian ships it does not run here with its defaults:
  * it asks for nofile/nproc rlimits above the hard limits, and root here
    lacks CAP_SYS_RESOURCE ("setrlimit RLIMIT_NOFILE: Operation not permitted");
    `default_ulimits = []` makes it leave the rlimits alone;
  * crun refuses hybrid cgroups, so the runtime is runc;
  * no systemd: the cgroupfs manager, file events, file locks.
Everything it makes stays under the benchmark's dir, and its cgroups under
/pyctr-bench/podman (bench_run.remove_bench_cgroups removes them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CGROUP_PARENT = "/pyctr-bench/podman"
IMAGE = "localhost/pyctr-bench-busybox:latest"


class Podman:
    def __init__(self, base: Path) -> None:
        self.dir = base / "podman"
        tmp = self.dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "containers.conf"
        conf.write_text(f"""[containers]
netns = "none"
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{tmp}/events.log"
lock_type = "file"
tmp_dir = "{tmp}"
runtime = "runc"
static_dir = "{self.dir}/root/libpod"
volume_path = "{self.dir}/root/volumes"
""")
        # conmon's exit command (podman container cleanup) inherits the variable
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}
        self.argv = ["podman", "--root", str(self.dir / "root"), "--runroot",
                     str(self.dir / "run"), "--storage-driver", "overlay", "--tmpdir", str(tmp),
                     "--runtime", shutil.which("runc") or "runc", "--cgroup-manager",
                     "cgroupfs", "--events-backend", "file"]
        self.error = ""

    @staticmethod
    def available() -> bool:
        return shutil.which("podman") is not None and shutil.which("runc") is not None

    def cmd(self, *args: str) -> list[str]:
        return [*self.argv, *args]

    def run_args(self) -> list[str]:
        return ["--cgroup-parent", CGROUP_PARENT, "--network", "none"]

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(*args), env=self.env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout, check=False)

    def setup(self, rootfs_tar: Path) -> bool:
        """Import the benchmark's busybox rootfs; False (and .error) when podman fails."""
        for args in (("import", "--change", 'CMD ["sh"]', str(rootfs_tar), IMAGE),
                     ("run", "--rm", *self.run_args(), IMAGE, "true")):
            r = self(*args)
            if r.returncode != 0:
                self.error = (r.stderr.strip().splitlines() or ["failed"])[-1][:300]
                return False
        return True

    def conmon_pid(self, name: str) -> int:
        r = self("inspect", "--format", "{{.State.ConmonPid}}", name)
        return int(r.stdout.strip() or 0)

    def cleanup(self) -> None:
        """Remove its containers and storage (its own --root only)."""
        self("rm", "-af", "-t", "0")
        self("system", "reset", "-f")
        run = self.dir / "run"
        if run.is_dir():  # overlay mounts left by a failed run, if any
            with open("/proc/self/mountinfo") as f:
                mounts = [line.split()[4] for line in f]
            for m in reversed(mounts):
                if m.startswith(str(self.dir)):
                    subprocess.run(["umount", "-l", m], check=False, capture_output=True)
