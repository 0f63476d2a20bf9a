"""Tests of summarize.py against the hand-written example report (examples/), and reports
derived from it. Run: python3 -m unittest discover -s loadtest -p 'test_*.py'"""

import copy
import io
import json
import os
import sys
import tempfile
import unittest
from contextlib import redirect_stderr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import summarize  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples")
EXAMPLE = os.path.join(EXAMPLES, "report-example.json")
GENERATOR_EXAMPLE = os.path.join(EXAMPLES, "generator-report-example.json")


def example():
    with open(EXAMPLE, encoding="utf-8") as f:
        return json.load(f)


def variant(target, subscribers, cpu_us, loss=0.0, bound=False):
    r = example()
    r["target"] = target
    r["scenario"]["subscribers"] = subscribers
    r["participants"] = subscribers + 1
    r["server_cpu_us_per_packet"] = cpu_us
    r["loss_pct"] = loss
    r["generator_bound"] = bound
    r["pass"] = loss <= 1.0
    r["fail_reasons"] = [] if loss <= 1.0 else [f"loss {loss}% > 1%"]
    return r


class Summarize(unittest.TestCase):
    def write(self, reports, machine=None):
        d = tempfile.mkdtemp(prefix="summarize-test-")
        for i, r in enumerate(reports):
            with open(os.path.join(d, f"{r['target']}-{i}.json"), "w", encoding="utf-8") as f:
                json.dump(r, f)
        if machine is not None:
            with open(os.path.join(d, "machine.json"), "w", encoding="utf-8") as f:
                json.dump(machine, f)
        return d

    def render(self, reports, machine=None):
        return summarize.render(*summarize.load_dir(self.write(reports, machine)))

    def test_the_example_is_a_complete_report(self):
        report = summarize.load_report(EXAMPLE)
        self.assertTrue(report["example"])

    def test_example_data_is_stamped_and_never_written_as_results(self):
        d = self.write([example()])
        text = summarize.render(*summarize.load_dir(d))
        self.assertTrue(text.startswith("> **EXAMPLE DATA, NOT A RESULT.**"), text[:200])
        out = os.path.join(d, "RESULTS.md")
        with redirect_stderr(io.StringIO()):
            code = summarize.main([d, "--out", out])
        self.assertEqual(code, 3)
        self.assertFalse(os.path.exists(out))

    def test_real_reports_are_written_without_the_stamp(self):
        reports = [variant("switchyard", 100, 20.0)]
        for r in reports:
            del r["example"]
        d = self.write(reports, {"cpu_model": "Test CPU", "kernel": "6.1"})
        out = os.path.join(d, "RESULTS.md")
        with redirect_stderr(io.StringIO()):
            self.assertEqual(summarize.main([d, "--out", out]), 0)
        with open(out, encoding="utf-8") as f:
            text = f.read()
        self.assertNotIn("EXAMPLE", text)
        self.assertIn("- CPU: Test CPU", text)
        self.assertIn("- Kernel: 6.1", text)

    def test_a_busy_machine_is_called_out(self):
        text = self.render([example()], {"load_average_at_start": "2.88"})
        self.assertIn("- Load average at start: 2.88", text)
        self.assertIn("Other work was running", text)
        quiet = self.render([example()], {"load_average_at_start": "0.05"})
        self.assertNotIn("Other work was running", quiet)

    def test_piecewise_runs_are_listed(self):
        machine = {"load_average_at_start": "0.10", "runs": [
            {"date": "d1", "git_commit": "aaa", "load_average_at_start": "0.21",
             "steps": "floor-a floor-b"},
            {"date": "d2", "git_commit": "bbb", "load_average_at_start": "1.70",
             "steps": "janus-c summary"}]}
        text = self.render([example()], machine)
        self.assertIn("  - d1 at aaa, load average 0.21: `loadtest/bench.sh floor-a floor-b`",
                      text)
        self.assertIn("  - d2 at bbb, load average 1.70: `loadtest/bench.sh janus-c summary`",
                      text)
        # The busiest start decides.
        self.assertIn("Other work was running", text)

    def test_the_normalized_file_rebuilds_the_same_page(self):
        reports = [variant("switchyard", 100, 20.0), variant("janus", 100, 40.0)]
        for r in reports:
            del r["example"]
        d = self.write(reports, {"cpu_model": "Test CPU"})
        with open(os.path.join(d, "janus-a-00200.failed"), "w", encoding="utf-8") as f:
            f.write("no report (exit 1)")
        first = os.path.join(d, "RESULTS.md")
        with redirect_stderr(io.StringIO()):
            self.assertEqual(summarize.main([d, "--out", first]), 0)
        normalized = os.path.join(d, "normalized.json")
        self.assertTrue(os.path.exists(normalized))
        again = os.path.join(d, "again.md")
        with redirect_stderr(io.StringIO()):
            self.assertEqual(summarize.main([normalized, "--out", again]), 0)
        with open(first, encoding="utf-8") as a, open(again, encoding="utf-8") as b:
            self.assertEqual(a.read(), b.read())
        # And reading the folder again skips normalized.json rather than choking on it.
        reports2, _, _ = summarize.load_dir(d)
        self.assertEqual(len(reports2), 2)

    def test_ratios_per_step(self):
        text = self.render([
            variant("switchyard", 100, 20.0),
            variant("janus", 100, 40.0),
            variant("udp-floor", 100, 2.0),
        ])
        # Switchyard/Janus 0.50, Switchyard/floor 10.0, Janus/floor 20.0.
        self.assertIn("| 100 | 0.50 | 10.0 | 20.0 |", text)

    def test_where_each_target_stopped(self):
        text = self.render([
            variant("switchyard", 100, 20.0),
            variant("switchyard", 200, 21.0),
            variant("switchyard", 400, 22.0, loss=3.5),
            variant("janus", 100, 40.0),
            variant("janus", 200, 45.0, bound=True),
        ])
        self.assertIn("- Switchyard: held 200 subscribers within the limits; stopped at 400: "
                      "loss 3.50% > 1%.", text)
        # Janus's 200 ran with the generator at its limit, yet all arrived within the
        # limits: held, and the steps end there.
        self.assertIn("- Janus: held 200 subscribers within the limits; ended there: the "
                      "generator was at its limit (generator at 60% of its core), so the "
                      "server's limit is above what was measured.", text)
        self.assertIn("| 200 | Janus | 201 |", text)
        self.assertIn("**(bound)**", text)
        # Switchyard's 200 against Janus's at least 200.
        self.assertIn("- Capacity Switchyard / Janus ≤ 1.00", text)
        # With loss, a generator-bound step is not held: the loss may be the generator's.
        lossy = self.render([variant("janus", 100, 40.0),
                             variant("janus", 200, 45.0, loss=2.0, bound=True)])
        self.assertIn("- Janus: held 100 subscribers within the limits; generator-bound at 200",
                      lossy)

    def test_no_capacity_ratio_when_neither_reached_its_limit(self):
        text = self.render([variant("switchyard", 100, 20.0), variant("janus", 100, 40.0)])
        self.assertNotIn("Capacity Switchyard / Janus", text)
        both = self.render([
            variant("switchyard", 100, 20.0), variant("switchyard", 200, 20.0, loss=5.0),
            variant("janus", 100, 40.0), variant("janus", 200, 40.0, loss=5.0),
        ])
        self.assertIn("- Capacity Switchyard / Janus = 1.00", both)

    def test_a_queueing_server_stops_on_latency(self):
        slow = variant("udp-floor", 3200, 2.0)
        slow["latency_ms"]["p99"] = 280.6
        text = self.render([variant("udp-floor", 1600, 2.0), slow])
        self.assertIn("- UDP floor: held 1600 subscribers within the limits; stopped at 3200: "
                      "latency p99 280.6 ms > 100 ms.", text)

    def test_the_generators_own_failure_counts(self):
        r = variant("janus", 100, 40.0)
        r["pass"] = False
        r["fail_reasons"] = ["3 joins failed"]
        text = self.render([r])
        self.assertIn("- Janus: held no step subscribers within the limits; stopped at 100: "
                      "3 joins failed.", text)

    def test_both_saturated_is_not_called_the_generators_limit_alone(self):
        r = variant("udp-floor", 3200, 2.0, bound=True)
        r["server_cpu_seconds"], r["window_seconds"] = 10.0, 10.0
        text = self.render([variant("udp-floor", 1600, 2.0), r])
        self.assertIn("with the server at 100% of its core too: both saturated", text)

    def test_meetings_step_by_rooms(self):
        r = variant("switchyard", 0, 20.0)
        r["scenario"].update(name="b", rooms=4, publishers=10, subscribers=0, simulcast=True)
        text = self.render([r])
        self.assertIn("## (b) ten-person meetings", text)
        self.assertIn("Every receiver asks for each publisher's medium layer", text)
        self.assertIn("| 4 | Switchyard |", text)

    def test_a_report_missing_a_field_is_refused_by_name(self):
        r = example()
        del r["server_cpu_us_per_packet"]
        d = self.write([r])
        with self.assertRaises(summarize.ReportError) as e:
            summarize.load_dir(d)
        self.assertIn("server_cpu_us_per_packet", str(e.exception))

    def test_failed_runs_are_listed(self):
        d = self.write([example()])
        with open(os.path.join(d, "janus-a-00600.failed"), "w", encoding="utf-8") as f:
            f.write("generator exited with 1: join timed out\nmore")
        text = summarize.render(*summarize.load_dir(d))
        self.assertIn("- `janus-a-00600`: generator exited with 1: join timed out", text)

    def test_a_step_without_a_report_ends_the_steps(self):
        d = self.write([variant("janus", 100, 40.0)])
        with open(os.path.join(d, "janus-a-00200.failed"), "w", encoding="utf-8") as f:
            f.write("no report (exit 137)")
        text = summarize.render(*summarize.load_dir(d))
        self.assertIn("- Janus: held 100 subscribers within the limits; the step at 200 "
                      "produced no report (listed below).", text)

    def test_nulls_are_shown_as_dashes(self):
        r = copy.deepcopy(example())
        r["server_cpu_us_per_packet"] = None
        r["freezes_per_min"] = None
        text = self.render([r])
        row = next(line for line in text.splitlines() if line.startswith("| 100 | Switchyard"))
        self.assertIn("| – |", row)


