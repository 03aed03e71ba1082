"""Changes over several devices are all-or-nothing (entries too), and the verdict never
passes what did not happen: a black-holed flow fails and its change is blamed; a change a
device refuses during the run still ends in a report naming it."""
import json
import os
import subprocess
import sys

import pytest

from flexnet_lab.control.controller import controller_for
from flexnet_lab.errors import TargetError
from flexnet_lab.lab.network import Lab
from flexnet_lab.program.delta import load_delta
from flexnet_lab.topology import load_topology

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.root
ACL = os.path.join(ROOT, "scenarios", "deltas", "acl-udp-9999.yaml")


def test_entry_over_several_switches_is_rolled_back_when_one_refuses():
    topo = load_topology(os.path.join(ROOT, "topologies", "linear.yaml"))
    with Lab(topo, switch_kind="ebpf") as lab:
        ctl = controller_for(lab)         # no reconciler: s2's stray entry stays
        try:
            ctl.apply_delta("s*", load_delta(ACL))
            s1, s2 = lab.switch("s1"), lab.switch("s2")
            s2.insert("acl", (17, 9999), "drop")      # behind the controller: s2 will refuse
            with pytest.raises(TargetError) as err:
                ctl.insert_entry("s*", "acl", (17, 9999), "drop")
            assert err.value.device == "s2" and "undone: s1: entry acl" in str(err.value)
            # read back from each device: s1 took the entry and gave it back, s2 kept its own
            assert s1.entries("acl") == []
            assert [(e.match, e.action) for e in s2.entries("acl")] == [((17, 9999), "drop")]
            # and when every device takes it, every device has it
            recs = ctl.insert_entry("s*", "acl", (6, 80), "drop")
        finally:
            ctl.close()
        assert sorted(r.device for r in recs) == ["s1", "s2"]
        assert all(((6, 80), "drop") in [(e.match, e.action) for e in sw.entries("acl")]
                   for sw in (s1, s2))


def _run(tmp_path, scenario: dict) -> tuple[subprocess.CompletedProcess, dict]:
    path = tmp_path / "scenario.yaml"
    path.write_text(json.dumps(scenario))
    res = subprocess.run([sys.executable, "-m", "flexnet_lab.cli", "run", str(path),
                          "--results", str(tmp_path / "results")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    report = json.loads((tmp_path / "results" / scenario["name"] / "report.json").read_text())
    return res, report


def test_black_holed_flow_fails_and_the_change_that_cut_it_is_blamed(tmp_path):
    res, report = _run(tmp_path, {
        "name": "black-hole", "topology": "linear",
        "traffic": {"duration": 5, "baseline": 1.5,
                    "flows": [{"name": "udp1", "src": "h1", "dst": "h2", "rate": "20M"}]},
        "changes": [{"at": 2, "switch": "s1",
                     "delta": {"name": "no-forwarding", "ops": [{"remove_tables": "l3_fwd"}]}}],
    })                                    # no expectations: the flow must still have run
    assert res.returncode == 1, res.stdout + res.stderr
    assert not report["passed"]
    ran = next(r for r in report["expectations"] if r["expect"].get("ran"))
    assert not ran["ok"] and "no-forwarding" in ran["detail"]
    impact = report["impacts"][0]
    assert impact["blamed"] and impact["cut"] > 1000 and impact["change"] == "s1: delta no-forwarding"
    udp1 = report["flows"][0]
    assert udp1["sent"] > udp1["received"] > 0


def test_a_change_refused_during_the_run_ends_in_a_report_naming_it(tmp_path):
    tiny_acl = {"name": "tiny-acl", "ops": [{
        "add_table": {"name": "acl", "keys": [["meta.ip_proto", "exact"],
                                              ["meta.l4_dport", "exact"]],
                      "actions": ["drop", "nop"], "default": "nop", "size": 1,
                      "before": "l3_fwd"},
        "actions": {"nop": {"ops": [["nop"]]}}}]}   # room for one entry only
    res, report = _run(tmp_path, {
        "name": "table-full", "topology": "linear",
        "traffic": {"duration": 4, "baseline": 1.5,
                    "flows": [{"name": "udp1", "src": "h1", "dst": "h2", "rate": "10M"}]},
        "changes": [{"at": 1.5, "switch": "s*", "delta": tiny_acl},
                    {"at": 2, "switch": "s*", "entry": {"table": "acl", "match": [17, 1],
                                                        "action": "drop"}},
                    {"at": 2.5, "switch": "s*", "entry": {"table": "acl", "match": [17, 2],
                                                          "action": "drop"}}],
    })
    assert res.returncode == 2, res.stdout + res.stderr
    # one error line; the others are progress lines, which name the scenario file's stem
    lines = res.stderr.strip().splitlines()
    errors = [ln for ln in lines if not ln.startswith("scenario: ")]
    assert len(errors) == 1 and "changes[2]" in errors[0], res.stderr
    failed = report["failed_change"]
    assert failed["index"] == 2 and "s1" in failed["error"] and not report["passed"]
    assert len(report["changes"]) == 2
