"""iperf3 traffic as the lab runs it: a UDP flow's server reads at real-time priority (so
iperf3, which closes its socket when the client's TEST_END arrives, finds nothing queued
there to leave unread), a TCP flow's server at normal priority; both flows run, and the
UDP flow ends with no datagram missing (benchmarks/udp_tail.py measures the tail)."""
import os
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.root


def test_udp_servers_run_at_real_time_priority_tcp_servers_do_not():
    from flexnet_lab.lab.network import Lab
    from flexnet_lab.topology import load_topology
    from flexnet_lab.verify.traffic import FlowSpec, Traffic

    specs = [FlowSpec("udp1", "h1", "h2", "udp", 50_000_000, 2.0, port=5301),
             FlowSpec("tcp1", "h2", "h1", "tcp", 100_000_000, 2.0, port=5302)]
    with Lab(load_topology(os.path.join(ROOT, "topologies", "linear.yaml")),
             switch_kind="ebpf") as lab:
        traffic = Traffic(lab, specs)
        try:
            traffic.start()
            time.sleep(0.5)
            policies = {f.spec.name: os.sched_getscheduler(f._server.pid)
                        for f in traffic.flows}
            results = {r.spec.name: r for r in traffic.results()}
        finally:
            traffic.stop()
    assert policies == {"udp1": os.SCHED_FIFO, "tcp1": os.SCHED_OTHER}
    udp, tcp = results["udp1"], results["tcp1"]
    assert udp.receiver_rt and not tcp.receiver_rt
    assert udp.error is None and tcp.error is None and tcp.received > 0
    assert udp.sent > 9000 and udp.lost == 0, (udp.sent, udp.gap_lost, udp.tail_lost)
    assert udp.to_json()["receiver_rt"] is True
