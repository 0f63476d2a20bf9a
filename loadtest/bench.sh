#!/usr/bin/env bash
# The benchmark: Switchyard, Janus and the UDP floor under the same load on this machine,
# written up in loadtest/RESULTS.md.
#
# Usage: loadtest/bench.sh [--quick] [--out DIR] [--no-build] [STEP...]
#
# Steps (default: all = build floor switchyard janus summary):
#   build                       release binaries for the steps asked (cargo, before the netns)
#   floor    = floor-a floor-b floor-c         udp-floor (recvmmsg/sendmmsg, no WebRTC)
#   switchyard = switchyard-check switchyard-a switchyard-b switchyard-c
#   janus    = janus-check janus-a janus-b janus-c   (installs janus with apt-get if missing)
#   *-check                     start the server pinned in the namespace, see it listen and
#                               stop (the plumbing, without the generator)
#   profile                     perf on Switchyard under scenario (a) at $PROFILE_SUBSCRIBERS
#                               (default 200): where its CPU goes, for RESULTS.md
#   summary                     RESULTS.md from the reports in --out
# Scenarios:
#   a  one 1.5 Mbit/s video publisher -> N subscribers, N stepped up
#   b  ten-person meetings (everyone publishes audio + simulcast video, subscribers on the
#      medium layer), rooms stepped up
#   c  one audio publisher -> N subscribers, N stepped up
# A target's steps stop at the first step with more than 1% loss or a p99 latency above
# $MAX_P99_MS ms (default 100: a saturated server with big socket buffers queues before it
# drops), or a failed participant, or when the generator was the limit (>= 90% of its core,
# or more than 5% of its frames late): then the limit measured is the generator's.
#
# Every measurement runs inside `unshare -n` (a network namespace with only lo, up): the
# server under test pinned to CPU $SERVER_CPU (default 0), the generator to $GEN_CPU
# (default 1). Needs root (unshare, apt-get). Each step is bounded in time; --quick is a
# short profile (10 s windows, fewer steps; about 20 minutes in all).
#
# Overrides (environment): A_STEPS, B_STEPS, C_STEPS, FLOOR_A_STEPS, FLOOR_B_STEPS,
# FLOOR_C_STEPS (space-separated), DURATION (s), RAMP_RATE (joins/s, default 20),
# MAX_P99_MS, SERVER_CPU, GEN_CPU, JANUS_EVENT_LOOPS (default 1), SWITCHYARD_LOG_LEVEL
# (default warn).
#
# The generator is called as
#   switchyard-loadtest --target switchyard|janus --url URL --rooms R --publishers P
#     --subscribers S [--video-bitrate BPS] [--simulcast] [--audio-only] [--layer L] --duration Ns
#     --ramp JOINS_PER_S --json FILE --server-pid PID --max-loss 1 --max-p99-latency MS
# under bash `time` (its own CPU, which its report does not give), and NAME.meta.json
# records the scenario, exit status and that CPU next to its report (REPORT-FORMAT.md).
# A publisher also receives the other publishers of its room. In scenario (b) every
# receiver asks for the medium layer (--layer medium: Switchyard's update_subscription,
# Janus's substream 1).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
profile=full
out="$here/results"
build=1
args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) profile=quick; shift ;;
        --out) out="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) sed -n '2,37p' "$0"; exit 0 ;;
        -*) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
[[ ${#args[@]} -gt 0 ]] || args=(all)
mkdir -p "$out"
out="$(cd "$out" && pwd)"

steps=()
for step in "${args[@]}"; do
    case "$step" in
        all) steps+=(build floor-a floor-b floor-c switchyard-check switchyard-a switchyard-b
                     switchyard-c janus-check janus-a janus-b janus-c profile summary) ;;
        floor) steps+=(floor-a floor-b floor-c) ;;
        switchyard|janus) steps+=("$step-check" "$step-a" "$step-b" "$step-c") ;;
        build|summary|profile|floor-[abc]|switchyard-[abc]|janus-[abc]|switchyard-check|janus-check)
            steps+=("$step") ;;
        *) echo "bench.sh: unknown step $step (see --help)" >&2; exit 2 ;;
    esac
done
has() { local s; for s in "${steps[@]}"; do [[ "$s" == $1 ]] && return 0; done; return 1; }

