#!/usr/bin/env python3
"""Builds loadtest/RESULTS.md from the benchmark's JSON reports (REPORT-FORMAT.md).

Usage: summarize.py RESULTS_DIR|normalized.json [--out FILE|-]

RESULTS_DIR holds one report per run (`*.json`, as bench.sh names them), `machine.json`
(what bench.sh recorded about the machine), `*.meta.json` (what bench.sh knows about a run
that the report does not say: scenario, exit status, the generator's own CPU) and
`*.failed` notes for runs that did not produce a report. Reports come in two shapes:
REPORT-FORMAT.md's (udp-floor writes it) and switchyard-loadtest's own (its `--json`),
which `normalize_generator` maps onto the first. The output is Markdown: the machine, the method, one table per scenario,
the ratios Switchyard/Janus and Switchyard/floor, and where each target stopped.

Reading a folder also writes RESULTS_DIR/normalized.json: every report in REPORT-FORMAT.md's
form (the generator's per-receiver breakdown left out), the machine and the failures, in
one small file that is committed in place of the raw reports (hundreds of KiB each) and
that summarize.py reads back the same way.

A report marked `"example": true` is hand-written: the output then says so at the top, and
writing it to RESULTS.md is refused, so an example can never pass for a result.

Python 3 standard library only.
"""

import argparse
import json
import os
import sys

FORMAT = "switchyard-loadtest-report/1"
REQUIRED = [
    "format", "target", "scenario", "started_unix_s", "window_seconds", "participants",
    "join_time_ms", "expected", "received", "loss_pct", "latency_ms", "jitter_ms",
    "freezes_per_min", "bitrate_per_subscriber_bps", "forwarded_packets",
    "server_cpu_seconds", "server_cpu_us_per_packet", "server_peak_rss_bytes",
    "server_rss_per_participant_bytes", "generator_cpu_seconds", "generator_cpu_pct",
    "generator_bound", "pass", "fail_reasons", "errors", "by_kind",
]
TARGETS = ["switchyard", "janus", "udp-floor"]
TARGET_NAMES = {"switchyard": "Switchyard", "janus": "Janus", "udp-floor": "UDP floor"}
# Loss or p99 latency above these ends a target's steps (bench.sh uses the same). Latency
# too, because a saturated server with large socket buffers queues rather than drops
# within a short window.
MAX_LOSS_PCT = 1.0
MAX_P99_MS = float(os.environ.get("MAX_P99_MS", "100"))
# Said under a scenario's title: where the runs differ from what the scenario asks.
SCENARIO_NOTES = {
    "b": ("Every receiver asks for each publisher's medium layer (about 750 kbit/s here: "
          "half of the 1.5 Mbit/s full layer; `--layer medium`, Switchyard's "
          "`update_subscription`, Janus's `substream`). The floor forwards a medium layer's "
          "packet rate at about 500 kbit/s plus audio: CPU per packet compares across the "
          "three; bitrates do not."),
}
SCENARIOS = {
    "a": ("(a) one 1.5 Mbit/s video publisher to N subscribers", "subscribers"),
    "b": ("(b) ten-person meetings: everyone publishes audio + simulcast video and "
          "receives the nine others", "rooms"),
    "c": ("(c) one audio publisher to N subscribers", "subscribers"),
}


class ReportError(Exception):
    pass


# The targets for Switchyard, checked against the figures in the Targets section.
TARGET_CPU_VS_JANUS = 0.5  # CPU per forwarded video packet, at most half of Janus's
TARGET_CPU_VS_FLOOR = 3.0  # and within 3x of the raw UDP floor
TARGET_SUBSCRIBERS = 500  # scenario (a) on one core with < 1% loss
TARGET_FORWARDING_P99_MS = 1.0  # inside the server, while its core is at 70% or less
TARGET_FORWARDING_MAX_CPU_PCT = 70.0
TARGET_RSS_PER_PARTICIPANT_BYTES = 300_000  # per subscribed participant, audio + video

LATENCY_METRIC = "switchyard_forwarding_latency_seconds_bucket"


def parse_histogram(text, metric=LATENCY_METRIC):
    """Cumulative bucket counts of a Prometheus text histogram, summed over its label sets
    other than `le`: {le: count} (le as float, +Inf included)."""
    buckets = {}
    for line in text.splitlines():
        if not line.startswith(metric + "{"):
            continue
        labels, _, value = line.rpartition("} ")
        le = next((part.split("=", 1)[1].strip('"') for part in labels.split("{", 1)[1].split(",")
                   if part.startswith("le=")), None)
        if le is None:
            continue
        bound = float("inf") if le == "+Inf" else float(le)
        buckets[bound] = buckets.get(bound, 0.0) + float(value)
    return buckets


