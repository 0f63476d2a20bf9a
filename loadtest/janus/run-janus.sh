#!/usr/bin/env bash
# Starts Janus (Debian's 1.1.2) with the VideoRoom plugin and the WebSocket transport on
# loopback only, for the Janus target's test and the benchmark.
#
# Usage: run-janus.sh [--dir DIR] [--port PORT] [--event-loops N] [--lifetime SECONDS]
#                     [--debug-level N] [--rtp-ports MIN-MAX] [--detach]
#
# Prints, once Janus accepts WebSocket connections:
#   JANUS_URL=ws://127.0.0.1:PORT
#   JANUS_PID=<pid of the janus process itself: what --server-pid wants>
#   JANUS_DIR=<the config folder>      JANUS_LOG=<its log file>
# (so `eval "$(run-janus.sh --detach ...)"` works in bash).
#
# Without --detach it then waits for Janus and stops it on SIGTERM/SIGINT. With --detach it
# returns at once and Janus keeps running; stop it with `kill $JANUS_PID`. Either way Janus
# is killed after --lifetime seconds (default 3600), so a forgotten instance cannot linger.
#
# Why the shim: Janus never gathers candidates on an interface flagged IFF_LOOPBACK (see
# noloopflag.c), so on loopback it needs LD_PRELOAD of a getifaddrs() that clears the flag.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir=""
port=8188
event_loops=0
lifetime=3600
debug_level=4
rtp_ports="20000-40000"
detach=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dir) dir="$2"; shift 2 ;;
        --port) port="$2"; shift 2 ;;
        --event-loops) event_loops="$2"; shift 2 ;;
        --lifetime) lifetime="$2"; shift 2 ;;
        --debug-level) debug_level="$2"; shift 2 ;;
        --rtp-ports) rtp_ports="$2"; shift 2 ;;
        --detach) detach=1; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "run-janus.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

if ! command -v janus >/dev/null 2>&1; then
    echo "run-janus.sh: janus not installed: run loadtest/install-janus.sh" >&2
    exit 3
fi
if ! command -v gcc >/dev/null 2>&1; then
    echo "run-janus.sh: gcc is needed to build the loopback shim (apt-get install -y gcc)" >&2
    exit 3
fi

[[ -n "$dir" ]] || dir="$(mktemp -d /tmp/janus.XXXXXX)"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

# The shim is built here, from source, every time the source is newer than the copy.
shim="$dir/noloopflag.so"
if [[ ! -f "$shim" || "$here/noloopflag.c" -nt "$shim" ]]; then
    gcc -shared -fPIC -O2 -o "$shim" "$here/noloopflag.c" -ldl
fi

libdir=/usr/lib/x86_64-linux-gnu/janus
[[ -d "$libdir" ]] || libdir="$(dirname "$(dirname "$(dpkg -L janus | grep -m1 'libjanus_videoroom.so$')")")"

# Configs written from scratch (not the samples in /etc/janus): only what the benchmark
# needs is loaded, and nothing listens beyond 127.0.0.1.
loops_line=""
if [[ "$event_loops" -gt 0 ]]; then
    # A fixed pool of event loops instead of one thread per handle: with the server pinned
    # to one core, hundreds of per-handle threads only add context switches.
    loops_line="event_loops = $event_loops"
fi
cat > "$dir/janus.jcfg" <<EOF
general: {
	configs_folder = "$dir"
	plugins_folder = "$libdir/plugins"
	transports_folder = "$libdir/transports"
	events_folder = "$libdir/events"
	loggers_folder = "$libdir/loggers"
	debug_level = $debug_level
	session_timeout = 60
	$loops_line
}
media: {
	rtp_port_range = "$rtp_ports"
}
nat: {
	ice_enforce_list = "lo"
	ignore_mdns = true
}
plugins: {
	disable = "libjanus_audiobridge.so,libjanus_duktape.so,libjanus_echotest.so,libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_voicemail.so"
}
transports: {
	disable = "libjanus_http.so,libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,libjanus_rabbitmq.so"
}
loggers: {
	disable = "libjanus_jsonlog.so"
}
events: {
	broadcast = false
}
EOF
cat > "$dir/janus.transport.websockets.jcfg" <<EOF
general: {
	json = "compact"
	ws = true
	ws_port = $port
	ws_ip = "127.0.0.1"
	wss = false
}
admin: {
	admin_ws = false
	admin_wss = false
}
EOF
# Rooms are created through the API (the Janus target's prepare_room), none here.
cat > "$dir/janus.plugin.videoroom.jcfg" <<EOF
general: {
}
EOF

log="$dir/janus.log"
: > "$log"
LD_PRELOAD="$shim" janus -F "$dir" -C "$dir/janus.jcfg" -L "$log" -N -o </dev/null >/dev/null 2>&1 &
pid=$!
# The lifetime guard: a subshell that outlives this script when detached. It checks once a
# second that the pid is still a live janus, so it never signals a recycled pid.
(
    alive() { [[ -r /proc/$pid/stat ]] && [[ "$(cut -d' ' -f2,3 "/proc/$pid/stat" 2>/dev/null)" =~ ^\(janus\)\ [^Z] ]]; }
    for ((i = 0; i < lifetime; i++)); do
        alive || exit 0
        sleep 1
    done
    alive && kill -TERM "$pid"
) </dev/null >/dev/null 2>&1 &
guard=$!

ready=0
for _ in $(seq 1 100); do
    if ! kill -0 "$pid" 2>/dev/null; then
        break
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.1
done
if [[ "$ready" -ne 1 ]]; then
    echo "run-janus.sh: janus did not listen on 127.0.0.1:$port within 10 s; its log ($log):" >&2
    tail -n 30 "$log" >&2 || true
    kill -TERM "$pid" 2>/dev/null || true
    kill "$guard" 2>/dev/null || true
    exit 1
fi

echo "JANUS_URL=ws://127.0.0.1:$port"
echo "JANUS_PID=$pid"
echo "JANUS_DIR=$dir"
echo "JANUS_LOG=$log"

if [[ "$detach" -eq 1 ]]; then
    exit 0
fi

stop() {
    kill -TERM "$pid" 2>/dev/null || true
    # Janus takes a moment to tear its sessions down; then it is killed for good.
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    kill "$guard" 2>/dev/null || true
}
trap 'stop; exit 0' TERM INT
# `wait` returns early when a trapped signal arrives, so the trap runs promptly.
wait "$pid" || true
kill "$guard" 2>/dev/null || true
