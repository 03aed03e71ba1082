"""Pure tests: a scenario change of several parts (switch deltas, undos, entries; host
swaps and entries) made as one transaction at one level. The file is parsed and the
timeline checked against the topology before any lab: one error naming the file and the
field for a bad part, an empty list, a device that does not exist, parts that change one
device twice, levels that conflict. Also the report's and the plot's view of it."""
import copy
import json
import os

import pytest

from flexnet_lab.errors import ScenarioError
from flexnet_lab.topology import load_topology
from flexnet_lab.verify.scenario import (_devices_of, dry_run, load_scenario,
                                         parse_scenario)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DELTA = os.path.join(ROOT, "scenarios", "deltas", "acl-udp-9999.yaml")
SHIM = os.path.join(ROOT, "scenarios", "deltas", "shim-parser.yaml")
TC_EGRESS = {"hook": "tc", "direction": "egress"}
UDP_9999 = [[0, 0], [0, 0], [17, 255], [0, 0], [9999, 65535]]   # the host acl: ternary
BASE = {"topology": "leaf-spine", "traffic": {"duration": 8},
        "setup": [{"host": "h1", "attach": "flow_counter", **TC_EGRESS},
                  {"host": "h8", "attach": "acl", "hook": "xdp"}],
        "probes": {"pairs": [["h1", "h8"]], "pps": 1000},
        "changes": [
            {"at": 2, "consistency": "per-packet", "expect": {"mixed": 0},
             "parts": [{"switch": "*", "delta": DELTA},
                       {"host": "h1", "swap": "count_min", **TC_EGRESS},
                       {"host": "h8", "entry": {"table": "acl", "match": UDP_9999,
                                                "action": "drop"}}]},
            {"at": 4, "parts": [{"switch": "*", "undo": 0},
                                {"host": "h1", "swap": "flow_counter", **TC_EGRESS}]}]}
LEAF_SPINE = os.path.join(ROOT, "topologies", "leaf-spine.yaml")


def _with(change0=None, change1=None, **top):
    data = copy.deepcopy(BASE)
    for i, patch in ((0, change0), (1, change1)):
        for key, value in (patch or {}).items():
            if value is KeyError:
                del data["changes"][i][key]
            else:
                data["changes"][i][key] = value
    data.update(top)
    return data


def _part(k: int, **patch):
    """changes[0].parts with part k patched (KeyError deletes a key)."""
    parts = copy.deepcopy(BASE["changes"][0]["parts"])
    for key, value in patch.items():
        if value is KeyError:
            del parts[k][key]
        else:
            parts[k][key] = value
    return parts


def _checked(data):
    sc = parse_scenario(data, "groups.yaml")
    return sc, dry_run(sc, sc.topology_for(load_topology(LEAF_SPINE)))


def test_a_grouped_change_parses_as_one_change_of_parts():
    sc, loads = _checked(copy.deepcopy(BASE))
    g, back = sc.changes
    assert g.kind == "group" and len(g.parts) == 3 and g.consistency == "per-packet"
    assert [p.kind for p in g.parts] == ["delta", "swap", "entry"]
    assert all(p.consistency == "per-packet" for p in g.parts)   # the group's level
    assert g.parts[1].on_host and g.parts[1].hook == "tc" and g.parts[1].direction == "egress"
    assert dict(g.expect) == {"mixed": 0} and g.device == "*,h1,h8"
    assert g.describe() == ("*: delta acl-udp-9999 + h1: swap to count_min + "
                            "h8: entry acl")
    assert back.consistency == "per-device" and back.parts[0].undo == 0
    # the timeline's programs: six switches' ACL pipelines and both host swaps, twice
    assert sorted(d for *_, d in loads).count("h1") == 2 and len(loads) == 14


def test_the_level_may_be_given_by_the_parts_when_they_agree():
    parts = _part(0, consistency="per-flow")
    parts[1]["consistency"] = "per-flow"
    sc = parse_scenario(_with({"consistency": KeyError, "expect": KeyError, "parts": parts}),
                        "g.yaml")
    assert sc.changes[0].consistency == "per-flow"
    assert {p.consistency for p in sc.changes[0].parts} == {"per-flow"}
    sc = parse_scenario(_with({"consistency": KeyError, "expect": KeyError}), "g.yaml")
    assert sc.changes[0].consistency == "per-device"      # nothing said: the default


