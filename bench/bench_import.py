"""Import a realistic multi-layer image: pyctr's load beside `umoci unpack` and `tar -xzf`.

The image is built from this host's files (no network): three gzip layers
from copies of /usr/lib/python3*, /usr/share/perl* + zoneinfo and
/usr/share/doc, written as an OCI image layout by hand.  Each tool runs
into a fresh directory; the medians of N runs are compared.  pyctr's time
is ``ImageStore.load`` in this process (decompress, hash both digests,
unpack with the safety policy, write blobs and index).

    /opt/pyctr/venv/bin/python bench/bench_import.py [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
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

from pyctr.images.store import ImageStore

LAYERS = [
    sorted(glob.glob("/usr/lib/python3*")),
    sorted(glob.glob("/usr/share/perl*")) + ["/usr/share/zoneinfo"],
    ["/usr/share/doc"],
]


def _blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (layout / "blobs/sha256" / digest[7:]).write_bytes(data)
    return digest, len(data)


def build_layout(work: Path) -> tuple[Path, list[Path], int, int]:
    """An OCI layout of three gzip layers; returns (layout, layer files, files, bytes)."""
    layout = work / "layout"
    (layout / "blobs/sha256").mkdir(parents=True)
    descs, diff_ids, tars = [], [], []
    nfiles = nbytes = 0
    for i, sources in enumerate(LAYERS):
        root = work / f"src{i}"
        for src in sources:
            if Path(src).exists():
                dst = root / src.lstrip("/")
                dst.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run(["cp", "-a", src, str(dst)], check=True)
        for p in root.rglob("*"):
            nfiles += 1
            if p.is_file() and not p.is_symlink():
                nbytes += p.stat().st_size
        plain = subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", "-", "."],
                               check=True, capture_output=True).stdout
        packed = subprocess.run(["gzip", "-6", "-n"], input=plain, check=True,
                                capture_output=True).stdout
        diff_ids.append("sha256:" + hashlib.sha256(plain).hexdigest())
        digest, size = _blob(layout, packed)
        tars.append(layout / "blobs/sha256" / digest[7:])
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                      "digest": digest, "size": size})
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    cdigest, csize = _blob(layout, config)
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": cdigest, "size": csize},
                           "layers": descs}).encode()
    mdigest, msize = _blob(layout, manifest)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest,
        "size": msize, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
    return layout, tars, nfiles, nbytes


def run_pyctr(layout: Path, dest: Path) -> None:
    ImageStore(dest).load(layout, repo="bench")


def run_umoci(layout: Path, dest: Path) -> None:
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:latest", str(dest)],
                   check=True, capture_output=True)


def run_tar(tars: list[Path], dest: Path) -> None:
    for i, t in enumerate(tars):
        d = dest / str(i)
        d.mkdir(parents=True)
        subprocess.run(["tar", "-xzf", str(t), "-C", str(d)], check=True)


def measure(tools: dict, work: Path, runs: int) -> dict[str, list[float]]:
    """Each tool ``runs`` times, each first in turn, into new dirs after a sync; nothing
    is deleted until the end (a deletion makes ext4's next file creations slower, and
    would weigh on whoever ran next)."""
    names = list(tools)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(runs):
        for k in range(len(names)):
            name = names[(i + k) % len(names)]
            subprocess.run(["sync"], check=False)
            time.sleep(0.5)
            t0 = time.perf_counter()
            tools[name](work / f"out-{name.split()[0]}-{i}")
            times[name].append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print results as json")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pyctr-bench-") as tmp:
        work = Path(tmp)
        layout, tars, nfiles, nbytes = build_layout(work)
        packed = sum(t.stat().st_size for t in tars)
        tools = {"pyctr load": lambda d: run_pyctr(layout, d),
                 "tar -xzf": lambda d: run_tar(tars, d)}
        if shutil.which("umoci"):
            tools["umoci unpack"] = lambda d: run_umoci(layout, d)
        results = {}
        for _ in range(1):  # warm the page cache for everyone
            run_tar(tars, work / "warm")
            shutil.rmtree(work / "warm")
        time.sleep(30)  # what the disk did just before (the build, the warm-up) settles
        for name, times in measure(tools, work, args.runs).items():
            results[name] = {"median_s": statistics.median(times), "runs": times}
    base = results["tar -xzf"]["median_s"]
    for r in results.values():
        r["ratio_to_tar"] = r["median_s"] / base
    info = {"layers": len(tars), "files": nfiles, "unpacked_bytes": nbytes,
            "compressed_bytes": packed, "runs": args.runs, "results": results}
    if args.json:
        json.dump(info, sys.stdout, indent=1)
        print()
        return 0
    print(f"image: {len(tars)} gzip layers, {nfiles} entries, {nbytes / 1e6:.1f} MB unpacked, "
          f"{packed / 1e6:.1f} MB compressed; median of {args.runs} runs")
    print(f"{'tool':<14} {'median s':>9} {'vs tar':>7}")
    for name, r in results.items():
        print(f"{name:<14} {r['median_s']:>9.3f} {r['ratio_to_tar']:>6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