# The floor steps further than the servers: it is the reference, and cheap.
if [[ "$profile" == quick ]]; then
    : "${DURATION:=10}"
    : "${A_STEPS:=25 50 100 200 400 500 600}"
    : "${B_STEPS:=1 2 4 8}"
    : "${C_STEPS:=50 100 200 400 800}"
    : "${FLOOR_A_STEPS:=25 50 100 200 400 800 1600 3200}"
    : "${FLOOR_B_STEPS:=1 2 4 8 16 32 64}"
    : "${FLOOR_C_STEPS:=50 100 200 400 800 1600 3200 6400}"
else
    : "${DURATION:=30}"
    : "${A_STEPS:=25 50 100 200 400 600 800 1000 1500 2000}"
    : "${B_STEPS:=1 2 4 8 12 16 24 32}"
    : "${C_STEPS:=50 100 200 400 800 1200 1600 2400 3200}"
    : "${FLOOR_A_STEPS:=25 50 100 200 400 600 800 1000 1500 2000 3000 4000 6000 8000}"
    : "${FLOOR_B_STEPS:=1 2 4 8 12 16 24 32 48 64 96 128}"
    : "${FLOOR_C_STEPS:=50 100 200 400 800 1200 1600 2400 3200 4800 6400 9600 12800}"
fi
: "${MAX_P99_MS:=100}"
: "${PROFILE_SUBSCRIBERS:=200}"
: "${RAMP_RATE:=20}"
export MAX_P99_MS
: "${SERVER_CPU:=0}"
: "${GEN_CPU:=1}"
: "${JANUS_EVENT_LOOPS:=1}"
: "${SWITCHYARD_LOG_LEVEL:=warn}"
export SWITCHYARD_LOG_LEVEL
# The default caps a room at 100 participants; scenario (a) and (c) put thousands in one.
: "${SWITCHYARD_ROOM_MAX_PARTICIPANTS:=100000}"
export SWITCHYARD_ROOM_MAX_PARTICIPANTS

bin="$root/target/release"
mkdir -p "$out/logs"
# Thousands of sockets: one per receiver, per peer connection.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
failures=0

say() { echo "bench: $*" >&2; }

