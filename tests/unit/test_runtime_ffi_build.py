"""The committed out-of-line cffi module matches its declarations (no root)."""

from pathlib import Path

from pyctr.runtime import _ffi_build, syscalls

RUNTIME = Path(_ffi_build.__file__).parent


def test_generated_module_is_current(tmp_path):
    fresh = _ffi_build.build(tmp_path)
    assert fresh.read_text() == (RUNTIME / "_libc_ffi.py").read_text(), \
        "runtime/_libc_ffi.py is stale: run runtime/_ffi_build.py"


def test_syscalls_load_the_precompiled_module_without_pycparser():
    syscalls._load()
    assert syscalls._ffi is __import__("pyctr.runtime._libc_ffi", fromlist=["ffi"]).ffi
