#!/usr/bin/env bash
# inspect-isolation.sh NAME|ID: a running pyctr container as the host sees it,
# with standard tools only (readlink /proc/PID/ns/*, lsns, nsenter, findmnt,
# ip, /proc/PID/status, /proc/PID/cgroup, /proc/PID/uid_map, capsh).
#
# pyctr is asked one thing: the host PID of the container's PID 1. All the
# rest is read from the kernel, to show that pyctr hides nothing: compare
# with `pyctr inspect --isolation NAME`, which reads the same files.
set -euo pipefail

PROG=${0##*/}
PATH=$PATH:/usr/sbin:/sbin # ip, capsh and nsenter live there on some hosts

usage() {
    cat <<EOF
Usage: $PROG [--root DIR] [--run-dir DIR] NAME|ID

Show a running pyctr container's isolation from the host, with standard
tools: namespaces (host and container inodes), PID 1, hostname, the root
mount and its overlay layers, cgroup and limits, capabilities, seccomp,
no_new_privs, interfaces and addresses, uid/gid maps.

  --root DIR      pyctr's root (as pyctr --root; default \$PYCTR_ROOT or /var/lib/pyctr)
  --run-dir DIR   pyctr's run dir (as pyctr --run-dir; default \$PYCTR_RUN_DIR or /run/pyctr)
  -h, --help      show this help

Environment: PYCTR (the pyctr command; default: pyctr on PATH),
PYCTR_ROOT, PYCTR_RUN_DIR (read by pyctr itself).  Needs root.
Exit status: 0 shown, 1 no such container or not running, 2 usage.
EOF
}

die() { echo "$PROG: $*" >&2; exit 1; }
usage_error() { echo "$PROG: $*" >&2; echo "Try '$PROG --help'." >&2; exit 2; }

PYCTR=${PYCTR:-pyctr}
PYCTR_OPTS=()
ROOT_DIR=${PYCTR_ROOT:-/var/lib/pyctr}
REF=""
while [ $# -gt 0 ]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --root) [ $# -ge 2 ] || usage_error "--root needs a directory"
                ROOT_DIR=$2; PYCTR_OPTS+=(--root "$2"); shift 2 ;;
        --root=*) ROOT_DIR=${1#*=}; PYCTR_OPTS+=("$1"); shift ;;
        --run-dir) [ $# -ge 2 ] || usage_error "--run-dir needs a directory"
                   PYCTR_OPTS+=(--run-dir "$2"); shift 2 ;;
        --run-dir=*) PYCTR_OPTS+=("$1"); shift ;;
        --) shift; [ $# -eq 1 ] || usage_error "expected one container, NAME or ID"
            REF=$1; shift ;;
        -*) usage_error "unknown option: $1" ;;
        *) [ -z "$REF" ] || usage_error "one container at a time (got '$REF' and '$1')"
           REF=$1; shift ;;
    esac
done
if [ -z "$REF" ]; then
    echo "$PROG: which container? (NAME or ID)" >&2
    usage >&2
    exit 2
fi
[ "$(id -u)" -eq 0 ] || die "needs root: nsenter and the /proc/PID/ns links of a root process (try: sudo $0 $REF)"
command -v "$PYCTR" >/dev/null || die "pyctr not found (set PYCTR=/path/to/pyctr)"

# ---- the one thing asked of pyctr: PID 1's host pid --------------------------

ERR=$(mktemp)
trap 'rm -f "$ERR"' EXIT

# "STATUS PID STARTTIME ID" of a container, from pyctr inspect's JSON (docker's
# shape) by python3 or jq: for a pyctr without `inspect --format`.
from_json() {
    if command -v python3 >/dev/null; then
        python3 -c '
import json, sys
d = json.load(sys.stdin)[0]
s = d.get("State")
if not isinstance(s, dict):
    sys.exit(3)
print(s.get("Status", "?"), s.get("Pid") or 0, s.get("PidStartTime") or 0, d.get("Id", "?"))'
    elif command -v jq >/dev/null; then
        jq -er '.[0] | if (.State | type) == "object"
                then "\(.State.Status) \(.State.Pid // 0) \(.State.PidStartTime // 0) \(.Id)"
                else error("not a container") end' 2>/dev/null || return 3
    else
        die "needs python3 or jq to read pyctr inspect's JSON (or a pyctr with inspect --format)"
    fi
}

