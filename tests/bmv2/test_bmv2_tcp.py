"""TCP through two bmv2 switches at a modest rate: no segment is lost, so nothing is
retransmitted that had to be.

Before the fix, libpcap sized each port's receive ring while the port still had its
offloads on (8 frames of 256 KiB), and bmv2's egress queues held 64 packets: a flow at
10 Mbit/s retransmitted 100-550 segments in 5 s, every one of them dropped inside a
switch (counted by the veth, never by the pipeline's port_rx)."""
import json

import pytest

from flexnet_lab.lab.network import Lab
from flexnet_lab.targets.port_counters import read_port_counters
from flexnet_lab.topology.loader import parse_topology
from flexnet_lab.verify.traffic import FlowSpec, measure_flow

pytestmark = [pytest.mark.root, pytest.mark.bmv2, pytest.mark.p4c]

LINEAR = {"hosts": {"h1": {}, "h2": {}},
          "switches": {"s1": {"target": "bmv2"}, "s2": {"target": "bmv2"}},
          "links": [["h1", "s1"], ["h2", "s2"], ["s1", "s2"]]}


@pytest.fixture(scope="module")
def lab():
    with Lab(parse_topology(LINEAR, "linear-bmv2.yaml")) as lab:
        yield lab


def tcp_counters(node) -> dict[str, int]:
    """The namespace's TCP counters (/proc/net/snmp and netstat: no nstat history)."""
    out = {}
    lines = node.cmd("cat /proc/net/snmp /proc/net/netstat").splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        kind, *keys = names.split()
        for key, value in zip(keys, values.split()[1:]):
            out[kind[:-1] + key] = int(value)
    return out


def veth_packets(lab, switch: str) -> tuple[int, int]:
    """Frames the switch's veths received and sent (kernel counters)."""
    rx = tx = 0
    node = lab.net.get(switch)
    for intf in node.intfList():
        if intf.name == "lo":
            continue
        stats = json.loads(node.cmd(f"ip -s -j link show {intf.name}"))[0]["stats64"]
        rx, tx = rx + stats["rx"]["packets"], tx + stats["tx"]["packets"]
    return rx, tx


def pipeline_packets(lab, switch: str) -> tuple[int, int]:
    """Frames bmv2's pipeline counted in (port_rx) and forwarded (port_tx)."""
    counters = read_port_counters(lab.switches[switch])
    ports = [p for p in counters if p != 0]
    return (sum(counters[p]["rx_packets"] for p in ports),
            sum(counters[p]["tx_packets"] for p in ports))


@pytest.mark.parametrize("rate_mbps", [10, 20])
def test_tcp_through_two_bmv2_switches_loses_no_segment(lab, rate_mbps):
    assert {n: s.kind for n, s in lab.switches.items()} == {"s1": "bmv2", "s2": "bmv2"}
    h1 = lab.host("h1")
    before = tcp_counters(h1)
    veth0 = {s: veth_packets(lab, s) for s in lab.switches}
    pipe0 = {s: pipeline_packets(lab, s) for s in lab.switches}
    res = measure_flow(lab, FlowSpec("tcp", "h1", "h2", proto="tcp",
                                     rate_bps=rate_mbps * 1_000_000, duration_s=5))
    after = tcp_counters(h1)
    assert res.error is None
    assert res.bps > 0.9 * rate_mbps * 1e6
    for s in lab.switches:
        (vrx, vtx), (prx, ptx) = veth_packets(lab, s), pipeline_packets(lab, s)
        into_pipeline = prx - pipe0[s][0]
        # every frame the veths received reached the pipeline (bmv2's pcap input), and
        # every frame it forwarded left on a veth (its egress queues)
        assert vrx - veth0[s][0] == into_pipeline, f"{s}: frames lost at bmv2's input"
        assert ptx - pipe0[s][1] == vtx - veth0[s][1], f"{s}: frames lost in bmv2's queues"
        assert into_pipeline > 1000
    retrans = after["TcpRetransSegs"] - before["TcpRetransSegs"]
    # a tail-loss probe the receiver reports as a duplicate (DSACK) carried nothing lost:
    # it fires when a packet's trip through bmv2 takes more than 2 RTT + 8 ms (a switch
    # thread off the CPU on a loaded machine): rare, but not loss
    spurious = after["TcpExtTCPDSACKRecvSegs"] - before["TcpExtTCPDSACKRecvSegs"]
    assert retrans - spurious <= 0, (f"{retrans} retransmits ({spurious} of them spurious), "
                                     f"iperf3 counted {res.retransmits}")
