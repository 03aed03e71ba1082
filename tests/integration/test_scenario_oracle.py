"""The consistency oracle in scenarios, through the real `flexnet run` on leaf-spine (eBPF):
the shipped scenarios/network-update.yaml passes with 0 mixed probes in its per-packet
changes and mixed probes in the same changes applied per-device, the report carries the
oracle's per-change figures and each change's phases; a per-packet request that falls back
to per-device fails an expectation of per-packet instead of passing silently."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DELTA = os.path.join(ROOT, "scenarios", "deltas", "acl-udp-9999.yaml")
pytestmark = pytest.mark.root


def _run(path: str, results) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flexnet_lab.cli", "run", path,
                           "--results", str(results)],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)


def test_network_update_scenario_proves_per_packet_changes_with_the_oracle(tmp_path):
    res = _run(os.path.join(ROOT, "scenarios", "network-update.yaml"), tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    report = json.load(open(tmp_path / "network-update" / "report.json"))
    assert report["passed"] and all(r["ok"] for r in report["expectations"])
    orc = report["oracle"]
    assert orc["probes_sent"] > 20_000 and orc["pairs"] == [["h1", "h8"], ["h3", "h6"],
                                                            ["h7", "h2"], ["h5", "h4"]]
    assert orc["probes_placed"] >= 0.99 * orc["probes_sent"]   # read before they wrap
    assert orc["mixed_by_level"]["per-packet"] == 0
    assert orc["mixed_by_level"]["per-device"] > 0          # the oracle is sensitive
    packet = [c for c in report["changes"] if c["requested"] == "per-packet"]
    device = [c for c in report["changes"] if c["requested"] == "per-device"]
    assert len(packet) == 2 and len(device) == 2
    for c in packet:
        assert c["consistency"] == "per-packet"
        assert c["oracle"]["probes"] > 1000 and c["oracle"]["mixed"] == 0
        assert c["oracle"]["single"] == c["oracle"]["probes"]
        ph = c["phases"]
        assert ph["ingress_points"] == 6 and ph["flip_ms"] < ph["total_ms"]
        assert all(ph[k] >= 0 for k in ("install_ms", "flip_ms", "drain_ms", "retire_ms"))
    for c in device:
        assert c["consistency"] == "per-device" and not c["phases"]
        assert c["oracle"]["probes"] > 1000 and c["commit_spread_ms"] > 0
    assert sum(c["oracle"]["mixed"] for c in device) == orc["mixed_by_level"]["per-device"]
    rows = {json.dumps(r["expect"], sort_keys=True): r for r in report["expectations"]}
    assert rows[json.dumps({"change": 0, "mixed": 0}, sort_keys=True)]["ok"]
    png = tmp_path / "network-update" / "timeline.png"
    assert png.stat().st_size > 10_000 and open(png, "rb").read(4) == b"\x89PNG"


def test_a_fallback_to_per_device_fails_an_expectation_of_per_packet(tmp_path):
    """An entry change asked per-packet is per-device (entries live in maps both versions
    share): its record says so, and the verdict fails {mixed: 0} on it, while the same
    change expected at per-device passes. (It loads no new version, so the oracle places
    no probe on it either: mixed 0 there would prove nothing, and fails too.)"""
    entry = {"table": "acl", "match": [17, 9999], "action": "drop"}
    scenario = tmp_path / "fallback.yaml"
    scenario.write_text(json.dumps({
        "topology": "leaf-spine",
        "probes": {"pairs": [["h1", "h8"], ["h3", "h6"]], "pps": 1000},
        "traffic": {"duration": 6, "baseline": 1.5,
                    "flows": [{"name": "udp1", "src": "h2", "dst": "h7", "rate": "20M"}]},
        "changes": [
            {"at": 2, "switch": "*", "delta": DELTA, "consistency": "per-packet",
             "expect": {"mixed": 0}},
            {"at": 3, "switch": "l1", "entry": entry, "consistency": "per-packet",
             "expect": {"mixed": 0}},
            {"at": 3.5, "switch": "l2", "entry": entry, "consistency": "per-packet",
             "expect": {"consistency": "per-device"}}]}))
    res = _run(str(scenario), tmp_path / "r")
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-2000:]
    report = json.load(open(tmp_path / "r" / "fallback" / "report.json"))
    assert not report["passed"]
    by_change = {r["expect"].get("change"): r for r in report["expectations"]
                 if "change" in r["expect"]}
    assert by_change[0]["ok"], by_change[0]
    assert not by_change[1]["ok"]
    assert "achieved per-device, not per-packet" in by_change[1]["detail"]
    assert "proves nothing" in by_change[1]["detail"]
    assert by_change[2]["ok"], by_change[2]
    levels = [(c["requested"], c["consistency"]) for c in report["changes"]]
    assert levels == [("per-packet", "per-packet"), ("per-packet", "per-device"),
                      ("per-packet", "per-device")]
    assert "[FAIL]" in res.stdout and "FAILED" in res.stdout
