"""N consecutive live changes under a UDP flow, against the same flow without changes.

Alternates a table add/remove (the ACL delta, and its inverse) on switch s1 with an atomic
program swap on host h2 (flow_counter <-> flow_counter plus an ACL table: both share the
`pkts` and `flows` maps, so the per-flow counter must survive every swap). Every change goes
through the controller (intent written to its store, applied as one transaction). Prints one
JSON object. Usage: python benchmarks/live_changes.py [--changes 1000] [--rate 200M]
"""
from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from flexnet_lab.control.controller import controller_for  # noqa: E402
from flexnet_lab.program import library  # noqa: E402
from flexnet_lab.program.delta import load_delta  # noqa: E402
from flexnet_lab.program.model import Key, Stmt, Table  # noqa: E402
from flexnet_lab.lab.network import Lab  # noqa: E402
from flexnet_lab.topology import load_topology  # noqa: E402
from flexnet_lab.verify.traffic import FlowSpec, measure_flow, percentile  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--rate", default="200M")
    ap.add_argument("--interval-ms", type=float, default=15.0,
                    help="pause between changes")
    ap.add_argument("--no-rt", dest="rt", action="store_false",
                    help="run the controller at normal priority")
    args = ap.parse_args()
    rate = int(float(args.rate.rstrip("MG")) * (1e9 if args.rate.endswith("G") else 1e6))
    duration = round(args.changes * (args.interval_ms + 2.0) / 1000 + 3, 1)

    acl = load_delta(os.path.join(ROOT, "scenarios/deltas/acl-udp-9999.yaml"))
    host_a = library.flow_counter()
    host_b = host_a.with_(  # the same maps, one table more
        name="counter_acl", actions=(library.DROP, library.NOP),
        tables=(Table("acl", (Key("meta.l4_dport", "exact"),), ("drop", "nop"), "nop", size=64),),
        control=host_a.control + (Stmt(table="acl"),))
    topo = load_topology(os.path.join(ROOT, "topologies/linear.yaml"))
    with Lab(topo, switch_kind="ebpf") as lab:
        ctl = controller_for(lab)
        try:
            return _measure(args, lab, ctl, acl, host_a, host_b, rate, duration)
        finally:
            ctl.close()


def _measure(args, lab, ctl, acl, host_a, host_b, rate: int, duration: float) -> int:
    h1, h2 = lab.host("h1"), lab.host("h2")
    ctl.attach("h2", host_a, "xdp")
    dp = ctl.handle("h2:xdp:ingress")
    # compile every variant once up front: during the run a change is load + swap
    t = time.perf_counter()
    _, inverses = ctl.apply_delta("s1", acl, "warm-up")
    ctl.apply_inverses(inverses, "warm-up back")
    ctl.swap("h2", host_b, "xdp")
    ctl.swap("h2", host_a, "xdp")
    compile_s = time.perf_counter() - t
    spec = FlowSpec("udp", "h1", "h2", "udp", rate, duration)
    base = measure_flow(lab, spec)
    records, change_ms = [], []

    def changes():
        # the atomic step is one bpf() syscall; keep the controller from being preempted
        # by the traffic it measures (real-time priority, no GC pauses mid-change)
        if args.rt:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        gc.disable()
        try:
            run_changes()
        finally:
            gc.enable()
            if args.rt:
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))

    def run_changes():
        undo = None
        for i in range(args.changes):
            t0 = time.perf_counter()
            if i % 2 == 0:
                if undo is None:
                    recs, undo = ctl.apply_delta("s1", acl, "switch acl")
                else:
                    recs, undo = ctl.apply_inverses(undo, "switch acl"), None
            else:
                recs = ctl.swap("h2", host_b if (i // 2) % 2 == 0 else host_a, "xdp")
            change_ms.append((time.perf_counter() - t0) * 1e3)
            records.extend(recs)
            time.sleep(args.interval_ms / 1000)
        if undo is not None:  # leave s1 with its base program
            ctl.apply_inverses(undo, "switch acl back")

    before = _flow_count(dp, h1.IP(), h2.IP())
    live = measure_flow(lab, spec, changes)
    after = _flow_count(dp, h1.IP(), h2.IP())

    swaps = [r.swap_ms for r in records]
    counted = after - before
    out = {
        "changes": len(records),
        "switch_changes": sum(1 for r in records if r.device == "s1"),
        "host_swaps": sum(1 for r in records if r.device in ("h2:xdp:ingress", dp.device)),
        "rate_mbit": rate / 1e6,
        "duration_s": duration,
        "sent": live.sent,
        "received": live.received,
        "lost": live.lost,
        "baseline_sent": base.sent,
        "baseline_lost": base.lost,
        "swap_p50_ms": round(percentile(swaps, 50), 4),
        "swap_p99_ms": round(percentile(swaps, 99), 4),
        "swap_max_ms": round(max(swaps), 4),
        "change_p50_ms": round(percentile(change_ms, 50), 3),
        "change_p99_ms": round(percentile(change_ms, 99), 3),
        "change_note": "a change as the controller makes it: intent checked and written to "
                       "its store, devices changed, change committed in the store",
        "compile_all_variants_s": round(compile_s, 3),
        "controller_sched": "SCHED_FIFO 10, GC off during changes" if args.rt else "normal",
        "flow_counter_packets": counted,
        "counter_matches": counted == live.sent + _HANDSHAKE,
        "counter_note": f"the flow's entry in h2's `flows` map, minus the {_HANDSHAKE} iperf3 "
                        "set-up datagram(s) that share the 5-tuple, against datagrams sent",
    }
    print(json.dumps(out, indent=1))
    ok = out["lost"] <= out["baseline_lost"] and out["swap_p99_ms"] <= 1.0 and \
        out["counter_matches"]
    return 0 if ok else 1


_HANDSHAKE = 1  # iperf3's UDP client sends one "connect" datagram on the flow's 5-tuple


def _flow_count(dp, src: str, dst: str) -> int:
    """Packets counted for h1 -> h2 UDP port 5201 in the host's flows map (any sport)."""
    s, d = int(ipaddress.IPv4Address(src)), int(ipaddress.IPv4Address(dst))
    return sum(v[0] for k, v in dp.read_map("flows").items()
               if k[0] == s and k[1] == d and k[2] == 17 and k[4] == 5201)


if __name__ == "__main__":
    sys.exit(main())
