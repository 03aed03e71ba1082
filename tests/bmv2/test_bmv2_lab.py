"""bmv2 switches in the lab, driven over P4Runtime, mixed with eBPF switches."""
import ipaddress
import json
import os

import pytest

from flexnet_lab.errors import EntryError, TargetError
from flexnet_lab.lab.network import Lab
from flexnet_lab.plan.execute import apply_program, apply_programs
from flexnet_lab.program.delta import load_delta
from flexnet_lab.topology.loader import parse_topology
from flexnet_lab.verify.traffic import FlowSpec, measure_flow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = [pytest.mark.root, pytest.mark.bmv2, pytest.mark.p4c]

MIXED = {"hosts": {"h1": {}, "h2": {}, "h3": {}},
         "switches": {"s1": {"target": "bmv2"}, "s2": {"target": "ebpf"},
                      "s3": {"target": "bmv2"}},
         "links": [["h1", "s1"], ["h2", "s2"], ["h3", "s3"], ["s1", "s2"], ["s2", "s3"]]}


def test_mixed_bmv2_and_ebpf_topology_pings_all_and_reads_entries_back():
    with Lab(parse_topology(MIXED, "mixed.yaml")) as lab:
        assert {n: s.kind for n, s in lab.switches.items()} == \
            {"s1": "bmv2", "s2": "ebpf", "s3": "bmv2"}
        assert lab.ping_all()["loss_pct"] == 0.0
        for name in ("s1", "s3"):
            got = {(e.match[0][0], e.args[0]) for e in lab.switch(name).entries("l3_fwd")}
            want = {(int(ipaddress.IPv4Address(r.dst_ip)), r.port) for r in lab.routes[name]}
            assert got == want


def test_table_delta_on_bmv2_keeps_entries_and_the_acl_works():
    with Lab(parse_topology(MIXED, "mixed.yaml")) as lab:
        s1 = lab.switch("s1")
        before = s1.entries("l3_fwd")
        delta = load_delta(os.path.join(ROOT, "scenarios/deltas/acl-udp-9999.yaml"))
        rec, inverse = lab.apply_delta("s1", delta)
        assert rec.kind == "pipeline" and any("registers carried" in n for n in rec.notes)
        assert s1.entries("l3_fwd") == before          # reconciled, read back identical
        s1.insert("acl", (17, 9999), "drop")
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
        lab.apply_delta("s1", inverse)                 # the table goes, its entry with it
        assert s1.program.table("acl") is None and s1.entries("l3_fwd") == before
        assert lab.ping_all()["loss_pct"] == 0.0


def test_an_entry_the_switch_refuses_names_table_and_entry_and_changes_nothing():
    with Lab(parse_topology(MIXED, "mixed.yaml")) as lab:
        before = lab.switch("s1").entries("l3_fwd")
        with pytest.raises(EntryError) as err:
            lab.switch("s1").insert("l3_fwd", ((0x0A000009, 40),), "forward", (1,))
        assert err.value.device == "s1" and err.value.table == "ingress.l3_fwd"
        assert "0x0a000009/40" in str(err.value), str(err.value)
        assert lab.switch("s1").entries("l3_fwd") == before


def test_a_pipeline_the_switch_refuses_leaves_pipeline_entries_and_counters_untouched():
    delta = load_delta(os.path.join(ROOT, "scenarios/deltas/acl-udp-9999.yaml"))
    with Lab(parse_topology(MIXED, "mixed.yaml")) as lab:
        s1 = lab.switch("s1")
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


def test_a_change_of_two_switches_one_refusing_leaves_both_as_they_were():
    """s1 and s3 change as one: s1 stages (its new pipeline saved and filled), s3's is
    refused; s1 is put back (its saved pipeline cannot be dropped: committed, then the old
    program staged and committed again) with its entries and counters, and still works."""
    acl = load_delta(os.path.join(ROOT, "scenarios/deltas/acl-udp-9999.yaml"))
    with Lab(parse_topology(MIXED, "mixed.yaml")) as lab:
        s1, s3 = lab.switch("s1"), lab.switch("s3")
        assert lab.ping_all()["loss_pct"] == 0.0
        old = s1.program
        before = {n: (lab.switch(n).entries("l3_fwd"), lab.switch(n).port_counters())
                  for n in ("s1", "s3")}
        good_prepare = s3.prepare

        def refused(program):
            prepared = good_prepare(program)
            prepared.device_json = b"{" + prepared.device_json[:100]
            return prepared
        s3.prepare = refused
        with pytest.raises(TargetError, match="refuses the pipeline"):
            apply_programs([(s1, acl.apply(old)[0], "acl"), (s3, acl.apply(old)[0], "acl")])
        s3.prepare = good_prepare
        assert s1.program is old and s3.program is old
        assert {n: (lab.switch(n).entries("l3_fwd"), lab.switch(n).port_counters())
                for n in ("s1", "s3")} == before
        assert lab.ping_all()["loss_pct"] == 0.0
        rec = lab.apply_delta("s1", acl)[0]                # not wedged: changes again
        assert s1.program.table("acl") is not None and rec.kind == "pipeline"


