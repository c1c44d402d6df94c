#!/usr/bin/env python3
"""The daemon's costs: many detached containers, exec latency, run --rm through pyctrd.

    sudo /opt/pyctr/venv/bin/python bench/bench_daemon.py [-n 50] [--rounds 20] [--json F]

In one run, on a root of its own with its own pyctrd:
  1. `pyctr run -d busybox sleep 600` N times (through pyctrd): the total time,
     and the memory each container costs: the PSS of its shim (smaps_rollup:
     pages shared with the daemon and the other shims count their share), the
     memory charged to its cgroup (the container's processes, kernel memory
     included on v1), and the machine's MemAvailable drop divided by N;
     beside `runc run -d` of N bundles of the same rootfs (runc leaves no
     process of its own behind: its figure is the container alone);
  2. `pyctr exec NAME true` (through pyctrd, and --no-daemon) beside `runc exec`;
  3. `pyctr run --rm busybox true` through pyctrd, and --no-daemon, beside `runc run`;
  4. podman (conmon watches each container) for each: `podman run -d` N times
     with conmon's PSS, `podman exec`, `podman run --rm` (bench/podman.py says
     how it is made to run here; when it cannot, the reason is reported).
Medians; the machine is noisy.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_run import (
    PYCTR,
    host_facts,
    make_rootfs,
    pyctr_parents,
    runc_bundle,
    start_pyctrd,
    stop_pyctrd,
    tidy,
    with_cgroup,
)
from podman import Podman


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def pss(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def cgroup_memory(path: str) -> int | None:
    for f in (f"/sys/fs/cgroup/memory{path}/memory.usage_in_bytes",
              f"/sys/fs/cgroup{path}/memory.current"):
        try:
            return int(Path(f).read_text())
        except OSError:
            continue
    return None


def run(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          check=False, **kw)


def run_detached(argv) -> subprocess.CompletedProcess:
    """`runc run -d`: the container inherits runc's stdio, so no pipes (they would stay
    open as long as it runs)."""
    with tempfile.TemporaryFile("w+") as err:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=err, text=True, check=False)
        err.seek(0)
        r.stderr = err.read()
    return r


def timed(argv, env=None) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = run(argv, env=env)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return dt, r


def settle() -> None:
    subprocess.run(["sync"], check=False)
    time.sleep(1.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=50, help="detached containers (default 50)")
    ap.add_argument("--rounds", type=int, default=20, help="latency rounds (default 20)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_daemon.py needs root (containers): try sudo", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="pyctr-bench-", dir="/var/tmp"))
    parents_before = pyctr_parents()
    out: dict = {}
    daemon = None
    podman = None
    runc_ids: list[str] = []
    runc_root = base / "runc-state"
    p = [PYCTR, "--root", str(base / "root"), "--run-dir", str(base / "run")]
    try:
        rootfs = make_rootfs(base / "rootfs")
        tar = base / "busybox.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
        daemon = start_pyctrd(base / "root", base / "run")
        run(p + ["import", str(tar), "busybox"]).check_returncode()
        bundle = runc_bundle(base, rootfs)
        podman = Podman(base) if Podman.available() else None
        if podman is not None and not podman.setup(tar):
            out["podman"] = {"runnable": False, "error": podman.error}
            podman = None

        # 1. N detached containers
        settle()
        avail0 = mem_available()
        t0 = time.perf_counter()
        ids = []
        for i in range(args.n):
            r = run(p + ["run", "-d", "--name", f"b{i}", "--network", "none", "busybox",
                         "sleep", "600"])
            r.check_returncode()
            ids.append(r.stdout.strip())
        total = time.perf_counter() - t0
        settle()
        avail1 = mem_available()
        shims, cgmem = [], []
        for cid in ids:
            rec = json.loads(run(p + ["inspect", cid]).stdout)[0]
            shims.append(pss(rec["State"]["MonitorPid"]))
            m = cgroup_memory(rec["HostConfig"]["CgroupPath"])
            if m is not None:
                cgmem.append(m)
        out["pyctr_run_d"] = {
            "n": args.n, "total_s": total, "per_container_ms": total / args.n * 1e3,
            "shim_pss_median_kib": statistics.median(shims) / 1024,
            "shim_pss_max_kib": max(shims) / 1024,
            "cgroup_memory_median_kib": statistics.median(cgmem) / 1024 if cgmem else None,
            "memavailable_drop_per_container_kib": (avail0 - avail1) / args.n / 1024,
        }

        # 2. exec latency (on the first container)
        lat: dict[str, list[float]] = {"pyctr exec": [], "pyctr --no-daemon exec": []}
        runc_ok = shutil.which("runc") is not None
        if runc_ok:
            cfg = json.loads((bundle / "config.json").read_text())
            cfg["process"]["args"] = ["sleep", "600"]
            (bundle / "config.json").write_text(json.dumps(cfg))
            with_cgroup(bundle, "/pyctr-bench/exec-target")
            r = run_detached(["runc", "--root", str(runc_root), "run", "-d", "--bundle",
                              str(bundle), "exec-target"])
            if r.returncode == 0:
                runc_ids.append("exec-target")
                lat["runc exec"] = []
        if podman is not None:
            r = podman("run", "-d", "--name", "exec-target", *podman.run_args(),
                       "localhost/pyctr-bench-busybox", "sleep", "600")
            if r.returncode == 0:
                lat["podman exec"] = []
        for _ in range(args.rounds + 1):
            for name in list(lat):
                if name == "podman exec":
                    argv = podman.cmd("exec", "exec-target", "true")
                elif name == "runc exec":
                    argv = ["runc", "--root", str(runc_root), "exec", "exec-target", "true"]
                elif name == "pyctr exec":
                    argv = p + ["exec", "b0", "true"]
                else:
                    argv = p + ["--no-daemon", "exec", "b0", "true"]
                dt, r = timed(argv, podman.env if name.startswith("podman") else None)
                lat[name].append(dt)
        out["exec_ms"] = {k: statistics.median(v[1:]) * 1e3 for k, v in lat.items()}

        # 1b. runc run -d, N times (each its own cgroup), for its time and memory
        if runc_ok:
            for cid in ids:
                run(p + ["rm", "-f", cid])
            settle()
            avail0 = mem_available()
            t0 = time.perf_counter()
            for i in range(args.n):
                with_cgroup(bundle, f"/pyctr-bench/d{i}")
                r = run_detached(["runc", "--root", str(runc_root), "run", "-d", "--bundle",
                                  str(bundle), f"d{i}"])
                if r.returncode != 0:
                    out["runc_run_d"] = {"runnable": False, "error": r.stderr.strip()[-200:]}
                    break
                runc_ids.append(f"d{i}")
            else:
                total = time.perf_counter() - t0
                settle()
                out["runc_run_d"] = {
                    "n": args.n, "total_s": total, "per_container_ms": total / args.n * 1e3,
                    "memavailable_drop_per_container_kib":
                        (avail0 - mem_available()) / args.n / 1024}

        # 3. run --rm
        cases = {"pyctr run --rm": p + ["run", "--rm", "--network", "none", "busybox", "true"],
                 "pyctr --no-daemon run --rm": p + ["--no-daemon", "run", "--rm", "--network",
                                                    "none", "busybox", "true"]}
        times: dict[str, list[float]] = {k: [] for k in cases}
        if runc_ok:
            times["runc run"] = []
        if podman is not None:
            times["podman run --rm"] = []
            podman("rm", "-f", "-t", "0", "exec-target")
        cfg = json.loads((bundle / "config.json").read_text())
        cfg["process"]["args"] = ["true"]
        (bundle / "config.json").write_text(json.dumps(cfg))
        for i in range(args.rounds + 1):
            for name, samples in times.items():
                if name == "podman run --rm":
                    argv = podman.cmd("run", "--rm", *podman.run_args(),
                                      "localhost/pyctr-bench-busybox", "true")
                elif name == "runc run":
                    with_cgroup(bundle, f"/pyctr-bench/r{i}")
                    argv = ["runc", "--root", str(runc_root), "run", "--bundle", str(bundle),
                            f"r{i}"]
                else:
                    argv = cases[name]
                dt, r = timed(argv, podman.env if name.startswith("podman") else None)
                samples.append(dt)
        out["run_rm_ms"] = {k: statistics.median(v[1:]) * 1e3 for k, v in times.items()}
        if "podman run --rm" in out["run_rm_ms"]:
            out["run_rm_vs_podman"] = out["run_rm_ms"]["pyctr run --rm"] \
                / out["run_rm_ms"]["podman run --rm"]
        if "podman exec" in out["exec_ms"]:
            out["exec_vs_podman"] = out["exec_ms"]["pyctr exec"] / out["exec_ms"]["podman exec"]

        # 1c. podman run -d, N times: conmon watches each
        if podman is not None:
            for cid in runc_ids:
                run(["runc", "--root", str(runc_root), "delete", "-f", cid])
            runc_ids.clear()
            settle()
            avail0 = mem_available()
            t0 = time.perf_counter()
            for i in range(args.n):
                dt, r = timed(podman.cmd("run", "-d", "--name", f"p{i}", *podman.run_args(),
                                         "localhost/pyctr-bench-busybox", "sleep", "600"),
                              podman.env)
            total = time.perf_counter() - t0
            settle()
            avail1 = mem_available()
            conmons = [pss(podman.conmon_pid(f"p{i}")) for i in range(args.n)]
            out["podman_run_d"] = {
                "n": args.n, "total_s": total, "per_container_ms": total / args.n * 1e3,
                "conmon_pss_median_kib": statistics.median(conmons) / 1024,
                "memavailable_drop_per_container_kib": (avail0 - avail1) / args.n / 1024}
    finally:
        if daemon is not None:
            ids = run(p + ["ps", "-aq", "--no-trunc"]).stdout.split()
            if ids:
                run(p + ["rm", "-f", *ids])
        for cid in runc_ids:
            run(["runc", "--root", str(runc_root), "delete", "-f", cid])
        if daemon is not None:
            stop_pyctrd(daemon)
        if podman is not None:
            podman.cleanup()
        tidy(parents_before, base)

    machine = host_facts()
    print(f"pyctr's daemon, {machine}")
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, **out}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
