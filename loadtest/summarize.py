#!/usr/bin/env python3
"""Builds loadtest/RESULTS.md from the benchmark's JSON reports (REPORT-FORMAT.md).

Usage: summarize.py RESULTS_DIR [--out FILE|-]

RESULTS_DIR holds one report per run (`*.json`, as bench.sh names them), `machine.json`
(what bench.sh recorded about the machine), `*.meta.json` (what bench.sh knows about a run
that the report does not say: scenario, exit status, the generator's own CPU) and
`*.failed` notes for runs that did not produce a report. Reports come in two shapes:
REPORT-FORMAT.md's (udp-floor writes it) and switchyard-loadtest's own (its `--json`),
which `normalize_generator` maps onto the first. The output is Markdown: the machine, the method, one table per scenario,
the ratios Switchyard/Janus and Switchyard/floor, and where each target stopped.

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
SCENARIOS = {
    "a": ("(a) one 1.5 Mbit/s video publisher to N subscribers", "subscribers"),
    "b": ("(b) ten-person meetings: everyone publishes audio + simulcast video, "
          "subscribers on the medium layer", "rooms"),
    "c": ("(c) one audio publisher to N subscribers", "subscribers"),
}


class ReportError(Exception):
    pass


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
    # Packets the receivers got in that time: each stream's rate (received over the time
    # from its first packet to its last) over the window.
    rate = sum(st["received"] / st["seconds"]
               for r in raw.get("receivers") or [] for st in r.get("streams") or []
               if st.get("seconds"))
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
        if name == "machine.json":
            with open(path, encoding="utf-8") as f:
                machine = json.load(f)
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
    """The largest step a target held (within the loss and latency limits, not
    generator-bound, pass not false), why its steps ended, and whether that end was the
    server's limit (False: the generator's, or the steps ran out)."""
    held, ended, limit = None, "not stopped within the steps run", False
    for r in sorted(rows, key=step_of):
        if r["generator_bound"]:
            ended = (f"generator-bound at {step_of(r)} ({generator_load(r)}): the server's "
                     f"limit is above what was measured")
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
    out.append("Generated by `loadtest/bench.sh` through `loadtest/summarize.py` from the JSON "
               "reports next to it (format: `loadtest/REPORT-FORMAT.md`). Do not edit by hand: "
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
        try:
            busy = float(machine.get("load_average_at_start") or 0) > 0.5
        except ValueError:
            busy = False
        if busy:
            out.append("- **Other work was running on these cores when the run started** "
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
        f"{MAX_LATE_FRAMES_PCT:g}% late frames.\n")

    by_scenario = {}
    for r in reports:
        by_scenario.setdefault(r["scenario"].get("name", "?"), []).append(r)

    for name in sorted(by_scenario, key=lambda n: (n not in SCENARIOS, n)):
        rows = by_scenario[name]
        title, step_key = SCENARIOS.get(name, (f"Scenario {name}", "subscribers"))
        out.append(f"## {title}\n")
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

    if failures:
        out.append("## Runs that produced no report\n")
        for name, text in failures:
            out.append(f"- `{name}`: {text.splitlines()[0] if text else '(no message)'}")
        out.append("")
    if not reports:
        out.append("No reports yet.\n")
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir")
    parser.add_argument("--out", default=None,
                        help="output file (default: RESULTS.md next to this script; - for stdout)")
    args = parser.parse_args(argv)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
    try:
        reports, failures, machine = load_dir(args.results_dir)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