# ---------------------------------------------------------------------------------------
# Outside the namespace: what needs the network or a long compile.
if [[ -z "${SWITCHYARD_BENCH_IN_NETNS:-}" ]]; then
    if [[ "$(id -u)" -ne 0 ]]; then
        say "needs root (unshare -n, apt-get)"; exit 1
    fi
    if has 'janus-*' && ! command -v janus >/dev/null 2>&1; then
        "$here/install-janus.sh"
    fi
    if has profile && ! command -v perf >/dev/null 2>&1; then
        say "installing perf (Debian's linux-perf)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null
    fi
    if [[ "$build" -eq 1 ]] && has build; then
        packages=(-p switchyard-loadtest)
        if has 'switchyard-*' || has profile; then packages+=(-p switchyard-server); fi
        targets=(--bin udp-floor)
        if has 'switchyard-*' || has 'janus-*' || has profile; then
            targets+=(--bin switchyard-loadtest)
        fi
        if has 'switchyard-*' || has profile; then targets+=(--bin switchyard); fi
        say "building ${targets[*]} (release)"
        (cd "$root" && cargo build --release "${packages[@]}" "${targets[@]}")
    fi
    rest=()
    for s in "${steps[@]}"; do [[ "$s" == build ]] || rest+=("$s"); done
    [[ ${#rest[@]} -gt 0 ]] || exit 0
    quick=(); [[ "$profile" == quick ]] && quick=(--quick)
    say "entering a network namespace with only loopback"
    exec unshare -n -- env SWITCHYARD_BENCH_IN_NETNS=1 DURATION="$DURATION" MAX_P99_MS="$MAX_P99_MS" \
        RAMP_RATE="$RAMP_RATE" \
        A_STEPS="$A_STEPS" B_STEPS="$B_STEPS" C_STEPS="$C_STEPS" \
        PROFILE_SUBSCRIBERS="$PROFILE_SUBSCRIBERS" \
        FLOOR_A_STEPS="$FLOOR_A_STEPS" FLOOR_B_STEPS="$FLOOR_B_STEPS" \
        FLOOR_C_STEPS="$FLOOR_C_STEPS" \
        bash -c 'ip link set lo up && exec "$@"' bash "$0" "${quick[@]}" --out "$out" \
        --no-build "${rest[@]}"
fi

# ---------------------------------------------------------------------------------------
# Inside the namespace.
[[ "$(ip -o link show | wc -l)" -eq 1 ]] || { say "expected only lo in this namespace"; exit 1; }

record_machine() {
    python3 - "$out/machine.json" "$profile" "$SERVER_CPU" "$GEN_CPU" "$JANUS_EVENT_LOOPS" \
        "$root" "${steps[*]}" <<'EOF'
import json, os, subprocess, sys, datetime
path, profile, server_cpu, gen_cpu, loops, root, steps = sys.argv[1:]
def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=root).stdout.strip()
    except OSError:
        return ""
lscpu = run("lscpu")
field = lambda name: next((l.split(":", 1)[1].strip() for l in lscpu.splitlines()
                           if l.startswith(name + ":")), "")
janus = next((l for l in run("janus", "--version").splitlines() if l.startswith("Janus version")), "")
commit = run("git", "rev-parse", "--short", "HEAD")
# The results themselves do not make the code uncommitted.
if run("git", "status", "--porcelain", "--untracked-files=no", "--", ".",
       ":!loadtest/results", ":!loadtest/RESULTS.md"):
    commit += " (with uncommitted changes)"
date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
load = open("/proc/loadavg").read().split()[0]
# Piecewise runs add up in one folder: each invocation is listed, so a write-up that
# mixes them says so.
runs = []
if os.path.exists(path):
    try:
        runs = json.load(open(path)).get("runs", [])
    except (OSError, ValueError):
        runs = []
runs.append({"date": date, "git_commit": commit, "load_average_at_start": load,
             "steps": steps})
json.dump({
    "runs": runs,
    "date": date,
    "profile": profile,
    "git_commit": commit,
    "cpu_model": field("Model name"),
    "cpus": field("CPU(s)"),
    "hypervisor": field("Hypervisor vendor"),
    "kernel": run("uname", "-srm"),
    "rustc": run("rustc", "-V"),
    "janus": janus.replace("Janus version: ", ""),
    "pinning": f"server on CPU {server_cpu}, generator on CPU {gen_cpu} (taskset)",
    "janus_config": f"event_loops = {loops}, debug_level 3, VideoRoom + WebSockets only "
                    "(loadtest/janus/run-janus.sh)",
    # Other work on these two cores competes with the server and the generator: pinning
    # does not keep it out. Recorded so a busy run is not mistaken for a clean one.
    "load_average_at_start": load,
    "lscpu": lscpu,
}, open(path, "w"), indent=2)
EOF
}

wait_tcp() {  # port seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

gone() {  # pid: exited (a zombie counts: Janus is not our child once run-janus.sh detaches)
    [[ ! -r "/proc/$1/stat" ]] || [[ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" == Z ]]
}

stop_pid() {  # pid: TERM, then KILL after 10 s
    local pid="$1" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        gone "$pid" && { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Sets server_pid and server_url for target $1; logs to $2.
start_server() {
    case "$1" in
        switchyard)
            taskset -c "$SERVER_CPU" "$bin/switchyard" --bind 127.0.0.1:7880 --udp-port 7882 \
                >"$2" 2>&1 &
            server_pid=$!
            server_url="ws://127.0.0.1:7880/rtc"
            wait_tcp 7880 20 || { say "switchyard did not listen (log: $2)"; stop_pid "$server_pid"; return 1; }
            ;;
        janus)
            local vars
            vars="$(taskset -c "$SERVER_CPU" "$here/janus/run-janus.sh" --detach \
                --dir "$out/logs/janus-run" --port 8188 --event-loops "$JANUS_EVENT_LOOPS" \
                --debug-level 3 --lifetime 3600 2>"$2")" || { say "janus did not start (log: $2)"; return 1; }
            eval "$vars"
            server_pid="$JANUS_PID"
            server_url="$JANUS_URL"
            ;;
        udp-floor)
            taskset -c "$SERVER_CPU" "$bin/udp-floor" forward --listen 127.0.0.1:7990 \
                >"${2%.log}.stats.json" 2>"$2" &
            server_pid=$!
            server_url="127.0.0.1:7990"
            local i
            for ((i = 0; i < 100; i++)); do
                grep -q "forwarding on" "$2" 2>/dev/null && return 0
                sleep 0.1
            done
            say "udp-floor did not start (log: $2)"; stop_pid "$server_pid"; return 1
            ;;
    esac
}

# The verdict on a report: "ok", "generator-bound ..." or what is past the limits
# (summarize.py's rules, so the steps and the write-up agree).
verdict() {
    python3 - "$1" "$here" <<'EOF'
import json, os, sys
sys.path.insert(0, sys.argv[2])
import summarize
meta_path = sys.argv[1][: -len(".json")] + ".meta.json"
meta = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
r = summarize.load_report(sys.argv[1], meta)
why = summarize.over_limits(r)
if r["generator_bound"]:
    print(f"generator-bound ({summarize.generator_load(r)})")
elif why:
    print("; ".join(why))
else:
    print("ok")
EOF
}

# Switchyard's /metrics (stdout), or nothing.
scrape_metrics() {
    python3 -c 'import sys, urllib.request
try:
    sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:7880/metrics", timeout=5).read().decode())
except OSError as e:
    sys.stderr.write(f"scraping /metrics: {e}\n")'
}

have_generator() {
    "$bin/switchyard-loadtest" --help 2>/dev/null | grep -q -- '--target'
}

# One step: target, scenario, step value; returns 0 to go on, 1 to stop stepping, 2 failed.
run_step() {
    local target="$1" scenario="$2" n="$3"
    local name; name="$target-$scenario-$(printf %05d "$n")"
    local report="$out/$name.json" log="$out/logs/$name"
    rm -f "$report" "$out/$name.failed" "$out/$name.meta.json"
    local cmd=() participants=0
    if [[ "$target" == udp-floor ]]; then
        case "$scenario" in
            # 1.5 Mbit/s of 1200-byte packets.
            a) cmd=(load --fanout "$n" --rate 156.25 --size 1200) ;;
            # What a meeting's subscriber is sent: per other publisher, Opus every 20 ms
            # (~100 bytes) and the medium layer (~500 kbit/s, 52 packets/s of 1200 bytes):
            # rooms x 10 publishers' streams through one sender, to 9 receivers, at the
            # mean size. Only forwarded streams: a lower bound for an SFU's work.
            b) cmd=(load --fanout 9 --rooms "$n" --rate "$((n * 10 * 102))" --size 661) ;;
            # Opus every 20 ms.
            c) cmd=(load --fanout "$n" --rate 50 --size 100) ;;
        esac
    else
        if [[ ! -x "$bin/switchyard-loadtest" ]]; then
            echo "$bin/switchyard-loadtest is not built (run the build step)" >"$out/$name.failed"
            say "$name: switchyard-loadtest is not built; skipped"
            return 2
        fi
        if ! have_generator; then
            echo "switchyard-loadtest has no --target yet: the generator (branch loadgen) is not merged" \
                >"$out/$name.failed"
            say "$name: no generator yet (switchyard-loadtest lacks --target); skipped"
            return 2
        fi
        case "$scenario" in
            a) participants=$((n + 1))
               cmd=(--rooms 1 --publishers 1 --subscribers "$n" --video-bitrate 1500000) ;;
            b) participants=$((n * 10))
               cmd=(--rooms "$n" --publishers 10 --subscribers 0 --video-bitrate 1500000 --simulcast
                    --layer medium) ;;
            c) participants=$((n + 1))
               cmd=(--rooms 1 --publishers 1 --subscribers "$n" --audio-only) ;;
        esac
    fi

    start_server "$target" "$log.server.log" || {
        echo "the server did not start; see logs/$name.server.log" >"$out/$name.failed"; return 2; }
    # The ramp at RAMP_RATE joins a second, the window, and a margin for joining and leaving.
    local rc=0 budget=$(( participants / RAMP_RATE + ${DURATION%.*} + 120 ))
    if [[ "$target" == udp-floor ]]; then
        taskset -c "$GEN_CPU" timeout "$budget" "$bin/udp-floor" "${cmd[@]}" --to "$server_url" \
            --duration "$DURATION" --server-pid "$server_pid" --scenario "$scenario" \
            --json "$report" >/dev/null 2>"$log.load.log" || rc=$?
    else
        local started_unix_s; started_unix_s="$(date +%s.%N)"
        # bash's `time` reports what the generator's report does not: its own CPU (timeout
        # reaps it, so its usage reaches us as a grandchild's).
        (
            TIMEFORMAT='%3R %3U %3S'
            { time taskset -c "$GEN_CPU" timeout "$budget" "$bin/switchyard-loadtest" \
                --target "$target" --url "$server_url" "${cmd[@]}" --duration "${DURATION}s" \
                --ramp "$RAMP_RATE" --json "$report" --server-pid "$server_pid" --max-loss 1 \
                --max-p99-latency "$MAX_P99_MS" >"$log.load.log" 2>&1; } 2>"$log.time"
        ) &
        local runner=$!
        local scraper=""
        if [[ "$target" == switchyard ]]; then
            # The server's own forwarding latency (receipt to write, its /metrics histogram),
            # over the window: scraped once everyone has joined and again at the end.
            ( sleep "$(( participants / RAMP_RATE + 2 ))"; scrape_metrics >"$log.metrics-start" ) &
            scraper=$!
        fi
        # The window's CPU, the generator's and the server's (cpu_sampler.py says why); on
        # the generator's core, so the server's stays the server's.
        taskset -c "$GEN_CPU" python3 "$here/cpu_sampler.py" "$log.cpu" "$runner" "$server_pid" &
        local sampler=$!
        wait "$runner" || rc=$?
        wait "$sampler" || true
        if [[ -n "$scraper" ]]; then
            kill "$scraper" 2>/dev/null || true
            wait "$scraper" 2>/dev/null || true
            scrape_metrics >"$log.metrics-end" || true
        fi
        local real user sys
        read -r real user sys <"$log.time" || true
        python3 - "$out/$name.meta.json" "$scenario" "$rc" "${real:-}" "${user:-}" "${sys:-}" \
            "$started_unix_s" "$log.cpu" "$log.metrics-start" "$log.metrics-end" "$here" <<'EOF'
