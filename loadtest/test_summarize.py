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

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples",
                       "report-example.json")


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
        self.assertIn("- Janus: held 100 subscribers", text)
        self.assertIn("generator-bound at 200", text)
        self.assertIn("| 200 | Janus | 201 |", text)
        self.assertIn("**(bound)**", text)
        self.assertIn("- Capacity Switchyard / Janus: 2.00", text)

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

    def test_meetings_step_by_rooms(self):
        r = variant("switchyard", 0, 20.0)
        r["scenario"].update(name="b", rooms=4, publishers=10, subscribers=0, simulcast=True)
        text = self.render([r])
        self.assertIn("## (b) ten-person meetings", text)
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

    def test_nulls_are_shown_as_dashes(self):
        r = copy.deepcopy(example())
        r["server_cpu_us_per_packet"] = None
        r["freezes_per_min"] = None
        text = self.render([r])
        row = next(line for line in text.splitlines() if line.startswith("| 100 | Switchyard"))
        self.assertIn("| – |", row)


if __name__ == "__main__":
    unittest.main()
