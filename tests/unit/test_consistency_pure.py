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


def _hop(payload: bytearray, version: int) -> None:
    """What a recording pipeline does to a probe (compiler/ebpf.py, compiler/p4.py): its
    version into slot[count], count + 1, saturating."""
    from flexnet_lab.compiler.probe import COUNT_AT, COUNT_MAX, SLOTS, SLOTS_AT
    n = payload[COUNT_AT]
    if n < SLOTS:
        payload[SLOTS_AT + 4 * n:SLOTS_AT + 4 * n + 4] = version.to_bytes(4, "big")
    payload[COUNT_AT] = min(COUNT_MAX, n + 1)


def _received(pid: int, versions) -> bytes:
    """The record a receiver keeps of probe `pid` that met `versions` in path order."""
    from flexnet_lab.compiler.probe import PAYLOAD_BYTES, probe_payload
    payload = bytearray(probe_payload(pid))
    assert len(payload) == PAYLOAD_BYTES == 44
    for v in versions:
        _hop(payload, v)
    return bytes(payload[4:])


def test_the_trailer_holds_each_hop_in_path_order_and_says_when_it_overflowed():
    from flexnet_lab.compiler.probe import RECORD, SLOTS, hops, probe_payload
    raw = probe_payload(0x01020304)
    assert raw[:8] == b"FXPR\x01\x02\x03\x04" and raw[8:] == bytes(36)
    pid, count, *slots = RECORD.unpack(_received(7, [11, 22, 33]))
    assert (pid, count) == (7, 3) and hops(count, tuple(slots)) == (11, 22, 33)
    pid, count, *slots = RECORD.unpack(_received(8, range(1, SLOTS + 1)))
    assert hops(count, tuple(slots)) == tuple(range(1, SLOTS + 1))      # full, not over
    pid, count, *slots = RECORD.unpack(_received(9, range(1, SLOTS + 2)))
    assert count == SLOTS + 1 and hops(count, tuple(slots)) is None       # overflowed
    _, count, *_ = RECORD.unpack(_received(9, [5] * 300))
    assert count == 255                                                  # saturates


def _oracle(epochs, received, sent, rate=1.0, t0=0.0):
    """epochs: (level, at, {device: version}); received: [(id, [versions])] in arrival
    order; one stream of ids 1, 2, ... sent from t0 at `rate`."""
    o = Oracle(None, None, [("h1", "h2")], rate)
    os.rmdir(o._tmp)
    o.epochs = [{"label": f"e{i}", "level": lvl, "at": at, "versions": v}
                for i, (lvl, at, v) in enumerate(epochs)]
    s = o.streams[0]
    s.sent, s.t0 = sent, t0
    o.receive(s, b"".join(_received(pid, vs) for pid, vs in received) + b"\0" * 7)
    return o


def test_a_probe_is_mixed_only_when_no_single_network_state_explains_its_hops():
    # s1 and s2 both change at epoch 1 (per-device), both again at epoch 2 (per-packet);
    # probe k (id k + 1) is sent at time k
    epochs = [("-", -1.0, {"s1": 10, "s2": 20, "s3": 30}),
              ("per-device", 3.5, {"s1": 11, "s2": 21, "s3": 30}),
              ("per-packet", 5.5, {"s1": 12, "s2": 22, "s3": 30})]
    received = [(1, [10, 20, 30]),     # old everywhere: epoch 0
                (3, [11, 21, 30]),     # epoch 1
                (2, [11, 20]),         # new on s1, old on s2: mixed, change 1
                (4, [12, 22]),         # epoch 2
                (5, [99]),             # a version no snapshot saw
                (7, []),               # no device recorded it
                (8, list(range(9)))]   # more hops than slots
    # id 6 (sent at t=5, during change 2) is lost
    rep = _oracle(epochs, received, 8).report()
    assert rep["mixed"] == 1
    assert rep["mixed_by_level"] == {"-": 0, "per-device": 1, "per-packet": 0}
    assert rep["probes_sent"] == 8 and rep["probes_received"] == 7
    assert rep["probes_lost"] == 1 and rep["probes_reordered"] == 1
    assert rep["probes_unknown_version"] == 1 and rep["probes_unplaced"] == 2
    assert rep["probes_placed"] == 4 and rep["version_collisions"] == []
    assert [(c["probes"], c["single"], c["mixed"], c["lost"]) for c in rep["changes"]] == \
        [(2, 1, 1, 0), (1, 1, 0, 1)]
    assert rep["changes"][0]["reordered"] == 1      # probe 2 arrived after 3
    assert rep["streams"] == [{"src": "h1", "dst": "h2", "sent": 8, "received": 7,
                               "placed": 4, "mixed": 1}]


