"""Pure tests: the oracle in scenarios (probes, expectations on a change's level and its
mixed/lost probes), the verdict on them, pattern changes keeping their level, the plot."""
import copy
import os

import pytest

from flexnet_lab.errors import ScenarioError
from flexnet_lab.plan.execute import ChangeRecord
from flexnet_lab.topology import load_topology
from flexnet_lab.verify.scenario import _combined, dry_run, load_scenario, parse_scenario
from flexnet_lab.verify.verdict import judge_consistency

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DELTA = os.path.join(ROOT, "scenarios", "deltas", "acl-udp-9999.yaml")
BASE = {"topology": "leaf-spine", "traffic": {"duration": 8},
        "probes": {"pairs": [["h1", "h8"], ["h3", "h6"]], "pps": 1000},
        "changes": [{"at": 2, "switch": "*", "delta": DELTA, "consistency": "per-packet",
                     "expect": {"mixed": 0}},
                    {"at": 3, "switch": "*", "undo": 0}],
        "expect": [{"consistency": "per-packet", "mixed": 0},
                   {"consistency": "per-device", "mixed_at_least": 1}]}


def _with(**patch):
    data = copy.deepcopy(BASE)
    for path, value in patch.items():
        node, keys = data, path.split("__")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        last = keys[-1]
        if isinstance(node, list):
            node[int(last)] = value
        elif value is KeyError:
            del node[last]
        else:
            node[last] = value
    return data


def test_probes_and_oracle_expectations_parse():
    sc = parse_scenario(copy.deepcopy(BASE), "x.yaml")
    assert sc.probes.pairs == (("h1", "h8"), ("h3", "h6")) and sc.probes.pps == 1000
    assert dict(sc.changes[0].expect) == {"mixed": 0}
    assert sc.changes[0].consistency == "per-packet" and sc.changes[1].expect == ()
    assert sc.expect == ({"consistency": "per-packet", "mixed": 0},
                         {"consistency": "per-device", "mixed_at_least": 1})
    assert parse_scenario({"topology": "linear"}, "x.yaml").probes is None


def test_shipped_network_update_scenario_checks_out_before_any_lab():
    sc = load_scenario(os.path.join(ROOT, "scenarios", "network-update.yaml"))
    topo = sc.topology_for(load_topology(os.path.join(ROOT, "topologies", "leaf-spine.yaml")))
    dry_run(sc, topo)
    levels = [c.consistency for c in sc.changes]
    assert "per-packet" in levels and "per-device" in levels
    assert all(dict(c.expect).get("mixed") == 0 for c in sc.changes
               if c.consistency == "per-packet")
    assert sc.probes is not None and len(sc.probes.pairs) >= 2


