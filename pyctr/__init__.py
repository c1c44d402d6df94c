"""pyctr: a teaching container runtime built directly on Linux primitives.

Kept import-light on purpose: ``import pyctr`` and ``import pyctr.errors``
load nothing else, so every command starts fast.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``from pyctr import Client`` without importing the engine with ``import pyctr``."""
    if name == "Client":
        from pyctr.client import Client

        return Client
    raise AttributeError(f"module 'pyctr' has no attribute {name!r}")