class GeneratorReports(unittest.TestCase):
    """switchyard-loadtest's own report, mapped onto REPORT-FORMAT.md."""

    def load(self, meta=None, **changes):
        with open(GENERATOR_EXAMPLE, encoding="utf-8") as f:
            raw = json.load(f)
        for key, value in changes.items():
            section, _, field = key.partition("__")
            if field:
                raw[section][field] = value
            else:
                raw[section] = value
        d = tempfile.mkdtemp(prefix="summarize-gen-")
        with open(os.path.join(d, "janus-a-00100.json"), "w", encoding="utf-8") as f:
            json.dump(raw, f)
        if meta is not None:
            with open(os.path.join(d, "janus-a-00100.meta.json"), "w", encoding="utf-8") as f:
                json.dump(meta, f)
        reports, _, _ = summarize.load_dir(d)
        self.assertEqual(len(reports), 1, "the meta file is not a report")
        return reports[0]

    def test_fields_are_mapped(self):
        r = self.load()
        self.assertEqual(r["format"], summarize.FORMAT)
        self.assertTrue(r["example"])
        self.assertEqual(r["target"], "janus")
        self.assertEqual(r["scenario"]["name"], "a")
        self.assertEqual(r["scenario"]["subscribers"], 100)
        self.assertEqual((r["expected"], r["received"], r["loss_pct"]), (500000, 499000, 0.2))
        self.assertEqual(r["latency_ms"], {"p50": 2.0, "p99": 8.0, "p999": 15.0})
        self.assertEqual(r["join_time_ms"], {"p50": 150.0, "p99": 900.0})
        self.assertEqual(r["forwarded_packets"], 499000)
        self.assertEqual(r["server_cpu_us_per_packet"], 24.0)
        self.assertEqual(r["server_peak_rss_bytes"], 120 * 2**20)
        self.assertEqual(r["server_rss_per_participant_bytes"], 1014 * 1024)
        self.assertEqual(r["bitrate_per_subscriber_bps"], 1550000.0)
        self.assertEqual(r["by_kind"]["audio"]["received"], 1500)
        self.assertAlmostEqual(r["by_kind"]["video"]["loss_pct"], 100 * 10 / 3500)
        # Without bench.sh's meta: no exit status, no generator CPU.
        self.assertIsNone(r["pass"])
        self.assertIsNone(r["generator_cpu_pct"])
        self.assertFalse(r["generator_bound"])
        for key in summarize.REQUIRED:
            self.assertIn(key, r)

    def test_bench_meta_fills_what_the_report_lacks(self):
        meta = {"scenario": "c", "exit_code": 3, "generator_cpu_seconds": 33.0,
                "generator_wall_seconds": 36.0, "started_unix_s": 1.0}
        r = self.load(meta)
        self.assertEqual(r["scenario"]["name"], "c")
        self.assertFalse(r["pass"])
        self.assertEqual(r["fail_reasons"], ["a --max-* threshold was missed"])
        self.assertAlmostEqual(r["generator_cpu_pct"], 100 * 33 / 36)
        self.assertTrue(r["generator_bound"])
        self.assertEqual(r["started_unix_s"], 1.0)

    def test_late_frames_mean_the_generator_was_the_limit(self):
        r = self.load(generator__late_frames_pct=12.0)
        self.assertTrue(r["generator_bound"])
        text = summarize.render([r], [], {})
        self.assertIn("12.0% of its frames late", text)

    def test_failed_participants_are_reasons(self):
        r = self.load({"exit_code": 4},
                      participants={"total": 101, "joined": 99, "receivers": 100,
                                    "received_from_all": 97, "failed": 3},
                      failures=[{"identity": "sub-0-7", "reason": "joining timed out"}])
        self.assertFalse(r["pass"])
        self.assertEqual(r["errors"], {"join_failures": 2, "other_failures": 1})
        self.assertIn("3 participant(s) failed (sub-0-7: joining timed out)", r["fail_reasons"])

    def test_scenario_is_guessed_without_meta(self):
        self.assertEqual(self.load(audio_only=True)["scenario"]["name"], "c")
        self.assertEqual(self.load(simulcast=True)["scenario"]["name"], "b")
        self.assertIsNone(self.load(audio_only=True)["freezes_per_min"])

    def test_window_figures_come_from_the_samples(self):
        # 5 s of ramp at half a core for the generator, then the window at 95%; the server
        # at 80% throughout; one stream of 100 packets/s.
        samples, gen, srv = [], 0, 0
        for i in range(0, 41):
            t = i * 0.5
            samples.append([t, gen, srv])
            gen += 25 if t < 5.0 else 47.5
            srv += 40
        meta = {"ticks_per_second": 100, "cpu_samples": samples}
        stream = {"publisher": "pub-0-0", "stream": "video0", "expected": 1000,
                  "received": 1000, "duplicates": 0, "seconds": 10.0}
        r = self.load(meta, ramp_s=5.0, duration_s=10.0,
                      receivers=[{"identity": "sub-0-0", "streams": [stream]}])
        self.assertEqual(r["server_cpu_span"], "window")
        self.assertAlmostEqual(r["generator_cpu_pct"], 95.0)
        self.assertTrue(r["generator_bound"])
        self.assertAlmostEqual(r["server_cpu_pct"], 80.0)
        # 0.8 CPU-seconds per second over 100 packets per second.
        self.assertAlmostEqual(r["server_cpu_us_per_packet"], 8000.0)
        self.assertEqual(r["server_cpu_us_per_packet_run"], 24.0)

        # A layer switch: 2 packets of another layer over 2 ms change the rate by 0.2/s,
        # not by 1000/s.
        blip = dict(stream, stream="video1", received=2, expected=2, seconds=0.002)
        r = self.load(meta, ramp_s=5.0, duration_s=10.0,
                      receivers=[{"identity": "sub-0-0", "streams": [stream, blip]}])
        self.assertAlmostEqual(r["server_cpu_us_per_packet"], 0.8e6 / 100.2)

    def test_without_samples_the_run_figures_stay(self):
        r = self.load({"cpu_samples": []})
        self.assertEqual(r["server_cpu_span"], "run")
        self.assertEqual(r["server_cpu_us_per_packet"], 24.0)
        self.assertEqual(r["server_cpu_pct"], 34.3)

    def test_something_else_is_refused(self):
        d = tempfile.mkdtemp(prefix="summarize-bad-")
        with open(os.path.join(d, "x.json"), "w", encoding="utf-8") as f:
            json.dump({"hello": 1}, f)
        with self.assertRaises(summarize.ReportError) as e:
            summarize.load_dir(d)
        self.assertIn("not a switchyard-loadtest report", str(e.exception))


