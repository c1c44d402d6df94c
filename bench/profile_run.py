#!/usr/bin/env python3
"""Where the time of `pyctr run --rm --network none busybox true` goes.

    sudo /opt/pyctr/venv/bin/python bench/profile_run.py [-n 20]

Two views, medians over n runs each:
  1. whole processes, each adding one layer: the interpreter alone, + click,
     + pyctr's CLI (`pyctr version`), + a container (`pyctr run`);
  2. inside one `pyctr run`: the phases of Engine.run, timed by wrapping the
     engine's and the runtime's own functions (no change to the code measured).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# this benchmark measures pyctr in the CLI's own process (bench_run.py and
# bench_daemon.py measure the path through pyctrd): no daemon is started
os.environ["PYCTR_NO_DAEMON"] = "1"

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PYCTR = str(VENV_BIN / "pyctr")

# run in a child interpreter: wraps the phases, runs the CLI once, prints ms per phase
_PHASES = r"""
import json, sys, time
t0 = time.perf_counter()
from pyctr.cli.main import cli
import pyctr.engine as E, pyctr.containers as C
from pyctr.runtime import container as RC
from pyctr.images.store import ImageStore
t_import = time.perf_counter() - t0
phases = {}
def wrap(owner, name, label):
    f = getattr(owner, name)
    def timed(*a, **k):
        s = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            phases[label] = phases.get(label, 0) + time.perf_counter() - s
    setattr(owner, name, timed)
wrap(ImageStore, "resolve", "resolve image")
wrap(C.ContainerStore, "create", "reserve name + record")
wrap(E.Engine, "_mount_rootfs", "mount overlay")
wrap(E.Engine, "_write_bundle", "write config.json + /etc files")
wrap(RC, "create", "runtime create (fork, unshare, init pipeline)")
wrap(RC.Container, "start", "runtime start (exec fifo, execve)")
wrap(RC.Container, "wait", "wait for exit")
wrap(E.Engine, "_unmount_rootfs", "unmount overlay")
wrap(C.ContainerStore, "remove_dir", "remove container dir")
s = time.perf_counter()
try:
    cli.main(args=sys.argv[1:], prog_name="pyctr")
except SystemExit:
    pass
total = time.perf_counter() - s
phases = {k: v * 1e3 for k, v in phases.items()}
phases["imports (pyctr, click)"] = t_import * 1e3
phases["other (click parsing, records)"] = total * 1e3 - sum(
    v for k, v in phases.items() if k != "imports (pyctr, click)")
print(json.dumps(phases))
"""


def median_ms(argv: list[str], n: int, env: dict) -> float:
    times = []
    for _ in range(n + 1):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:]) * 1e3


def main() -> int:
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("profile_run.py needs root: try sudo", file=sys.stderr)
        return 1
    sys.path.insert(0, str(REPO / "scripts"))
    from bench_run import pyctr_parents, remove_new_pyctr_parents
    from make_busybox_rootfs import make_rootfs

    base = Path(tempfile.mkdtemp(prefix="pyctr-prof-", dir="/var/tmp"))
    parents_before = pyctr_parents()
    env = dict(os.environ, PYCTR_ROOT=str(base / "root"), PYCTR_RUN_DIR=str(base / "run"))
    try:
        rootfs = make_rootfs(base / "rootfs")
        tar = base / "busybox.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
        subprocess.run([PYCTR, "import", str(tar), "busybox"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        py = str(VENV_BIN / "python")
        layers = [("python -c pass (interpreter + site)", [py, "-c", "pass"]),
                  ("python -c 'import click'", [py, "-c", "import click"]),
                  ("pyctr version (CLI loaded)", [PYCTR, "version"]),
                  ("pyctr run --rm --network none busybox true",
                   [PYCTR, "run", "--rm", "--network", "none", "busybox", "true"])]
        print(f"whole processes, median of {args.n}:")
        prev = 0.0
        for label, argv in layers:
            ms = median_ms(argv, args.n, env)
            print(f"  {label:40} {ms:7.1f} ms   (+{ms - prev:5.1f})")
            prev = ms
        runs = []
        for _ in range(args.n):
            out = subprocess.run([py, "-c", _PHASES, "run", "--rm", "--network", "none",
                                  "busybox", "true"],
                                 env=env, capture_output=True, text=True, check=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        print(f"inside one `pyctr run` (median of {args.n}):")
        for key in runs[0]:
            print(f"  {key:48} {statistics.median(r[key] for r in runs):6.1f} ms")
    finally:
        shutil.rmtree(base, ignore_errors=True)
        remove_new_pyctr_parents(parents_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