@pytest.mark.parametrize("patch,field", [
    ({"probes": [["h1", "h8"]]}, "probes"),
    ({"probes": {"pps": 10}}, "probes.pairs"),
    ({"probes": {"pairs": []}}, "probes.pairs"),
    ({"probes__pairs": [["h1"]]}, "probes.pairs[0]"),
    ({"probes__pairs": [["h1", "h1"]]}, "probes.pairs[0]"),
    ({"probes__pairs": [["h1", "h8"], ["h1", "h8"]]}, "probes.pairs[1]"),
    ({"probes__pairs": [["h1", 7]]}, "probes.pairs[0][1]"),
    ({"probes__pps": "fast"}, "probes.pps"),
    ({"probes__pps": 1e6}, "probes.pps"),
    ({"probes__pps": 9000, "probes__pairs": [["h1", "h8"], ["h2", "h7"], ["h3", "h6"],
                                             ["h4", "h5"], ["h5", "h4"]]}, "probes.pps"),
    ({"probes__rate": 5}, "probes.rate"),
    ({"changes__0__expect": {"mixed": -1}}, "changes[0].expect.mixed"),
    ({"changes__0__expect": {"mixed": 0.5}}, "changes[0].expect.mixed"),
    ({"changes__0__expect": {"mixed": "none"}}, "changes[0].expect.mixed"),
    ({"changes__0__expect": {"mixd": 0}}, "changes[0].expect.mixd"),
    ({"changes__0__expect": {}}, "changes[0].expect"),
    ({"changes__0__expect": [0]}, "changes[0].expect"),
    ({"changes__0__expect": {"consistency": "per-flow"}}, "changes[0].expect.consistency"),
    ({"changes__0__expect": {"mixed": 1, "mixed_at_least": 2}},
     "changes[0].expect.mixed_at_least"),
    ({"changes__1__expect": {"consistency": "per-packet"}}, "changes[1].expect.consistency"),
    ({"probes": KeyError}, "changes[0].expect"),
    ({"expect__0": {"consistency": "per-packet"}}, "expect[0]"),
    ({"expect__0": {"mixed": 0}}, "expect[0]"),
    ({"expect__0": {"consistency": "per-packet", "mixed": 0, "flow": "x"}},
     "expect[0].consistency"),
    ({"expect__1": {"consistency": "per-device", "mixed_at_least": 1, "change": 1}},
     "expect[1].change"),
    ({"changes__0__consistency": "per-device", "changes__0__expect": {"mixed": 0}},
     "expect[0].consistency"),
])
def test_malformed_oracle_fields_are_named(patch, field):
    with pytest.raises(ScenarioError) as err:
        parse_scenario(_with(**patch), "x.yaml")
    assert err.value.field == field, str(err.value)


@pytest.mark.parametrize("patch,field,topology", [
    ({"probes__pairs": [["h1", "h9"]]}, "probes.pairs[0][1]", "leaf-spine"),
    ({"probes__pairs": [["l1", "h8"]]}, "probes.pairs[0][0]", "leaf-spine"),
])
def test_probe_hosts_are_checked_against_the_topology(patch, field, topology):
    sc = parse_scenario(_with(**patch), "x.yaml")
    topo = sc.topology_for(load_topology(os.path.join(ROOT, "topologies", f"{topology}.yaml")))
    with pytest.raises(ScenarioError) as err:
        dry_run(sc, topo)
    assert err.value.field == field


def test_probes_run_on_an_all_bmv2_topology():
    """bmv2 switches write the versions probes meet into the probes' trailers too."""
    data = _with(targets={"*": "bmv2"})
    sc = parse_scenario(data, "x.yaml")
    topo = sc.topology_for(load_topology(os.path.join(ROOT, "topologies", "leaf-spine.yaml")))
    dry_run(sc, topo)


# --- the verdict -----------------------------------------------------------------------------

def _row(index=0, requested="per-packet", achieved="per-packet", probes=1000, mixed=0, lost=0,
         oracle=True, notes=()):
    return {"index": index, "change": f"c{index}", "requested": requested,
            "achieved": achieved, "notes": list(notes),
            "oracle": {"probes": probes, "single": probes - mixed, "mixed": mixed,
                       "lost": lost, "reordered": 0} if oracle else None}


def test_per_packet_change_with_no_mixed_probes_passes():
    ok, detail = judge_consistency({"mixed": 0}, [_row()])
    assert ok and "achieved per-packet" in detail and "0 mixed" in detail


def test_mixed_probes_beyond_the_expectation_fail():
    ok, detail = judge_consistency({"mixed": 0}, [_row(mixed=3)])
    assert not ok and "3 mixed probes, at most 0" in detail


def test_a_fallback_to_per_device_never_passes_as_per_packet():
    row = _row(achieved="per-device", notes=["per-packet requested; per-device achieved: bmv2"])
    ok, detail = judge_consistency({"mixed": 0}, [row])
    assert not ok and "achieved per-device, not per-packet" in detail and "bmv2" in detail
    ok, _ = judge_consistency({"consistency": "per-device"}, [row])   # expected: passes
    assert ok


def test_mixed_zero_with_no_probe_proves_nothing():
    assert not judge_consistency({"mixed": 0}, [_row(probes=0)])[0]
    ok, detail = judge_consistency({"mixed": 0}, [_row(oracle=False)])
    assert not ok and "no figures" in detail
    assert "proves nothing" in judge_consistency({"mixed": 0}, [_row(probes=0)])[1]


