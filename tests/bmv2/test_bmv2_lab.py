"""bmv2 switches in the lab, driven over P4Runtime, mixed with eBPF switches."""
import ipaddress
import json
import os

import pytest

from flexnet_lab.errors import TargetError
from flexnet_lab.lab.network import Lab
from flexnet_lab.program.delta import load_delta
from flexnet_lab.topology.loader import parse_topology

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
        assert rec.kind == "pipeline" and any("registers" in n for n in rec.notes)
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


def test_a_change_the_switch_refuses_leaves_it_untouched():
    with Lab(parse_topology(MIXED, "mixed.yaml")) as lab:
        before = lab.switch("s1").entries("l3_fwd")
        with pytest.raises(TargetError):
            lab.switch("s1").insert("l3_fwd", ((0x0A000009, 40),), "forward", (1,))
        assert lab.switch("s1").entries("l3_fwd") == before
