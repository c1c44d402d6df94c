#!/usr/bin/env bash
# Run every test tier this machine can run: unit (no root), then
# integration (root, the real kernel).  Extra arguments go to pytest.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYCTR_VENV:-/opt/pyctr/venv}/bin/python
cd "$REPO"
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
exit $status