@pytest.mark.parametrize("change0,field", [
    ({"parts": []}, "changes[0].parts"),
    ({"parts": {"switch": "*"}}, "changes[0].parts"),
    ({"parts": None}, "changes[0].parts"),
    ({"parts": [{"switch": "*", "delta": DELTA}] * 65}, "changes[0].parts"),
    ({"parts": ["l1"]}, "changes[0].parts[0]"),
    ({"parts": _part(1, at=3)}, "changes[0].parts[1].at"),
    ({"parts": _part(1, expect={"mixed": 0})}, "changes[0].parts[1].expect"),
    ({"parts": _part(0, parts=[])}, "changes[0].parts[0].parts"),
    ({"parts": _part(0, color="red")}, "changes[0].parts[0].color"),
    ({"parts": _part(0, switch=KeyError)}, "changes[0].parts[0]"),
    ({"parts": _part(0, host="h1")}, "changes[0].parts[0]"),
    ({"parts": _part(0, undo=0)}, "changes[0].parts[0]"),
    ({"parts": _part(0, delta=7)}, "changes[0].parts[0].delta"),
    ({"parts": _part(0, delta={"ops": [{"bogus": 1}]})}, "changes[0].parts[0].delta"),
    ({"parts": _part(1, host="h*")}, "changes[0].parts[1].host"),
    ({"parts": _part(1, hook="xdp")}, "changes[0].parts[1].direction"),
    ({"parts": _part(1, hook="kprobe")}, "changes[0].parts[1].hook"),
    ({"parts": _part(1, rate_mbit=5)}, "changes[0].parts[1].rate_mbit"),
    ({"parts": _part(0, hook="tc")}, "changes[0].parts[0].hook"),
    ({"parts": _part(1, consistency="per-device")}, "changes[0].parts[1].consistency"),
    ({"parts": _part(1, consistency="sometimes")}, "changes[0].parts[1].consistency"),
    ({"consistency": KeyError, "expect": KeyError,
      "parts": _part(0, consistency="per-packet")[:1] +
      _part(1, consistency="per-device")[1:]}, "changes[0].parts[1].consistency"),
    ({"switch": "*"}, "changes[0].switch"),
    ({"delta": DELTA}, "changes[0].delta"),
    ({"at": "soon"}, "changes[0].at"),
    ({"consistency": "atomic"}, "changes[0].consistency"),
    ({"expect": {"mixd": 0}}, "changes[0].expect.mixd"),
])
def test_a_bad_grouped_change_is_one_error_naming_the_field(change0, field):
    with pytest.raises(ScenarioError) as err:
        parse_scenario(_with(change0), "groups.yaml")
    assert err.value.field == field, str(err.value)
    assert str(err.value).startswith("groups.yaml: ")
    assert len(str(err.value)) < 400 and "\n" not in str(err.value)


def test_conflicting_levels_say_which_parts_conflict():
    with pytest.raises(ScenarioError) as err:
        parse_scenario(_with({"parts": _part(1, consistency="per-device")}), "g.yaml")
    assert "conflicts with the change's per-packet" in err.value.message
    parts = _part(0, consistency="per-packet")
    parts[2]["consistency"] = "per-flow"
    with pytest.raises(ScenarioError) as err:
        parse_scenario(_with({"consistency": KeyError, "expect": KeyError, "parts": parts}),
                       "g.yaml")
    assert err.value.field == "changes[0].parts[2].consistency"
    assert "parts[0] asks per-packet" in err.value.message


@pytest.mark.parametrize("change0,change1,field", [
    # an undo names an earlier delta on the same switch or pattern: in a group, a part's
    ({}, {"parts": [{"switch": "l1", "undo": 0}]}, "changes[1].parts[0].undo"),
    ({}, {"parts": [{"switch": "*", "undo": 1}]}, "changes[1].parts[0].undo"),
    ({"parts": _part(0, delta=KeyError, entry={"table": "acl", "match": [1, 2],
                                               "action": "drop"})},
     {}, "changes[1].parts[0].undo"),
])
def test_undo_parts_name_an_earlier_delta_on_the_same_switches(change0, change1, field):
    with pytest.raises(ScenarioError) as err:
        parse_scenario(_with(change0, change1), "g.yaml")
    assert err.value.field == field, str(err.value)


def test_a_plain_undo_may_name_a_grouped_changes_delta_part():
    data = _with(None, {"parts": KeyError, "switch": "*", "undo": 0})
    sc, _ = _checked(data)
    assert sc.changes[1].kind == "undo" and sc.changes[1].undo == 0


