"""Generate runtime/_libc_ffi.py: cffi's out-of-line ABI mode, no compiler needed.

In-line ABI mode (``cffi.FFI().cdef(...)``) parses the C declarations with
pycparser at every start, ~30 ms that each `pyctr run` would pay.  The
out-of-line mode parses them once, here, and writes a small Python module
holding the serialized types; at run time only ``_cffi_backend`` loads.
Regenerate after editing CDEF:

    /opt/pyctr/venv/bin/python runtime/_ffi_build.py

(tests/unit/test_runtime_ffi_build.py fails if the committed file is stale).
"""

from __future__ import annotations

import sys
from pathlib import Path

CDEF = """
int unshare(int flags);
int setns(int fd, int nstype);
int mount(const char *source, const char *target, const char *filesystemtype,
          unsigned long mountflags, const void *data);
int umount2(const char *target, int flags);
int sethostname(const char *name, size_t len);
long syscall(long number, ...);
int prctl(int option, ...);
"""

MODULE = "_libc_ffi"


def build(out_dir: Path) -> Path:
    import cffi

    builder = cffi.FFI()
    builder.cdef(CDEF)
    builder.set_source(MODULE, None)  # None: ABI mode, emits a .py file, no C compiler
    return Path(builder.emit_python_code(str(out_dir / f"{MODULE}.py")) or
                out_dir / f"{MODULE}.py")


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent))
