"""bmv2 switches in the lab, driven over P4Runtime, mixed with eBPF switches; changes go
through the controller (one per lab, closed before the lab stops)."""
import ipaddress
import json
import os

import pytest

from flexnet_lab.control.controller import controller_for
from flexnet_lab.errors import EntryError, TargetError
from flexnet_lab.lab.network import Lab
from flexnet_lab.program.delta import load_delta
from flexnet_lab.topology.loader import parse_topology
from flexnet_lab.verify.traffic import FlowSpec, measure_flow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = [pytest.mark.root, pytest.mark.bmv2, pytest.mark.p4c]

MIXED = {"hosts": {"h1": {}, "h2": {}, "h3": {}},
         "switches": {"s1": {"target": "bmv2"}, "s2": {"target": "ebpf"},
                      "s3": {"target": "bmv2"}},
         "links": [["h1", "s1"], ["h2", "s2"], ["h3", "s3"], ["s1", "s2"], ["s2", "s3"]]}
ACL = os.path.join(ROOT, "scenarios/deltas/acl-udp-9999.yaml")


@pytest.fixture
def lab():
    with Lab(parse_topology(MIXED, "mixed.yaml")) as lab:
        yield lab


@pytest.fixture
def ctl(lab):
    """The lab's controller, in this process; closed before the lab stops."""
    with controller_for(lab) as controller:
        yield controller


def test_mixed_bmv2_and_ebpf_topology_pings_all_and_reads_entries_back(lab, ctl):
    assert {n: s.kind for n, s in lab.switches.items()} == \
        {"s1": "bmv2", "s2": "ebpf", "s3": "bmv2"}
    assert lab.ping_all()["loss_pct"] == 0.0
    for name in ("s1", "s3"):
        got = {(e.match[0][0], e.args[0]) for e in ctl.entries(name, "l3_fwd")}
        want = {(int(ipaddress.IPv4Address(r.dst_ip)), r.port) for r in lab.routes[name]}
        assert got == want
        # the controller took the routes it found as its intent
        assert set(ctl.entries(name, "l3_fwd")) == ctl.device_intent(name).table_entries("l3_fwd")


def test_table_delta_on_bmv2_keeps_entries_and_the_acl_works(lab, ctl):
    s1 = ctl.handle("s1")
    before = s1.entries("l3_fwd")
    (rec,), inverses = ctl.apply_delta("s1", load_delta(ACL))
    assert rec.kind == "pipeline" and any("registers carried" in n for n in rec.notes)
    assert s1.entries("l3_fwd") == before          # reconciled, read back identical
    ctl.insert_entry("s1", "acl", (17, 9999), "drop")
    assert [(e.match, e.action) for e in s1.entries("acl")] == [((17, 9999), "drop")]
    h1, h3 = lab.host("h1"), lab.host("h3")
    assert lab.ping_all()["loss_pct"] == 0.0
    h3.cmd("iperf3 -s -D -p 9999; iperf3 -s -D -p 5201")
    try:
        blocked = h1.cmd("iperf3 -c 10.0.0.3 -u -b 1M -t 1 -p 9999 -J --connect-timeout 1000")
        allowed = h1.cmd("iperf3 -c 10.0.0.3 -u -b 1M -t 1 -p 5201 -J")
    finally:
        h3.cmd("pkill -f 'iperf3 -s'")
    allowed, blocked = json.loads(allowed), json.loads(blocked)
    assert allowed["end"]["sum"]["lost_packets"] == 0 and allowed["end"]["sum"]["packets"] > 0
    # every datagram to port 9999 is dropped: the server saw none (or no result at all)
    assert "error" in blocked or blocked["end"]["sum"]["lost_percent"] == 100, \
        blocked.get("end", {}).get("sum")
    ctl.apply_inverses(inverses)                   # the table goes, its entry with it
    assert s1.program.table("acl") is None and s1.entries("l3_fwd") == before
    assert not ctl.device_intent("s1").table_entries("acl")
    assert lab.ping_all()["loss_pct"] == 0.0


def test_an_entry_the_switch_refuses_names_table_and_entry_and_changes_nothing(lab, ctl):
    before = ctl.entries("s1", "l3_fwd")
    intent = ctl.device_intent("s1")
    with pytest.raises(EntryError) as err:
        ctl.insert_entry("s1", "l3_fwd", ((0x0A000009, 40),), "forward", (1,))
    # refused by the controller's check of the entry against the program, before bmv2
    assert err.value.device == "s1" and err.value.table == "l3_fwd"
    assert "match[0]: 40 is out of range 0..32" in str(err.value), str(err.value)
    assert ctl.entries("s1", "l3_fwd") == before
    assert ctl.device_intent("s1") == intent


