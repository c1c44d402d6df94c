#!/usr/bin/env python3
"""Pull (with unpack) from a local registry: pyctr beside skopeo + umoci and podman.

    sudo /opt/pyctr/venv/bin/python bench/bench_pull.py [--runs 5] [--json F]

In one run: a 3-layer gzip image built from this host's files (bench_import's
builder: python's stdlib, perl and zoneinfo, /usr/share/doc) is pushed by
skopeo into Debian's docker-registry on 127.0.0.1 (tests/integration/registry.py
starts it), then, round after round, into a fresh root each:
  * `pyctr pull` (its own process, no daemon: a fresh root per round) —
    manifest, config, layers downloaded, verified and unpacked at once;
  * `skopeo copy docker://… oci:DIR` followed by `umoci unpack` — the same
    work with the standard tools, one after the other;
  * `podman pull` (runc, its own --root; bench/podman.py), which also
    unpacks into its overlay storage.
Each step starts after a `sync` (nothing dirty left by the one before).
Medians; the target is pyctr <= 0.5x skopeo + umoci.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from bench_import import build_layout
from bench_run import PYCTR, host_facts
from podman import Podman

from tests.integration.registry import push, start_registry


def settle() -> None:
    """Each tool starts with nothing dirty: a layer's syncfs (pyctr's, podman's) would
    otherwise write back what the tool before it left in the page cache."""
    subprocess.run(["sync"], check=False)
    time.sleep(0.5)


def timed(argv, env=None) -> float:
    settle()
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                       env=env, check=False)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_pull.py needs root: try sudo", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="pyctr-bench-", dir="/var/tmp"))
    reg = None
    podmen: list[Podman] = []
    out: dict = {}
    try:
        layout, tars, nfiles, nbytes = build_layout(base / "build")
        packed = sum(t.stat().st_size for t in tars)
        out["image"] = {"layers": len(tars), "files": nfiles, "unpacked_mb": nbytes / 1e6,
                        "compressed_mb": packed / 1e6}
        reg = start_registry(base / "registry")
        ref = reg.ref("bench/big", "1")
        push(layout, "latest", ref)
        # (the build dir goes with the rest at the end: see below)
        times: dict[str, list[float]] = {"pyctr pull": [], "skopeo copy + umoci unpack": [],
                                         "skopeo copy": [], "umoci unpack": []}
        if Podman.available():
            times["podman pull"] = []
        env = {**os.environ, "PYCTR_NO_DAEMON": "1"}

        def run_pyctr(i: int) -> None:
            times["pyctr pull"].append(timed([PYCTR, "--root", str(base / f"pyctr-{i}"),
                                              "--run-dir", str(base / "run"), "pull", "-q",
                                              ref], env))

        def run_skopeo_umoci(i: int) -> None:
            oci, bundle = base / f"oci-{i}", base / f"bundle-{i}"
            a = timed(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}",
                       f"oci:{oci}:latest"])
            b = timed(["umoci", "unpack", "--image", f"{oci}:latest", str(bundle)])
            # skopeo's copy is measured alone, then umoci's unpack: the sum is both
            times["skopeo copy"].append(a)
            times["umoci unpack"].append(b)
            times["skopeo copy + umoci unpack"].append(a + b)

        def run_podman(i: int) -> None:
            podmen.append(Podman(base / f"podman-{i}"))
            times["podman pull"].append(timed(podmen[-1].cmd(
                "pull", "-q", "--tls-verify=false", ref), podmen[-1].env))

        tools = [run_pyctr, run_skopeo_umoci] + ([run_podman] if "podman pull" in times else [])
        # what this disk did just before (a deletion above all: ext4 then searches
        # longer for free inodes) weighs on whoever runs next: wait it out first, and
        # let each tool go first in turn; every round writes into new directories and
        # nothing is deleted until the end
        time.sleep(30)
        for i in range(args.runs):
            for k in range(len(tools)):
                tools[(i + k) % len(tools)](i)
        med = {k: statistics.median(v) for k, v in times.items()}
        out["median_s"] = med
        out["runs"] = times
        out["pyctr_vs_skopeo_umoci"] = med["pyctr pull"] / med["skopeo copy + umoci unpack"]
        if "podman pull" in med:
            out["pyctr_vs_podman"] = med["pyctr pull"] / med["podman pull"]
    finally:
        if reg is not None:
            reg.stop()
        for podman in podmen:
            podman.cleanup()
        shutil.rmtree(base, ignore_errors=True)
    machine = host_facts()
    print(f"pull with unpack from a local registry, {machine}")
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, **out}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