def latency_histogram_delta(start_path, end_path):
    """The forwarding-latency histogram over a window, from two /metrics scrapes: [[le,
    cumulative count], ...] in seconds, or None when either scrape is missing."""
    try:
        with open(start_path, encoding="utf-8") as f:
            start = parse_histogram(f.read())
        with open(end_path, encoding="utf-8") as f:
            end = parse_histogram(f.read())
    except OSError:
        return None
    if not end:
        return None
    return [[le, end[le] - start.get(le, 0.0)] for le in sorted(end)]


def histogram_quantile(buckets, q):
    """The q-quantile of cumulative [[le, count], ...] buckets, interpolated linearly within
    its bucket (Prometheus's histogram_quantile); None without observations. Above the last
    finite bound it is that bound (the histogram cannot say more)."""
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return lower_bound
            if count == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return lower_bound


# Late frames above this share mean the generator could not keep its own pace: the run then
# measured the generator (switchyard-loadtest's own rule of thumb is "a few %").
MAX_LATE_FRAMES_PCT = 5.0
# Generator CPU at or above this share of its one core: generator-bound.
GENERATOR_BOUND_PCT = 90.0


def guess_scenario(raw):
    if raw.get("audio_only"):
        return "c"
    return "b" if raw.get("simulcast") else "a"


def by_kind(receivers):
    """Expected/received/loss per media kind, from the per-stream details."""
    kinds = {}
    for receiver in receivers or []:
        for stream in receiver.get("streams") or []:
            kind = "audio" if stream["stream"] == "audio" else "video"
            k = kinds.setdefault(kind, {"expected": 0, "received": 0})
            k["expected"] += stream["expected"]
            k["received"] += stream["received"]
    out = {"audio": None, "video": None}
    for kind, k in kinds.items():
        lost = k["expected"] - k["received"]
        k["loss_pct"] = 100.0 * lost / k["expected"] if k["expected"] else 0.0
        # Per-stream percentiles cannot be pooled into one; the report has the pooled ones.
        k["latency_ms"] = None
        out[kind] = k
    return out


def window_cpu(meta, raw):
    """From bench.sh's CPU samples (cpu_sampler.py), the generator's and the server's CPU
    over the measurement window alone: from 1 s after the last join started to the end of
    `duration_s`, counted from the generator's launch (its set-up before the first join is
    a fraction of a second, inside the margin). None without samples."""
    samples, tps = meta.get("cpu_samples"), meta.get("ticks_per_second")
    if not samples or not tps:
        return None
    start = raw["ramp_s"] + 1.0
    end = raw["ramp_s"] + raw["duration_s"]
    inside = [s for s in samples if start <= s[0] <= end]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    (t0, g0, s0), (t1, g1, s1) = inside[0], inside[-1]
    seconds = t1 - t0
    server_s = (s1 - s0) / tps if s0 >= 0 and s1 >= 0 else None
    # Packets the receivers got in that time: each receiver's rate over the window. A
    # receiver's rate is all it received over its longest stream's span (first packet to
    # last): per stream would not do, since a simulcast layer switch starts a new stream
    # whose few packets over a few milliseconds make a huge rate.
    rate = 0.0
    for r in raw.get("receivers") or []:
        streams = r.get("streams") or []
        span = max((st.get("seconds") or 0.0 for st in streams), default=0.0)
        if span > 0:
            rate += sum(st["received"] for st in streams) / span
    packets = rate * seconds
    return {
        "seconds": seconds,
        "generator_pct": 100.0 * (g1 - g0) / tps / seconds,
        "server_s": server_s,
        "server_pct": None if server_s is None else 100.0 * server_s / seconds,
        "server_us_per_packet": (None if server_s is None or packets <= 0
                                 else server_s * 1e6 / packets),
    }