def test_level_only_expectation_needs_no_probes():
    assert judge_consistency({"consistency": "per-packet"}, [_row(oracle=False)])[0]


def test_sensitivity_and_loss_expectations_add_up_over_changes():
    rows = [_row(0, "per-device", "per-device", mixed=0, lost=1),
            _row(1, "per-device", "per-device", mixed=2, lost=1)]
    assert judge_consistency({"mixed_at_least": 1}, rows, "per-device")[0]
    assert not judge_consistency({"mixed_at_least": 3}, rows, "per-device")[0]
    assert judge_consistency({"lost": 2}, rows, "per-device")[0]
    ok, detail = judge_consistency({"lost": 1}, rows, "per-device")
    assert not ok and "2 probes lost" in detail


def test_an_expectation_on_a_change_that_did_not_run_fails():
    ok, detail = judge_consistency({"mixed": 0}, [])
    assert not ok and "not run" in detail


# --- records of pattern changes --------------------------------------------------------------

def test_a_pattern_change_keeps_its_level_and_phases():
    ph = {"install_ms": 1.0, "flip_ms": 0.1, "drain_ms": 1.5, "retire_ms": 1.0}
    recs = [ChangeRecord(n, "d", "pipeline", at=10.0, done=10.002, consistency="per-packet",
                         phases=ph) for n in ("l1", "l2")]
    rec = _combined(recs, "l*", "l*: delta")
    assert rec.consistency == "per-packet" and rec.phases == ph
    recs[1].consistency = "per-device"          # one device could not hold two versions
    assert _combined(recs, "l*", "l*: delta").consistency == "per-device"
    plain = [ChangeRecord(n, "d", "pipeline", at=10.0, done=10.0 + k / 1e3)
             for k, n in enumerate(("l1", "l2", "l3"))]
    rec = _combined(plain, "l*", "l*: delta")
    assert rec.consistency == "per-device" and rec.phases == {}
    assert abs((rec.done - rec.at) - 0.002) < 1e-9


# --- the plot --------------------------------------------------------------------------------

def test_timeline_plot_marks_phases_levels_and_fallbacks(tmp_path):
    from flexnet_lab.verify.plot import plot_timeline
    ph = {"install_ms": 0.1, "flip_ms": 0.1, "drain_ms": 1.4, "retire_ms": 1.0,
          "prepare_ms": 20.0}
    fig = {"probes": 900, "single": 900, "mixed": 0, "lost": 0, "reordered": 0}
    report = {"scenario": "s", "topology": "leaf-spine", "passed": True,
              "baseline_window_s": [0.5, 2.0],
              "flows": [{"name": "f", "proto": "udp", "src": "h1", "dst": "h8",
                         "intervals": [[i / 10, (i + 1) / 10, 100.0, 10, 0] for i in range(60)]}],
              "changes": [
                  {"description": "*: delta", "at_s": 2.0, "consistency": "per-packet",
                   "requested": "per-packet", "phases": ph, "oracle": fig, "total_ms": 23},
                  {"description": "*: undo", "at_s": 3.0, "consistency": "per-device",
                   "requested": "per-device", "phases": {}, "swap_ms": 0.1, "total_ms": 20,
                   "commit_spread_ms": 2.0, "oracle": {**fig, "mixed": 4}},
                  {"description": "l1: delta", "at_s": 4.0, "consistency": "per-device",
                   "requested": "per-packet", "phases": {}, "swap_ms": 0.1, "total_ms": 5,
                   "commit_spread_ms": None, "oracle": None}]}
    out = plot_timeline(report, str(tmp_path / "t.png"))
    assert os.path.getsize(out) > 10_000
    from flexnet_lab.verify.plot import _label, _level
    assert [_level(c) for c in report["changes"]] == ["per-packet", "per-device", "fallback"]
    assert "mixed 4/900" in _label(1, report["changes"][1])
    assert "per-packet asked" in _label(2, report["changes"][2])