def test_a_pipeline_the_switch_refuses_leaves_pipeline_entries_and_counters_untouched(lab, ctl):
    """The target's own prepare/commit, below the controller: a pipeline bmv2 refuses at
    commit leaves the switch as it was."""
    delta = load_delta(ACL)
    s1 = ctl.handle("s1")
    assert lab.ping_all()["loss_pct"] == 0.0
    program, before, counters = s1.program, s1.entries("l3_fwd"), s1.port_counters()
    prepared = s1.prepare(delta.apply(program)[0])
    prepared.device_json = prepared.device_json[:len(prepared.device_json) // 2]  # cut
    with pytest.raises(TargetError) as err:
        s1.commit(prepared)
    assert "refuses the pipeline" in str(err.value) and "Json" in str(err.value), err.value
    assert s1.program is program and s1.entries("l3_fwd") == before
    assert s1.port_counters() == counters
    assert lab.ping_all()["loss_pct"] == 0.0


def test_a_change_of_two_switches_one_refusing_leaves_both_as_they_were(lab, ctl):
    """s1 and s3 change as one: s1 stages (its new pipeline saved and filled), s3's is
    refused; s1 is put back (its saved pipeline cannot be dropped: committed, then the old
    program staged and committed again) with its entries and counters, and still works."""
    acl = load_delta(ACL)
    s1, s3 = ctl.handle("s1"), ctl.handle("s3")
    assert lab.ping_all()["loss_pct"] == 0.0
    old = s1.program
    before = {n: (ctl.entries(n, "l3_fwd"), ctl.counters(n)) for n in ("s1", "s3")}
    intent = {n: ctl.device_intent(n) for n in ("s1", "s3")}
    good_prepare = s3.prepare

    def refused(program):
        prepared = good_prepare(program)
        prepared.device_json = b"{" + prepared.device_json[:100]
        return prepared
    s3.prepare = refused
    try:
        with pytest.raises(TargetError, match="refuses the pipeline"):
            ctl.apply_delta("s[13]", acl)
    finally:
        s3.prepare = good_prepare
    assert s1.program is old and s3.program is old
    assert {n: (ctl.entries(n, "l3_fwd"), ctl.counters(n)) for n in ("s1", "s3")} == before
    assert {n: ctl.device_intent(n) for n in ("s1", "s3")} == intent
    assert lab.ping_all()["loss_pct"] == 0.0
    (rec,), _ = ctl.apply_delta("s1", acl)        # not wedged: changes again
    assert s1.program.table("acl") is not None and rec.kind == "pipeline"


def test_registers_are_carried_across_a_pipeline_change(lab, ctl):
    """Quiet switch: the port counters read back identical after each delta; a packet
    counted afterwards adds to them."""
    acl = load_delta(ACL)
    assert lab.ping_all()["loss_pct"] == 0.0
    counters = ctl.counters("s1")
    assert counters[1]["rx_packets"] > 0
    (rec,), inverses = ctl.apply_delta("s1", acl)
    assert ctl.counters("s1") == counters, rec.notes
    ctl.apply_inverses(inverses)
    assert ctl.counters("s1") == counters
    lab.host("h1").cmd("ping -c 3 -i 0.05 10.0.0.2")
    after = ctl.counters("s1")
    assert after[1]["rx_packets"] >= counters[1]["rx_packets"] + 3


def test_each_delta_kind_under_udp_load_loses_nothing_and_keeps_entries_and_counters(lab, ctl):
    """ACL table add, its actions changed (new action + counter map) and back, the table
    removed, a parser state added and removed — on bmv2 s1 while UDP h1 -> h3 crosses it."""
    deltas = {n: load_delta(os.path.join(ROOT, f"scenarios/deltas/{n}.yaml"))
              for n in ("acl-udp-9999", "acl-count", "shim-parser")}
    s1 = ctl.handle("s1")
    base = s1.program
    with_acl, no_acl = deltas["acl-udp-9999"].apply(base)
    with_count, no_count = deltas["acl-count"].apply(with_acl)
    with_shim, no_shim = deltas["shim-parser"].apply(base)
    # each step is a delta through the controller; the program it leads to
    steps = [(deltas["acl-udp-9999"], with_acl), (deltas["acl-count"], with_count),
             (no_count, with_acl), (no_acl, base), (deltas["shim-parser"], with_shim),
             (no_shim, base)]
    for prog in {with_acl, with_count, with_shim, base}:
        s1.abort(s1.prepare(prog))            # p4c runs before the flow, not during it
    before = s1.entries("l3_fwd")
    kept, rx = [], []

    def changes():
        for delta, prog in steps:
            (rec,), _ = ctl.apply_delta("s1", delta)
            assert rec.kind in ("pipeline", "full_swap"), rec.kind
            assert s1.program == prog
            kept.append(s1.entries("l3_fwd") == before)
            rx.append(s1.port_counters()[1]["rx_packets"])
    flow = measure_flow(lab, FlowSpec("udp", "h1", "h3", "udp", 20_000_000, 4.0), changes)
    # no gap at the receiver; iperf3's server may leave the last datagrams unread when it
    # stops (bmv2's latency keeps a few more in flight than the eBPF switch)
    assert flow.sent > 5000 and flow.gap_lost == 0 and flow.tail_lost <= 50, \
        (flow.sent, flow.gap_lost, flow.tail_lost)
    assert all(kept) and len(kept) == len(steps)
    assert rx == sorted(rx) and rx[0] > 0, rx    # carried: never back to zero


def test_a_sketch_placed_on_bmv2_is_read_and_written_through_the_map_api(lab, ctl):
    """count_min placed on bmv2 s1: the same read_map/write_map as on the eBPF targets
    (registers over thrift); the routes survive the change."""
    s1 = ctl.handle("s1")
    routes = s1.entries("l3_fwd")
    where = ctl.deploy("flexnet://t/cms", {"function": "count_min", "on": ["s1", "h1"],
                                           "switch_state_kb": 1024})
    assert where["devices"] == ["s1"] and s1.program.table("count_min_fn") is not None, where
    assert s1.entries("l3_fwd") == routes
    lab.host("h1").cmd("ping -c 20 -i 0.01 -q 10.0.0.2")
    cms = s1.program.map("cms")
    values = ctl.read_map("s1", "cms")
    assert len(values) == cms.rows * cms.size
    rows = [sum(values[r * cms.size:(r + 1) * cms.size]) for r in range(cms.rows)]
    assert all(r >= 40 for r in rows), rows       # requests in, replies out
    s1.write_map("cms", 0, 12345)
    assert s1.read_map("cms")[0] == 12345
    with pytest.raises(TargetError, match="outside"):
        s1.write_map("cms", cms.rows * cms.size, 1)