def normalize_generator(raw, meta, path):
    """switchyard-loadtest's own report (loadtest/src/report.rs) in REPORT-FORMAT.md's terms.

    Differences the write-up states: the server's CPU (and so CPU per packet) covers the
    ramp too, joins and DTLS handshakes included (udp-floor's covers the window); join time
    is to the first media packet; bitrate per subscriber is the median."""
    try:
        packets, latency, server = raw["packets"], raw["latency"], raw.get("server") or {}
        participants, generator = raw["participants"], raw["generator"]
    except KeyError as e:
        raise ReportError(f"{path}: not a switchyard-loadtest report (no {e})") from e
    audio_only = bool(raw.get("audio_only"))
    gen_cpu = meta.get("generator_cpu_seconds")
    gen_wall = meta.get("generator_wall_seconds")
    gen_pct = 100.0 * gen_cpu / gen_wall if gen_cpu is not None and gen_wall else None
    window = window_cpu(meta, raw)
    span = "run"
    if window:
        # The window's figures, where the samples give them: the ramp's joins and DTLS
        # handshakes would otherwise dilute the generator's and the server's CPU share and
        # swell the server's CPU per packet.
        span = "window"
        gen_pct = window["generator_pct"]
    late = generator.get("late_frames_pct") or 0.0
    bound = (gen_pct is not None and gen_pct >= GENERATOR_BOUND_PCT) or late > MAX_LATE_FRAMES_PCT
    exit_code = meta.get("exit_code")
    reasons = []
    if exit_code == 3:
        reasons.append("a --max-* threshold was missed")
    not_joined = participants["total"] - participants["joined"]
    if participants.get("failed"):
        first = (raw.get("failures") or [{}])[0]
        reasons.append(f"{participants['failed']} participant(s) failed"
                       + (f" ({first.get('identity')}: {first.get('reason')})" if first else ""))
    first_media = raw.get("first_media_ms") or {}
    kbps = (raw.get("receive_kbps") or {}).get("p50")
    mib = lambda v: None if v is None else int(v * 2**20)
    return {
        "format": FORMAT,
        "source_format": "switchyard-loadtest",
        "example": raw.get("example", False),
        "target": raw["target"],
        "scenario": {
            "name": meta.get("scenario") or guess_scenario(raw),
            "rooms": raw["rooms"],
            "publishers": raw["publishers_per_room"],
            "subscribers": raw["subscribers_per_room"],
            "video_bitrate_bps": None if audio_only else raw.get("video_bitrate_bps"),
            "simulcast": bool(raw.get("simulcast")),
            "audio_only": audio_only,
            "duration_s": raw["duration_s"],
            "ramp_s": raw["ramp_s"],
        },
        "started_unix_s": meta.get("started_unix_s"),
        "window_seconds": raw["duration_s"],
        "participants": participants["total"],
        "join_time_ms": {"p50": first_media.get("p50"), "p99": first_media.get("p99")},
        "expected": packets["expected"],
        "received": packets["received"],
        "duplicates": packets.get("duplicates"),
        "loss_pct": packets["loss_pct"],
        "latency_ms": {"p50": latency.get("p50_ms"), "p99": latency.get("p99_ms"),
                       "p999": latency.get("p999_ms")},
        "jitter_ms": (raw.get("jitter") or {}).get("mean_ms"),
        "freezes_per_min": None if audio_only else (raw.get("freezes") or {}).get("per_minute"),
        "bitrate_per_subscriber_bps": None if kbps is None else kbps * 1000.0,
        "forwarded_packets": packets["received"],
        "server_cpu_span": span,
        "server_cpu_seconds": window["server_s"] if window else server.get("cpu_s"),
        "server_cpu_pct": window["server_pct"] if window else server.get("cpu_pct"),
        "server_cpu_us_per_packet": (window["server_us_per_packet"] if window
                                     else server.get("cpu_us_per_packet")),
        "server_cpu_us_per_packet_run": server.get("cpu_us_per_packet"),
        "server_peak_rss_bytes": mib(server.get("vm_hwm_mib")),
        "server_rss_per_participant_bytes": (None if server.get("rss_per_participant_kib") is None
                                             else int(server["rss_per_participant_kib"] * 1024)),
        "server_forwarding_p99_ms": forwarding_p99_ms(meta.get("forwarding_latency")),
        "generator_cpu_seconds": gen_cpu,
        "generator_cpu_pct": gen_pct,
        "generator_late_frames_pct": late,
        "generator_bound": bound,
        "pass": None if exit_code is None else exit_code == 0,
        "fail_reasons": reasons,
        "errors": {"join_failures": not_joined,
                   "other_failures": max(0, participants.get("failed", 0) - not_joined)},
        "by_kind": by_kind(raw.get("receivers")),
    }


def forwarding_p99_ms(buckets):
    p99 = histogram_quantile(buckets, 0.99)
    return None if p99 is None else p99 * 1000.0


def load_report(path, meta=None):
    with open(path, encoding="utf-8") as f:
        try:
            report = json.load(f)
        except json.JSONDecodeError as e:
            raise ReportError(f"{path}: not JSON ({e})") from e
    if "format" not in report:
        report = normalize_generator(report, meta or {}, path)
    if report.get("format") != FORMAT:
        raise ReportError(f"{path}: format is {report.get('format')!r}, expected {FORMAT!r}")
    missing = [k for k in REQUIRED if k not in report]
    if missing:
        raise ReportError(f"{path}: missing {', '.join(missing)} (see REPORT-FORMAT.md)")
    if report["target"] not in TARGETS:
        raise ReportError(f"{path}: unknown target {report['target']!r}")
    report["_file"] = os.path.basename(path)
    return report


