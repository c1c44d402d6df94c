"""cgroups: one Manager interface, a v2 driver and a v1 driver, chosen by detect().

    layout = detect()
    res = Resources(memory=parse_bytes("64m"), pids_limit=64)
    validate(res, layout)                  # UserError before anything exists
    mgr = open_manager("/pyctr/<id>", layout)
    mgr.create(res); mgr.add(pid); mgr.apply(res)
    … mgr.stats(), mgr.oom_killed(), mgr.freeze(), mgr.thaw()
    mgr.destroy()

Imports nothing of pyctr but pyctr.errors (DESIGN.md layering).
"""

from .detect import Layout, describe, describe_text, detect
from .manager import Manager, Stats, open_manager
from .resources import (
                        DeviceRule,
                        Resources,
                        parse_bytes,
                        parse_cpus,
                        parse_memory_swap,
                        parse_throttle_device,
                        validate,
)

__all__ = ["DeviceRule", "Layout", "Manager", "Resources", "Stats", "describe", "describe_text",
           "detect", "open_manager", "parse_bytes", "parse_cpus", "parse_memory_swap",
           "parse_throttle_device", "validate"]
