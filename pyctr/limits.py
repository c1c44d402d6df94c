"""Resource limits as docker's flags spell them, to pyctr.cgroups Resources and back.

`pyctr run` and `pyctr update` take the same flags; both go through
``resources_from_flags`` so a value the host cannot take fails before any
container or cgroup exists (exit 125, docker's message).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace

from pyctr.errors import UserError


@dataclass
class LimitFlags:
    """The raw flag values (strings as typed; None = not given)."""

    memory: str | None = None
    memory_swap: str | None = None
    memory_reservation: str | None = None
    cpus: str | None = None
    cpu_shares: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    pids_limit: int | None = None
    blkio_weight: int | None = None
    device_read_bps: list[str] = field(default_factory=list)
    device_write_bps: list[str] = field(default_factory=list)

    def given(self) -> bool:
        return any(getattr(self, f.name) not in (None, []) for f in fields(self))


def resources_from_flags(flags: LimitFlags, *, base=None, layout=None):
    """Parse and validate; ``base`` (an existing Resources) is updated, as `pyctr update` does."""
    from pyctr.cgroups import (
        Resources,
        detect,
        parse_bytes,
        parse_cpus,
        parse_memory_swap,
        parse_throttle_device,
        validate,
    )

    if base is None and not flags.given():
        return Resources(), layout  # nothing to check: spare the host's layout a read
    changes: dict = {}
    if flags.memory is not None:
        changes["memory"] = _flag("--memory", parse_bytes, flags.memory)
    if flags.memory_swap is not None:
        changes["memory_swap"] = _flag("--memory-swap", parse_memory_swap, flags.memory_swap)
    if flags.memory_reservation is not None:
        changes["memory_reservation"] = _flag("--memory-reservation", parse_bytes,
                                              flags.memory_reservation)
    if flags.cpus is not None:
        changes["cpus"] = _flag("--cpus", parse_cpus, flags.cpus)
    for name in ("cpu_shares", "cpuset_cpus", "cpuset_mems", "pids_limit", "blkio_weight"):
        value = getattr(flags, name)
        if value is not None:
            changes[name] = value
    if flags.device_read_bps:
        changes["device_read_bps"] = tuple(
            _flag("--device-read-bps", parse_throttle_device, d) for d in flags.device_read_bps)
    if flags.device_write_bps:
        changes["device_write_bps"] = tuple(
            _flag("--device-write-bps", parse_throttle_device, d)
            for d in flags.device_write_bps)
    res = replace(base, **changes) if base is not None else Resources(**changes)
    layout = layout or detect()
    if base is None:
        res = res.with_docker_defaults(layout)
    validate(res, layout)
    return res, layout


def _flag(name: str, parse, value: str):
    try:
        return parse(value)
    except UserError as exc:
        if name in exc.message:
            raise
        raise UserError(f"invalid argument {value!r} for {name}: {exc.message}",
                        hint=exc.hint) from None


def cgroup_path(parent: str | None, container_id: str) -> str:
    """Absolute cgroupsPath under pyctr's own parent (or --cgroup-parent).

    Always absolute from the hierarchy root: nesting under the caller's own
    cgroup (what runc does with a relative path) could write to a cgroup
    that belongs to someone else.
    """
    parent = (parent or "pyctr").strip("/")
    if not parent or any(part in ("", ".", "..") for part in parent.split("/")):
        raise UserError(f'invalid --cgroup-parent "{parent}"',
                        hint="a path below the hierarchy root such as pyctr or pyctr/batch")
    return f"/{parent}/{container_id}"


def _hierarchy_roots() -> list:
    from pathlib import Path

    from pyctr.cgroups import detect

    layout = detect()
    return [Path(layout.unified)] if layout.driver == "v2" else list(layout.v1.values())


def claim_parent(root, parent: str | None) -> None:
    """Refuse a --cgroup-parent that exists and that pyctr did not make; remember the rest.

    pyctr only ever writes to cgroups it created (a machine's own cgroup,
    such as the one its processes start in here, is not ours to fill).
    Parents pyctr makes are listed in ROOT/cgroup-parents so that later
    runs may use them again and prune can look inside them.
    """
    from pathlib import Path

    parent = (parent or "pyctr").strip("/")
    if parent.split("/")[0] == "pyctr":
        return
    known = known_parents(root)
    if parent in known:
        return
    parts = parent.split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        if prefix in known:
            continue
        if any((r / prefix).is_dir() for r in _hierarchy_roots()):
            raise UserError(f'--cgroup-parent "{parent}": the cgroup /{prefix} exists and '
                            "pyctr did not create it",
                            hint="pyctr only creates cgroups below parents of its own: "
                                 "name a new parent (pyctr makes it) or leave the default")
    listing = Path(root) / "cgroup-parents"
    listing.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(listing, "a") as f:
        f.write(parent + "\n")


def known_parents(root) -> set[str]:
    from pathlib import Path

    try:
        return set(filter(None, (Path(root) / "cgroup-parents").read_text().split("\n")))
    except FileNotFoundError:
        return set()


def release_parent(root, parent: str | None) -> None:
    """rmdir a parent pyctr made (and its own made ancestors) once no cgroup is left in it."""
    parent = (parent or "pyctr").strip("/")
    if parent.split("/")[0] == "pyctr" or parent not in known_parents(root):
        return
    parts = parent.split("/")
    for i in range(len(parts), 0, -1):
        for r in _hierarchy_roots():
            try:
                (r / "/".join(parts[:i])).rmdir()
            except OSError:
                pass  # not empty (another container), or never made in this hierarchy


def open_container_cgroup(path: str):
    """The Manager of a container's cgroup; its parent's first component is pyctr's own."""
    from pyctr.cgroups import open_manager
    return open_manager(path, owned_parents=(path.strip("/").split("/")[0],))


def human_bytes(n: float) -> str:
    """docker stats' binary units: 1.5MiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.4g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return f"{n}B"


def host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def oom_hint(resources: dict | None) -> str:
    """What the CLI says when the OOM killer ended the container."""
    limit = ((resources or {}).get("memory") or {}).get("limit")
    if limit:
        return (f"the container was killed by the OOM killer: it reached its memory limit of "
                f"{human_bytes(limit)} (--memory); give it more with --memory")
    return "the container was killed by the OOM killer (the host or a parent cgroup ran out)"