def load_dir(directory):
    reports, failures, machine = [], [], {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name == NORMALIZED:
            continue
        if name == "machine.json":
            with open(path, encoding="utf-8") as f:
                machine = {**json.load(f), **{k: v for k, v in machine.items() if k == "profiles"}}
        elif name.startswith("profile-") and name.endswith(".txt"):
            with open(path, encoding="utf-8") as f:
                machine.setdefault("profiles", {})[name[len("profile-"):-len(".txt")]] = f.read()
        elif name.endswith(".meta.json"):
            continue
        elif name.endswith(".json"):
            meta_path = path[: -len(".json")] + ".meta.json"
            meta = {}
            if os.path.exists(meta_path):
                with open(meta_path, encoding="utf-8") as f:
                    meta = json.load(f)
            reports.append(load_report(path, meta))
        elif name.endswith(".failed"):
            with open(path, encoding="utf-8") as f:
                failures.append((name[: -len(".failed")], f.read().strip()))
    return reports, failures, machine


NORMALIZED = "normalized.json"


def load_normalized(path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    reports = data.get("reports") or []
    for r in reports:
        missing = [k for k in REQUIRED if k not in r]
        if r.get("format") != FORMAT or missing:
            raise ReportError(f"{path}: {r.get('_file')}: not a {FORMAT} report "
                              f"(missing {', '.join(missing) or 'format'})")
    failures = [tuple(x) for x in data.get("failures") or []]
    return reports, failures, data.get("machine") or {}


def write_normalized(path, reports, failures, machine):
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"format": FORMAT, "machine": machine, "failures": failures,
                   "reports": reports}, f, indent=1)


def step_of(report):
    """The value a scenario steps: subscribers per room for (a) and (c), rooms for (b)."""
    scenario = report["scenario"]
    key = SCENARIOS.get(scenario.get("name"), (None, "subscribers"))[1]
    return int(scenario.get(key) or 0)


def fmt(value, digits=1, scale=1.0):
    if value is None:
        return "–"
    return f"{value * scale:,.{digits}f}"


def over_limits(r):
    """Why a report is past the limits (empty if it is not)."""
    why = []
    if r["loss_pct"] > MAX_LOSS_PCT:
        why.append(f"loss {fmt(r['loss_pct'], 2)}% > {MAX_LOSS_PCT:g}%")
    p99 = (r["latency_ms"] or {}).get("p99")
    if p99 is not None and p99 > MAX_P99_MS:
        why.append(f"latency p99 {fmt(p99, 1)} ms > {MAX_P99_MS:g} ms")
    # The generator's own verdict, for what the limits above do not cover (failed joins).
    if r["pass"] is False and not why:
        why.extend(r["fail_reasons"] or ["the generator reported a failure"])
    return why


def server_cpu_pct(r):
    if r.get("server_cpu_pct") is not None:
        return r["server_cpu_pct"]
    if r["server_cpu_seconds"] is None or not r["window_seconds"]:
        return None
    return 100.0 * r["server_cpu_seconds"] / r["window_seconds"]


def generator_load(r):
    parts = []
    if r.get("generator_cpu_pct") is not None:
        parts.append(f"generator at {fmt(r['generator_cpu_pct'], 0)}% of its core")
    if r.get("generator_late_frames_pct"):
        parts.append(f"{fmt(r['generator_late_frames_pct'], 1)}% of its frames late")
    return ", ".join(parts) or "generator saturated"


