"""pyctr: a teaching container runtime built directly on Linux primitives.

Kept import-light on purpose: ``import pyctr`` and ``import pyctr.errors``
load nothing else, so every command starts fast.
"""

__version__ = "0.1.0"