FMT='{{.State.Status}} {{.State.Pid}} {{.State.PidStartTime}} {{.Id}}'
if ! INFO=$("$PYCTR" "${PYCTR_OPTS[@]}" inspect --format "$FMT" "$REF" 2>"$ERR"); then
    # no --format in this pyctr, a field it lacks, or no such container: the JSON tells
    if ! JSON=$("$PYCTR" "${PYCTR_OPTS[@]}" inspect "$REF" 2>"$ERR"); then
        echo "$PROG: no such container: $REF" >&2
        sed 's/^pyctr: /  pyctr says: /' "$ERR" >&2
        exit 1
    fi
    rc=0
    INFO=$(printf '%s\n' "$JSON" | from_json) || rc=$?
    [ "$rc" -eq 3 ] && die "$REF is not a container (an image?)"
    [ "$rc" -eq 0 ] || die "cannot read pyctr inspect's JSON for $REF"
fi
read -r STATUS PID STARTTIME CID <<<"$INFO"
[ "$STATUS" = running ] || die "container $REF is not running (status: $STATUS)"
case $PID in ''|*[!0-9]*|0) die "container $REF has no PID 1 (pid: ${PID:-none})" ;; esac

# the pid is PID 1 of this container only if it started when pyctr says (a
# reused pid would be another process): field 22 of /proc/PID/stat
stat=$(cat "/proc/$PID/stat" 2>/dev/null) || die "container $REF is not running (pid $PID is gone)"
stat=${stat##*) }
read -r -a fields <<<"$stat"
if [ "${STARTTIME:-0}" != 0 ] && [ "${fields[19]}" != "$STARTTIME" ]; then
    die "container $REF is not running (pid $PID is now another process)"
fi

# no process substitution below: it needs /dev/fd, which minimal systems lack

# ---- output helpers ------------------------------------------------------------

section() { printf '\n== %s\n' "$*"; }
row() { printf '  %-12s %-24s %-24s %s\n' "$@"; }
kv() { printf '  %-28s %s\n' "$1" "${2-}"; }
status_field() { sed -n "s/^$2:[[:space:]]*//p" "/proc/$1/status"; }
human_bytes() {
    local n=$1
    if [ "$n" -ge 9223372036854771712 ] 2>/dev/null; then echo "no limit"; return; fi
    case $n in max) echo "no limit"; return ;; ''|*[!0-9]*) echo "$n"; return ;; esac
    if [ "$n" -ge 1073741824 ] && [ $((n % 1073741824)) -eq 0 ]; then echo "$((n / 1073741824)) GiB"
    elif [ "$n" -ge 1048576 ] && [ $((n % 1048576)) -eq 0 ]; then echo "$((n / 1048576)) MiB"
    elif [ "$n" -ge 1024 ] && [ $((n % 1024)) -eq 0 ]; then echo "$((n / 1024)) KiB"
    else echo "$n bytes"; fi
}
SELF=$$ # "host": the namespaces, capabilities … of the shell running this script

echo "Container $REF (${CID:0:12}): PID 1 is host pid $PID."
echo "Everything below comes from the kernel through standard tools; pyctr only told the pid."

# ---- PID 1 -------------------------------------------------------------------------

section "PID 1   (/proc/$PID/cmdline, NSpid in /proc/$PID/status)"
cmdline=$(tr '\0' ' ' <"/proc/$PID/cmdline")
nspid=$(status_field "$PID" NSpid)
ppid=$(status_field "$PID" PPid)
kv "command" "${cmdline% }"
kv "pid on the host" "$PID"
kv "pid inside" "${nspid##*[[:space:]]}   (NSpid: $(echo "$nspid" | tr -s '\t ' ' '): one pid per pid namespace, outermost first)"
kv "parent on the host" "$ppid ($(cat "/proc/$ppid/comm" 2>/dev/null || echo '?'): pyctr's shim, the container's monitor)"

# ---- namespaces --------------------------------------------------------------------

