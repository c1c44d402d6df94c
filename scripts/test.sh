#!/usr/bin/env bash
# Run every test tier this machine can run: unit (no root), integration
# (root, the real kernel), and vm (the cgroup v2 suite inside a kernel guest
# booted by scripts/vm-test).  Extra arguments go to pytest.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYCTR_VENV:-/opt/pyctr/venv}/bin/python
cd "$REPO" || exit 1
[ -x "$PY" ] || { echo "test.sh: $PY not found: run scripts/setup.sh first" >&2; exit 1; }

status=0
run_tier() {
    local name=$1; shift
    echo "== $name"
    "$PY" -m pytest -p no:cacheprovider "$@"
    local rc=$?
    if [ $rc -eq 5 ]; then
        echo "== $name: no tests collected"
    elif [ $rc -ne 0 ]; then
        status=1
    fi
}

run_tier unit tests/unit "$@"
if [ "$(id -u)" -eq 0 ]; then
    run_tier integration tests/integration "$@"
else
    echo "== integration: skipped, needs root (sudo $0)"
fi
# vm: the cgroup v2 tier, inside the kernel guest (scripts/vm-test)
VM_TESTS="tests/vm tests/integration/test_cgroups_v2.py tests/integration/test_cli_limits.py tests/integration/test_runtime_cgroups.py tests/integration/test_explain.py tests/integration/test_isolation.py"
if [ "$(id -u)" -ne 0 ]; then
    echo "== vm: skipped, needs root (sudo $0)"
elif why=$("$REPO/scripts/vm-test" --check 2>&1); then
    run_tier vm-boot tests/vm/test_vmtest_boot.py "$@"
    echo "== vm (inside the cgroup v2 guest: scripts/vm-test)"
    # shellcheck disable=SC2086
    "$REPO/scripts/vm-test" --timeout 1800 -- "$PY" -m pytest -p no:cacheprovider $VM_TESTS "$@"
    rc=$?
    if [ $rc -eq 5 ]; then
        echo "== vm: no tests collected"
    elif [ $rc -ne 0 ]; then
        status=1
    fi
else
    echo "== vm: skipped: ${why#vm-test: }"
fi
exit $status