import json, sys
path, scenario, rc, real, user, sys_, started, samples_path, m0, m1, here = sys.argv[1:]
sys.path.insert(0, here)
import summarize
num = lambda v: float(v) if v else None
cpu = num(user) + num(sys_) if user and sys_ else None
samples, tps = [], None
try:
    for line in open(samples_path):
        if line.startswith("# ticks_per_second"):
            tps = int(line.split()[-1])
        elif line.strip():
            t, gen, srv = line.split()
            samples.append([float(t), int(gen), int(srv)])
except OSError:
    pass
json.dump({"scenario": scenario, "exit_code": int(rc), "generator_cpu_seconds": cpu,
           "generator_wall_seconds": num(real), "started_unix_s": num(started),
           "ticks_per_second": tps, "cpu_samples": samples,
           "forwarding_latency": summarize.latency_histogram_delta(m0, m1)},
          open(path, "w"))
EOF
    fi
    stop_pid "$server_pid"
    if [[ ! -s "$report" ]]; then
        { echo "no report (exit $rc$([[ $rc -eq 124 ]] && echo ', timed out after '"$budget"' s'))"
          tail -n 5 "$log.load.log" 2>/dev/null; } >"$out/$name.failed"
        say "$name: FAILED (exit $rc), see logs/$name.load.log"
        return 2
    fi
    local v; v="$(verdict "$report")"
    say "$name: $v"
    [[ "$v" == ok ]] && return 0
    return 1
}

