"""`flexnet run` on a scenario with a bmv2 switch: same report, plot and verdict as eBPF."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = [pytest.mark.root, pytest.mark.bmv2, pytest.mark.p4c]


def test_bmv2_mixed_scenario_passes_with_report_and_plot(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "flexnet_lab.cli", "run",
                           os.path.join(ROOT, "scenarios/bmv2-mixed.yaml"),
                           "--results", str(tmp_path)],
                          capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = json.load(open(tmp_path / "bmv2-mixed" / "report.json"))
    assert report["passed"] and (tmp_path / "bmv2-mixed" / "timeline.png").stat().st_size > 0
    l1 = [c for c in report["changes"] if c["device"] == "l1"]
    assert len(l1) == 4 and all(any("registers carried" in n for n in c["notes"]) for c in l1)
    assert report["final_counters"]["l1"]["1"]["rx_packets"] > 10000    # read over thrift
