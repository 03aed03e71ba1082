"""bmv2 switches in the lab, driven over P4Runtime, mixed with eBPF switches."""
import ipaddress
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


def test_a_change_bmv2_cannot_take_yet_is_refused_and_changes_nothing():
    with Lab(parse_topology(MIXED, "mixed.yaml")) as lab:
        before = lab.switch("s1").entries("l3_fwd")
        delta = load_delta(os.path.join(ROOT, "scenarios/deltas/acl-udp-9999.yaml"))
        with pytest.raises(TargetError, match="not supported yet"):
            lab.apply_delta("s1", delta)
        assert lab.switch("s1").program.table("acl") is None
        assert lab.switch("s1").entries("l3_fwd") == before
        assert lab.ping_all()["loss_pct"] == 0.0