# perf on Switchyard while one 1.5 Mbit/s publisher sends to $PROFILE_SUBSCRIBERS subscribers:
# its CPU by function, callees included, for RESULTS.md (profile-a-N.txt).
profile_switchyard() {
    local n="$PROFILE_SUBSCRIBERS" log="$out/logs/profile-a-$PROFILE_SUBSCRIBERS"
    local text="$out/profile-a-$n.txt"
    rm -f "$text"
    if ! command -v perf >/dev/null 2>&1; then
        say "profile: no perf here"; failures=$((failures + 1)); return
    fi
    start_server switchyard "$log.server.log" || { failures=$((failures + 1)); return; }
    local ramp=$(( (n + 1) / RAMP_RATE + 3 ))
    taskset -c "$GEN_CPU" timeout "$(( ramp + 140 ))" "$bin/switchyard-loadtest" \
        --url "$server_url" --rooms 1 --publishers 1 --subscribers "$n" \
        --video-bitrate 1500000 --duration 20s --ramp "$RAMP_RATE" \
        --json "$log.report.json" >"$log.load.log" 2>&1 &
    local gen=$!
    sleep "$ramp"
    # DWARF call graphs: release builds keep no frame pointers.
    taskset -c "$GEN_CPU" perf record -q -F 499 --call-graph dwarf,16384 -p "$server_pid" \
        -o "$log.perf.data" -- sleep 10 >/dev/null 2>"$log.perf.log" || true
    wait "$gen" || true
    stop_pid "$server_pid"
    if [[ ! -s "$log.perf.data" ]]; then
        say "profile: perf recorded nothing (see $log.perf.log)"; failures=$((failures + 1)); return
    fi
    {
        echo "# Switchyard, scenario (a): 1 publisher (1.5 Mbit/s) to $n subscribers, 10 s at 499 Hz."
        echo "# Share of the server's CPU samples in each function, callees included (perf"
        echo "# report --children); the runtime's own frames (tokio, threads) are left out."
        perf report -i "$log.perf.data" --children --sort symbol --stdio -g none \
            --percent-limit 1.5 2>/dev/null \
            | grep -E '^ +[0-9.]+%' \
            | grep -vE 'tokio::runtime|std::sys|start_thread|clone3|thread_start|FnOnce|__rust_begin|\[unknown\]|0xffff|PollFn|inlined' \
            | sed -E 's/ +$//; s/ +- +-$//' | head -45 || true  # head closes the pipe early
    } >"$text"
    say "profile: wrote $text"
}

