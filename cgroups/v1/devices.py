"""v1 devices: deny everything (``a`` to devices.deny), then each OCI rule in order to
devices.allow or devices.deny (``c 1:3 rwm``)."""

from __future__ import annotations

from pathlib import Path

from .. import fs
from ..resources import Resources

_HINT = "a child cgroup may only allow devices its parent allows"


def apply(d: Path, res: Resources) -> None:
    if not res.devices:
        return
    fs.write(d / "devices.deny", "a", append=True, hint=_HINT)
    for rule in res.devices:
        if not rule.allow and rule.type == "a":
            continue  # the deny-all that starts OCI's list: written above
        fs.write(d / ("devices.allow" if rule.allow else "devices.deny"), rule.to_v1(),
                 append=True, hint=_HINT)
