#!/usr/bin/env python3
"""What cgroup set-up adds to a container's start-to-exit, pyctr beside runc.

    sudo /opt/pyctr/venv/bin/python bench/bench_cgroups.py [-n 20] [--json FILE]

Rows, interleaved round by round (round 0 warms caches and is not counted):
  pyctr run           `pyctr run --rm busybox true` (pyctr always gives a container
                      a cgroup: the default device rules, no limit)
  pyctr run +limits   the same with --memory 64m --pids-limit 64
  runtime no cgroup   pyctr's runtime alone (create/start/wait/delete in one
                      process) on a bundle without linux.cgroupsPath
  runtime +limits     the same bundle with cgroupsPath and the two limits: the
                      difference is the runtime's whole cgroup cost (create,
                      join, remove)
  runc                `runc run` of a bundle with an absolute cgroupsPath under
                      /pyctr-bench/<n> (never nested under the caller's cgroup)
  runc +limits        the same with memory.limit and pids.limit in config.json
Medians (ms), and each "+limits" row's ratio to its row without.  The
/pyctr-bench cgroups are removed afterwards.
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
from pathlib import Path

# this benchmark measures pyctr in the CLI's own process (bench_run.py and
# bench_daemon.py measure the path through pyctrd): no daemon is started
os.environ["PYCTR_NO_DAEMON"] = "1"

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "bench"))
from bench_run import (
    host_facts,
    pyctr_parents,
    runc_bundle,
    tidy,
    time_cmd,
)
from make_busybox_rootfs import make_rootfs

PYCTR = str(Path(sys.executable).parent / "pyctr")
BASELINE = {"pyctr run +limits": "pyctr run", "runtime +limits": "runtime no cgroup",
            "runc +limits": "runc"}
LIMITS = {"memory": {"limit": 64 << 20}, "pids": {"limit": 64}}

# one runtime container in a fresh interpreter, as a CLI would run it
_RUNTIME = r"""
import sys
from pyctr.runtime import create
c = create(sys.argv[1], sys.argv[2], state_root=sys.argv[3])
c.start(); c.wait(); c.delete()
"""


def edit_config(bundle: Path, **linux) -> None:
    cfg = json.loads((bundle / "config.json").read_text())
    for key, value in linux.items():
        if value is None:
            cfg["linux"].pop(key, None)
        else:
            cfg["linux"][key] = value
    (bundle / "config.json").write_text(json.dumps(cfg))


def pyctr_bundle(base: Path, rootfs_src: Path, name: str, cgroups_path: str | None) -> Path:
    from pyctr.runtime import default_spec

    bundle = base / name
    bundle.mkdir()
    shutil.copytree(rootfs_src, bundle / "rootfs", symlinks=True)
    spec = default_spec(["true"])
    if cgroups_path:
        spec["linux"]["cgroupsPath"] = cgroups_path
        spec["linux"]["resources"].update(LIMITS)
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def main() -> int:
    ap = argparse.ArgumentParser(description="cgroup set-up cost: pyctr vs runc")
    ap.add_argument("-n", type=int, default=20, help="rounds (default 20)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_cgroups.py needs root (containers, cgroups): try sudo", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="pyctr-bench-cg-", dir="/var/tmp"))
    parents_before = pyctr_parents()
    times: dict[str, list[float]] = {}
    errors: dict[str, str] = {}
    try:
        rootfs = make_rootfs(base / "rootfs")
        tar = base / "busybox.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
        pyctr = [PYCTR, "--root", str(base / "root"), "--run-dir", str(base / "run")]
        subprocess.run(pyctr + ["import", str(tar), "busybox"], check=True,
                       capture_output=True)
        plain = pyctr_bundle(base, rootfs, "rt-plain", None)
        limited = pyctr_bundle(base, rootfs, "rt-limits", "/pyctr-bench/rt")
        runc = runc_bundle(base, rootfs) if shutil.which("runc") else None
        rt_state = str(base / "rt-state")
        rows = {
            "pyctr run": lambda i: pyctr + ["run", "--rm", "--network", "none", "busybox", "true"],
            "pyctr run +limits": lambda i: pyctr + ["run", "--rm", "--network", "none",
                                                    "--memory", "64m",
                                                    "--pids-limit", "64", "busybox", "true"],
            "runtime no cgroup": lambda i: [sys.executable, "-c", _RUNTIME, f"p{i}",
                                            str(plain), rt_state],
            "runtime +limits": lambda i: [sys.executable, "-c", _RUNTIME, f"l{i}",
                                          str(limited), rt_state],
        }
        if runc is not None:
            def runc_row(limits: bool):
                def argv(i: int) -> list[str]:
                    tag = "l" if limits else "p"
                    edit_config(runc, cgroupsPath=f"/pyctr-bench/runc-{tag}{i}",
                                resources={"devices": [{"allow": False, "access": "rwm"}],
                                           **(LIMITS if limits else {})})
                    return ["runc", "--root", str(base / "runc-state"), "run", "--bundle",
                            str(runc), f"bench-{tag}{i}"]
                return argv
            rows["runc"] = runc_row(False)
            rows["runc +limits"] = runc_row(True)
        else:
            errors["runc"] = errors["runc +limits"] = "runc is not installed"
        times = {k: [] for k in rows}
        for i in range(args.n + 1):
            for row, argv in rows.items():
                if row in errors:
                    continue
                dt, r = time_cmd(argv(i))
                if r.returncode != 0:
                    errors[row] = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
                elif i:
                    times[row].append(dt)
    finally:
        tidy(parents_before, base)

    results: dict[str, dict] = {}
    for row, ts in times.items():
        if row in errors or not ts:
            results[row] = {"runnable": False, "error": errors.get(row, "no runs")}
        else:
            results[row] = {"runnable": True, "median_ms": statistics.median(ts) * 1e3,
                            "min_ms": min(ts) * 1e3, "runs": len(ts)}
    for row, without in BASELINE.items():
        r, w = results.get(row, {}), results.get(without, {})
        if r.get("runnable") and w.get("runnable"):
            r["added_ms"] = r["median_ms"] - w["median_ms"]
            r["ratio"] = r["median_ms"] / w["median_ms"]

    machine = host_facts()
    print(f"cgroup set-up cost, start-to-exit of `true` in busybox, {args.n} interleaved "
          f"rounds, {machine}")
    print(f"{'':20} {'median':>9} {'min':>9} {'added':>9} {'ratio':>7}")
    for row, r in results.items():
        if not r["runnable"]:
            print(f"{row:20} not runnable here ({r['error'][:80]})")
            continue
        added = f"{r['added_ms']:+8.1f}ms" if "added_ms" in r else ""
        ratio = f"{r['ratio']:6.2f}x" if "ratio" in r else ""
        print(f"{row:20} {r['median_ms']:7.1f}ms {r['min_ms']:7.1f}ms {added:>9} {ratio:>7}")
    pr, rr = results.get("pyctr run +limits", {}), results.get("runc +limits", {})
    if pr.get("runnable") and rr.get("runnable"):
        print(f"pyctr/runc with limits: {pr['median_ms'] / rr['median_ms']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rounds": args.n,
                                         "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
