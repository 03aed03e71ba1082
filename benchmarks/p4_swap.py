"""Swapping a user's own P4 program live (needs root, bmv2 and p4c): the triangle exercise
(tests/data/exercises/triangle) up, a UDP flow h1 -> h2 through s1 and s2; the same flow
once without changes (the baseline) and once while s1 swaps basic.p4 -> basic_acl.p4 ->
basic.p4 ... (--swaps N, each compiled beforehand by the controller's plan). Prints one
JSON object: datagrams sent/lost in each run, swap times, and whether s1's LPM entries
read back identical after every swap.

    python benchmarks/p4_swap.py [--swaps 4] [--rate-mbit 10] [--seconds 8]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from flexnet_lab.control.controller import controller_for  # noqa: E402
from flexnet_lab.lab.network import Lab  # noqa: E402
from flexnet_lab.topology.coursework import load_coursework  # noqa: E402
from flexnet_lab.verify.traffic import FlowSpec, measure_flow  # noqa: E402

EXERCISE = os.path.join(ROOT, "tests", "data", "exercises", "triangle")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--swaps", type=int, default=4)
    ap.add_argument("--rate-mbit", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=8.0)
    a = ap.parse_args()
    spec = FlowSpec("udp", "h1", "h2", "udp", rate_bps=int(a.rate_mbit * 1e6),
                    duration_s=a.seconds)
    versions = [(os.path.join(EXERCISE, "basic_acl.p4"),
                 os.path.join(EXERCISE, "triangle-topo", "s1-runtime-acl.json")),
                (os.path.join(EXERCISE, "basic.p4"), None)]
    with Lab(load_coursework(EXERCISE)) as lab:
        ctl = controller_for(lab)
        try:
            lpm = set(ctl.handle("s1").entries("MyIngress.ipv4_lpm"))
            baseline = measure_flow(lab, spec)
            swaps, identical = [], True

            def during():
                nonlocal identical
                gap = (a.seconds - 2.0) / max(a.swaps, 1)
                for i in range(a.swaps):
                    (rec,) = ctl.swap_p4("s1", *versions[i % 2])
                    swaps.append({"to": os.path.basename(versions[i % 2][0]),
                                  "swap_ms": round(rec.swap_ms, 2),
                                  "load_check_ms": round(rec.load_ms, 1), "notes": rec.notes})
                    identical &= set(ctl.handle("s1").entries("MyIngress.ipv4_lpm")) == lpm
                    time.sleep(max(0.0, gap - 1.5))
            changed = measure_flow(lab, spec, during=during, settle_s=1.0)
        finally:
            ctl.close()
    print(json.dumps({
        "flow": {"rate_mbit": a.rate_mbit, "seconds": a.seconds},
        "baseline": {"sent": baseline.sent, "lost": baseline.lost, "error": baseline.error},
        "with_swaps": {"sent": changed.sent, "lost": changed.lost, "error": changed.error},
        "lost_beyond_baseline": changed.lost - baseline.lost,
        "swaps": swaps, "lpm_entries_identical_after_every_swap": identical}, indent=1))
    return 0 if changed.lost <= baseline.lost and identical else 1


if __name__ == "__main__":
    sys.exit(main())
