# shellcheck shell=bash
# Tools/lib/netns.sh: small shared helpers for scripts that build throwaway
# network namespaces (see shared LAB.md: unique names, cleanup on exit even on
# failure, every wait bounded). Source it from bash:
#
#   source "$repo_root/Tools/lib/netns.sh"
#   netns_require_root "my-script"
#   netns_require_tools "my-script" ip tcpdump
#   trap netns_cleanup EXIT; trap 'exit 130' INT; trap 'exit 143' TERM
#   ns=$(netns_name colo-x)           # colo-x-<pid>
#   netns_add "$ns"                   # created, lo up, removed by netns_cleanup
#   some-server & netns_track_pid $!  # killed by netns_cleanup
#   netns_wait_listen "$ns" tcp 8000 5
#
# Everything it kills or deletes is what the caller registered: nothing is
# matched by name.

NETNS_NAMESPACES=()
NETNS_PIDS=()

netns_die() {
    echo "${NETNS_PROG:-netns}: error: $*" >&2
    exit 1
}

# netns_require_root PROG: fail (not skip) unless running as root.
netns_require_root() {
    NETNS_PROG=${1:-$NETNS_PROG}
    if [ "$(id -u)" -ne 0 ]; then
        netns_die "must run as root (network namespaces, veth, packet capture); try: sudo $0"
    fi
}

# netns_require_tools PROG CMD...: fail listing every missing command.
netns_require_tools() {
    NETNS_PROG=${1:-$NETNS_PROG}
    shift
    local missing=() t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || missing+=("$t")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        netns_die "missing tools: ${missing[*]}; install them with Tools/install-deps.sh (as root)"
    fi
}

# netns_name PREFIX: a namespace name unique to this run (PREFIX-PID).
netns_name() {
    echo "$1-$$"
}

# netns_add NAME: create the namespace, bring its loopback up, register it.
netns_add() {
    ip netns add "$1"
    NETNS_NAMESPACES+=("$1")
    ip -n "$1" link set lo up
}

# netns_track_pid PID: kill PID on cleanup (if still running).
netns_track_pid() {
    NETNS_PIDS+=("$1")
}

# netns_stop_pid PID [SIGNAL] [SECONDS]: signal a registered process and wait,
# bounded, for it to exit; SIGKILL after the deadline. Returns 1 if it had to
# be killed.
netns_stop_pid() {
    local pid=$1 sig=${2:-TERM} secs=${3:-5} i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -s "$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -s KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        return 1
    fi
    wait "$pid" 2>/dev/null || true
    return 0
}

# netns_wait_listen NS tcp|udp PORT SECONDS: wait until something in NS
# listens on PORT; fail after SECONDS.
netns_wait_listen() {
    local ns=$1 proto=$2 port=$3 secs=${4:-5} flag i
    case $proto in
        tcp) flag=-Hltn ;;
        udp) flag=-Hlun ;;
        *) netns_die "netns_wait_listen: bad protocol $proto" ;;
    esac
    for ((i = 0; i < secs * 20; i++)); do
        if ip netns exec "$ns" ss "$flag" "sport = :$port" 2>/dev/null | grep -q .; then
            return 0
        fi
        sleep 0.05
    done
    netns_die "nothing listens on $proto port $port in namespace $ns after ${secs}s"
}

# netns_cleanup: stop registered processes, delete registered namespaces.
# Safe to call more than once; meant for `trap netns_cleanup EXIT`.
netns_cleanup() {
    local pid ns
    for pid in "${NETNS_PIDS[@]}"; do
        netns_stop_pid "$pid" TERM 3 || true
    done
    NETNS_PIDS=()
    for ns in "${NETNS_NAMESPACES[@]}"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    NETNS_NAMESPACES=()
}

# netns_workdir PREFIX FAILURE_NOTE: makes a temporary work directory (in $work) and installs the traps that,
# on any exit, remove the namespaces and processes registered above and the work directory; on failure the
# message "PROG: failed (exit N)" is printed, followed by FAILURE_NOTE when given.
netns_workdir() {
    work=$(mktemp -d "/tmp/$1.XXXXXX")
    NETNS_FAILURE_NOTE=${2:-}
    trap _netns_exit_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

_netns_exit_cleanup() {
    local rc=$?
    netns_cleanup
    [ -n "${work:-}" ] && rm -rf "$work"
    if [ $rc -ne 0 ]; then
        echo "${NETNS_PROG:-netns}: failed (exit $rc)${NETNS_FAILURE_NOTE:+; $NETNS_FAILURE_NOTE}" >&2
    fi
}