def test_lost_probes_go_to_the_change_under_way_when_they_were_sent():
    epochs = [("-", 0.0, {"s1": 10}), ("per-device", 1.0, {"s1": 11}),
              ("per-packet", 2.0, {"s1": 12})]
    # 40 probes at 10/s from t=0.05: ids 1..10 while change 1 was under way, 11..20
    # during change 2, 21..40 after the last note (they count on the last change)
    rep = _oracle(epochs, [], 40, rate=10.0, t0=0.05).report()
    assert rep["probes_lost"] == 40 and rep["probes_placed"] == 0
    assert [c["lost"] for c in rep["changes"]] == [10, 30]


def test_a_version_two_devices_ran_is_reported_not_merged():
    epochs = [("-", 0.0, {"s1": 10, "s2": 40}), ("per-device", 1.0, {"s1": 40, "s2": 21})]
    rep = _oracle(epochs, [(1, [10, 40]), (2, [40, 21])], 2).report()
    assert rep["version_collisions"] == [{"version": 40, "devices": ["s1", "s2"]}]
    assert rep["probes_unknown_version"] == 2 and rep["probes_placed"] == 0


def test_versions_are_read_from_switches_slots_and_each_function_of_a_chain():
    from types import SimpleNamespace as NS
    handles = {"s1": NS(version=5), "h1:tc:egress": NS(version=6), "br": NS(),
               "p4user": NS(version=0),
               "h2:tc:ingress": NS(versions=lambda: {"h2:tc:ingress/a": 7,
                                                     "h2:tc:ingress/b": 8})}
    o = Oracle(None, NS(devices=NS(handles=handles)), [("h1", "h2")])
    os.rmdir(o._tmp)
    o.note("start", "-")
    assert o.epochs[0]["versions"] == {"s1": 5, "h1:tc:egress": 6, "h2:tc:ingress/a": 7,
                                       "h2:tc:ingress/b": 8}


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
    # old flows active past the bound (50 ms); moved, their old packets end by 100 ms
    devs = {n: _TwoVersionSwitch(infrastructure(), old_traffic=lambda t: t < 0.1)
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


def _per_packet_change(devs, drain):
    from flexnet_lab.plan.two_phase import apply_changes
    from flexnet_lab.program.delta import load_delta
    base = os.path.join(os.path.dirname(__file__), "..", "..", "scenarios", "deltas")
    new = load_delta(os.path.join(base, "acl-udp-9999.yaml")).apply(devs["s1"].program)[0]
    return apply_changes([(n, d, new, "acl") for n, d in devs.items()], "per-packet", devs,
                         _NoFabric(), [], drain)


class _InFlightSwitch(_TwoVersionSwitch):
    """A switch whose old-version packets stay between it and the next one for `late_s`
    after the flip, no counter moving meanwhile (a starved bmv2 receive buffer)."""

    def __init__(self, program, late_s):
        super().__init__(program)
        self.late_s = late_s

    def drain_counts(self, slot):
        import time
        late = self.flipped_at is not None and time.perf_counter() - self.flipped_at < self.late_s
        return 0, int(late)


def test_drain_waits_for_old_packets_between_switches_however_long_they_take():
    """Old packets counted in flight hold the drain until they arrive (here 80 ms, 80 quiet
    times): retired before, they would run the new version on the rest of their path."""
    from flexnet_lab.plan.two_phase import DrainPolicy
    from flexnet_lab.program.library import infrastructure
    devs = {n: _InFlightSwitch(infrastructure(), 0.08) for n in ("s1", "s2")}
    recs = _per_packet_change(devs, DrainPolicy(quiet_ms=1, max_ms=1000))
    assert {r.consistency for r in recs} == {"per-packet"}
    ph = recs[0].phases
    assert ph["drain_ms"] >= 80 and not ph["drain_bounded"] and ph["old_in_flight_left"] == 0


def test_a_drain_at_its_bound_is_not_claimed_per_packet():
    """Old packets still moving (or in flight) when the drain reaches its bound may meet the
    new version: the records say per-device achieved and why, never per-packet."""
    from flexnet_lab.plan.two_phase import DrainPolicy
    from flexnet_lab.program.library import infrastructure
    devs = {n: _InFlightSwitch(infrastructure(), 10.0) for n in ("s1", "s2")}
    recs = _per_packet_change(devs, DrainPolicy(quiet_ms=1, max_ms=40))
    assert {r.consistency for r in recs} == {"per-device"}
    ph = recs[0].phases
    assert ph["drain_bounded"] and ph["old_in_flight_left"] == 2
    assert "per-packet requested; per-device achieved: the drain reached its bound (40 ms)" \
        in recs[0].notes[0] and "2 still between two bmv2 switches" in recs[0].notes[0]