def test_registers_are_carried_across_a_pipeline_change():
    """Quiet switch: the port counters read back identical after each delta; a packet
    counted afterwards adds to them."""
    acl = load_delta(os.path.join(ROOT, "scenarios/deltas/acl-udp-9999.yaml"))
    with Lab(parse_topology(MIXED, "mixed.yaml")) as lab:
        s1 = lab.switch("s1")
        assert lab.ping_all()["loss_pct"] == 0.0
        counters = s1.port_counters()
        assert counters[1]["rx_packets"] > 0
        rec, inverse = lab.apply_delta("s1", acl)
        assert s1.port_counters() == counters, rec.notes
        lab.apply_delta("s1", inverse)
        assert s1.port_counters() == counters
        lab.host("h1").cmd("ping -c 3 -i 0.05 10.0.0.2")
        after = s1.port_counters()
        assert after[1]["rx_packets"] >= counters[1]["rx_packets"] + 3


def test_each_delta_kind_under_udp_load_loses_nothing_and_keeps_entries_and_counters():
    """ACL table add, its actions changed (new action + counter map) and back, the table
    removed, a parser state added and removed — on bmv2 s1 while UDP h1 -> h3 crosses it."""
    deltas = {n: load_delta(os.path.join(ROOT, f"scenarios/deltas/{n}.yaml"))
              for n in ("acl-udp-9999", "acl-count", "shim-parser")}
    with Lab(parse_topology(MIXED, "mixed.yaml")) as lab:
        s1 = lab.switch("s1")
        base = s1.program
        with_acl = deltas["acl-udp-9999"].apply(base)[0]
        with_count = deltas["acl-count"].apply(with_acl)[0]
        with_shim = deltas["shim-parser"].apply(base)[0]
        steps = [with_acl, with_count, with_acl, base, with_shim, base]
        for prog in set(steps):
            s1.prepare(prog)                  # p4c runs before the flow, not during it
        before = s1.entries("l3_fwd")
        kept, rx = [], []

        def changes():
            for prog in steps:
                rec = apply_program(s1, prog, prog.name)
                assert rec.kind in ("pipeline", "full_swap"), rec.kind
                kept.append(s1.entries("l3_fwd") == before)
                rx.append(s1.port_counters()[1]["rx_packets"])
        flow = measure_flow(lab, FlowSpec("udp", "h1", "h3", "udp", 20_000_000, 4.0), changes)
    assert flow.sent > 5000 and flow.lost == 0, (flow.sent, flow.lost)
    assert all(kept) and len(kept) == len(steps)
    assert rx == sorted(rx) and rx[0] > 0, rx    # carried: never back to zero


def test_a_sketch_placed_on_bmv2_is_read_and_written_through_the_map_api():
    """count_min placed on bmv2 s1: the same read_map/write_map as on the eBPF targets
    (registers over thrift); the routes survive the change."""
    from flexnet_lab.program import library
    with Lab(parse_topology(MIXED, "mixed.yaml")) as lab:
        s1 = lab.switch("s1")
        routes = s1.entries("l3_fwd")
        where = lab.place_function(library.count_min(), ["s1", "h1"], switch_state=1 << 20)
        assert where.device == "s1" and s1.program.table("count_min_fn") is not None
        assert s1.entries("l3_fwd") == routes
        lab.host("h1").cmd("ping -c 20 -i 0.01 -q 10.0.0.2")
        cms = s1.program.map("cms")
        values = s1.read_map("cms")
        assert len(values) == cms.rows * cms.size
        rows = [sum(values[r * cms.size:(r + 1) * cms.size]) for r in range(cms.rows)]
        assert all(r >= 40 for r in rows), rows       # requests in, replies out
        s1.write_map("cms", 0, 12345)
        assert s1.read_map("cms")[0] == 12345
        with pytest.raises(TargetError, match="outside"):
            s1.write_map("cms", cms.rows * cms.size, 1)