def capacity(rows):
    """The largest step a target held (within the loss and latency limits, pass not
    false), why its steps ended, and whether that end was the server's limit (False: the
    generator's, or the steps ran out).

    A step where the generator was busy (90% of its core or more) still counts as held
    when everything arrived within the limits and the publishers sent their frames on
    time: a saturated generator can only add loss and latency, never take work off the
    server. The steps end there all the same (a heavier step measures the generator)."""
    held, ended, limit = None, "not stopped within the steps run", False
    for r in sorted(rows, key=step_of):
        if r["generator_bound"]:
            on_time = (r.get("generator_late_frames_pct") or 0.0) <= MAX_LATE_FRAMES_PCT
            if on_time and not over_limits(r):
                held = step_of(r)
                server = server_cpu_pct(r)
                if server is not None and server >= 95.0:
                    ended = (f"ended there: the generator was at its limit ({generator_load(r)}), "
                             f"with the server at {fmt(server, 0)}% of its core too: both saturated")
                    limit = True
                else:
                    ended = (f"ended there: the generator was at its limit ({generator_load(r)}), "
                             f"so the server's limit is above what was measured")
                break
            server = server_cpu_pct(r)
            if server is not None and server >= 95.0:
                ended = (f"generator-bound at {step_of(r)} ({generator_load(r)}), with the "
                         f"server at {fmt(server, 0)}% of its core too: both saturated")
            else:
                ended = (f"generator-bound at {step_of(r)} ({generator_load(r)}): the "
                         f"server's limit is above what was measured")
            break
        why = over_limits(r)
        if why:
            ended, limit = f"stopped at {step_of(r)}: {'; '.join(why)}", True
            break
        held = step_of(r)
    return held, ended, limit


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def render(reports, failures, machine):
    out = []
    examples = [r["_file"] for r in reports if r.get("example")]
    if examples:
        out.append("> **EXAMPLE DATA, NOT A RESULT.** Built from hand-written example reports "
                   f"({', '.join(examples)}); no figure below was measured.\n")
    out.append("# Load-test results: Switchyard, Janus and the UDP floor\n")
    out.append("Generated by `loadtest/bench.sh` through `loadtest/summarize.py` from the "
               "reports in `loadtest/results/` (format: `loadtest/REPORT-FORMAT.md`; "
               "`results/normalized.json` holds them all, `summarize.py "
               "loadtest/results/normalized.json` rebuilds this page). Do not edit by hand: "
               "run the benchmark again.\n")

    out.append("## Machine\n")
    if machine:
        for key, label in [
            ("date", "Run"), ("profile", "Profile"), ("git_commit", "Commit"),
            ("cpu_model", "CPU"), ("cpus", "CPUs"), ("hypervisor", "Hypervisor"),
            ("kernel", "Kernel"), ("rustc", "rustc"), ("janus", "Janus"),
            ("pinning", "Pinning"), ("janus_config", "Janus config"),
            ("load_average_at_start", "Load average at start"),
        ]:
            if machine.get(key):
                out.append(f"- {label}: {machine[key]}")
        runs = machine.get("runs") or []
        if runs:
            # The commands that produced these figures, one per invocation (bench.sh records
            # its steps expanded, so each reruns as written).
            quick = " --quick" if machine.get("profile") == "quick" else ""
            out.append("- Invocations of bench.sh whose reports are here:")
            for run in runs:
                out.append(f"  - {run.get('date')} at {run.get('git_commit')}, load average "
                           f"{run.get('load_average_at_start')}: "
                           f"`loadtest/bench.sh{quick} {run.get('steps')}`")
        loads = [machine.get("load_average_at_start")] + [r.get("load_average_at_start")
                                                           for r in runs]
        try:
            busy = max(float(x or 0) for x in loads) > 0.5
        except ValueError:
            busy = False
        if busy:
            out.append("- **Other work was running on these cores when a run started** "
                       "(load average above 0.5): taskset keeps the server and the generator "
                       "apart, not other processes out, so latency and loss here are "
                       "pessimistic; CPU per packet (time actually consumed) is less affected.")
        if machine.get("lscpu"):
            out.append("\n<details><summary>lscpu</summary>\n\n```\n"
                       + machine["lscpu"].rstrip() + "\n```\n</details>")
    else:
        out.append("(no machine.json: the machine was not recorded)")
    out.append("")

    out.append("## Method\n")
    out.append(
        "Everything runs inside `unshare -n` (loopback only) on one machine: the server under "
        "test pinned to one core (`taskset -c 0`), the load generator to the other "
        "(`taskset -c 1`). Each step starts a fresh server, ramps the participants in, "
        "measures a window, and stops the server. A target's steps end at the first step "
        f"with more than {MAX_LOSS_PCT:g}% loss or a p99 latency above {MAX_P99_MS:g} ms (a "
        "saturated server with large socket buffers queues before it drops), or where the "
        "generator used 90% or more of its core (then the generator, not the server, was "
        "the limit, and the table says so). Server CPU % is of its one core over the "
        "window (the drain second included, so a saturated server shows a little over "
        "100). CPU per packet is the server's user + system CPU over the window divided by "
        "the packet copies the subscribers received. On loopback the sender's system call "
        "also runs the receiver's network stack, so every server is charged for delivering "
        "its copies: the same for all three, which keeps the ratios fair. The UDP floor is "
        "`udp-floor`: recvmmsg/sendmmsg fan-out with no WebRTC, no SRTP, no RTCP. For "
        "Switchyard and Janus (switchyard-loadtest's reports), bench.sh samples the server's "
        "and the generator's CPU every half second (cpu_sampler.py): their CPU % and the "
        "server's CPU per packet are over the window (from 1 s after the last join to the "
        "end), the packets in it estimated from each stream's rate; where no samples exist "
        "they span the whole run, ramp included (the report says which: "
        "`server_cpu_span`). Join time is to the first media packet; kbit/s per subscriber "
        "is the median; the generator counts as saturated at 90% of its core or above "
        f"{MAX_LATE_FRAMES_PCT:g}% late frames. Latency in the tables is one-way, generator "
        "to generator. Publishers pace their video as a browser does (libwebrtc's pacer: up "
        "to 2.5 times the bitrate, `--pacing`), so a frame's packets arrive spread over "
        "about 13 ms rather than back to back, for every server alike. "
        "Switchyard's forwarding latency inside the server (from reading a "
        "packet to writing each copy: `switchyard_forwarding_latency_seconds`) comes from "
        "its /metrics, scraped when everyone has joined and at the end, and is used in the "
        "Targets section.\n")

    # Steps that left a .failed note instead of a report, by (target, scenario, step), from
    # bench.sh's names: <target>-<scenario>-<step>.
    failed_steps = {}
    for name, text in failures:
        target, _, rest = name.rpartition("-")
        target, _, scenario = target.rpartition("-")
        if target in TARGETS and rest.isdigit():
            failed_steps[(target, scenario, int(rest))] = text
    by_scenario = {}
    for r in reports:
        by_scenario.setdefault(r["scenario"].get("name", "?"), []).append(r)

    for name in sorted(by_scenario, key=lambda n: (n not in SCENARIOS, n)):
        rows = by_scenario[name]
        title, step_key = SCENARIOS.get(name, (f"Scenario {name}", "subscribers"))
        out.append(f"## {title}\n")
        if name in SCENARIO_NOTES:
            out.append(SCENARIO_NOTES[name] + "\n")
        out.append(f"| {step_key} | target | participants | loss % | latency p50 / p99 / p99.9 ms "
                   "| jitter ms | freezes/min | kbit/s per subscriber | server CPU % "
                   "| CPU µs/packet | peak RSS MiB | RSS/participant KiB | generator CPU % |")
        out.append("|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        order = {t: i for i, t in enumerate(TARGETS)}
        for r in sorted(rows, key=lambda r: (step_of(r), order[r["target"]])):
            lat = r["latency_ms"]
            gen = fmt(r["generator_cpu_pct"], 0) + (" **(bound)**" if r["generator_bound"] else "")
            out.append(
                f"| {step_of(r)} | {TARGET_NAMES[r['target']]} | {r['participants']} "
                f"| {fmt(r['loss_pct'], 2)} "
                f"| {fmt(lat.get('p50'), 2)} / {fmt(lat.get('p99'), 2)} / {fmt(lat.get('p999'), 2)} "
                f"| {fmt(r['jitter_ms'], 2)} | {fmt(r['freezes_per_min'], 2)} "
                f"| {fmt(r['bitrate_per_subscriber_bps'], 0, 1e-3)} "
                f"| {fmt(server_cpu_pct(r), 0)} | {fmt(r['server_cpu_us_per_packet'], 2)} "
                f"| {fmt(r['server_peak_rss_bytes'], 1, 1 / 2**20)} "
                f"| {fmt(r['server_rss_per_participant_bytes'], 0, 1 / 2**10)} | {gen} |")
        out.append("")

        # CPU per packet, step by step, where both sides of a ratio were measured.
        cpu = {}
        for r in rows:
            cpu.setdefault(step_of(r), {})[r["target"]] = r["server_cpu_us_per_packet"]
        ratio_rows = []
        for step in sorted(cpu):
            s, j, f = (cpu[step].get(t) for t in TARGETS)
            sj, sf, jf = ratio(s, j), ratio(s, f), ratio(j, f)
            if any(x is not None for x in (sj, sf, jf)):
                ratio_rows.append(f"| {step} | {fmt(sj, 2)} | {fmt(sf, 1)} | {fmt(jf, 1)} |")
        if ratio_rows:
            out.append("CPU per forwarded packet, as ratios (below 1: Switchyard spends less):\n")
            out.append(f"| {step_key} | Switchyard / Janus | Switchyard / floor | Janus / floor |")
            out.append("|---:|---:|---:|---:|")
            out.extend(ratio_rows)
            out.append("")

        out.append("Where each target stopped:\n")
        held_by = {}
        for target in TARGETS:
            mine = [r for r in rows if r["target"] == target]
            if not mine:
                continue
            held, ended, limit = capacity(mine)
            if ended.startswith("not stopped"):
                # A later step that left no report ended the steps, not the step list.
                lost = sorted(step for (t, sc, step), _ in failed_steps.items()
                              if t == target and sc == name and (held is None or step > held))
                if lost:
                    ended = f"the step at {lost[0]} produced no report (listed below)"
            held_by[target] = (held, limit)
            out.append(f"- {TARGET_NAMES[target]}: held {held if held is not None else 'no step'}"
                       f" {step_key} within the limits; {ended}.")
        (s_held, s_limit), (j_held, j_limit) = (held_by.get(t, (None, False))
                                                for t in ("switchyard", "janus"))
        if s_held and j_held and (s_limit or j_limit):
            # Only an end at the server's own limit bounds it; a target that did not reach
            # its limit held at least what it held.
            relation = "=" if s_limit and j_limit else ("≥" if j_limit else "≤")
            out.append(f"- Capacity Switchyard / Janus {relation} {fmt(s_held / j_held, 2)} "
                       "(largest steps held; the steps are coarse).")
        out.append("")

    out.extend(render_targets(reports))
    out.extend(render_profiles(machine.get("profiles") or {}))

    if failures:
        out.append("## Runs that produced no report\n")
        for name, text in failures:
            out.append(f"- `{name}`: {text.splitlines()[0] if text else '(no message)'}")
        out.append("")
    if not reports:
        out.append("No reports yet.\n")
    return "\n".join(out)


def span(values, digits, suffix=""):
    values = [v for v in values if v is not None]
    if not values:
        return None
    lo, hi = min(values), max(values)
    return (f"{fmt(lo, digits)}{suffix}" if fmt(lo, digits) == fmt(hi, digits)
            else f"{fmt(lo, digits)}–{fmt(hi, digits)}{suffix}")


def render_targets(reports):
    """Each of the issue's targets against this run's figures: met, missed by how much, or
    not measured (and why)."""
    mine = lambda target, scenario: sorted(
        (r for r in reports if r["target"] == target and r["scenario"].get("name") == scenario),
        key=step_of)
    sw_a, janus_a, floor_a = (mine(t, "a") for t in TARGETS)
    if not sw_a:
        return []
    rows = []

    def verdict(ok, measured):
        if not measured:
            return "not measured"
        return "**met**" if ok else "**missed**"

    # CPU per forwarded video packet against Janus and the floor, at the steps both ran.
    floor_at = {step_of(r): r["server_cpu_us_per_packet"] for r in floor_a}
    for other, limit, label in ((janus_a, TARGET_CPU_VS_JANUS, "Janus"),
                                (floor_a, TARGET_CPU_VS_FLOOR, "the UDP floor")):
        theirs = {step_of(r): r["server_cpu_us_per_packet"] for r in other}
        pairs = [(step_of(r), ratio(r["server_cpu_us_per_packet"], theirs.get(step_of(r))))
                 for r in sw_a if not r["generator_bound"]]
        pairs = [(step, x) for step, x in pairs if x is not None]
        ratios = [x for _, x in pairs]
        worst = max(ratios) if ratios else None
        by = "" if worst is None or worst <= limit else f"; {fmt(worst / limit, 2)}× the target"
        missed = [step for step, x in pairs if x > limit]
        if missed and len(missed) < len(pairs):
            by += (f"; missed at {', '.join(map(str, missed))}, met at "
                   f"{', '.join(str(step) for step, x in pairs if x <= limit)}")
        # Where the target asks for less than the kernel's own cost in the same run, no
        # server could meet it: say so rather than let it pass unremarked.
        below_floor = [step for step in missed
                       if floor_at.get(step) and theirs.get(step)
                       and limit * theirs[step] < floor_at[step]]
        if label == "Janus" and below_floor:
            by += (f"; at {', '.join(map(str, below_floor))}, {limit:g}× Janus's is below the "
                   f"UDP floor's own CPU per packet, which no server can go under")
        rows.append(f"| CPU per forwarded video packet ≤ {limit:g}× {label}'s (a) "
                    f"| Switchyard / {label.replace('the ', '')} = {span(ratios, 2) or '–'} "
                    f"over {len(ratios)} steps{by} "
                    f"| {verdict(worst is not None and worst <= limit, worst is not None)} |")

    # Scenario (a) capacity.
    held, ended, limit_reached = capacity(sw_a)
    measured = held is not None and (held >= TARGET_SUBSCRIBERS or limit_reached)
    note = f"held {held if held is not None else 'no step'}; {ended}"
    if not measured:
        note += f" (the run could not show {TARGET_SUBSCRIBERS})"
        # What the server's own load says, labelled as the estimate it is: its CPU grows
        # with the copies it sends, so the largest step held, scaled to a full core.
        last = next((r for r in reversed(sw_a) if step_of(r) == held), None)
        cpu = server_cpu_pct(last) if last else None
        if cpu:
            note += (f"; estimate, not a measurement: the server used {fmt(cpu, 0)}% of its "
                     f"core at {held}, so a full core at about {fmt(held * 100.0 / cpu, 0)}")
    rows.append(f"| ≥ {TARGET_SUBSCRIBERS} subscribers in (a) on one core with < 1% loss | {note} "
                f"| {verdict(held is not None and held >= TARGET_SUBSCRIBERS, measured)} |")

    # Forwarding latency inside the server, at steps whose server core was at most 70%.
    eligible = [r for r in reports if r["target"] == "switchyard"
                and r.get("server_forwarding_p99_ms") is not None
                and (server_cpu_pct(r) or 0) <= TARGET_FORWARDING_MAX_CPU_PCT]
    worst = max((r["server_forwarding_p99_ms"] for r in eligible), default=None)
    where = ", ".join(f"{r['scenario'].get('name')}-{step_of(r)}: {fmt(r['server_forwarding_p99_ms'], 2)}"
                      for r in eligible if r["server_forwarding_p99_ms"] > TARGET_FORWARDING_P99_MS)
    rows.append(f"| Forwarding latency inside the server p99 ≤ {TARGET_FORWARDING_P99_MS:g} ms "
                f"while its core is at ≤ {TARGET_FORWARDING_MAX_CPU_PCT:g}% "
                f"| worst p99 {fmt(worst, 2)} ms over {len(eligible)} steps"
                f"{f' (over the target: {where})' if where else ''} "
                f"| {verdict(worst is not None and worst <= TARGET_FORWARDING_P99_MS, worst is not None)} |")

    # Memory per subscribed participant: scenario (a)'s subscribers receive audio + video.
    # What one more subscriber costs is the slope of peak RSS over the steps (least squares):
    # RSS / participants at one step also spreads the publisher's packet caches and the
    # process's fixed cost over the subscribers, which dominates at small steps.
    points = [(r["participants"], r["server_peak_rss_bytes"]) for r in sw_a
              if r["server_peak_rss_bytes"] is not None and r["participants"]]
    slope = rss_slope(points)
    per_step = [r["server_rss_per_participant_bytes"] / 1000 for r in sw_a
                if r["server_rss_per_participant_bytes"] is not None]
    by = ("" if slope is None or slope <= TARGET_RSS_PER_PARTICIPANT_BYTES
          else f"; {fmt(slope / TARGET_RSS_PER_PARTICIPANT_BYTES, 2)}× the target")
    rows.append(f"| Resident memory ≤ {TARGET_RSS_PER_PARTICIPANT_BYTES / 1000:g} KB per subscribed "
                f"participant (a) | {fmt(slope, 0, 1e-3)} KB per added participant (peak RSS "
                f"over {len(points)} steps, least squares){by}; RSS / participants per step: "
                f"{span(per_step, 0, ' KB') or '–'} "
                f"| {verdict(slope is not None and slope <= TARGET_RSS_PER_PARTICIPANT_BYTES, slope is not None)} |")

    out = ["## Targets\n",
           "Switchyard against the targets it was built to meet, from the figures above (steps "
           "where the generator was the limit are left out of the CPU ratios).\n",
           "| target | this run | verdict |", "|---|---|---|"]
    out.extend(rows)
    out.append("")
    return out


def rss_slope(points):
    """Bytes of peak RSS per participant, the least-squares slope over (participants, bytes)
    points; None with fewer than two distinct participant counts."""
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx


def render_profiles(profiles):
    """Profiles `bench.sh profile` recorded (perf on the server), verbatim."""
    if not profiles:
        return []
    out = ["## Where Switchyard's time goes\n"]
    for name in sorted(profiles):
        out.append(f"`perf`, {name}:\n")
        out.append("```")
        out.append(profiles[name].rstrip())
        out.append("```\n")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir")
    parser.add_argument("--out", default=None,
                        help="output file (default: RESULTS.md next to this script; - for stdout)")
    args = parser.parse_args(argv)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
    from_dir = os.path.isdir(args.results_dir)
    try:
        if from_dir:
            reports, failures, machine = load_dir(args.results_dir)
        else:
            reports, failures, machine = load_normalized(args.results_dir)
    except ReportError as e:
        print(f"summarize.py: {e}", file=sys.stderr)
        return 2
    text = render(reports, failures, machine)
    if out == "-":
        sys.stdout.write(text + "\n")
        return 0
    if any(r.get("example") for r in reports):
        print("summarize.py: refusing to write example reports to a results file "
              "(use --out - to look at them)", file=sys.stderr)
        return 3
    with open(out, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    print(f"summarize.py: wrote {out} from {len(reports)} report(s)", file=sys.stderr)
    if from_dir:
        write_normalized(os.path.join(args.results_dir, NORMALIZED), reports, failures, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