@pytest.mark.parametrize("change0,field,words", [
    ({"parts": _part(1, host="h9")}, "changes[0].parts[1].host", "no host 'h9'"),
    ({"parts": _part(1, host="l1")}, "changes[0].parts[1].host", "a switch"),
    ({"parts": _part(0, switch="l9")}, "changes[0].parts[0].switch", "no switch 'l9'"),
    ({"parts": _part(0, switch="x*")}, "changes[0].parts[0].switch", "no switch matches"),
    ({"parts": _part(0, switch="h1")}, "changes[0].parts[0].switch", "name it with `host:`"),
    # one transaction changes each device once
    ({"parts": _part(0) + [{"switch": "l1", "entry": {"table": "acl", "match": [17, 1],
                                                      "action": "drop"}}]},
     "changes[0].parts[3].switch", "l1 is also changed by parts[0]"),
    ({"parts": _part(1) + [{"host": "h1", "swap": "acl", **TC_EGRESS}]},
     "changes[0].parts[3].host", "h1:tc:egress is also changed by parts[1]"),
    ({"parts": [{"switch": "l*", "delta": DELTA}, {"switch": "l[12]", "delta": SHIM}]},
     "changes[0].parts[1].switch", "also changed by parts[0]"),
    # what each part does is checked as it would be as a change of its own
    ({"parts": _part(1, host="h2")}, "changes[0].parts[1].host", "runs nothing on tc/egress"),
    ({"parts": _part(1, swap="nosuch")}, "changes[0].parts[1].swap", "nosuch"),
    ({"parts": _part(2, entry={"table": "acl", "match": [17], "action": "drop"})},
     "changes[0].parts[2].entry.match", "h8"),
    ({"parts": _part(0, delta={"ops": [{"remove_tables": "nosuch"}]})},
     "changes[0].parts[0].delta", "nosuch"),
])
def test_parts_are_checked_against_the_topology_and_the_models(change0, field, words):
    data = _with(change0)
    del data["changes"][1]          # its undo names changes[0]'s delta on "*"
    with pytest.raises(ScenarioError) as err:
        _checked(data)
    assert err.value.field == field, str(err.value)
    assert words in err.value.message, err.value.message


def test_the_same_host_on_two_hooks_is_two_devices():
    data = _with({"parts": _part(1) + [{"host": "h1", "entry": {
        "table": "acl", "match": UDP_9999, "action": "drop"}, "hook": "xdp"}]},
        setup=BASE["setup"] + [{"host": "h1", "attach": "acl", "hook": "xdp"}])
    sc, _ = _checked(data)
    assert [p.device for p in sc.changes[0].parts].count("h1") == 2


def test_the_shipped_transaction_scenario_checks_out_before_any_lab():
    sc = load_scenario(os.path.join(ROOT, "scenarios", "network-transaction.yaml"))
    loads = dry_run(sc, sc.topology_for(load_topology(LEAF_SPINE)))
    assert all(c.kind == "group" for c in sc.changes)
    assert [c.consistency for c in sc.changes] == ["per-packet", "per-packet",
                                                   "per-device", "per-device"]
    for c in sc.changes:
        assert {p.kind for p in c.parts} >= {"swap"} and any(not p.on_host for p in c.parts)
    assert {d for *_, d in loads} >= {"h1", "h3", "l1", "sp2"}


class _Lab:
    switches = {n: None for n in ("l1", "l2", "l3", "l4", "sp1", "sp2")}


def test_a_grouped_change_touches_the_devices_of_all_its_parts():
    assert _devices_of(_Lab(), "l[12],h1:tc:egress,h8") == {"l1", "l2", "h1", "h8"}
    assert _devices_of(_Lab(), "*") == set(_Lab.switches)


def test_the_plot_marks_a_grouped_change_as_one_change(tmp_path):
    from flexnet_lab.verify.plot import _label, plot_timeline
    ph = {"install_ms": 0.5, "flip_ms": 0.1, "drain_ms": 1.4, "retire_ms": 1.0,
          "prepare_ms": 12.0}
    ch = {"at_s": 2.0, "description": "*: delta acl + h1: swap to count_min",
          "device": "*,h1", "consistency": "per-packet", "requested": "per-packet",
          "phases": ph, "total_ms": 15.0, "swap_ms": 0.1,
          "parts": ["*: delta acl", "h1: swap to count_min"],
          "oracle": {"probes": 900, "single": 900, "mixed": 0, "lost": 0, "reordered": 0}}
    assert _label(0, ch).startswith(" 0: one change, 2 parts on *, h1 [per-packet]")
    plain = {**ch, "parts": [], "description": "l1: delta acl"}
    assert _label(1, plain).startswith(" 1: l1: delta acl [per-packet]")
    report = {"scenario": "g", "topology": "leaf-spine", "passed": True, "duration_s": 6,
              "baseline_window_s": [0.5, 1.7], "changes": [ch, plain],
              "flows": [{"name": "u", "proto": "udp", "src": "h1", "dst": "h8",
                         "intervals": [[i / 10, (i + 1) / 10, 100.0, 0, 0]
                                       for i in range(60)]}]}
    path = plot_timeline(json.loads(json.dumps(report)), str(tmp_path / "t.png"))
    assert os.path.getsize(path) > 10_000