class TargetsAndLatency(unittest.TestCase):
    METRICS = """# TYPE switchyard_forwarding_latency_seconds histogram
switchyard_forwarding_latency_seconds_bucket{kind="audio",le="0.0005"} 10
switchyard_forwarding_latency_seconds_bucket{kind="audio",le="0.001"} 10
switchyard_forwarding_latency_seconds_bucket{kind="audio",le="+Inf"} 10
switchyard_forwarding_latency_seconds_bucket{kind="video",le="0.0005"} %d
switchyard_forwarding_latency_seconds_bucket{kind="video",le="0.001"} %d
switchyard_forwarding_latency_seconds_bucket{kind="video",le="+Inf"} %d
switchyard_forwarding_latency_seconds_sum{kind="video"} 1
"""

    def scrape(self, counts):
        f = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
        f.write(self.METRICS % counts)
        f.close()
        return f.name

    def test_the_window_histogram_is_the_difference_of_two_scrapes(self):
        start = self.scrape((100, 100, 100))
        # Over the window: 880 video packets under 0.5 ms, 100 more under 1 ms, 20 above.
        end = self.scrape((980, 1080, 1100))
        delta = summarize.latency_histogram_delta(start, end)
        self.assertEqual(delta, [[0.0005, 880.0], [0.001, 980.0], [float("inf"), 1000.0]])
        # p50 inside the first bucket; p99 (rank 990) beyond 1 ms, where the histogram only
        # says "above its last bound".
        self.assertAlmostEqual(summarize.histogram_quantile(delta, 0.5), 0.0005 * 500 / 880)
        self.assertEqual(summarize.histogram_quantile(delta, 0.99), 0.001)
        self.assertAlmostEqual(summarize.histogram_quantile(delta, 0.9), 0.0005 + 0.0005 * 20 / 100)
        self.assertIsNone(summarize.latency_histogram_delta(start, "/nonexistent"))
        self.assertIsNone(summarize.histogram_quantile([[0.001, 0.0], [float("inf"), 0.0]], 0.99))

    def test_each_target_is_met_missed_by_how_much_or_not_measured(self):
        sw = variant("switchyard", 100, 4.0)
        sw["server_rss_per_participant_bytes"] = 450_000
        sw["server_peak_rss_bytes"] = 50_000_000
        sw["server_forwarding_p99_ms"] = 0.4
        big = variant("switchyard", 600, 4.2)
        big["server_rss_per_participant_bytes"] = 250_000
        # 500 participants more, 175 MB more: 350 KB each.
        big["server_peak_rss_bytes"] = 225_000_000
        big["server_forwarding_p99_ms"] = 3.0
        big["server_cpu_pct"] = 95.0  # busy core: left out of the latency target
        text = Summarize().render([sw, big, variant("janus", 100, 10.0),
                                   variant("udp-floor", 100, 1.0)])
        targets = text.split("## Targets", 1)[1]
        self.assertIn("| Switchyard / Janus = 0.40 over 1 steps | **met** |", targets)
        self.assertIn("Switchyard / UDP floor = 4.00 over 1 steps; 1.33× the target | **missed** |",
                      targets)
        self.assertIn("held 600; not stopped within the steps run | **met** |", targets)
        self.assertIn("worst p99 0.40 ms over 1 steps | **met** |", targets)
        self.assertIn("| 350 KB per added participant (peak RSS over 2 steps, least squares); "
                      "1.17× the target; RSS / participants per step: 250–450 KB | **missed** |",
                      targets)

    def test_a_ratio_below_the_floor_is_called_out(self):
        text = Summarize().render([
            variant("switchyard", 25, 6.0), variant("switchyard", 200, 3.5),
            variant("janus", 25, 7.0), variant("janus", 200, 8.0),
            variant("udp-floor", 25, 3.8), variant("udp-floor", 200, 2.2),
        ])
        # 0.86 at 25 (half of Janus's 7.0 is 3.5, below the floor's 3.8), 0.44 at 200.
        self.assertIn("Switchyard / Janus = 0.44–0.86 over 2 steps; 1.71× the target; missed "
                      "at 25, met at 200; at 25, 0.5× Janus's is below the UDP floor's own CPU "
                      "per packet, which no server can go under | **missed** |", text)

    def test_capacity_the_generator_could_not_reach_is_not_measured(self):
        text = Summarize().render([variant("switchyard", 200, 4.0),
                                   variant("switchyard", 400, 4.0, bound=True)])
        self.assertIn("(the run could not show 500); estimate, not a measurement: the server "
                      "used 31% of its core at 400, so a full core at about 1,283 | not measured |",
                      text)
        # Late frames: the generator did not send the full load, so the step is not held.
        late = variant("switchyard", 400, 4.0, bound=True)
        late["generator_late_frames_pct"] = 8.0
        text = Summarize().render([variant("switchyard", 200, 4.0), late])
        self.assertIn("held 200; generator-bound at 400", text)
        self.assertIn("worst p99 – ms over 0 steps | not measured |", text)

    def test_profiles_are_shown_verbatim(self):
        d = Summarize().write([variant("switchyard", 100, 4.0)])
        with open(os.path.join(d, "profile-a-200.txt"), "w", encoding="utf-8") as f:
            f.write("  35.00%  [.] webrtc_srtp::session::Session::write\n")
        reports, failures, machine = summarize.load_dir(d)
        text = summarize.render(reports, failures, machine)
        self.assertIn("`perf`, a-200:", text)
        self.assertIn("  35.00%  [.] webrtc_srtp::session::Session::write", text)
        # And from the normalized file, without the results folder.
        path = os.path.join(d, summarize.NORMALIZED)
        summarize.write_normalized(path, reports, failures, machine)
        self.assertEqual(summarize.render(*summarize.load_normalized(path)), text)


if __name__ == "__main__":
    unittest.main()
