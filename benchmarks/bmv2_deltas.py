"""Consecutive table and parser deltas on a bmv2 switch under a UDP flow, against the same
flow without deltas. Prints one JSON object.

    PATH=/opt/p4/bin:$PATH python benchmarks/bmv2_deltas.py [--deltas 100] [--rate 20M]

Topology: h1 - s1 (bmv2) - s2 (eBPF) - h2. Deltas on s1 cycle through: ACL table added,
its actions changed (a new counting action and counter map), changed back, the table
removed, the shim parser state added, removed (each a delta through the controller, which
writes the intent to its store around the device change). Each variant is compiled by p4c once
before the flow starts (compile times reported separately); a delta's time runs from the
register read to the new pipeline carrying traffic (read registers, save the pipeline,
write entries and registers into it, commit).

register_increments_lost: s1's port_rx[1] register (packets received on port 1) against
the kernel's count of packets delivered to bmv2 on that port (rx_packets of s1-eth1),
both read with the link quiet before and after the flow; every increment the register
missed across the deltas shows up as the difference.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from flexnet_lab.control.controller import controller_for  # noqa: E402
from flexnet_lab.lab.network import Lab  # noqa: E402
from flexnet_lab.program.delta import load_delta  # noqa: E402
from flexnet_lab.topology.loader import parse_topology  # noqa: E402
from flexnet_lab.verify.traffic import FlowSpec, measure_flow, percentile  # noqa: E402

TOPO = {"hosts": {"h1": {}, "h2": {}}, "switches": {"s1": {"target": "bmv2"},
                                                     "s2": {"target": "ebpf"}},
        "links": [["h1", "s1"], ["h2", "s2"], ["s1", "s2"]]}


def _rx_counts(lab, s1) -> tuple[int, int]:
    """(kernel rx_packets of port 1's interface, s1's port_rx[1] register), link quiet."""
    time.sleep(1.0)
    ifname = s1.ports[1][0]
    link = json.loads(lab.net.get("s1").cmd(f"ip -j -s link show dev {ifname}"))
    return link[0]["stats64"]["rx"]["packets"], s1.port_counters()[1]["rx_packets"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deltas", type=int, default=100)
    ap.add_argument("--rate", default="20M")
    args = ap.parse_args()
    rate = int(float(args.rate.rstrip("MK")) * (1e6 if args.rate.endswith("M") else 1e3))
    acl = load_delta(os.path.join(ROOT, "scenarios/deltas/acl-udp-9999.yaml"))
    shim = load_delta(os.path.join(ROOT, "scenarios/deltas/shim-parser.yaml"))
    count = load_delta(os.path.join(ROOT, "scenarios/deltas/acl-count.yaml"))
    with Lab(parse_topology(TOPO, "bmv2-deltas")) as lab:
        ctl = controller_for(lab)
        try:
            return _measure(args, lab, ctl, acl, shim, count, rate)
        finally:
            ctl.close()


def _measure(args, lab, ctl, acl, shim, count, rate: int) -> int:
    s1 = ctl.handle("s1")
    base_prog = s1.program
    with_acl, no_acl = acl.apply(base_prog)
    with_shim, no_shim = shim.apply(base_prog)
    with_count, no_count = count.apply(with_acl)
    # (delta, program it leads to)
    cycle = [(acl, with_acl), (count, with_count), (no_count, with_acl),
             (no_acl, base_prog), (shim, with_shim), (no_shim, base_prog)]
    compile_ms = []
    for prog in (with_acl, with_count, with_shim, base_prog):
        t = time.perf_counter()
        s1.abort(s1.prepare(prog))
        compile_ms.append((time.perf_counter() - t) * 1e3)
    before = s1.entries("l3_fwd")
    duration = max(5.0, args.deltas * 0.12 + 2)
    spec = FlowSpec("udp", "h1", "h2", "udp", rate, duration)
    k0, r0 = _rx_counts(lab, s1)
    base = measure_flow(lab, spec)
    k1, r1 = _rx_counts(lab, s1)
    records, preserved = [], []
    kept = {"l3_fwd": before}

    def deltas():
        for i in range(args.deltas):
            delta, prog = cycle[i % len(cycle)]
            recs, _ = ctl.apply_delta("s1", delta, "delta")
            records.extend(recs)
            preserved.append(s1.program == prog and
                             all(s1.entries(t.name) == kept[t.name]
                                 for t in prog.tables if t.name in kept))
            time.sleep(0.05)

    live = measure_flow(lab, spec, deltas)
    k2, r2 = _rx_counts(lab, s1)
    swaps = [r.swap_ms for r in records]
    out = {"deltas": len(records), "rate_mbit": rate / 1e6, "duration_s": duration,
           "sent": live.sent, "lost": live.lost, "tail_lost": live.tail_lost,
           "baseline_sent": base.sent,
           "baseline_lost": base.lost,
           "delta_p50_ms": round(percentile(swaps, 50), 2), "delta_p99_ms": round(percentile(swaps, 99), 2),
           "compile_p50_ms": round(statistics.median(compile_ms), 1),
           "entries_preserved": all(preserved),
           "register_increments_lost": (k2 - k1) - (r2 - r1),
           "baseline_register_increments_lost": (k1 - k0) - (r1 - r0),
           "port1_packets_counted": r2 - r1}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
