"""Consistency levels and the oracle's verdict (pure: no kernel)."""
from __future__ import annotations

import os

import pytest

from flexnet_lab.errors import OptionError
from flexnet_lab.plan.two_phase import LEVELS, check_level
from flexnet_lab.verify.oracle import Oracle


def test_levels_named_and_anything_else_refused_with_the_choices():
    assert check_level("per-packet") == "per-packet"
    assert check_level("per-flow") == "per-flow"
    assert LEVELS == ("per-device", "per-packet", "per-flow")
    with pytest.raises(OptionError) as err:
        check_level("per-hop")
    assert "per-device or per-packet or per-flow" in str(err.value)


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
    sc = parse_scenario(doc, os.path.join(base, "x.yaml"))
    assert sc.changes[0].consistency == "per-flow"
    doc["changes"][0]["consistency"] = "per-hop"
    with pytest.raises(ScenarioError) as err:
        parse_scenario(doc, os.path.join(base, "x.yaml"))
    assert "changes[0].consistency" in str(err.value)


class _TwoVersionSwitch:
    """A device that holds two versions, as plan/two_phase.py drives it (planning logic
    only): `old_traffic` says whether old-version packets keep arriving after the flip."""
    kind = "ebpf"

    def __init__(self, program, flows=True, old_traffic=lambda t: False, evicted=0):
        self.program, self.stamp, self.flows = program, 0, flows
        self.evicted = evicted        # old-version flow entries the LRU dropped
        self.old_traffic, self.flipped_at, self.old_count = old_traffic, None, 0
        self.tracking: list[int] = []
        self.log: list[str] = []

    def holds_two_versions(self):
        return True

    def holds_flows(self):
        return self.flows

    def set_flow_tracking(self, gen, idle_us=0):
        self.tracking.append(gen)
        self.log.append(f"flows {'on' if gen else 'off'}")

    def flow_census(self, gen):
        assert self.tracking[-1] == 0, "census while tracking is on"
        old = 1 - self.stamp
        evicted = [0, 0]
        evicted[old] = self.evicted
        self.log.append("census")
        return {"slots": 4096, "made": [10 + self.evicted, 3], "left": [0, 0],
                "kept": [10, 3], "evicted": evicted}

    def prepare(self, prog):
        from types import SimpleNamespace
        return SimpleNamespace(program=prog, compile_ms=0.0, load_ms=0.0, version=2)

    def abort(self, prep):
        pass

    def set_stamp(self, slot):
        import time
        self.stamp, self.flipped_at = slot, time.perf_counter()
        self.log.append("flip")

    def set_tagging(self, on):
        self.log.append(f"tagging {'on' if on else 'off'}")

    def set_trust(self, ifname, on):
        pass

    def set_port_tag(self, port, on):
        pass

    def version_counts(self):
        import time
        if self.flipped_at is not None and self.old_traffic(time.perf_counter() - self.flipped_at):
            self.old_count += 1
        return (self.old_count, 0) if self.stamp == 1 else (0, self.old_count)

    def install_spare(self, prep):
        self.spare = prep

    def remove_spare(self):
        pass

    def promote_spare(self):
        self.program = self.spare.program

    def demote(self):
        pass

    def retire_old(self):
        self.log.append("retire")

    def entries(self, table):
        return []

    def default(self, table):
        t = self.program.table(table)
        return (t.default_action, tuple(t.default_args))

    def set_default(self, table, action, args):
        pass

    def read_map(self, name):
        return []


def _per_flow_change(devs, drain):
    from flexnet_lab.plan.two_phase import apply_changes
    from flexnet_lab.program.delta import load_delta
    base = os.path.join(os.path.dirname(__file__), "..", "..", "scenarios", "deltas")
    new = load_delta(os.path.join(base, "acl-udp-9999.yaml")).apply(devs["s1"].program)[0]
    undo: list = []
    recs = apply_changes([(n, d, new, "acl") for n, d in devs.items()], "per-flow", devs,
                         _NoFabric(), undo, drain)
    return recs, undo


class _NoFabric:
    switches: dict = {}
    hosts: dict = {}


