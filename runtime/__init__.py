"""pyctr.runtime: the OCI runtime (runc's job) — a bundle in, a container process out.

Import-light on purpose: the verbs load on first use (``python -X importtime``
shows the cost of ``import pyctr.runtime`` is this file only).
"""

from __future__ import annotations

_EXPORTS = {
    "create": "container", "start": "container", "kill": "container", "delete": "container",
    "load": "container", "Container": "container", "state": "statedir",
    "default_spec": "spec", "load_spec": "spec", "secure_join": "securejoin",
    "resolve_user": "users", "ResolvedUser": "users", "STEP_NAMES": "init",
}

__all__ = ["STEP_NAMES", "Container", "ResolvedUser", "create", "default_spec", "delete",
           "kill", "load", "load_spec", "resolve_user", "secure_join", "start", "state"]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pyctr.runtime' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)