# Starts the server pinned, checks it listens on its pinned CPU, stops it.
check_server() {  # target
    local log="$out/logs/$1-check.server.log" cpus port
    start_server "$1" "$log" || { failures=$((failures + 1)); return; }
    cpus="$(taskset -pc "$server_pid" | sed 's/.*: //')"
    port="${server_url##*:}"; port="${port%%/*}"
    if [[ "$cpus" != "$SERVER_CPU" ]] || ! wait_tcp "$port" 5; then
        say "$1-check: FAILED (pid $server_pid on CPUs $cpus, port $port)"
        failures=$((failures + 1))
    fi
    stop_pid "$server_pid"
    if gone "$server_pid"; then
        say "$1-check: pid $server_pid on CPU $cpus listened on $server_url and stopped"
    else
        say "$1-check: FAILED: pid $server_pid still running"; failures=$((failures + 1))
    fi
}

run_scenario() {  # target scenario steps...
    local target="$1" scenario="$2" n rc
    shift 2
    say "== $target, scenario $scenario, steps: $*"
    for n in "$@"; do
        rc=0
        run_step "$target" "$scenario" "$n" || rc=$?
        case "$rc" in
            0) ;;
            1) break ;;
            *) failures=$((failures + 1)); break ;;
        esac
    done
}

record_machine
load1="$(cut -d' ' -f1 /proc/loadavg)"
if python3 -c "import sys; sys.exit(0 if float('$load1') > 0.5 else 1)"; then
    say "WARNING: load average $load1 before starting: other work competes for these cores"
fi
started=$SECONDS
for step in "${steps[@]}"; do
    case "$step" in
        switchyard-check|janus-check) check_server "${step%-check}" ;;
        profile) profile_switchyard ;;
        floor-a) run_scenario udp-floor a $FLOOR_A_STEPS ;;
        floor-b) run_scenario udp-floor b $FLOOR_B_STEPS ;;
        floor-c) run_scenario udp-floor c $FLOOR_C_STEPS ;;
        switchyard-a|janus-a) run_scenario "${step%-a}" a $A_STEPS ;;
        switchyard-b|janus-b) run_scenario "${step%-b}" b $B_STEPS ;;
        switchyard-c|janus-c) run_scenario "${step%-c}" c $C_STEPS ;;
        summary)
            # The default results folder feeds loadtest/RESULTS.md; another one its own.
            results_md="$out/RESULTS.md"
            [[ "$out" == "$here/results" ]] && results_md="$here/RESULTS.md"
            python3 "$here/summarize.py" "$out" --out "$results_md" || failures=$((failures + 1)) ;;
    esac
done
say "done in $((SECONDS - started)) s; $failures step(s) failed"
[[ "$failures" -eq 0 ]]
