"""Consistency levels and the oracle's verdict (pure: no kernel)."""
from __future__ import annotations

import os

import pytest

from flexnet_lab.errors import OptionError
from flexnet_lab.plan.two_phase import LEVELS, check_level
from flexnet_lab.verify.oracle import Oracle


def test_levels_named_and_anything_else_refused_with_the_choices():
    assert check_level("per-packet") == "per-packet"
    assert LEVELS == ("per-device", "per-packet")
    with pytest.raises(OptionError) as err:
        check_level("per-flow")
    assert "per-device or per-packet" in str(err.value)


def _oracle(epochs, hops, sent, received):
    o = Oracle(None, None, [("h1", "h2")])
    os.rmdir(o._tmp)
    o.epochs = [{"label": f"e{i}", "level": lvl, "versions": v} for i, (lvl, v) in enumerate(epochs)]
    o.hops = hops
    o.streams[0].sent = sent
    o.streams[0].received = received
    return o


def test_a_probe_is_mixed_only_when_no_single_network_state_explains_its_hops():
    # s1 and s2 both change at epoch 1 (per-device), both again at epoch 2 (per-packet)
    epochs = [("-", {"s1": 10, "s2": 20, "s3": 30}),
              ("per-device", {"s1": 11, "s2": 21, "s3": 30}),
              ("per-packet", {"s1": 12, "s2": 22, "s3": 30})]
    hops = {1: {"s1": 10, "s2": 20, "s3": 30},     # old everywhere: epoch 0
            2: {"s1": 11, "s2": 20},               # new on s1, old on s2: mixed, change 1
            3: {"s1": 11, "s2": 21, "s3": 30},     # epoch 1
            4: {"s1": 12, "s2": 22},               # epoch 2
            5: {"s1": 99}}                         # a version no snapshot saw
    rep = _oracle(epochs, hops, 6, [1, 3, 2, 4, 5])
    assert rep.report()["mixed"] == 1
    assert rep.report()["mixed_by_level"] == {"-": 0, "per-device": 1, "per-packet": 0}
    r = rep.report()
    assert r["probes_sent"] == 6 and r["probes_lost"] == 1 and r["probes_reordered"] == 1
    assert r["probes_unknown_version"] == 1 and r["probes_unplaced"] == 1
    assert [(c["probes"], c["single"], c["mixed"]) for c in r["changes"]] == [(2, 1, 1), (1, 1, 0)]
    assert r["changes"][0]["reordered"] == 1      # probe 2 arrived after 3


def test_scenario_change_takes_a_consistency_level(tmp_path):
    from flexnet_lab.errors import ScenarioError
    from flexnet_lab.verify.scenario_file import parse_scenario
    import yaml
    base = os.path.join(os.path.dirname(__file__), "..", "..", "scenarios")
    doc = yaml.safe_load(open(os.path.join(base, "acl-everywhere.yaml")))
    doc["changes"][0]["consistency"] = "per-packet"
    sc = parse_scenario(doc, os.path.join(base, "x.yaml"))
    assert [c.consistency for c in sc.changes] == ["per-packet", "per-device", "per-device"]
    doc["changes"][0]["consistency"] = "per-flow"
    with pytest.raises(ScenarioError) as err:
        parse_scenario(doc, os.path.join(base, "x.yaml"))
    assert "changes[0].consistency" in str(err.value)


def test_a_bmv2_switch_is_weak_only_when_its_pipeline_cannot_hold_both_versions():
    """plan/two_phase.py asks a bmv2 switch why it cannot hold both versions (the dual
    pipeline generator's refusal); no reason: it takes part in the two-phase update."""
    from types import SimpleNamespace

    from flexnet_lab.plan.two_phase import _weak_reason

    plan = SimpleNamespace(kind="pipeline")

    def dev(reason):
        return SimpleNamespace(kind="bmv2", holds_two_versions=lambda: True,
                               spare_refusal=lambda prog: reason)
    assert _weak_reason("l1", dev(""), plan, object()) == ""
    why = "l1 (bmv2) cannot hold both versions in one pipeline: parser.udp differs"
    assert _weak_reason("l1", dev(why), plan, object()) == why
    old = SimpleNamespace(kind="bmv2", holds_two_versions=lambda: False)
    assert "holds one pipeline" in _weak_reason("l1", old, plan, object())
