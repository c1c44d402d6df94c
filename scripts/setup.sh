#!/usr/bin/env bash
# Set up this machine for pyctr: system packages, pyctr in a venv with its
# console script on PATH, and the local `busybox` image (no network needed).
# Idempotent; quiet on success; says what failed otherwise.  Run as root.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${PYCTR_VENV:-/opt/pyctr/venv}
BIN=${PYCTR_BIN:-/usr/local/bin}
LOG=$(mktemp /tmp/pyctr-setup.XXXXXX.log)
trap 'rm -f "$LOG"' EXIT

fail() {
    echo "setup.sh: $1" >&2
    [ -s "$LOG" ] && { echo "--- last output ---" >&2; tail -n 30 "$LOG" >&2; }
    exit 1
}

[ "$(id -u)" -eq 0 ] || fail "needs root: try sudo $0"
command -v apt-get >/dev/null || fail "needs a Debian or Ubuntu host (apt-get not found)"

# Runtime needs: python3 + venv, gcc and libcap-dev (python-prctl builds
# against it; pyctr/shim.c), libseccomp2 (pyseccomp), busybox-static (the
# local image), iproute2 and nftables (networks: masquerade in pyctr's own
# table), util-linux (nsenter), tini/catatonit (--init).
RUNTIME_PKGS="python3 python3-venv python3-dev gcc libcap-dev libseccomp2 busybox-static
      iproute2 nftables util-linux tini catatonit tar gzip libcap2-bin"
# Test and benchmark needs: umoci, skopeo, runc, crun, zstd, attr, hyperfine;
# docker-registry (the CNCF distribution registry the registry tests start on
# 127.0.0.1; its own service is not enabled) and apache2-utils (htpasswd);
# ShellCheck and vagrant (+ vagrant-libvirt) for the script and Vagrantfile
# checks; qemu and a Debian kernel (installed, never booted by the host) for
# the pure cgroup v2 guest of scripts/vm-test.  Where one of them does not
# exist (another release, Ubuntu), setup goes on and says so: the tests that
# need it skip with the reason.
TEST_PKGS="umoci skopeo runc crun zstd attr hyperfine docker-registry apache2-utils shellcheck
      vagrant vagrant-libvirt qemu-system-x86 linux-image-amd64"
if [ -r /etc/os-release ] && grep -q '^ID=ubuntu' /etc/os-release; then
    TEST_PKGS=${TEST_PKGS/linux-image-amd64/linux-image-generic}  # Ubuntu's name for it
fi
missing() {
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
            || printf ' %s' "$p"
    done
}
# shellcheck disable=SC2086
need=$(missing $RUNTIME_PKGS)
# shellcheck disable=SC2086
want=$(missing $TEST_PKGS)
if [ -n "$need$want" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$LOG" 2>&1 || fail "apt-get update failed"
    if [ -n "$need" ]; then
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $need >>"$LOG" 2>&1 \
            || fail "apt-get install failed for:$need"
    fi
    # shellcheck disable=SC2086
    if [ -n "$want" ] && ! apt-get install -y -qq --no-install-recommends $want >>"$LOG" 2>&1
    then
        for p in $want; do  # one at a time: install what exists, name what does not
            apt-get install -y -qq --no-install-recommends "$p" >>"$LOG" 2>&1 \
                || echo "setup.sh: warning: cannot install $p here; the tests that need it skip" >&2
        done
    fi
    # the tests start their own registries: the package's service (port 5000) stays off
    case " $want " in *" docker-registry "*)
        if [ -d /run/systemd/system ]; then
            systemctl disable --now docker-registry >>"$LOG" 2>&1 || true
        fi ;;
    esac
fi

# pyctr in its own venv (PEP 668 forbids pip outside one on Debian/Ubuntu),
# made from the system python3: its absolute path in the console script
# keeps start-up cheap (no pyenv shim).
if [ ! -x "$VENV/bin/python" ]; then
    /usr/bin/python3 -m venv "$VENV" >"$LOG" 2>&1 || fail "cannot create the venv $VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "${REPO}[test]" >"$LOG" 2>&1 \
    || fail "pip install of pyctr into $VENV failed"
mkdir -p "$BIN"
ln -sf "$VENV/bin/pyctr" "$BIN/pyctr"
ln -sf "$VENV/bin/pyctrd" "$BIN/pyctrd"
# setup's own commands work in their process: no daemon is started here
export PYCTR_NO_AUTOSTART=1
# a pyctrd already running serves the code it was started with: stop it (the
# next command starts a fresh one; its containers run on meanwhile)
"$BIN/pyctr" system stop-daemon >"$LOG" 2>&1 || true
# the monitor loop of a detached container in C (pyctr/shim.c): ~0.2 MB a
# container instead of ~3 MB for a Python process; without it the loop runs in Python
cc -O2 -Wall -o "$VENV/bin/pyctr-shim.new" "$REPO/pyctr/shim.c" >"$LOG" 2>&1 \
    || fail "cannot compile pyctr/shim.c (is gcc installed?)"
mv -f "$VENV/bin/pyctr-shim.new" "$VENV/bin/pyctr-shim"
# the systemd unit, where systemd runs (not enabled: `systemctl enable --now pyctrd`)
if [ -d /run/systemd/system ]; then
    install -m 0644 "$REPO/scripts/pyctrd.service" /etc/systemd/system/pyctrd.service
    systemctl daemon-reload >"$LOG" 2>&1 || true
fi
# bytecode ahead of time: every `pyctr` start then skips compiling (also
# where PYTHONDONTWRITEBYTECODE is set and nothing would be cached)
"$VENV/bin/python" -m compileall -q "$REPO/pyctr" "$REPO/runtime" "$REPO/images" \
    "$REPO/netns" "$REPO/cgroups" >"$LOG" 2>&1 || fail "cannot byte-compile pyctr"

# The local busybox image, made from Debian's busybox-static through pyctr's own import.
if [ -z "$("$BIN/pyctr" images -q busybox:latest 2>/dev/null)" ]; then
    "$VENV/bin/python" "$REPO/scripts/make_busybox_rootfs.py" --tar /tmp/pyctr-busybox.$$.tar \
        >"$LOG" 2>&1 || fail "cannot build the busybox rootfs"
    "$BIN/pyctr" import --change 'CMD ["sh"]' /tmp/pyctr-busybox.$$.tar busybox:latest >"$LOG" 2>&1 \
        || { rm -f /tmp/pyctr-busybox.$$.tar; fail "pyctr import of busybox failed"; }
    rm -f /tmp/pyctr-busybox.$$.tar
fi

# Warm the cgroup v2 guest's initramfs cache (scripts/vm-test); not fatal:
# the vm test tier says why it is skipped on a machine that cannot boot it.
"$REPO/scripts/vm-test" -- true >"$LOG" 2>&1 \
    || echo "setup.sh: warning: scripts/vm-test cannot boot the cgroup v2 guest (see scripts/vm/README.md)" >&2