section "namespaces   (readlink /proc/PID/ns/TYPE; lsns -p $PID)"
row TYPE "HOST (this shell)" "CONTAINER (pid $PID)" "$(printf '%-10s %s' SAME? "PROCESSES IN IT (lsns)")"
for kind in cgroup ipc mnt net pid time user uts; do
    [ -e "/proc/$PID/ns/$kind" ] || continue
    host=$(readlink "/proc/$SELF/ns/$kind"); host=${host#*[}; host=${host%]}
    ctr=$(readlink "/proc/$PID/ns/$kind"); ctr=${ctr#*[}; ctr=${ctr%]}
    if [ "$host" = "$ctr" ]; then verdict=same; else verdict=different; fi
    nprocs=$(lsns -n -p "$PID" -t "$kind" -o NPROCS 2>/dev/null | tr -d ' ' || true)
    row "$kind" "$host" "$ctr" "$(printf '%-10s %s' "$verdict" "${nprocs:-?}")"
done
echo "  (different: the container's own; same: shared with the host, as pyctr's containers"
echo "   get no user or time namespace of their own)"

# ---- hostname ----------------------------------------------------------------------

section "hostname   (hostname; nsenter -t $PID -u hostname)"
if command -v hostname >/dev/null; then hn=(hostname); else hn=(uname -n); fi
kv host "$("${hn[@]}")"
kv container "$(nsenter -t "$PID" -u "${hn[@]}")"

# ---- root mount ----------------------------------------------------------------------

section "root mount   (findmnt -N $PID /)"
if ! line=$(findmnt -N "$PID" -n -o FSTYPE,SOURCE,OPTIONS / 2>/dev/null); then
    line=$(nsenter -t "$PID" -m findmnt -n -o FSTYPE,SOURCE,OPTIONS /)
fi
read -r fstype source options <<<"$line"
kv fstype "$fstype (source: $source)"
lowerdir="" upperdir="" workdir=""
IFS=, read -r -a opts <<<"$options"
for o in "${opts[@]}"; do
    case $o in
        lowerdir=*) lowerdir=${o#lowerdir=} ;;
        upperdir=*) upperdir=${o#upperdir=} ;;
        workdir=*) workdir=${o#workdir=} ;;
    esac
done
if [ "$fstype" = overlay ]; then
    # pyctr names the layers by short links relative to ROOT/images/layers
    # (l/XXXXXXXXXX, as docker's overlay2): ROOT is found from the upperdir
    layers_root=$ROOT_DIR
    case $upperdir in */containers/*/upper) layers_root=${upperdir%/containers/*} ;; esac
    IFS=: read -r -a lowers <<<"$lowerdir"
    n=0
    for l in "${lowers[@]}"; do
        n=$((n + 1))
        label="lowerdir $n"; [ "$n" -eq 1 ] && label="lowerdir 1 (top)"
        if [ "${l#/}" = "$l" ] && [ -e "$layers_root/images/layers/$l" ]; then
            kv "$label" "$l -> $(readlink -f "$layers_root/images/layers/$l")"
        else
            kv "$label" "$l"
        fi
    done
    kv upperdir "$upperdir   (the container's writes)"
    kv workdir "$workdir"
fi
echo "  mounts inside (findmnt -N $PID -l -o TARGET,FSTYPE):"
findmnt -N "$PID" -l -n -o TARGET,FSTYPE 2>/dev/null | sed 's/^/    /' \
    || nsenter -t "$PID" -m findmnt -l -n -o TARGET,FSTYPE | sed 's/^/    /'

# ---- cgroup -------------------------------------------------------------------------

section "cgroup   (/proc/$PID/cgroup; limits from the cgroup's files)"
sed 's/^/  /' "/proc/$PID/cgroup"

# the directory of PID's cgroup in the hierarchy holding CONTROLLER ("" for v2)
cgroup_dir() {
    local ctrl=$1 line path target="" fsroot opts_
    if [ -n "$ctrl" ]; then
        line=$(grep -E "^[0-9]+:([^:]*,)?$ctrl(,[^:]*)?:" "/proc/$PID/cgroup" || true)
        [ -n "$line" ] || return 1
        path=${line#*:*:}
        while read -r target fsroot opts_; do
            case ",$opts_," in *",$ctrl,"*) break ;; esac
            target=""
        done <<<"$(findmnt -rn -t cgroup -o TARGET,FSROOT,OPTIONS)"
    else
        line=$(grep -E '^0::' "/proc/$PID/cgroup" || true)
        [ -n "$line" ] || return 1
        path=${line#0::}
        read -r target fsroot <<<"$(findmnt -rn -t cgroup2 -o TARGET,FSROOT | head -n 1)" || return 1
    fi
    [ -n "${target:-}" ] || return 1
    [ "$fsroot" = / ] || path=${path#"$fsroot"}
    [ -d "$target$path" ] || return 1
    echo "$target$path"
}

show_file() { # DIR FILE [human]
    [ -r "$1/$2" ] || return 0
    local v
    v=$(tr '\n' ' ' <"$1/$2"); v=${v% }
    if [ "${3:-}" = human ]; then kv "$2" "$v   ($(human_bytes "$v"))"; else kv "$2" "$v"; fi
}

if mem=$(cgroup_dir memory); then
    echo "  cgroup v1 (a hierarchy per controller; this host is hybrid or v1):"
    kv "memory dir" "$mem"
    show_file "$mem" memory.limit_in_bytes human
    show_file "$mem" memory.memsw.limit_in_bytes human
    show_file "$mem" memory.usage_in_bytes human
    if d=$(cgroup_dir pids); then show_file "$d" pids.max; show_file "$d" pids.current; fi
    if d=$(cgroup_dir cpu); then
        show_file "$d" cpu.cfs_quota_us; show_file "$d" cpu.cfs_period_us; show_file "$d" cpu.shares
    fi
    if d=$(cgroup_dir cpuset); then show_file "$d" cpuset.cpus; fi
    show_file "$mem" cgroup.procs
elif d=$(cgroup_dir "") && [ -e "$d/cgroup.controllers" ]; then
    echo "  cgroup v2 (one unified hierarchy):"
    kv "dir" "$d"
    kv "cgroup.controllers" "$(cat "$d/cgroup.controllers")"
    show_file "$d" memory.max human
    show_file "$d" memory.swap.max human
    show_file "$d" memory.current human
    show_file "$d" pids.max
    show_file "$d" pids.current
    show_file "$d" cpu.max
    show_file "$d" cpu.weight
    show_file "$d" cpuset.cpus
    show_file "$d" cpuset.cpus.effective
    show_file "$d" cgroup.procs
else
    echo "  (no cgroup directory of this container found under the mounted hierarchies)"
fi

# ---- capabilities, seccomp, no_new_privs ------------------------------------------------

section "capabilities   (/proc/PID/status; capsh --decode)"
row "" "HOST (this shell)" "CONTAINER (pid $PID)"
for f in CapEff CapPrm CapBnd CapInh CapAmb; do
    row "$f" "$(status_field "$SELF" "$f")" "$(status_field "$PID" "$f")"
done
if command -v capsh >/dev/null; then
    decode() { capsh --decode="$1" | sed 's/^[^=]*=//'; }
    ctr_eff=$(decode "$(status_field "$PID" CapEff)")
    host_eff=$(decode "$(status_field "$SELF" CapEff)")
    echo "  container CapEff: ${ctr_eff:-none}"
    dropped=""
    IFS=, read -r -a host_caps <<<"$host_eff"
    for c in "${host_caps[@]}"; do
        case ",$ctr_eff," in *",$c,"*) ;; *) dropped=${dropped:+$dropped,}$c ;; esac
    done
    echo "  the host shell has, the container not: ${dropped:-nothing}"
else
    echo "  (capsh not found: install libcap2-bin to decode the sets)"
fi

section "seccomp and no_new_privs   (/proc/PID/status)"
row "" "HOST (this shell)" "CONTAINER (pid $PID)"
seccomp_host=$(status_field "$SELF" Seccomp)
seccomp_ctr=$(status_field "$PID" Seccomp)
meaning() { case $1 in 0) echo disabled ;; 1) echo strict ;; 2) echo "filter (seccomp-bpf)" ;; *) echo "?" ;; esac; }
row Seccomp "$seccomp_host" "$seccomp_ctr" "container: $(meaning "$seccomp_ctr"), $(status_field "$PID" Seccomp_filters || true) filter(s)"
nnp_ctr=$(status_field "$PID" NoNewPrivs)
row NoNewPrivs "$(status_field "$SELF" NoNewPrivs)" "$nnp_ctr" \
    "$([ "$nnp_ctr" = 1 ] && echo "container: execve can never gain privileges (setuid bits, file caps)")"

# ---- network ---------------------------------------------------------------------------

section "network   (nsenter -t $PID -n ip -br addr; ip route)"
if [ "$(readlink "/proc/$PID/ns/net")" = "$(readlink "/proc/$SELF/ns/net")" ]; then
    echo "  the host's own network namespace (--network host): the host's interfaces"
fi
echo "  container:"
nsenter -t "$PID" -n ip -br addr | sed 's/^/    /'
nsenter -t "$PID" -n ip route | sed 's/^/    route: /'
# each veth inside names its host peer's ifindex: eth0@if6336
while read -r ifname _; do
    case $ifname in *@if[0-9]*) ;; *) continue ;; esac
    idx=${ifname##*@if}
    peer=$(ip -o link show 2>/dev/null | awk -F': ' -v i="$idx" '$1 == i {print $2; exit}')
    [ -n "$peer" ] || continue
    master=$(ip -o link show "${peer%@*}" | sed -n 's/.* master \([^ ]*\).*/\1/p')
    echo "  host end of ${ifname%@*}: ${peer%@*} (ifindex $idx)${master:+, on bridge $master}"
done <<<"$(nsenter -t "$PID" -n ip -br link)"

# ---- user namespace -------------------------------------------------------------------------

section "uid/gid maps   (/proc/PID/uid_map, /proc/PID/gid_map)"
for m in uid_map gid_map; do
    kv "$m" "$(tr -s ' \n' ' ' <"/proc/$PID/$m" | sed 's/^ //; s/ $//')"
done
if [ "$(tr -s ' ' <"/proc/$PID/uid_map" | sed 's/^ //')" = "0 0 4294967295" ]; then
    echo "  identity map (inside outside count): no user namespace, root inside is root on the host"
else
    echo "  (inside outside count): ids inside map to other ids on the host"
fi
kv "Uid (real eff saved fs)" "$(status_field "$PID" Uid | tr -s '\t' ' ')"
kv "Gid (real eff saved fs)" "$(status_field "$PID" Gid | tr -s '\t' ' ')"
