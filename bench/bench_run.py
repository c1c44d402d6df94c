#!/usr/bin/env python3
"""Start-to-exit of a container: pyctr beside runc and crun, in one run.

    sudo /opt/pyctr/venv/bin/python bench/bench_run.py [-n 30] [--json]

Each round runs, interleaved so the machine's noise hits all alike:
  pyctr  `pyctr run --rm --network none busybox true` (a fresh overlay, config.json,
         namespaces, a cgroup, exec; none = a namespace with only lo, as runc's bundle)
         through pyctrd (the script starts one for its root), and with --no-daemon
  runc   `runc run` of an OCI bundle with the same busybox rootfs
  crun   `crun run` of the same bundle (crun 1.8 refuses hybrid cgroup hosts:
         then it is reported as not runnable, with crun's own error)
runc and crun get an absolute cgroupsPath under a `pyctr-bench` parent, so they
never nest under (or write to) the caller's own cgroup.  Medians and the
pyctr/runc ratio are printed; --json writes them for the README table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from make_busybox_rootfs import make_rootfs

PYCTR = str(Path(sys.executable).parent / "pyctr")


def runc_bundle(base: Path, rootfs_src: Path) -> Path:
    bundle = base / "bundle"
    bundle.mkdir()
    shutil.copytree(rootfs_src, bundle / "rootfs", symlinks=True)
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["true"]
    cfg["root"]["readonly"] = False
    (bundle / "config.json").write_text(json.dumps(cfg))
    return bundle


def with_cgroup(bundle: Path, path: str) -> None:
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["linux"]["cgroupsPath"] = path
    (bundle / "config.json").write_text(json.dumps(cfg))


def start_pyctrd(root: Path, run_dir: Path) -> subprocess.Popen:
    """A pyctrd for the benchmark's own root; returns once its socket answers."""
    from pyctr.daemon import spawn

    return spawn(root, run_dir)


def stop_pyctrd(proc: subprocess.Popen) -> None:
    from pyctr.daemon import end

    end(proc)


def time_cmd(argv: list[str], **kw) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = subprocess.run(argv, check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)
    return time.perf_counter() - t0, r


def pyctr_parents() -> set[Path]:
    """The `pyctr` cgroup parents present now (one per v1 hierarchy, or the v2 root's)."""
    base = Path("/sys/fs/cgroup")
    return {p for p in [base / "pyctr", *(h / "pyctr" for h in base.iterdir())] if p.is_dir()}


def remove_new_pyctr_parents(before: set[Path]) -> None:
    """A benchmark leaves the machine's cgroups as it found them: empty new parents go."""
    for parent in pyctr_parents() - before:
        try:
            parent.rmdir()
        except OSError:
            pass  # not empty: a container outside the benchmark uses it


def host_facts() -> str:
    """What the figures were measured on, for the report's first line."""
    return (f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
            f"kernel {platform.release()}")


def tidy(parents_before: set[Path], base: Path) -> None:
    """The end of every benchmark: its cgroups, the pyctr parents it made, its dir."""
    try:
        remove_bench_cgroups()
        remove_new_pyctr_parents(parents_before)
    except OSError as exc:
        print(f"warning: could not remove bench cgroups: {exc}", file=sys.stderr)
    shutil.rmtree(base, ignore_errors=True)


def remove_bench_cgroups() -> None:
    for hier in Path("/sys/fs/cgroup").iterdir():
        parent = hier / "pyctr-bench"
        if parent.is_dir():
            for child in sorted(parent.rglob("*"), reverse=True):
                if child.is_dir():
                    child.rmdir()
            parent.rmdir()


def main() -> int:
    ap = argparse.ArgumentParser(description="container start-to-exit: pyctr vs runc vs crun")
    ap.add_argument("-n", type=int, default=30, help="rounds (default 30)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_run.py needs root (containers): try sudo", file=sys.stderr)
        return 1

    base = Path(tempfile.mkdtemp(prefix="pyctr-bench-", dir="/var/tmp"))
    parents_before = pyctr_parents()
    results: dict[str, dict] = {}
    daemon = None
    try:
        rootfs = make_rootfs(base / "rootfs")
        tar = base / "busybox.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
        proot = base / "root"
        pyctr = [PYCTR, "--root", str(proot), "--run-dir", str(base / "run")]
        daemon = start_pyctrd(proot, base / "run")
        subprocess.run(pyctr + ["import", str(tar), "busybox"], check=True,
                       capture_output=True)
        bundle = runc_bundle(base, rootfs)
        # --network none: runc's bundle has a new network namespace with only lo,
        # the same thing; the bridge's cost is measured by bench/bench_net.py
        run = ["run", "--rm", "--network", "none", "busybox", "true"]
        candidates = {"pyctr": lambda i: pyctr + run,  # through pyctrd, as a user's
                      "pyctr --no-daemon": lambda i: pyctr + ["--no-daemon", *run]}
        for tool in ("runc", "crun"):
            if shutil.which(tool):
                candidates[tool] = (lambda i, tool=tool:
                                    [tool, "--root", str(base / f"{tool}-state"), "run",
                                     "--bundle", str(bundle), f"bench-{tool}-{i}"])
        times: dict[str, list[float]] = {k: [] for k in candidates}
        errors: dict[str, str] = {}
        for i in range(args.n + 1):  # round 0 warms the page cache, not counted
            for tool, argv in candidates.items():
                if tool in errors:
                    continue
                if not tool.startswith("pyctr"):
                    with_cgroup(bundle, f"/pyctr-bench/{tool}-{i}")
                dt, r = time_cmd(argv(i))
                if r.returncode != 0:
                    errors[tool] = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
                    continue
                if i:
                    times[tool].append(dt)
        for tool in candidates:
            if tool in errors:
                results[tool] = {"runnable": False, "error": errors[tool]}
            else:
                ts = times[tool]
                results[tool] = {"runnable": True, "median_ms": statistics.median(ts) * 1e3,
                                 "min_ms": min(ts) * 1e3, "runs": len(ts)}
    finally:
        if daemon is not None:
            stop_pyctrd(daemon)
        tidy(parents_before, base)

    machine = host_facts()
    print(f"start-to-exit of `true` in a busybox container, {args.n} rounds, {machine}")
    print(f"{'tool':18} {'median':>10} {'min':>10}  vs runc")
    runc = results.get("runc", {}).get("median_ms")
    for tool, r in results.items():
        if not r["runnable"]:
            print(f"{tool:18} {'not runnable here':>21}  ({r['error'][:90]})")
            continue
        ratio = f"{r['median_ms'] / runc:.2f}x" if runc else "-"
        print(f"{tool:18} {r['median_ms']:8.1f}ms {r['min_ms']:8.1f}ms  {ratio}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rounds": args.n,
                                         "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