def test_per_flow_learns_before_the_flip_waits_for_idle_flows_and_turns_tracking_off():
    from flexnet_lab.plan.two_phase import DrainPolicy
    from flexnet_lab.program.library import infrastructure
    # old-version packets keep arriving for 60 ms after the flip, then the old flow is idle
    devs = {n: _TwoVersionSwitch(infrastructure(), old_traffic=lambda t: t < 0.06)
            for n in ("s1", "s2")}
    recs, _ = _per_flow_change(devs, DrainPolicy(idle_ms=20, flow_max_ms=1000))
    assert {r.consistency for r in recs} == {"per-flow"}
    ph = recs[0].phases
    assert ph["idle_ms"] == 20 and not ph["drain_bounded"]
    assert ph["drain_ms"] >= 60 + 20 and ph["old_packets_after_flip"] > 0
    # tagging on first (transit packets are not entering flows); tracking on before the flip,
    # a fresh generation of 31 bits; off at the end of the drain (every old flow is idle),
    # then the census of the frozen tables, then the retire
    for d in devs.values():
        assert d.log.index("tagging on") < d.log.index("flows on") < d.log.index("flip") \
            < d.log.index("flows off") < d.log.index("census") < d.log.index("retire")
        assert d.log.count("tagging on") == 1
        assert 0 < d.tracking[0] < 1 << 31 and d.tracking[-1] == 0
    assert devs["s1"].tracking[0] == devs["s2"].tracking[0]
    assert ph["flows_evicted"] == 0 and ph["flow_entries"] == 2 * 13
    assert ph["flow_table_slots"] == 4096


def test_per_flow_bounded_drain_says_flows_moved_and_achieves_per_packet():
    from flexnet_lab.plan.two_phase import DrainPolicy
    from flexnet_lab.program.library import infrastructure
    devs = {n: _TwoVersionSwitch(infrastructure(), old_traffic=lambda t: True)
            for n in ("s1", "s2")}
    recs, _ = _per_flow_change(devs, DrainPolicy(idle_ms=10, flow_max_ms=50))
    assert {r.consistency for r in recs} == {"per-packet"}
    ph = recs[0].phases
    assert ph["drain_bounded"] and ph["old_packets_last_idle"] > 0
    note = " ".join(recs[0].notes)
    assert "per-flow requested; per-packet achieved" in note and "moved" in note


def test_per_flow_with_old_flows_evicted_is_per_packet_and_says_how_many_where():
    """More active flows than a flow table holds: the LRU evicted old-version entries, so
    those flows may have moved before they were idle: never claimed per-flow."""
    from flexnet_lab.plan.two_phase import DrainPolicy
    from flexnet_lab.program.library import infrastructure
    devs = {"s1": _TwoVersionSwitch(infrastructure(), evicted=7),
            "s2": _TwoVersionSwitch(infrastructure(), evicted=30)}
    recs, _ = _per_flow_change(devs, DrainPolicy(idle_ms=10))
    assert {r.consistency for r in recs} == {"per-packet"}
    ph = recs[0].phases
    assert not ph["drain_bounded"]
    assert ph["flows_evicted"] == 37 and ph["flows_evicted_at"] == "s2"
    note = " ".join(recs[0].notes)
    assert "per-flow requested; per-packet achieved: the flow tables overflowed" in note
    assert "37 flows of the old version were evicted (most at s2)" in note
    assert "4096 flows per ingress point" in note


def test_per_flow_without_a_flow_table_is_per_packet_and_says_which_device():
    from flexnet_lab.plan.two_phase import DrainPolicy
    from flexnet_lab.program.library import infrastructure
    devs = {"s1": _TwoVersionSwitch(infrastructure()),
            "s2": _TwoVersionSwitch(infrastructure(), flows=False)}
    recs, _ = _per_flow_change(devs, DrainPolicy(idle_ms=10))
    assert {r.consistency for r in recs} == {"per-packet"}
    assert "s2 has no flow table" in " ".join(recs[0].notes)
    assert all(not d.tracking for d in devs.values())   # never turned on
    assert "idle_ms" not in recs[0].phases


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
